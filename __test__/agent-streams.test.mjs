// Issue 18: agent-side streams as the official SDK has them: shared-affinity streams (one writer
// for every pipe task that holds it), external streams (the SDK only does the handshake),
// failStream, onActivate, message size, STREAM_* defaults, stream token lifetime. The agents'
// realtime traffic goes through a recording proxy so the setup messages can be read.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { startNetwork, sdk, deferred, aborted } from './helpers.mjs'
import { startHttpProxy } from './httpproxy.mjs'

const { textPart, InvalidArgumentError } = sdk

let env
let proxy
let client
before(async () => {
  env = await startNetwork()
  proxy = await startHttpProxy(env.net.url)
  client = await env.client()
})
after(async () => {
  // the agents first: they publish through the proxy until they stop
  await env.stop()
  await proxy.close()
})

const card = (streams, taskKinds = ['pipe']) => ({ identity: { agentName: 'x' }, capabilities: { taskKinds }, runtime: { handler: './h.js' }, streams })
/** An agent whose realtime traffic (setup handshakes, stream frames) goes through the proxy. */
const agent = (name, handler, extra = {}) => env.agent(name, handler, { realtimeOrigin: proxy.url, ...extra })
/** The stream_setup messages the agent published for a task. */
const setups = (taskId) => proxy.find((r) => r.path.includes(`/setup.`) && r.path.endsWith(`.${taskId}/0`) && r.json?.type === 'stream_setup').map((r) => r.json)
/** Frames published on a stream channel. */
const frames = (channel) => proxy.find((r) => r.path.includes(`/${channel}/`) && r.json?.type?.startsWith('stream_')).map((r) => r.json)

/** A raw read of a channel's replay cache with the network's service token. */
async function cached(channel) {
  const url = `${env.net.url}/v2/subscribe/sub-c-devnet-free/${channel}/0?tt=1000&uuid=probe&auth=${env.net.serviceToken}`
  const body = await (await fetch(url)).json()
  return body.m.map((m) => m.d)
}

test('ASTR-03 STRM-21 a shared stream: the first task sets it up (embedded), later tasks activate and share one writer; it ends with its last holder and never sends an end marker', async () => {
  // taskId → deferred of what its handler set up (whichever side comes first creates it)
  const slots = new Map()
  const slot = (id) => slots.get(id) ?? slots.set(id, deferred()).get(id)
  await agent('ticker_shared', async (task, ctx) => {
    const s = await ctx.createStream({ declaredStream: 'prices', subscribeGraceMs: 0 })
    const again = await Promise.all([ctx.createStream({ declaredStream: 'prices' }), ctx.createStream({ declaredStream: 'prices' })])
    slot(task.taskId).resolve({ stream: s, same: again.every((a) => a === s) })
    await aborted(ctx.cancelSignal)
    return {}
  }, { card: card({ prices: { direction: 'outbound', format: 'events', affinity: 'shared' } }), concurrency: 4 })
  const open = async () => {
    const session = await client.sendMessage({ agentName: 'ticker_shared', taskKind: 'pipe', duration: 10, requestParts: [] })
    const ref = await session.waitForStream('prices')
    const t = await slot(session.taskId).promise
    return { session, ref, t, it: ref.open().events()[Symbol.asyncIterator]() }
  }
  const a = await open()
  const b = await open()
  assert.equal(a.ref.streamId, 'prices', 'a shared stream is named by its declared key')
  assert.equal(b.ref.channel, 'stream.ticker_shared.prices')
  const [ta, tb] = [a.t, b.t]
  assert.equal(ta.same && tb.same, true, 'the same task asking again (even concurrently) gets the same stream')
  assert.equal(ta.stream.affinity, 'shared')
  assert.deepEqual(setups(a.session.taskId).map((m) => [m.phase, m.affinity]), [['embedded', 'shared']])
  assert.deepEqual(setups(b.session.taskId).map((m) => [m.phase, m.affinity]), [['activate', 'shared']], 'no second writer: the later task activates')
  // one writer: what task A writes reaches both callers, with one sequence across tasks
  ta.stream.write({ n: 1 })
  tb.stream.write({ n: 2 })
  await ta.stream.flush()
  await tb.stream.flush()
  assert.deepEqual([(await a.it.next()).value, (await a.it.next()).value], [{ n: 1 }, { n: 2 }])
  assert.deepEqual([(await b.it.next()).value, (await b.it.next()).value], [{ n: 1 }, { n: 2 }])
  // task A lets go: B's callers keep receiving from the same writer
  await a.session.cancel()
  await a.session.waitForTerminal(15_000)
  assert.equal(ta.stream.isActive, false, 'released for task A')
  tb.stream.write({ n: 3 })
  await tb.stream.flush()
  assert.deepEqual((await b.it.next()).value, { n: 3 })
  await b.session.cancel()
  await b.session.waitForTerminal(15_000)
  const published = frames('stream.ticker_shared.prices')
  // one writer: one sequence across both tasks (frames numbered 1, 2, … however the writes were
  // batched into frames), carrying the events in the order written
  assert.deepEqual(published.map((f) => f.seq), published.map((f, i) => i + 1), `one sequence: ${JSON.stringify(published)}`)
  assert.deepEqual(published.flatMap((f) => f.events), [{ n: 1 }, { n: 2 }, { n: 3 }])
  assert.equal(published.some((f) => f.type === 'stream_end'), false)
  assert.equal((await cached('stream.ticker_shared.prices')).some((m) => m.type === 'stream_end'), false, 'no stale marker for a late reader')
})

