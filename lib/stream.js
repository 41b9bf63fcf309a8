'use strict'
// Streams in JS: StreamHandle (an open stream, agent or caller side) and StreamRef (an announced
// stream a caller may open). Ordering, dedup, multipart and batching happen in the engine.

const { Readable } = require('node:stream')
const { Listeners } = require('./callbacks.js')
const { InvalidArgumentError } = require('./errors.js')
const { log } = require('./log.js')

/** An open stream. Items can be consumed once: through `inbound`, `bytes()`, `events()` or `readable()`. */
class StreamHandle {
  #native
  #listeners
  #done = false
  #ended = null
  #consuming = false

  /** @internal */
  constructor(nativeStream) {
    this.#native = nativeStream
    this.#listeners = new Listeners((err, ctx) => log('warn', `stream ${this.streamId} ${ctx.callbackType} callback threw: ${err && err.message}`))
    this.streamId = nativeStream.streamId
    this.channel = nativeStream.channel
    this.uuid = nativeStream.uuid
    this.format = nativeStream.format
    /** Direction from this side's point of view (`outbound` = this side writes). */
    this.direction = nativeStream.direction
    /** `dedicated` or `shared` (a shared stream is written for every pipe task that holds it). */
    this.affinity = nativeStream.affinity
    this.external = false
  }

  /** True until this side ended it (for a shared stream: until this task released it). */
  get isActive() {
    return this.#ended === null && this.#native.isActive
  }

  /** Write bytes/text (bytes streams) or a JSON value (events streams). */
  write(data) {
    if (Buffer.isBuffer(data) || data instanceof Uint8Array) return this.#native.writeBytes(Buffer.from(data.buffer, data.byteOffset, data.byteLength))
    if (data instanceof ArrayBuffer) return this.#native.writeBytes(Buffer.from(data))
    // the engine refuses raw strings on events streams (InvalidArgumentError, thrown synchronously)
    if (typeof data === 'string') return this.#native.writeText(data)
    if (data === undefined) throw new InvalidArgumentError('write() needs data')
    return this.#native.writeEvent(data)
  }

  /** Publish what is buffered now. */
  flush() {
    return this.#native.flush()
  }

  /**
   * Flush, publish the end marker where due and stop. Idempotent. On the agent side it is
   * task-scoped: a shared stream goes on until the last task that holds it ends it.
   */
  end() {
    if (this.#ended === null) {
      this.#ended = this.#native.end()
      const after = () => {
        // ending it here also ends its inbound side: whoever waits for that (a session's drain)
        // is released
        if (!this.#done && this.direction !== 'outbound') {
          this.#done = true
          this.#listeners.emit('onInboundDone', [], {})
        }
        this.#listeners.emit('onEnd', [], {})
      }
      this.#ended.then(after, after)
    }
    return this.#ended
  }

