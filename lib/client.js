'use strict'
// TaskClient: the caller's entry point. Validation, config resolution and protocol live in the
// engine; this class adapts JS options and wraps sessions.

const native = require('../native.js')
const { TaskSession } = require('./session.js')
const { jsonData, jsonOptions } = require('./json.js')
const { InvalidArgumentError } = require('./errors.js')
const { netOptions, construct } = require('./net.js')
const { log, setLogger } = require('./log.js')
const { AgentAuth, authOptions, nativeAuthOf } = require('./auth.js')
const { prepareParts, BLOCKS_MAX_UPLOAD_BYTES } = require('./parts.js')

function maxUpload(options) {
  const m = options.maxUploadBytes
  if (m === undefined) return BLOCKS_MAX_UPLOAD_BYTES
  if (!Number.isSafeInteger(m) || m < 0) throw new InvalidArgumentError(`maxUploadBytes must be a non-negative integer, got ${m}`)
  return m
}

/** `autoDrain` / `drainWindowMs` of sendMessage and connect → TaskSession options. */
function drainOptions(options) {
  const { autoDrain, drainWindowMs } = options
  if (autoDrain !== undefined && typeof autoDrain !== 'boolean') throw new InvalidArgumentError(`autoDrain must be true or false, got ${autoDrain}`)
  if (drainWindowMs !== undefined && !(typeof drainWindowMs === 'number' && Number.isFinite(drainWindowMs) && drainWindowMs >= 0)) {
    throw new InvalidArgumentError(`drainWindowMs must be a non-negative number of milliseconds, got ${drainWindowMs}`)
  }
  const out = {}
  if (autoDrain !== undefined) out.autoDrain = autoDrain
  if (drainWindowMs !== undefined) out.drainWindowMs = drainWindowMs
  return out
}

/** `allowInsecureHttp`: plain http:// to hosts that are not loopback (refused otherwise). */
function insecureOption(options) {
  const v = options.allowInsecureHttp
  if (v !== undefined && typeof v !== 'boolean') throw new InvalidArgumentError(`allowInsecureHttp must be true or false, got ${v}`)
  return v
}

function ownerOption(options) {
  const v = options.defaultOwnerId
  if (v !== undefined && typeof v !== 'string') throw new InvalidArgumentError(`defaultOwnerId must be a string, got ${typeof v}`)
  return v
}

const BILLING_MODE_REQUIRED = "TaskClient.create() requires a billingMode option ('free' or 'paid')"