test('ASTR-04 CTX-05 shared streams only on pipe tasks, never external; refused before any setup', async () => {
  const errors = deferred()
  await agent('rules_shared', async (task, ctx) => {
    const out = {}
    for (const [k, opts] of Object.entries({ shared: { declaredStream: 'live' }, sharedExternal: { declaredStream: 'live', external: true }, external: { declaredStream: '_default', external: true } })) {
      try {
        await ctx.createStream(opts)
        out[k] = 'opened'
      } catch (e) {
        out[k] = e.message
      }
    }
    errors.resolve(out)
    return {}
  }, { card: card({ _default: { direction: 'outbound', format: 'bytes' }, live: { direction: 'outbound', format: 'events', affinity: 'shared' } }, ['request', 'pipe']) })
  const s = await client.sendMessage({ agentName: 'rules_shared', requestParts: [], stream: true })
  const out = await errors.promise
  assert.equal(out.shared, 'Shared-affinity streams are not supported on request tasks')
  assert.equal(out.sharedExternal, 'Shared-affinity external streams are not supported')
  assert.match(out.external, /external/)
  await s.waitForTerminal(15_000)
  assert.deepEqual(setups(s.taskId), [], 'nothing was set up')
})

test('ASTR-05 an external stream: a token for another writer, activate() announces it, the data members throw', async () => {
  const got = deferred()
  await agent('ext_streamer', async (task, ctx) => {
    const s = await ctx.createStream({ external: true })
    const thrown = {}
    for (const m of ['write', 'bytes', 'events', 'readable', 'onError']) {
      try {
        s[m]({})
      } catch (e) {
        thrown[m] = e instanceof InvalidArgumentError && /external stream/.test(e.message)
      }
    }
    for (const m of ['inbound', 'uuid']) {
      try {
        void s[m]
      } catch (e) {
        thrown[m] = /external stream/.test(e.message)
      }
    }
    got.resolve({ streamId: s.streamId, channel: s.channel, token: s.token, external: s.external, thrown })
    await s.activate({ metadata: { writer: 'elsewhere' } })
    await aborted(ctx.cancelSignal)
    return {}
  }, { card: card({ feed: { direction: 'outbound', format: 'events' } }) })
  const session = await client.sendMessage({ agentName: 'ext_streamer', taskKind: 'pipe', duration: 5, requestParts: [] })
  const ext = await got.promise
  assert.equal(ext.external, true)
  assert.equal(ext.streamId, `${session.taskId}-1`)
  assert.ok(typeof ext.token === 'string' && ext.token.length > 0)
  assert.deepEqual(Object.values(ext.thrown), Array(7).fill(true), JSON.stringify(ext.thrown))
  const ref = await session.waitForStream('feed')
  assert.deepEqual(ref.metadata, { writer: 'elsewhere' })
  assert.deepEqual(setups(session.taskId).map((m) => m.phase), ['token_request', 'activate'])
  // "another process" writes with the token: a raw publish of one events frame
  const reader = ref.open().events()[Symbol.asyncIterator]()
  const frame = { type: 'stream_events', protocolVersion: sdk.CURRENT_PROTOCOL_VERSION, streamId: ext.streamId, seq: 1, ts: Date.now(), encoding: 'utf8', events: [{ from: 'outside' }] }
  const url = `${env.net.url}/publish/pub-c-devnet-free/sub-c-devnet-free/0/${ext.channel}/0?uuid=ext-writer&store=0&auth=${ext.token}`
  assert.equal((await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(frame) })).status, 200)
  assert.deepEqual((await reader.next()).value, { from: 'outside' })
  await session.cancel()
  assert.equal((await session.waitForTerminal(15_000)).state, 'canceled')
})

