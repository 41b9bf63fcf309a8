'use strict'
// The agent runtime's JS face: TaskContext for handlers and startAgentInstance().

const native = require('../native.js')
const { InvalidArgumentError } = require('./errors.js')
const { jsonData } = require('./json.js')
const { log, setLogger } = require('./log.js')

function toBuffer(data) {
  if (Buffer.isBuffer(data)) return data
  if (typeof data === 'string') return Buffer.from(data, 'utf8')
  if (data instanceof Uint8Array) return Buffer.from(data.buffer, data.byteOffset, data.byteLength)
  if (data instanceof ArrayBuffer) return Buffer.from(data)
  if (data !== undefined) return Buffer.from(JSON.stringify(data), 'utf8')
  throw new InvalidArgumentError('artifact data is missing: pass a string, Buffer, Uint8Array or a JSON value')
}

function defaultMime(data) {
  if (typeof data === 'string') return 'text/plain'
  if (data instanceof Uint8Array || data instanceof ArrayBuffer) return 'application/octet-stream'
  return 'application/json'
}

/** What a handler gets besides the task: identity, cancellation, status and artifacts. */
class TaskContext {
  #native
  #abort = new AbortController()
  #abortHooked = false

  #taskClient
  #failStream
  #streams = new Map()

  /** @internal */
  constructor(nativeCtx, taskClient, failStream) {
    this.#native = nativeCtx
    this.#taskClient = taskClient
    this.#failStream = failStream
    this.taskId = nativeCtx.taskId
    this.requestParts = nativeCtx.requestParts ?? []
    this.hasStream = nativeCtx.hasStream
    this.consumerPublicKey = nativeCtx.consumerPublicKey ?? undefined
    this.taskKind = nativeCtx.taskKind
  }

  /**
   * A ready TaskClient that acts as this agent (its access token, refreshed as needed), for
   * calling other agents. Shared by all tasks of the instance; do not destroy it.
   */
  get taskClient() {
    return this.#taskClient
  }

  /** Aborts when the task is canceled, terminated or expires. */
  get cancelSignal() {
    // the native cancel hook is registered on first use (most handlers never look)
    if (!this.#abortHooked) {
      this.#abortHooked = true
      const n = this.#native
      const fire = () => this.#abort.abort(new Error(n.isExpired ? 'task expired' : 'task canceled'))
      if (n.isCancelled) fire()
      else n.onCancel(fire)
    }
    return this.#abort.signal
  }
  get isCancelled() {
    return this.#native.isCancelled
  }
  get isExpired() {
    return this.#native.isExpired
  }

  /**
   * Open a stream to the caller (needs `hasStream`): `{ declaredStream?, direction?, format?,
   * metadata?, external?, onActivate?, bundleSizeBytes?, maxLatencyMs?, maxMessageSize?,
   * subscribeGraceMs? }`. Resolves with a StreamHandle (an ExternalStreamHandle for `external:
   * true`). A shared-affinity stream (card `affinity: "shared"`) is one channel written for every
   * pipe task that holds it: asking again from the same task gives the same handle. `onActivate(stream)`
   * runs once the stream is active, off the handler; if it throws, the stream is failed
   * (`stream_crashed`) for every task that holds it.
   */
  async createStream(options = {}) {
    if (options === null || typeof options !== 'object' || Array.isArray(options)) {
      throw new TypeError('createStream(options) takes an options object with declaredStream, e.g. { declaredStream: "tokens" }')
    }
    const { onActivate, ...rest } = options
    if (onActivate !== undefined && typeof onActivate !== 'function') throw new InvalidArgumentError('onActivate must be a function (stream) => void')
    const { StreamHandle, ExternalStreamHandle } = require('./stream.js')
    const n = await this.#native.createStream(jsonData(rest, 'createStream', 'options'))
    const known = this.#streams.get(n.streamId)
    if (known && known.isActive) return known
    const handle = typeof n.activate === 'function' ? new ExternalStreamHandle(n) : new StreamHandle(n)
    this.#streams.set(n.streamId, handle)
    if (onActivate) {
      Promise.resolve()
        .then(() => onActivate(handle))
        .catch((err) => {
          log('warn', `onActivate of stream ${handle.streamId} threw: ${err && err.message}; failing the stream`, { taskId: this.taskId })
          return this.#failStream(handle.streamId, 'stream_crashed')
        })
    }
    return handle
  }

