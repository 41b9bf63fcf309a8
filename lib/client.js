'use strict'
// TaskClient: the caller's entry point. Validation, config resolution and protocol live in the
// engine; this class adapts JS options and wraps sessions.

const native = require('../native.js')
const { TaskSession } = require('./session.js')
const { jsonData, jsonOptions } = require('./json.js')
const { InvalidArgumentError } = require('./errors.js')
const { setLogger } = require('./log.js')
const { authOptions, ConsumerAuth, StaticAuthProvider } = require('./auth.js')
const { prepareParts, BLOCKS_MAX_UPLOAD_BYTES } = require('./parts.js')

function maxUpload(options) {
  const m = options.maxUploadBytes
  if (m === undefined) return BLOCKS_MAX_UPLOAD_BYTES
  if (!Number.isSafeInteger(m) || m < 0) throw new InvalidArgumentError(`maxUploadBytes must be a non-negative integer, got ${m}`)
  return m
}

const BILLING_MODE_REQUIRED = "TaskClient.create() requires a billingMode option ('free' or 'paid')"

/** `longPollTimeoutMs`: undefined, or a number of milliseconds >= 1000. */
function longPollTimeout(options) {
  const v = options.longPollTimeoutMs
  if (v === undefined) return undefined
  if (typeof v !== 'number' || !Number.isFinite(v) || v < 1000) {
    throw new InvalidArgumentError(`longPollTimeoutMs must be a number of milliseconds >= 1000, got ${v}`)
  }
  return v
}

class TaskClient {
  #native
  #maxUploadBytes = BLOCKS_MAX_UPLOAD_BYTES

  /**
   * Direct construction without a CDM fetch (advanced): `new TaskClient({ billingMode,
   * subscribeKey, publishKey?, baseUrl?, realtimeOrigin?, authProvider? })` where `authProvider`
   * is a `ConsumerAuth` or `StaticAuthProvider`. Most callers want `TaskClient.create()`.
   */
  constructor(options) {
    if (options instanceof native.NativeTaskClient) {
      this.#native = options
      return
    }
    if (options !== null && typeof options === 'object') this.#maxUploadBytes = maxUpload(options)
    if (options === null || typeof options !== 'object' || (options.billingMode !== 'free' && options.billingMode !== 'paid')) {
      throw new InvalidArgumentError("TaskClient requires a billingMode option ('free' or 'paid')")
    }
    if (typeof options.subscribeKey !== 'string' || options.subscribeKey === '') {
      throw new InvalidArgumentError('TaskClient requires a subscribeKey (or use TaskClient.create() to read it from the CDM)')
    }
    const provider = options.authProvider
    if (provider !== undefined && !(provider instanceof ConsumerAuth || provider instanceof StaticAuthProvider)) {
      throw new InvalidArgumentError('authProvider must be a ConsumerAuth or a StaticAuthProvider')
    }
    this.#native = native.NativeTaskClient.direct(
      {
        billingMode: options.billingMode,
        subscribeKey: options.subscribeKey,
        publishKey: options.publishKey,
        baseUrl: options.baseUrl,
        realtimeOrigin: options.realtimeOrigin,
      },
      provider?._native,
    )
  }

  /**
   * Resolve configuration (explicit option > BLOCKS_* env > CDM), acquire the first token and
   * return a ready client.
   */
  static async create(options) {
    if (options === null || typeof options !== 'object') throw new InvalidArgumentError(BILLING_MODE_REQUIRED)
    if (options.billingMode !== 'free' && options.billingMode !== 'paid') throw new InvalidArgumentError(BILLING_MODE_REQUIRED)
    const maxUploadBytes = maxUpload(options)
    if (options.logger !== undefined) setLogger(options.logger)
    const n = await native.NativeTaskClient.create({
      billingMode: options.billingMode,
      cdmUrl: options.cdmUrl,
      subscribeKey: options.subscribeKey,
      publishKey: options.publishKey,
      baseUrl: options.baseUrl,
      realtimeOrigin: options.realtimeOrigin,
      anonFingerprint: options.anonFingerprint,
      longPollTimeoutMs: longPollTimeout(options),
      ...authOptions(options),
    })
    const client = new TaskClient(n)
    client.#maxUploadBytes = maxUploadBytes
    return client
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
    if (options === null || typeof options !== 'object' || Array.isArray(options)) throw new InvalidArgumentError('sendMessage(options) needs an options object with agentName')
    if (options.requestParts !== undefined && !Array.isArray(options.requestParts)) {
      throw new InvalidArgumentError('requestParts must be an array of parts (see textPart())')
    }
    const { wire, uploads } = await prepareParts(options.requestParts, this.#maxUploadBytes)
    const { requestParts: _parts, ...rest } = options
    const request = jsonOptions({ ...rest, maxUploadBytes: this.#maxUploadBytes }, 'sendMessage')
    if (options.requestParts !== undefined) request.requestParts = jsonData(wire, 'sendMessage', 'requestParts')
    const s = await this.#native.sendMessage(request, uploads)
    return new TaskSession(s, this, { catchUp: true })
  }

  /**
   * Attach to an existing task (`connect(taskId)` or `connect({ taskId, role })`): the session is
   * rebuilt from history and is live if the task is still active.
   */
  async connect(target) {
    const { taskId, role } = typeof target === 'string' ? { taskId: target } : target !== null && typeof target === 'object' ? target : {}
    if (typeof taskId !== 'string' || taskId === '') throw new InvalidArgumentError('connect() needs a taskId')
    if (role !== undefined && typeof role !== 'string') throw new InvalidArgumentError('connect(): role must be a string')
    return new TaskSession(await this.#native.connect(taskId, role), this)
  }

  /** The registry card of an agent, or null when the agent is unknown. */
  async getAgentCard(agentName) {
    if (typeof agentName !== 'string' || agentName === '') throw new InvalidArgumentError('getAgentCard needs an agent name string')
    return this.#native.getAgentCard(agentName)
  }

  /** GetTask: `{ taskId, agentName, owner, state, createdTime, updatedTime }`. */
  async getTask(taskId) {
    if (typeof taskId !== 'string' || taskId === '') throw new InvalidArgumentError('getTask needs a taskId string')
    return this.#native.getTask(taskId)
  }

  /** ListTasks: `{ tasks, next?, totalCount? }`. */
  async listTasks(params = {}) {
    return this.#native.rpc('ListTasks', jsonOptions(params, 'listTasks'))
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
  /** Run a failed or canceled task again; resolves with `{ taskId }` of the new attempt. */
  async retryTask(taskId) {
    if (typeof taskId !== 'string' || taskId === '') throw new InvalidArgumentError('RetryTask needs a taskId string')
    return this.#native.rpc('RetryTask', { taskId })
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

module.exports = {
  longPollTimeout,
  TaskClient,
}