test('ASTR-06 failStream(streamId, reason) fails every task that holds the stream; an unknown id does nothing; a throwing onActivate fails the stream with stream_crashed', async () => {
  const holders = []
  const handle = await agent('failing_streams', async (task, ctx) => {
    const crash = ctx.requestParts[0]?.text === 'crash'
    await ctx.createStream({
      declaredStream: 'room',
      subscribeGraceMs: 0,
      onActivate: crash
        ? () => {
            throw new Error('boom')
          }
        : undefined,
    })
    holders.push(task.taskId)
    await aborted(ctx.cancelSignal)
    return {}
  }, { card: card({ room: { direction: 'outbound', format: 'events', affinity: 'shared' } }), concurrency: 4 })
  const one = await client.sendMessage({ agentName: 'failing_streams', taskKind: 'pipe', duration: 5, requestParts: [textPart('a')] })
  const two = await client.sendMessage({ agentName: 'failing_streams', taskKind: 'pipe', duration: 5, requestParts: [textPart('b')] })
  await one.waitForStream('room')
  await two.waitForStream('room')
  await handle.failStream('no_such_stream', 'whatever')
  await handle.failStream('room', 'upstream_gone')
  for (const s of [one, two]) {
    const t = await s.waitForTerminal(15_000)
    assert.deepEqual([t.state, t.error], ['failed', 'upstream_gone'])
  }
  const crashed = await client.sendMessage({ agentName: 'failing_streams', taskKind: 'pipe', duration: 5, requestParts: [textPart('crash')] })
  const t = await crashed.waitForTerminal(15_000)
  assert.deepEqual([t.state, t.error], ['failed', 'stream_crashed'])
})

test('STRM-14 maxMessageSize splits large frames into multipart messages the caller reassembles; 512 or less is refused', async () => {
  const big = { text: 'x'.repeat(5000) }
  const refused = deferred()
  await agent('multipart_out', async (task, ctx) => {
    try {
      await ctx.createStream({ maxMessageSize: 512 })
    } catch (e) {
      refused.resolve(e.message)
    }
    const s = await ctx.createStream({ maxMessageSize: 1024, subscribeGraceMs: 0 })
    s.write(big)
    await s.end()
    return {}
  }, { card: card({ _default: { direction: 'outbound', format: 'events' } }, ['request']) })
  const session = await client.sendMessage({ agentName: 'multipart_out', requestParts: [], stream: true })
  const ref = await session.waitForStream()
  const got = []
  for await (const e of ref.open().events()) got.push(e)
  assert.deepEqual(got, [big])
  assert.match(await refused.promise, /maxMessageSize must be greater than 512/)
  const parts = frames(ref.channel).filter((f) => f.multipart)
  assert.ok(parts.length >= 6, `expected the 5 KB frame in ~1 KB parts, got ${parts.length}`)
  assert.ok(parts.every((p) => p.multipart.total === parts.length && p.seq === parts[0].seq))
})