  /** Publish a status line (throttled to one per second; the latest is never dropped). */
  reportStatus(message) {
    this.#native.reportStatus(String(message))
  }

  /**
   * The bytes of a file input: `part` is a request part with an `artifactRef` (inline parts are
   * decoded locally; uploaded files are downloaded with the task's token).
   */
  async downloadInputArtifact(part) {
    const ref = part && typeof part === 'object' ? part.artifactRef : undefined
    if (!ref) throw new InvalidArgumentError('this request part has no artifactRef: downloadInputArtifact needs a file part')
    if (ref.kind === 'file') {
      if (!ref.channel || !ref.fileId || !ref.fileName) throw new InvalidArgumentError('file artifactRef is missing required fields (channel, fileId, fileName)')
      return this.#native.downloadInput(ref)
    }
    const { decodeInlineArtifact } = require('./parts.js')
    return decodeInlineArtifact(ref)
  }

  /**
   * Publish an artifact now: a string, Buffer/Uint8Array or JSON value, with `{ mimeType,
   * fileName, outputId }`. Up to 16384 bytes it is published inline; larger ones are uploaded and
   * the network publishes a file artifact.
   */
  async publishArtifact(data, options = {}) {
    const buf = toBuffer(data)
    await this.#native.publishArtifact(buf, options.mimeType ?? defaultMime(data), options.fileName, options.outputId)
  }
}

/**
 * Read and validate an agent card (a path to agent-card.json, or the object). Errors name the
 * field and the fix.
 */
function loadCard(source) {
  let card = source
  if (typeof source === 'string') {
    const fs = require('node:fs')
    if (!fs.existsSync(source)) throw new InvalidArgumentError(`agent-card.json not found at ${source}`)
    try {
      card = JSON.parse(fs.readFileSync(source, 'utf8'))
    } catch (e) {
      throw new InvalidArgumentError(`agent-card.json is invalid JSON: ${e.message}`)
    }
  }
  if (card === null || typeof card !== 'object' || Array.isArray(card)) {
    throw new InvalidArgumentError('an agent card must be an object (or the path to agent-card.json)')
  }
  let plain
  try {
    plain = JSON.parse(JSON.stringify(card)) // what the card is as JSON: functions, symbols and undefined drop out
  } catch (e) {
    throw new InvalidArgumentError(`an agent card must be plain JSON data: ${e.message}`)
  }
  const r = native.validateCard(plain)
  if (r.error) throw new InvalidArgumentError(r.error)
  return card
}

/**
 * Start an agent instance: register, subscribe to the control channel and run `handler(task, ctx)`
 * for every task. Resolves with a handle once the instance is registered.
 */
