'use strict'
// TaskSession: a thin JS face over the native session. The engine does dedup, first-terminal-wins
// and cancel_requested-once; this class only fans events out to listeners and keeps what late
// listeners replay.

const { Listeners } = require('./callbacks.js')
const { BlocksError, ClosedError, InvalidArgumentError, StreamUnavailableError, TimeoutError, TransportError, makeError } = require('./errors.js')
const { log } = require('./log.js')
const { StreamHandle, StreamRef } = require('./stream.js')
const fs = require('node:fs')
const path = require('node:path')
const parts = require('./parts.js')

const DRAIN_WINDOW_MS = 30_000

const TERMINAL = new Set(['completed', 'failed', 'canceled'])

class TaskSession {
  #native
  #client
  #listeners
  #terminal = null
  #cancelRequested = null
  #artifacts = []
  #events = []
  #closed = false
  #waiters = new Set()
  #streams = new Map()
  #opened = new Map()
  #streamWaiters = new Set()
  #drainWindowMs = DRAIN_WINDOW_MS
  #autoDrain = true
  #closing = null
  /** The drain window's timer after a terminal (cleared by close()). */
  #drainTimer = null
  /** Resolves once the catch-up events went to the listeners (see the constructor). */
  #caughtUp = Promise.resolve()
  #pendingCatchUp = false