/** `longPollTimeoutMs`: undefined, or a number of milliseconds >= 1000. */
/** `authRetryDelaysMs`: an array goes to the engine (which checks the values), anything else is refused here. */
function retryDelays(options) {
  const v = options.authRetryDelaysMs
  if (v === undefined || (Array.isArray(v) && v.every((d) => typeof d === 'number'))) return v
  throw new InvalidArgumentError(`authRetryDelaysMs must be an array of numbers of milliseconds (default [5000, 10000]), got ${JSON.stringify(v) ?? typeof v}`)
}

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
   * Direct construction without a CDM fetch: `new TaskClient({ billingMode, subscribeKey,
   * publishKey?, baseUrl?, realtimeOrigin?, authProvider? | agentAuth?, defaultOwnerId? })`.
   * `authProvider` is any object with `getAuthHeader()` and `onAuthFailure()` (a `ConsumerAuth`,
   * a `StaticAuthProvider`, or your own); `agentAuth` an initialised `AgentAuth` (the client then
   * acts as that agent). Without `baseUrl`, RPCs go to the realtime origin's RPC endpoint of the
   * subscribe key. Most callers want `TaskClient.create()`.
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
    const { authProvider, agentAuth } = options
    if (authProvider !== undefined && agentAuth !== undefined) throw new InvalidArgumentError('Only one of authProvider and agentAuth may be given')
    if (agentAuth !== undefined && !(agentAuth instanceof AgentAuth)) throw new InvalidArgumentError('agentAuth must be an AgentAuth (new AgentAuth(apiKey, baseUrl), then init(payload))')
    const auth = authProvider ?? agentAuth
    const net = netOptions(options)
    this.#native = construct(() => native.NativeTaskClient.direct(
      {
        billingMode: options.billingMode,
        subscribeKey: options.subscribeKey,
        publishKey: options.publishKey,
        baseUrl: options.baseUrl ?? agentAuth?._native.baseUrl,
        realtimeOrigin: options.realtimeOrigin,
        defaultOwnerId: ownerOption(options),
        allowInsecureHttp: insecureOption(options),
        net,
      },
      auth === undefined ? undefined : nativeAuthOf(auth),
    ))
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
      defaultOwnerId: ownerOption(options),
      allowInsecureHttp: insecureOption(options),
      authRetryDelaysMs: retryDelays(options),
      net: netOptions(options),
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
    const drain = drainOptions(options)
    const { requestParts: _parts, autoDrain: _a, drainWindowMs: _d, ...rest } = options
    const request = jsonOptions({ ...rest, maxUploadBytes: this.#maxUploadBytes }, 'sendMessage')
    const { wire, uploads, cleanup } = await prepareParts(options.requestParts, this.#maxUploadBytes)
    try {
      if (options.requestParts !== undefined) request.requestParts = jsonData(wire, 'sendMessage', 'requestParts')
      const s = await this.#native.sendMessage(request, uploads)
      return new TaskSession(s, this, { catchUp: true, ...drain })
    } finally {
      await cleanup()
    }
  }

  /**
   * Attach to an existing task (`connect(taskId)` or `connect({ taskId, role })`): the session is
   * rebuilt from history and is live if the task is still active.
   */
  async connect(target) {
    const opts = typeof target === 'string' ? { taskId: target } : target !== null && typeof target === 'object' ? target : {}
    const { taskId, role } = opts
    if (typeof taskId !== 'string' || taskId === '') throw new InvalidArgumentError('connect() needs a taskId')
    if (role !== undefined && typeof role !== 'string') throw new InvalidArgumentError('connect(): role must be a string')
    const drain = drainOptions(opts)
    return new TaskSession(await this.#native.connect(taskId, role), this, drain)
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

  /**
   * Swap the keys used by sessions created afterwards (and by the key-based RPC URL of a client
   * without baseUrl). The auth state is untouched.
   */
  updateKeys(subscribeKey, publishKey) {
    if (typeof subscribeKey !== 'string' || subscribeKey === '') throw new InvalidArgumentError('updateKeys(subscribeKey, publishKey?) needs a non-empty subscribeKey')
    if (publishKey !== undefined && typeof publishKey !== 'string') throw new InvalidArgumentError('updateKeys: publishKey must be a string')
    this.#native.updateKeys(subscribeKey, publishKey)
  }

  /**
   * Low-level: listen to a task's events with plain callbacks (`onProgress`, `onArtifact`,
   * `onTerminal`, `onCancelRequested`, `onSystem`, `onEvent`, `onError`). Returns
   * `{ unsubscribe() }` at once; the subscription (a read token, then the live channel from the
   * beginning of its history) is set up in the background and its failures go to `onError`.
   * `onEvent` sees every event; the terminal reaches `onTerminal` once.
   */
  subscribeToTask(taskId, ownerId, callbacks = {}) {
    if (typeof taskId !== 'string' || taskId === '') throw new InvalidArgumentError('subscribeToTask(taskId, ownerId, callbacks) needs a taskId')
    if (ownerId !== undefined && ownerId !== null && typeof ownerId !== 'string') throw new InvalidArgumentError('subscribeToTask: ownerId must be a string')
    if (callbacks === null || typeof callbacks !== 'object') throw new InvalidArgumentError('subscribeToTask: callbacks must be an object ({ onProgress, onArtifact, onTerminal, ... })')
    const call = (name, ...args) => {
      const fn = callbacks[name]
      if (typeof fn !== 'function') return
      try {
        fn(...args)
      } catch (err) {
        if (name !== 'onError' && typeof callbacks.onError === 'function') callbacks.onError(err, { entryPoint: 'subscribeToTask', callbackType: name })
        else log('warn', `subscribeToTask ${name} callback threw: ${err && err.message}`)
      }
    }
    const typed = { progress: 'onProgress', artifact: 'onArtifact', system: 'onSystem' }
    const deliver = (e) => {
      call('onEvent', e)
      if (typed[e.type]) call(typed[e.type], e)
    }
    let session = null
    let stopped = false
    // the channel is the task's own (from GetTask), so `ownerId` needs no guessing here
    this.connect({ taskId }).then(
      (s) => {
        if (stopped) return s.close()
        session = s
        const early = s.listEvents()
        for (const e of early) deliver(e)
        s.onEvent((e) => early.includes(e) || deliver(e))
        s.onTerminal((e) => call('onTerminal', e))
        s.onCancelRequested((e) => call('onCancelRequested', e))
      },
      (err) => call('onError', err, { entryPoint: 'subscribeToTask', callbackType: 'subscribe' }),
    )
    return {
      unsubscribe() {
        stopped = true
        if (session) session.close()
      },
    }
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
  insecureOption,
  longPollTimeout,
  TaskClient,
}