async function startAgentInstance(options) {
  if (options === null || typeof options !== 'object') throw new InvalidArgumentError('startAgentInstance(options) needs an options object')
  const { handler, card } = options
  if (typeof handler !== 'function') throw new InvalidArgumentError('startAgentInstance needs a handler function: handler(task, ctx)')
  if (card !== undefined) loadCard(card)
  if (options.logger !== undefined) setLogger(options.logger)
  const runtime = card?.runtime ?? {}
  const agentName = options.agentName ?? card?.identity?.agentName
  if (options.maxRunningTimeSec !== undefined && runtime.maxRunningTimeSec !== undefined && options.maxRunningTimeSec !== runtime.maxRunningTimeSec) {
    // AGT-15: the option wins over the card, and says so once
    log('info', `maxRunningTimeSec ${options.maxRunningTimeSec} from the options overrides the card's ${runtime.maxRunningTimeSec}`, { agentName })
  }
  let taskClient = null
  let agent = null
  // The engine awaits each task's promise, but a promise of JS is only kept alive by what refers
  // to it: a handler waiting on something nobody else holds (a never-settling promise, a signal
  // listener) would be collected with it, and the task would end "oneshot canceled". The running
  // tasks' promises are held here until they settle.
  const inflight = new Set()
  const runTask = async (nctx) => {
    const ctx = new TaskContext(nctx, taskClient, (id, reason) => (agent ? agent.failStream(id, reason) : Promise.resolve()))
    try {
      const result = await handler(nctx.task, ctx)
      const artifacts = result && Array.isArray(result.artifacts) ? result.artifacts : []
      for (const a of artifacts) await ctx.publishArtifact(a.data, a)
      return null
    } catch (err) {
      return (err && err.message) || String(err) || 'Agent instance error'
    }
  }
  const run = (nctx) => {
    const p = runTask(nctx)
    inflight.add(p)
    p.finally(() => inflight.delete(p))
    return p
  }
  agent = await native.NativeAgent.start(
    {
      agentName: agentName ?? '',
      apiKey: options.apiKey,
      cdmUrl: options.cdmUrl,
      baseUrl: options.baseUrl,
      realtimeOrigin: options.realtimeOrigin,
      concurrency: options.concurrency ?? runtime.concurrency,
      expectedInstances: options.expectedInstances ?? runtime.expectedInstances,
      maxPendingBacklog: options.maxPendingBacklog ?? runtime.maxPendingBacklog,
      maxRunningTimeSec: options.maxRunningTimeSec ?? runtime.maxRunningTimeSec,
      listing: options.listing,
      terminateGraceMs: options.terminateGraceMs,
      longPollTimeoutMs: require('./client.js').longPollTimeout(options),
      allowInsecureHttp: require('./client.js').insecureOption(options),
      net: require('./net.js').netOptions(options),
      streams: Object.entries(card?.streams ?? options.streams ?? {}).map(([name, d]) => [name, d.direction, d.format, d.affinity ?? 'dedicated']),
    },
    run,
  )
  // the agent-to-agent client acts as this agent: its access token, keyset and network
  const { TaskClient } = require('./client.js')
  taskClient = new TaskClient(agent.taskClient())
  return {
    instanceId: agent.instanceId,
    agentName: agent.agentName,
    controlChannel: agent.controlChannel,
    subscribeKey: agent.subscribeKey,
    /** Handlers running now. */
    get activeTasks() {
      return agent.activeTasks
    },
    billingMode: agent.billingMode,
    /** The CDM document the instance was configured from (keysets, `api.baseUrl`, …). */
    cdmConfig: agent.cdmConfig,
    /** The agent-to-agent client (the same one handlers get as `ctx.taskClient`). */
    taskClient,
    /** The instance's backend identity (its access token from registration, refreshed as needed). */
    agentAuth: require('./auth.js').AgentAuth.fromNative(agent.agentAuth),
    /**
     * Publish a terminal (`{ state: 'completed' | 'failed' | 'canceled', reason?, error?, ... }`)
     * for a task of this instance with its cached credentials, e.g. a pipe task whose handler has
     * returned. Rejects for a task this instance holds no credentials for.
     */
    publishTerminal: (taskId, terminal) => {
      if (typeof taskId !== 'string' || taskId === '') return Promise.reject(new InvalidArgumentError('publishTerminal(taskId, { state }) needs a taskId'))
      if (terminal === null || typeof terminal !== 'object') return Promise.reject(new InvalidArgumentError('publishTerminal(taskId, { state }) needs the terminal object'))
      return agent.publishTerminal(taskId, jsonData(terminal, 'publishTerminal', 'terminal'))
    },
    /**
     * End a stream for good: every task that holds it gets terminal `failed` with `error: reason`.
     * An unknown stream id does nothing.
     */
    failStream: (streamId, reason) => {
      if (typeof streamId !== 'string') return Promise.reject(new InvalidArgumentError('failStream(streamId, reason) needs a streamId'))
      return agent.failStream(streamId, typeof reason === 'string' && reason ? reason : 'stream_failed')
    },
    /** Stop taking tasks; running handlers get `graceMs` (default 10 s) to finish. Idempotent. */
    stop: async (graceMs) => {
      await agent.stop(graceMs)
      taskClient.destroy()
    },
  }
}

module.exports = { TaskContext, startAgentInstance, loadCard }
