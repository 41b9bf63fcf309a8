'use strict'
// TaskClient: the caller's entry point. Validation, config resolution and protocol live in the
// engine; this class adapts JS options and wraps sessions.

const native = require('../native.js')
const { TaskSession } = require('./session.js')
const { InvalidArgumentError, makeError } = require('./errors.js')
const { log, setLogger } = require('./log.js')

const BILLING_MODE_REQUIRED = "TaskClient.create() requires a billingMode option ('free' or 'paid')"

function tokenEndpointOptions(te) {
  if (te === undefined || te === null) return {}
  if (typeof te === 'string') return { tokenEndpointUrl: te }
  if (typeof te !== 'object' || typeof te.url !== 'string' || te.url === '') {
    throw new InvalidArgumentError('TokenEndpointConfig.url is required and must be a non-empty string')
  }
  return {
    tokenEndpointUrl: te.url,
    tokenEndpointHeaders: te.headers ? Object.entries(te.headers).map(([k, v]) => [k, String(v)]) : undefined,
    tokenEndpointBody: te.body,
  }
}

class TaskClient {
  #native

  /** @internal Use `TaskClient.create()`. */
  constructor(nativeClient) {
    if (!(nativeClient instanceof native.NativeTaskClient)) {
      throw new InvalidArgumentError('use `await TaskClient.create({ billingMode, apiKey })` to build a TaskClient')
    }
    this.#native = nativeClient
  }

  /**
   * Resolve configuration (explicit option > BLOCKS_* env > CDM), acquire the first token and
   * return a ready client.
   */
  static async create(options) {
    if (options === null || typeof options !== 'object') throw new InvalidArgumentError(BILLING_MODE_REQUIRED)
    if (options.billingMode !== 'free' && options.billingMode !== 'paid') throw new InvalidArgumentError(BILLING_MODE_REQUIRED)
    const { tokenProvider, onAuthError } = options
    if (options.logger !== undefined) setLogger(options.logger)
    if (tokenProvider !== undefined && typeof tokenProvider !== 'function') {
      throw new InvalidArgumentError('tokenProvider must be an async function returning { token, expiresIn, userId? }')
    }
    if (onAuthError !== undefined && typeof onAuthError !== 'function') throw new InvalidArgumentError('onAuthError must be a function')
    const n = await native.NativeTaskClient.create({
      tokenProvider: tokenProvider && (async () => await tokenProvider()),
      onAuthError:
        onAuthError &&
        ((kind, message, props) => {
          try {
            onAuthError(makeError('AuthRefreshFailedError', `Consumer auth refresh permanently failed: ${message}`, props))
          } catch (err) {
            log('warn', `onAuthError callback threw: ${err && err.message}`)
          }
        }),
      billingMode: options.billingMode,
      cdmUrl: options.cdmUrl,
      subscribeKey: options.subscribeKey,
      publishKey: options.publishKey,
      baseUrl: options.baseUrl,
      realtimeOrigin: options.realtimeOrigin,
      apiKey: options.apiKey,
      anonFingerprint: options.anonFingerprint,
      ...tokenEndpointOptions(options.tokenEndpoint),
    })
    return new TaskClient(n)
  }

  /** Billing mode of this client. */
  get billingMode() {
    return this.#native.billingMode
  }

  /** User id of the authenticated caller, or null. */
  getUserId() {
    return this.#native.userId ?? null
  }

  /** Create a task; the session is caught up with everything the task published so far. */
  async sendMessage(options) {
    if (options === null || typeof options !== 'object') throw new InvalidArgumentError('sendMessage(options) needs an options object with agentName')
    if (options.requestParts !== undefined && !Array.isArray(options.requestParts)) {
      throw new InvalidArgumentError('requestParts must be an array of parts (see textPart())')
    }
    const s = await this.#native.sendMessage(options)
    return new TaskSession(s, this)
  }

  /**
   * Attach to an existing task (`connect(taskId)` or `connect({ taskId, role })`): the session is
   * rebuilt from history and is live if the task is still active.
   */
  async connect(target) {
    const { taskId, role } = typeof target === 'string' ? { taskId: target } : (target ?? {})
    if (typeof taskId !== 'string' || taskId === '') throw new InvalidArgumentError('connect() needs a taskId')
    return new TaskSession(await this.#native.connect(taskId, role), this)
  }

  /** The registry card of an agent, or null when the agent is unknown. */
  getAgentCard(agentName) {
    return this.#native.getAgentCard(agentName)
  }

  /** GetTask: `{ taskId, agentName, owner, state, createdTime, updatedTime }`. */
  getTask(taskId) {
    return this.#native.getTask(taskId)
  }

  /** ListTasks: `{ tasks, next?, totalCount? }`. */
  listTasks(params = {}) {
    return this.#native.rpc('ListTasks', params)
  }

  cancelTask(taskId) {
    return this.#lifecycle('CancelTask', taskId)
  }
  pauseTask(taskId) {
    return this.#lifecycle('PauseTask', taskId)
  }
  resumeTask(taskId) {
    return this.#lifecycle('ResumeTask', taskId)
  }
  retryTask(taskId) {
    return this.#lifecycle('RetryTask', taskId)
  }
  terminateTask(taskId) {
    return this.#lifecycle('TerminateTask', taskId)
  }

  async #lifecycle(method, taskId) {
    if (typeof taskId !== 'string' || taskId === '') throw new InvalidArgumentError(`${method} needs a taskId string`)
    await this.#native.rpc(method, { taskId })
  }

  /** Stop background token refresh. Live sessions keep working. Idempotent. */
  destroy() {
    this.#native.destroy()
  }

  [Symbol.dispose]() {
    this.destroy()
  }
}

module.exports = { TaskClient }