test('STRM-19 STREAM_MAX_MESSAGE_SIZE and STREAM_BUNDLE_SIZE set the defaults; options override them', async () => {
  process.env.STREAM_MAX_MESSAGE_SIZE = '800'
  process.env.STREAM_BUNDLE_SIZE = '1'
  try {
    await agent('env_streams', async (task, ctx) => {
      const s = await ctx.createStream({ subscribeGraceMs: 0 })
      s.write({ text: 'y'.repeat(2000) }) // above 800 bytes: multipart by the env default
      s.write({ n: 1 })
      await s.end()
      return {}
    }, { card: card({ _default: { direction: 'outbound', format: 'events' } }, ['request']) })
    const session = await client.sendMessage({ agentName: 'env_streams', requestParts: [], stream: true })
    const ref = await session.waitForStream()
    const got = []
    for await (const e of ref.open().events()) got.push(e)
    assert.equal(got.length, 2)
    const fs = frames(ref.channel)
    assert.ok(fs.some((f) => f.multipart), 'STREAM_MAX_MESSAGE_SIZE=800 split the 2 KB frame')
    assert.ok(fs.filter((f) => f.type === 'stream_events' && !f.multipart).length >= 1, 'bundle size 1: the small event went in a frame of its own')
  } finally {
    delete process.env.STREAM_MAX_MESSAGE_SIZE
    delete process.env.STREAM_BUNDLE_SIZE
  }
})

test('AGT-15 the stream token lifetime: the pipe duration, else 60 for pipe tasks, else ceil(maxRunningTimeSec / 60)', async () => {
  await agent('ttl_probe', async (task, ctx) => {
    await ctx.createStream({ subscribeGraceMs: 0 })
    if (task.taskKind === 'pipe') await aborted(ctx.cancelSignal)
    return {}
  }, { card: card({ _default: { direction: 'outbound', format: 'bytes' } }, ['request', 'pipe']), maxRunningTimeSec: 90, concurrency: 4 })
  const req = await client.sendMessage({ agentName: 'ttl_probe', requestParts: [], stream: true })
  await req.waitForTerminal(15_000)
  const pipe = await client.sendMessage({ agentName: 'ttl_probe', taskKind: 'pipe', duration: 7, requestParts: [] })
  await pipe.waitForStream()
  assert.equal(setups(req.taskId)[0].durationMinutes, 2, 'maxRunningTimeSec 90 → 2 minutes')
  assert.equal(setups(pipe.taskId)[0].durationMinutes, 7)
  await pipe.cancel()
  await pipe.waitForTerminal(15_000)
})

test('STRM-18 stream ids: 1..92 bytes of [A-Za-z0-9_-]', () => {
  assert.doesNotThrow(() => sdk.validateStreamId('t_1-2'))
  assert.throws(() => sdk.validateStreamId(''), { message: 'Stream ID cannot be empty' })
  assert.throws(() => sdk.validateStreamId('a.b'), /Stream ID contains invalid characters/)
  assert.throws(() => sdk.validateStreamId('a'.repeat(93)), /Stream ID exceeds 92 byte limit/)
  assert.throws(() => sdk.validateStreamId(7), InvalidArgumentError)
})

test('STRM-16 network trouble on a stream reaches onError as non-fatal, and the stream goes on', async () => {
  const { startFaultProxy } = await import('./faultproxy.mjs')
  const fault = await startFaultProxy(env.net.url)
  const go = deferred()
  await agent('steady_stream', async (task, ctx) => {
    const s = await ctx.createStream({ subscribeGraceMs: 0 })
    s.write({ n: 1 })
    await s.flush()
    await go.promise
    s.write({ n: 2 })
    await s.end()
    return {}
  }, { card: card({ _default: { direction: 'outbound', format: 'events' } }, ['request']) })
  try {
    const reader = await sdk.TaskClient.create({ billingMode: 'free', apiKey: env.net.apiKey, cdmUrl: env.net.cdmUrl, realtimeOrigin: fault.url })
    const session = await reader.sendMessage({ agentName: 'steady_stream', requestParts: [], stream: true })
    const stream = (await session.waitForStream()).open()
    const errors = []
    const sawError = deferred()
    stream.onError((e) => {
      errors.push(e)
      sawError.resolve()
    })
    const it = stream.events()[Symbol.asyncIterator]()
    assert.deepEqual((await it.next()).value, { n: 1 })
    const pending = it.next()
    fault.refuse = true
    fault.reset()
    await sawError.promise
    fault.refuse = false
    go.resolve()
    assert.deepEqual((await pending).value, { n: 2 }, 'the stream went on after the outage')
    assert.equal((await it.next()).done, true)
    assert.equal(errors[0].fatal, false)
    assert.match(errors[0].category, /^(network_down|network_issues|timeout)$/)
    assert.equal(errors[0].channel, stream.channel)
    assert.doesNotMatch(errors[0].error, /auth=|tok_/, 'no token in the error')
    reader.destroy()
  } finally {
    await fault.close()
  }
})