  /** `cb()` once this side has ended the stream (at once if it already has). */
  onEnd(cb) {
    const off = this.#listeners.add('onEnd', cb)
    if (this.#ended !== null) this.#ended.then(() => this.#listeners.invoke('onEnd', cb, [], {}), () => {})
    return off
  }

  /** Errors of the stream: `cb({ category, fatal, error, channel, timestamp })`. */
  onError(cb) {
    return this.#listeners.add('onError', cb)
  }

  /** `cb()` once the inbound side has ended (at once if it already has). */
  onInboundDone(cb) {
    const off = this.#listeners.add('onInboundDone', cb)
    if (this.#done) this.#listeners.invoke('onInboundDone', cb, [], {})
    return off
  }

  /** Push-style reading: `cb(item)` for every raw inbound item; returns an unsubscribe. */
  onInbound(cb) {
    const off = this.#listeners.add('onInbound', cb)
    if (!this.#consuming) {
      ;(async () => {
        for await (const item of this.inbound) this.#listeners.emit('onInbound', [item], {})
      })().catch((err) => log('warn', `stream ${this.streamId}: ${err.message}`))
    }
    return off
  }

  async #nextItem() {
    while (!this.#done) {
      const it = await this.#native.next()
      if (it === null || it === undefined) {
        this.#done = true
        // a read-only stream is finished once its inbound side is: release it
        if (this.direction === 'inbound') await this.end()
        this.#listeners.emit('onInboundDone', [], {})
        return null
      }
      if (it.kind === 'error') {
        const e = { category: it.category, fatal: Boolean(it.fatal), error: it.message, channel: this.channel, timestamp: Date.now() }
        this.#listeners.emit('onError', [e], {})
        if (e.fatal) {
          // fatal (access denied, bad request): the stream is over
          this.#done = true
          await this.end()
          this.#listeners.emit('onInboundDone', [], {})
          return null
        }
        continue
      }
      return it
    }
    return null
  }

  #claim() {
    if (this.#consuming) throw new InvalidArgumentError(`stream ${this.streamId} is already being read (use one of inbound, bytes(), events(), readable(), onInbound())`)
    if (this.direction === 'outbound') throw new InvalidArgumentError('Cannot read from an outbound-only stream')
    this.#consuming = true
  }

  /** Raw items in sequence order: `{ format, data, seq, encoding }`. */
  get inbound() {
    this.#claim()
    const self = this
    return (async function* inbound() {
      try {
        for (let it = await self.#nextItem(); it; it = await self.#nextItem()) {
          const data = it.kind === 'bytes' ? Buffer.concat(it.chunks) : it.data
          yield { format: it.kind, data, seq: it.seq, encoding: it.encoding }
        }
      } finally {
        if (!self.#done) await self.end()
      }
    })()
  }

  /** Decoded chunks (one Buffer per written chunk), in order. */
  bytes() {
    this.#claim()
    const self = this
    return (async function* bytes() {
      try {
        for (let it = await self.#nextItem(); it; it = await self.#nextItem()) {
          if (it.kind === 'bytes') for (const c of it.chunks) yield c
          else if (it.kind === 'events') for (const e of it.data) yield Buffer.from(JSON.stringify(e))
        }
      } finally {
        if (!self.#done) await self.end()
      }
    })()
  }

  /** JSON events, one per event (batches flattened), in order. */
  events() {
    this.#claim()
    const self = this
    return (async function* events() {
      try {
        for (let it = await self.#nextItem(); it; it = await self.#nextItem()) {
          if (it.kind === 'events') yield* it.data
          else if (it.kind === 'raw') yield it.data
        }
      } finally {
        if (!self.#done) await self.end()
      }
    })()
  }

  /** A Node Readable of the stream's bytes, ending at stream end. */
  readable() {
    return Readable.from(this.bytes(), { objectMode: false })
  }
}

/**
 * An external stream (agent side): the SDK did the setup handshake; another process writes to
 * `channel` with `token` (through a stream client of its own). `activate({ metadata })` completes
 * the handshake, and the network then announces the stream to the caller. Reading and writing
 * members throw: the SDK never touches the stream's data.
 */
class ExternalStreamHandle {
  #native
  #listeners
  #ended = null
  /** @internal */
  constructor(nativeExternal) {
    this.#native = nativeExternal
    this.#listeners = new Listeners((err, ctx) => log('warn', `stream ${this.streamId} ${ctx.callbackType} callback threw: ${err && err.message}`))
    this.streamId = nativeExternal.streamId
    this.channel = nativeExternal.channel
    /** The writer's stream token: hand it to the process that writes. */
    this.token = nativeExternal.token
    this.external = true
  }
  get isActive() {
    return this.#ended === null
  }
  /** Complete the handshake (`phase: "activate"`); the caller then sees the stream announced. */
  activate(options = {}) {
    if (options === null || typeof options !== 'object') throw new InvalidArgumentError('activate(options) takes { metadata? }')
    return this.#native.activate(options.metadata)
  }
  /** Release this task's hold (fires `onEnd`). Idempotent. */
  end() {
    if (this.#ended === null) {
      this.#ended = this.#native.end()
      this.#ended.then(() => this.#listeners.emit('onEnd', [], {}), () => {})
    }
    return this.#ended
  }
  onEnd(cb) {
    const off = this.#listeners.add('onEnd', cb)
    if (this.#ended !== null) this.#ended.then(() => this.#listeners.invoke('onEnd', cb, [], {}), () => {})
    return off
  }
}
for (const member of ['write', 'flush', 'bytes', 'events', 'readable', 'onError', 'onInbound', 'onInboundDone']) {
  ExternalStreamHandle.prototype[member] = function externalOnly() {
    throw new InvalidArgumentError(`${member}() is not available on an external stream: its writer is another process (give it .token and .channel)`)
  }
}
for (const member of ['inbound', 'uuid']) {
  Object.defineProperty(ExternalStreamHandle.prototype, member, {
    get() {
      throw new InvalidArgumentError(`${member} is not available on an external stream: its writer is another process (give it .token and .channel)`)
    },
  })
}

/** The descriptor fields a StreamRef also exposes directly (so `ref.streamId` works like `ref.descriptor.streamId`). */
const DESCRIPTOR_FIELDS = ['taskId', 'streamId', 'agentName', 'channel', 'token', 'agentDirection', 'localDirection', 'format', 'affinity', 'metadata', 'declaredStream']

/**
 * A stream announced by the agent. `open()` returns the stream client at once (it connects in the
 * background; errors surface from its iterators and writes). The descriptor's fields are readable
 * on the ref itself too, so a predicate written for a descriptor works on a ref.
 */
class StreamRef {
  #open
  #handle = null
  /** @internal */
  constructor(descriptor, open) {
    /** `{ taskId, streamId, agentName, channel, token, agentDirection, localDirection, format, affinity, metadata, declaredStream }` */
    this.descriptor = Object.freeze({ ...descriptor })
    this.#open = open
  }
  get isOpen() {
    return Boolean(this.#handle && this.#handle.isActive)
  }
  /**
   * The stream client (the same one while it is active). `reorderTimeoutMs`: how long a gap is
   * waited for (default 750; 0 = arrival order). For what the caller writes (inbound and
   * bidirectional streams), as an agent's `createStream` takes them: `bundleSizeBytes`,
   * `maxLatencyMs` and `maxMessageSize` (above 512; a larger frame is sent in parts); each
   * defaults to its `STREAM_*` variable, else the built-in value. Throws `StreamUnavailableError` for a
   * never-opened stream of a finished task, and for a stream that has already ended.
   */
  open(options = {}) {
    if (this.#handle && this.#handle.isActive) return this.#handle
    if (options === null || typeof options !== 'object') throw new InvalidArgumentError('open(options) takes an options object, e.g. { reorderTimeoutMs: 750 }')
    this.#handle = this.#open(this.descriptor.streamId, options)
    return this.#handle
  }
}
for (const field of DESCRIPTOR_FIELDS) {
  Object.defineProperty(StreamRef.prototype, field, {
    get() {
      return this.descriptor[field]
    },
    enumerable: false,
  })
}

module.exports = { ExternalStreamHandle, StreamHandle, StreamRef }