  /**
   * @internal `catchUp`: events the task published before the session went live (read from
   * history when it opened) are delivered to `onEvent`/`onProgress` on the next tick, before any
   * live event, so listeners added right after `await sendMessage()` miss nothing.
   */
  constructor(native, client, { catchUp = false, autoDrain = true, drainWindowMs = DRAIN_WINDOW_MS } = {}) {
    this.#native = native
    this.#client = client
    this.#autoDrain = autoDrain
    this.#drainWindowMs = drainWindowMs
    this.#listeners = new Listeners((err, ctx) => this.#reportError(err, ctx))
    const info = native.info
    this.taskId = info.taskId
    this.ownerId = info.ownerId
    this.orgId = info.orgId
    this.agentName = info.agentName ?? undefined
    this.readToken = info.readToken
    this.statusChannel = info.statusChannel
    this.idempotent = info.idempotent
    this.queued = info.queued
    this.pushConfigId = info.pushConfigId ?? undefined
    const initial = native.initial()
    /** Current task state: undefined until known, then `running`…, finally the terminal state. */
    this.state = initial.state ?? undefined
    this.#terminal = initial.terminal ?? null
    this.#cancelRequested = initial.cancelRequested ?? null
    for (const a of initial.artifacts) this.#addArtifact(a)
    this.#events = [...initial.events]
    this.#closed = initial.closed
    this.#addStreams(initial.streams ?? [])
    const goLive = () => {
      if (!this.#closed && !this.#terminal) native.start((batch) => {
        for (const e of batch) this.#dispatch(e)
      })
    }
    // a task that ended before sendMessage() resolved (its terminal was in the history): the
    // session closes as it would at a live terminal (SESS-07), right after the catch-up events
    // reached the listeners, so `isClosed` is true once `waitForTerminal()` resolves
    const finishedEarly = catchUp && this.#terminal !== null && !this.#closed
    const early = catchUp ? initial.events : []
    if (early.length === 0) {
      if (finishedEarly) this.#drainThenClose()
      else goLive()
      return
    }
    this.#caughtUp = new Promise((resolve) =>
      setImmediate(() => {
        this.#pendingCatchUp = false
        for (const event of early) this.#deliverEarly(event)
        if (!finishedEarly) goLive()
        resolve()
        // after the replays waiting on the catch-up (queued first) and before the code that
        // awaited waitForTerminal() runs on
        if (finishedEarly) queueMicrotask(() => this.#drainThenClose())
      }),
    )
    this.#pendingCatchUp = true
  }

  /** A catch-up event: its effects (state, artifacts, terminal) are already applied and replay to late listeners. */
  #deliverEarly(event) {
    if (this.#closed || !event || typeof event.type !== 'string') return
    const ctx = this.#context(event)
    this.#listeners.emit('onEvent', [event], ctx)
    if (event.type === 'progress') this.#listeners.emit('onProgress', [event], ctx)
  }

  /** True once the session was closed (pre-closed idempotent hits start closed). */
  get isClosed() {
    return this.#closed
  }

  /** Progress events (status text, `progress`, `state`, stream announcements). */
  onProgress(cb) {
    return this.#listeners.add('onProgress', cb)
  }

  /** Artifact events; artifacts received so far are replayed at once. */
  onArtifact(cb) {
    const off = this.#listeners.add('onArtifact', cb)
    for (const a of this.#artifacts) this.#listeners.invoke('onArtifact', cb, [a], this.#context(a))
    return off
  }

  /** The terminal event (first one wins); replayed at once if the task already ended. */
  onTerminal(cb) {
    const off = this.#listeners.add('onTerminal', cb)
    const replay = () => this.#listeners.invoke('onTerminal', cb, [this.#terminal], this.#context(this.#terminal))
    if (this.#terminal && this.#pendingCatchUp) this.#caughtUp.then(replay)
    else if (this.#terminal) replay()
    return off
  }

  /** The backend's cancel acknowledgement (at most once, never after a terminal). */
  onCancelRequested(cb) {
    const off = this.#listeners.add('onCancelRequested', cb)
    if (this.#cancelRequested && !this.#terminal) {
      this.#listeners.invoke('onCancelRequested', cb, [this.#cancelRequested], this.#context(this.#cancelRequested))
    }
    return off
  }

  /** Every event with a `type`, before the typed listeners. */
  onEvent(cb) {
    return this.#listeners.add('onEvent', cb)
  }

  /** Errors thrown by listeners: `cb(error, { entryPoint, callbackType, event })`. */
  onError(cb) {
    return this.#listeners.add('onError', cb)
  }

  /**
   * Streams announced by the agent: `onStream(cb)` or `onStream(predicate, cb)`; known streams are
   * replayed at once.
   */
  onStream(predicateOrCb, maybeCb) {
    const cb = maybeCb ?? predicateOrCb
    const predicate = maybeCb ? predicateOrCb : null
    const wrapped = (ref) => {
      if (predicate) {
        let ok = false
        try {
          ok = predicate(ref)
        } catch (err) {
          this.#reportError(err, { entryPoint: 'taskSession', callbackType: 'streamPredicate', event: ref.descriptor })
        }
        if (!ok) return
      }
      return cb(ref)
    }
    const off = this.#listeners.add('onStream', wrapped)
    for (const ref of this.#streams.values()) this.#listeners.invoke('onStream', wrapped, [ref], { entryPoint: 'taskSession', event: ref.descriptor })
    return off
  }

  /** Announced streams, in discovery order. */
  listStreams() {
    return [...this.#streams.values()]
  }

  /** A stream by runtime id or declared name. */
  getStream(id) {
    return this.#streams.get(id) ?? [...this.#streams.values()].find((r) => r.descriptor.declaredStream === id)
  }

  /**
   * Resolve with a stream ref: by id or declared name, or (without id) the only stream. Rejects
   * when no matching stream can come any more (finished or closed session).
   */
  waitForStream(id) {
    return this.waitForStreamWhere((r) => (id === undefined ? true : r.streamId === id || r.declaredStream === id), id === undefined)
  }

  /**
   * Resolve with the first stream ref for which `predicate(ref)` is true (the ref carries the
   * descriptor's fields too: `ref.streamId`, `ref.declaredStream`, ...).
   */
  waitForStreamWhere(predicate, single = false) {
    if (typeof predicate !== 'function') return Promise.reject(new InvalidArgumentError('waitForStreamWhere(predicate) needs a function (ref) => boolean'))
    const all = [...this.#streams.values()]
    if (single && all.length > 1) return Promise.reject(new InvalidArgumentError(`Multiple streams are announced (${all.map((r) => r.descriptor.streamId).join(', ')}): pass a stream id`))
    const found = all.find((r) => predicate(r))
    if (found) return Promise.resolve(found)
    if (this.#closed || this.#terminal) return Promise.reject(new ClosedError('No matching stream found: the session is finished, so no future stream announcements will arrive'))
    return new Promise((resolve, reject) => this.#streamWaiters.add({ predicate, resolve, reject }))
  }

  /** Open every stream this side can read (inbound or bidirectional for the caller). */
  async openAllStreams(options = {}) {
    const out = []
    for (const ref of this.#streams.values()) {
      if (ref.descriptor.localDirection === 'outbound') continue
      try {
        out.push(ref.open(options))
      } catch (err) {
        // unavailable streams are skipped; bad options are the caller's to hear about
        if (!(err instanceof StreamUnavailableError)) throw err
      }
    }
    return out
  }

  #addStreams(descriptors) {
    const fresh = []
    for (const d of descriptors) {
      if (this.#streams.has(d.streamId)) continue
      const descriptor = { taskId: this.taskId, agentName: this.agentName, ...d }
      const ref = new StreamRef(descriptor, (streamId, options) => this.#openStream(streamId, options))
      this.#streams.set(d.streamId, ref)
      fresh.push(ref)
    }
    for (const ref of fresh) {
      this.#listeners.emit('onStream', [ref], { entryPoint: 'taskSession', event: ref.descriptor })
      for (const w of [...this.#streamWaiters]) {
        if (w.predicate(ref)) {
          this.#streamWaiters.delete(w)
          w.resolve(ref)
        }
      }
    }
  }

  #openStream(streamId, options) {
    const { reorderTimeoutMs, bundleSizeBytes, maxLatencyMs, maxMessageSize } = options
    if (reorderTimeoutMs !== undefined && !(Number.isFinite(reorderTimeoutMs) && reorderTimeoutMs >= 0 && reorderTimeoutMs <= 3_600_000)) {
      throw new InvalidArgumentError(`reorderTimeoutMs must be a number of milliseconds from 0 to 3600000, got ${String(reorderTimeoutMs)}`)
    }
    const writer = { bundleSizeBytes, maxLatencyMs, maxMessageSize }
    for (const [name, v] of Object.entries(writer)) {
      if (v !== undefined && typeof v !== 'number') throw new InvalidArgumentError(`open(options): ${name} must be a number, got ${typeof v}`)
    }
    const r = this.#native.openStream(streamId, reorderTimeoutMs, this.ownerId || this.agentName || 'blocks', writer)
    if (r && typeof r.propsJson === 'string') throw makeError(r.kind, r.message, r.propsJson)
    const handle = new StreamHandle(r)
    handle.affinity = this.#streams.get(streamId)?.descriptor.affinity ?? 'dedicated'
    this.#opened.set(streamId, handle)
    return handle
  }

  /**
   * Download an artifact (a ref or an artifact event): `{ data: Buffer, mimeType, fileName }`.
   * Works on live, closed and pre-closed sessions.
   */
  downloadArtifact(refOrEvent) {
    return parts.downloadArtifact(refOrEvent, this)
  }

  /** @internal */
  _downloadFile(ref) {
    return this.#native.downloadFile(ref)
  }

  /** @internal The download URL of a file artifact (it carries the read token). */
  _fileUrl(ref) {
    const r = this.#native.fileUrl(ref)
    if (typeof r !== 'string') throw makeError(r.kind, r.message, r.propsJson)
    return r
  }

  #addArtifact(event) {
    this.#artifacts.push(event)
    if (event && event.artifactRef && typeof event.artifactRef === 'object') parts.rememberArtifact(event.artifactRef, this)
  }

  /**
   * Write every artifact into `dir` (created if needed) and resolve with the absolute paths, in
   * `listArtifacts()` order. Names come from the artifact's `fileName` reduced to a safe base name
   * (never a path; control characters and reserved device names replaced; `artifact-<i>` when
   * empty). Nothing is written through a symlink, and an existing file is never replaced unless
   * `{ overwrite: true }`: the artifact takes the next free name (`-1`, `-2`… before the
   * extension). File artifacts are streamed to disk; a failed download leaves nothing behind.
   */
  async saveArtifacts(dir, options = {}) {
    return parts.saveArtifacts(this.listArtifacts(), dir, options, (ref, tmp) => this.#native.downloadFileTo(ref, tmp))
  }

  /**
   * The artifacts so far as `ArtifactRef`s, in order (a fresh array each call). Each ref also
   * carries, not enumerable, `outputId` and `artifactRef` (itself), so code written for the
   * artifact events this returned before keeps working.
   */
  listArtifacts() {
    return this.#artifacts.map((e) => parts.refWithEvent(e))
  }

  /** Typed events seen by this session (history events for connect sessions, then live ones). */
  listEvents() {
    return [...this.#events]
  }

  /**
   * Resolve with the terminal event. Resolves at once if the task already ended; rejects on
   * timeout (`timeoutMs`) and when the session is closed first.
   */
  waitForTerminal(timeoutMs) {
    if (timeoutMs !== undefined && !(typeof timeoutMs === 'number' && timeoutMs >= 0 && Number.isFinite(timeoutMs))) {
      return Promise.reject(new InvalidArgumentError(`waitForTerminal(timeoutMs) needs a non-negative number of milliseconds, got ${timeoutMs}`))
    }
    // after the catch-up events reached the listeners, so a caller that awaits the terminal and
    // then reads what its listeners collected misses nothing
    if (this.#terminal) return this.#caughtUp.then(() => this.#terminal)
    if (this.#closed) return Promise.reject(new ClosedError('TaskSession closed'))
    return new Promise((resolve, reject) => {
      const waiter = { resolve, reject, timer: null }
      if (timeoutMs !== undefined) {
        waiter.timer = setTimeout(() => {
          this.#waiters.delete(waiter)
          reject(new TimeoutError(`waitForTerminal timed out after ${timeoutMs}ms`))
        }, timeoutMs)
      }
      this.#waiters.add(waiter)
    })
  }

  /** Ask the agent to stop cooperatively (CancelTask). */
  cancel() {
    return this.#client.cancelTask(this.taskId)
  }

  /** Force the task to end (TerminateTask). */
  terminate() {
    return this.#client.terminateTask(this.taskId)
  }

  /**
   * Stop listening and release the realtime client; opened streams are ended. Resolves once they
   * have (never rejects). Idempotent: later calls return the same promise.
   */
  close() {
    if (this.#closing) return this.#closing
    this.#closed = true
    clearTimeout(this.#drainTimer)
    this.#native.close()
    for (const w of this.#waiters) {
      clearTimeout(w.timer)
      w.reject(new ClosedError('TaskSession closed'))
    }
    this.#waiters.clear()
    for (const w of this.#streamWaiters) w.reject(new ClosedError('TaskSession closed'))
    this.#streamWaiters.clear()
    this.#listeners.clear()
    this.#closing = Promise.allSettled([...this.#opened.values()].map((h) => h.end())).then(() => undefined)
    return this.#closing
  }

  /** Close and wait until every opened stream has ended (the same as `await close()`). */
  async asyncClose() {
    await this.close()
  }

  async [Symbol.asyncDispose]() {
    await this.asyncClose()
  }

  /**
   * After the terminal: let opened streams finish (up to the drain window), then close;
   * `autoDrain: false` closes at once (ending the streams).
   */
  #drainThenClose() {
    // a shared stream outlives the task (other tasks keep it) and never sends an end marker:
    // waiting for one would only hold the caller; it ends with the session
    const active = [...this.#opened.values()].filter((h) => h.isActive && h.direction !== 'outbound' && h.affinity !== 'shared')
    if (active.length === 0 || !this.#autoDrain) return this.close()
    const done = active.map((h) => new Promise((resolve) => h.onInboundDone(resolve)))
    this.#drainTimer = setTimeout(() => this.close(), this.#drainWindowMs)
    Promise.all(done).then(() => this.close())
  }

  #context(event) {
    return { entryPoint: 'taskSession', event }
  }

  #reportError(err, ctx) {
    if (ctx.callbackType !== 'onError' && this.#listeners.has('onError')) {
      this.#listeners.emit('onError', [err, ctx], ctx)
      return
    }
    const msg = err instanceof Error ? err.message : String(err)
    log('warn', `${ctx.callbackType} callback of task ${this.taskId} threw: ${msg}`, { taskId: this.taskId, callbackType: ctx.callbackType })
  }

  #dispatch({ event }) {
    if (event && typeof event.$malformed === 'string') {
      // skipped by the engine; the session carries on
      const err = new BlocksError(`skipped ${event.$malformed} on ${this.statusChannel}: ${event.message}`)
      this.#reportError(err, { entryPoint: 'taskSession', callbackType: 'malformedMessage', event: { raw: event.message } })
      return
    }
    if (event && typeof event.$lost === 'string') {
      // the subscription stopped reconnecting (RETRY-01: a session's retries are bounded)
      this.#reportError(new TransportError(event.$lost, { code: 'ENETDOWN' }), { entryPoint: 'taskSession', callbackType: 'subscription', event: {} })
      return
    }
    if (this.#closed || !event || typeof event.type !== 'string') return
    const ctx = this.#context(event)
    this.#events.push(event)
    this.#listeners.emit('onEvent', [event], ctx)
    switch (event.type) {
      case 'progress':
        if (event.streamEvent === 'stream_started') this.#addStreams(this.#native.streams())
        if (typeof event.state === 'string' && !TERMINAL.has(event.state)) this.state = event.state
        this.#listeners.emit('onProgress', [event], ctx)
        break
      case 'artifact':
        this.#addArtifact(event)
        this.#listeners.emit('onArtifact', [event], ctx)
        break
      case 'cancel_requested':
        this.#cancelRequested = event
        this.#listeners.emit('onCancelRequested', [event], ctx)
        break
      case 'terminal':
        this.#terminal = event
        this.state = event.state
        this.#listeners.emit('onTerminal', [event], ctx)
        for (const w of this.#waiters) {
          clearTimeout(w.timer)
          w.resolve(event)
        }
        this.#waiters.clear()
        for (const w of this.#streamWaiters) w.reject(new ClosedError('No matching stream found: the task ended'))
        this.#streamWaiters.clear()
        this.#drainThenClose()
        break
      default:
        break
    }
  }
}

module.exports = { TaskSession }