test('STRM-13 SESS-08 a stream the caller ended itself counts as done: the session closes at the terminal, without waiting out the drain window', async () => {
  await agent('bidi_quiet', async (task, ctx) => {
    const s = await ctx.createStream({ subscribeGraceMs: 0 })
    s.write({ hi: 1 })
    await s.flush()
    await aborted(ctx.cancelSignal)
    return {}
  }, { card: card({ chat: { direction: 'bidirectional', format: 'events' } }) })
  const session = await client.sendMessage({ agentName: 'bidi_quiet', taskKind: 'pipe', duration: 5, requestParts: [] })
  const stream = (await session.waitForStream('chat')).open()
  const inboundDone = deferred()
  stream.onInboundDone(() => inboundDone.resolve())
  const it = stream.events()[Symbol.asyncIterator]()
  assert.deepEqual((await it.next()).value, { hi: 1 })
  await it.return() // the caller stops reading: the iterator ends the stream
  await inboundDone.promise
  await session.cancel()
  await session.waitForTerminal(15_000)
  assert.equal(session.isClosed, true, 'nothing left to drain')
})

test('STRM-14 STRM-19 the caller side: open() takes maxMessageSize / bundleSizeBytes / maxLatencyMs, STREAM_* set their defaults, and options override them', async () => {
  const big = { text: 'z'.repeat(3000) }
  const received = new Map()
  await agent('inbound_tuned', async (task, ctx) => {
    const s = await ctx.createStream()
    ctx.reportStatus('reading')
    const got = []
    for await (const e of s.events()) got.push(e)
    received.get(ctx.requestParts[0]?.text)?.resolve(got)
    return {}
  }, { card: card({ uploads: { direction: 'inbound', format: 'events' } }, ['pipe']) })
  /** Send `big` on a new task's inbound stream with these open() options; what the agent read and the frames on the wire. */
  async function send(label, options) {
    const done = deferred()
    received.set(label, done)
    const session = await client.sendMessage({ agentName: 'inbound_tuned', taskKind: 'pipe', duration: 5, requestParts: [textPart(label)] })
    const reading = deferred()
    session.onProgress((e) => e.message === 'reading' && reading.resolve())
    const ref = await session.waitForStream('uploads')
    await reading.promise
    const w = ref.open(options)
    w.write(big)
    await w.end()
    const got = await done.promise
    await session.cancel() // a pipe task stays open after its handler returns
    await session.waitForTerminal(15_000)
    return { got, frames: (await cached(ref.channel)).filter((f) => f?.type?.startsWith('stream_')) }
  }
  const explicit = await send('explicit', { maxMessageSize: 1024 })
  assert.deepEqual(explicit.got, [big])
  const parts = explicit.frames.filter((f) => f.multipart)
  assert.ok(parts.length >= 3, `the 3 KB frame went in ~1 KB parts (got ${parts.length})`)
  assert.ok(parts.every((p) => p.multipart.total === parts.length))
  const plain = await send('default', {})
  assert.equal(plain.frames.filter((f) => f.multipart).length, 0, 'by default a 3 KB frame is one message')
  process.env.STREAM_MAX_MESSAGE_SIZE = '700'
  try {
    const fromEnv = await send('env', undefined)
    assert.deepEqual(fromEnv.got, [big])
    assert.ok(fromEnv.frames.filter((f) => f.multipart).length >= 4, 'STREAM_MAX_MESSAGE_SIZE=700 split the frame')
    const overridden = await send('override', { maxMessageSize: 8192 })
    assert.equal(overridden.frames.filter((f) => f.multipart).length, 0, 'the option wins over STREAM_MAX_MESSAGE_SIZE')
  } finally {
    delete process.env.STREAM_MAX_MESSAGE_SIZE
  }
  const session = await client.sendMessage({ agentName: 'inbound_tuned', taskKind: 'pipe', duration: 5, requestParts: [textPart('bad')] })
  const ref = await session.waitForStream('uploads')
  assert.throws(() => ref.open({ maxMessageSize: 512 }), (e) => e instanceof InvalidArgumentError && /maxMessageSize must be greater than 512/.test(e.message))
  assert.throws(() => ref.open({ maxLatencyMs: 'soon' }), (e) => e instanceof InvalidArgumentError && /maxLatencyMs must be a number/.test(e.message))
  assert.throws(() => ref.open({ bundleSizeBytes: -1 }), (e) => e instanceof InvalidArgumentError && /bundleSizeBytes must be a whole number/.test(e.message))
  await ref.open().end()
  await session.cancel()
  await session.waitForTerminal(15_000)
})

test('ASTR-06 onActivate(stream) runs once, with the handle createStream gave, and what it writes reaches the caller', async () => {
  const calls = []
  await agent('activating', async (task, ctx) => {
    const s = await ctx.createStream({
      subscribeGraceMs: 0,
      onActivate: (h) => {
        calls.push(h)
        h.write({ from: 'onActivate' })
      },
    })
    calls.push(s)
    await new Promise((resolve) => setImmediate(resolve))
    s.write({ from: 'handler' })
    await s.end()
    return {}
  }, { card: card({ _default: { direction: 'outbound', format: 'events' } }, ['request']) })
  const session = await client.sendMessage({ agentName: 'activating', requestParts: [], stream: true })
  const ref = await session.waitForStream()
  const got = []
  for await (const e of ref.open().events()) got.push(e)
  assert.deepEqual(got, [{ from: 'onActivate' }, { from: 'handler' }])
  assert.equal((await session.waitForTerminal(15_000)).state, 'completed')
  assert.equal(calls.length, 2, 'onActivate ran once')
  assert.equal(calls[0], calls[1], 'onActivate got the handle createStream resolved with')
})

test('AGT-03 AGT-05 AGT-15 an agent subscribes only to its control channel, with the instance filter (none for expectedInstances: 0); a request task without maxRunningTimeSec gets a 60-minute stream token', async () => {
  const plain = await agent('sub_probe', async (task, ctx) => {
    await ctx.createStream({ subscribeGraceMs: 0 })
    return {}
  }, { card: card({ _default: { direction: 'outbound', format: 'bytes' } }, ['request']) })
  const open = await agent('sub_probe_all', async () => ({}), { expectedInstances: 0 })
  // a task through each: both have subscribed by then
  assert.equal((await (await client.sendMessage({ agentName: 'sub_probe_all', requestParts: [] })).waitForTerminal(15_000)).state, 'completed')
  const req = await client.sendMessage({ agentName: 'sub_probe', requestParts: [], stream: true })
  await req.waitForTerminal(15_000)
  assert.equal(setups(req.taskId)[0].durationMinutes, 60, 'AGT-15: the request-task default')
  const subscribes = (h) => proxy.find((r) => r.path.startsWith('/v2/subscribe/') && r.query.uuid === h.instanceId)
  for (const h of [plain, open]) {
    assert.match(h.instanceId, new RegExp(`^AG-${h.agentName}-[0-9a-f-]{36}$`), 'AGT-03: AG-<agentName>-<uuid>')
    const subs = subscribes(h)
    assert.ok(subs.length >= 1, `${h.agentName} subscribed through the proxy`)
    for (const r of subs) assert.equal(decodeURIComponent(r.path.split('/')[4]), h.controlChannel, 'AGT-03: only the control channel, never stream or setup channels')
  }
  // AGT-05: the filter of every control subscribe
  for (const r of subscribes(plain)) assert.equal(r.query['filter-expr'], `meta.instance == '${plain.instanceId}' || meta.broadcast == "true"`)
  for (const r of subscribes(open)) assert.equal(r.query['filter-expr'], undefined, 'expectedInstances: 0 sends no filter')
})
