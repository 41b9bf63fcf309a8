// Issue 6: streams (outbound, inbound, bidirectional), in order and without loss.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'
import { sdk, startNetwork, deferred } from './helpers.mjs'

const { textPart } = sdk
const card = (streams, taskKinds = ['request', 'pipe']) => ({ identity: { agentName: 'x' }, capabilities: { taskKinds }, runtime: { handler: './h.js' }, streams })

let env
before(async () => {
  env = await startNetwork()
})
after(async () => {
  await env.stop()
})

test('an outbound events stream: announced, opened, read in order, ended by the agent', async () => {
  await env.agent('ticker', async (task, ctx) => {
    const s = await ctx.createStream()
    for (let i = 1; i <= 50; i++) s.write({ n: i })
    await s.end()
    return { artifacts: [{ data: 'done', mimeType: 'text/plain' }] }
  }, { card: card({ _default: { direction: 'outbound', format: 'events' } }) })
  const client = await env.client()
  const session = await client.sendMessage({ agentName: 'ticker', requestParts: [], stream: true })
  // STRM-03: waitForStream() with exactly one stream resolves with it
  const ref = await session.waitForStream()
  // STRM-01: the descriptor: agentDirection, localDirection inverted, format; CTX-08: id <taskId>-1 on stream.<agent>.<id>
  assert.equal(ref.descriptor.agentDirection, 'outbound')
  assert.equal(ref.descriptor.localDirection, 'inbound')
  assert.equal(ref.descriptor.format, 'events')
  assert.equal(ref.descriptor.streamId, `${session.taskId}-1`)
  assert.equal(ref.descriptor.channel, `stream.ticker.${session.taskId}-1`)
  const stream = await ref.open()
  // STRM-04: open() gives the same client while it is active
  assert.equal(await ref.open(), stream, 'open() is idempotent while active')
  const got = []
  for await (const e of stream.events()) got.push(e.n)
  // STRM-13: the iterator completes at stream_end; the marker is never yielded as data
  assert.deepEqual(got, Array.from({ length: 50 }, (_, i) => i + 1))
  assert.equal((await session.waitForTerminal(15_000)).state, 'completed')
  assert.equal(session.listStreams().length, 1)
})

test('10 MB through a bytes stream arrive byte-exact', { timeout: 120_000 }, async () => {
  const payload = randomBytes(10 * 1024 * 1024)
  await env.agent('blob_streamer', async (task, ctx) => {
    const s = await ctx.createStream({ bundleSizeBytes: 12_000 })
    for (let off = 0; off < payload.length; off += 64 * 1024) s.write(payload.subarray(off, off + 64 * 1024))
    await s.end()
    return {}
  }, { card: card({ _default: { direction: 'outbound', format: 'bytes' } }) })
  const client = await env.client()
  const session = await client.sendMessage({ agentName: 'blob_streamer', requestParts: [], stream: true })
  const stream = await (await session.waitForStream()).open()
  const hash = createHash('sha256')
  let n = 0
  // STRM-08: bytes() yields the chunks, byte-exact
  for await (const chunk of stream.bytes()) {
    hash.update(chunk)
    n += chunk.length
  }
  assert.equal(n, payload.length)
  assert.equal(hash.digest('hex'), createHash('sha256').update(payload).digest('hex'))
  await session.waitForTerminal(15_000)
})

test('10,000 JSON events arrive in order despite reordering and duplication on the wire', { timeout: 120_000 }, async () => {
  const chaos = await startNetwork({ streamChaos: true })
  try {
    await chaos.agent('eventer', async (task, ctx) => {
      const s = await ctx.createStream({ bundleSizeBytes: 200 })
      for (let i = 0; i < 10_000; i++) s.write({ i })
      await s.end()
      return {}
    }, { card: card({ _default: { direction: 'outbound', format: 'events' } }) })
    const client = await chaos.client()
    const session = await client.sendMessage({ agentName: 'eventer', requestParts: [], stream: true })
    const stream = await (await session.waitForStream()).open({ reorderTimeoutMs: 5000 })
    let expected = 0
    for await (const e of stream.events()) {
      // STRM-12: out-of-order and duplicated messages come out in seq order, once
      assert.equal(e.i, expected)
      expected++
    }
    assert.equal(expected, 10_000)
  } finally {
    await chaos.stop()
  }
})

test('a bidirectional stream: the caller writes lines, the agent answers each on the same stream', async () => {
  await env.agent('chat', async (task, ctx) => {
    const s = await ctx.createStream()
    for await (const msg of s.events()) {
      s.write({ reply: String(msg.line).toUpperCase() })
      if (msg.line === 'bye') break
    }
    return {}
  }, { card: card({ chat: { direction: 'bidirectional', format: 'events' } }, ['pipe']) })
  const client = await env.client()
  const session = await client.sendMessage({ agentName: 'chat', taskKind: 'pipe', duration: 5, requestParts: [] })
  const ref = await session.waitForStream('chat')
  assert.equal(ref.descriptor.localDirection, 'bidirectional')
  const stream = await ref.open()
  const replies = []
  const lines = ['ping', 'hello', 'bye']
  const it = stream.events()[Symbol.asyncIterator]()
  for (const line of lines) {
    stream.write({ line })
    const { value } = await it.next()
    replies.push(value.reply)
  }
  // STRM-15: each side gets the other's messages, not its own
  assert.deepEqual(replies, ['PING', 'HELLO', 'BYE'])
  await it.return()
  assert.equal(stream.isActive, false, 'leaving the iterator releases the stream')
  await session.cancel()
  assert.equal((await session.waitForTerminal(15_000)).state, 'canceled')
})

test('a never-opened stream of a finished task is StreamUnavailableError', async () => {
  await env.agent('short_stream', async (task, ctx) => {
    const s = await ctx.createStream({ declaredStream: 'tokens' })
    s.write('x')
    await s.end()
    return {}
  }, { card: card({ tokens: { direction: 'outbound', format: 'bytes' } }, ['pipe']) })
  const client = await env.client()
  const s = await client.sendMessage({ agentName: 'short_stream', taskKind: 'pipe', duration: 5, requestParts: [] })
  await s.waitForStream('tokens')
  await s.cancel()
  await s.waitForTerminal(15_000)
  const c = await client.connect(s.taskId)
  const ref = c.getStream('tokens')
  assert.ok(ref)
  // STRM-05: open() throws at once (it returns the client synchronously when it can open)
  assert.throws(() => ref.open(), (e) => {
    // ERR-05 CONN-03: the stream is known from history; opening it is StreamUnavailableError
    assert.ok(e instanceof sdk.StreamUnavailableError, e?.constructor?.name)
    assert.equal(e.taskId, s.taskId)
    assert.equal(e.streamId, `${s.taskId}-1`)
    assert.equal(e.declaredStream, 'tokens')
    assert.equal(e.terminalState, 'canceled')
    assert.match(e.message, /live-only/)
    return true
  })
  // CONN-07: on a history-only session a wait without match rejects "No matching stream found"
  await assert.rejects(c.waitForStream('nope'), /No matching stream found/)
  c.close()
})

test('createStream refuses what the task or the card does not allow', async () => {
  const errors = deferred()
  await env.agent('strict', async (task, ctx) => {
    const out = {}
    for (const [k, opts] of Object.entries({ plain: {}, conflict: { format: 'bytes' }, unknown: { declaredStream: 'nope' } })) {
      out[k] = await ctx.createStream(opts).then(() => 'ok', (e) => e.message)
    }
    out.positional = await ctx.createStream('tokens').then(() => 'ok', (e) => `${e.name}: ${e.message}`)
    errors.resolve(out)
    return {}
  }, { card: card({ _default: { direction: 'outbound', format: 'events' } }) })
  const client = await env.client()
  // no `stream: true`: not negotiated
  const s = await client.sendMessage({ agentName: 'strict', requestParts: [] })
  const out = await errors.promise
  // CTX-04: without hasStream createStream() throws "not negotiated"; CTX-07: a positional argument is a TypeError naming declaredStream
  assert.match(out.plain, /not negotiated/)
  assert.match(out.positional, /TypeError: .*declaredStream/)
  await s.waitForTerminal(15_000)
  const inbound = deferred()
  await env.agent('strict_in', async (task, ctx) => {
    inbound.resolve(await ctx.createStream().then(() => 'ok', (e) => e.message))
    return {}
  }, { card: card({ _default: { direction: 'inbound', format: 'events' } }) })
  const s2 = await client.sendMessage({ agentName: 'strict_in', requestParts: [], stream: true })
  // CTX-05: an inbound stream on a request task is refused, naming outbound
  assert.match(await inbound.promise, /outbound/)
  await s2.waitForTerminal(15_000)
  const conflict = deferred()
  await env.agent('strict_card', async (task, ctx) => {
    conflict.resolve(await ctx.createStream({ format: 'bytes' }).then(() => 'ok', (e) => e.message))
    return {}
  }, { card: card({ _default: { direction: 'outbound', format: 'events' } }) })
  const s3 = await client.sendMessage({ agentName: 'strict_card', requestParts: [], stream: true })
  // CTX-06: options against the card's declaration throw "conflicts with card declaration"
  assert.match(await conflict.promise, /conflicts with card declaration/)
  await s3.waitForTerminal(15_000)
})

test('malformed messages on a stream surface through onError and are skipped', async () => {
  const go = deferred()
  await env.agent('noisy', async (task, ctx) => {
    const s = await ctx.createStream()
    s.write({ n: 1 })
    await s.flush()
    await go.promise
    s.write({ n: 2 })
    await s.end()
    return {}
  }, { card: card({ _default: { direction: 'outbound', format: 'events' } }) })
  const client = await env.client()
  const session = await client.sendMessage({ agentName: 'noisy', requestParts: [], stream: true })
  const ref = await session.waitForStream()
  const stream = await ref.open()
  const errors = []
  stream.onError((e) => errors.push(e))
  const it = stream.events()[Symbol.asyncIterator]()
  assert.deepEqual((await it.next()).value, { n: 1 })
  // garbage on the channel: not a frame, then a frame with a bad seq
  for (const bad of [{ hello: 'world' }, { type: 'stream_events', seq: 'two', events: [1] }]) {
    const url = `${env.net.url}/publish/pub-c-devnet-free/sub-c-devnet-free/0/${stream.channel}/0?store=0&auth=${ref.descriptor.token}`
    const r = await fetch(url, { method: 'POST', body: JSON.stringify(bad) })
    assert.equal(r.status, 200)
  }
  go.resolve()
  assert.deepEqual((await it.next()).value, { n: 2 })
  assert.equal((await it.next()).done, true)
  assert.equal(errors.length, 2)
  assert.ok(errors.every((e) => e.category === 'malformed_response' && e.fatal === false))
  await session.waitForTerminal(15_000)
})

test('stream channels need the stream token; a revoked token is a fatal error that ends the iterator', async () => {
  await env.agent('forever', async (task, ctx) => {
    const s = await ctx.createStream()
    let i = 0
    while (!ctx.cancelSignal.aborted) {
      s.write({ i: i++ })
      await new Promise((r) => setTimeout(r, 5))
    }
    return new Promise(() => {}) // ignores cancellation: terminate ends it
  }, { card: card({ _default: { direction: 'outbound', format: 'events' } }, ['pipe']), terminateGraceMs: 100 })
  const client = await env.client()
  const session = await client.sendMessage({ agentName: 'forever', taskKind: 'pipe', duration: 5, requestParts: [] })
  const ref = await session.waitForStream()
  // without the token the channel is closed to everyone
  const anon = await fetch(`${env.net.url}/v2/subscribe/sub-c-devnet-free/${ref.descriptor.channel}/0?tt=0&uuid=intruder`)
  assert.equal(anon.status, 403)
  assert.equal((await anon.json()).service, 'Access Manager')
  const stream = await ref.open()
  const errors = []
  stream.onError((e) => errors.push(e))
  let n = 0
  for await (const e of stream.events()) {
    assert.equal(e.i, n)
    n++
    if (n === 5) await client.terminateTask(session.taskId) // revokes the stream tokens
  }
  assert.ok(n >= 5)
  const fatal = errors.find((e) => e.fatal)
  assert.ok(fatal, JSON.stringify(errors))
  // STRM-16: access denied is a fatal onError({category, fatal, channel}) that ends the iterator and the stream
  assert.equal(fatal.category, 'access_denied')
  assert.equal(fatal.channel, ref.descriptor.channel)
  assert.equal(stream.isActive, false)
  const t = await session.waitForTerminal(15_000)
  assert.equal(t.reason, 'terminated')
})

test('readable() gives a Node Readable of the stream bytes that ends at stream end', async () => {
  const { text } = await import('node:stream/consumers')
  await env.agent('texter', async (task, ctx) => {
    const s = await ctx.createStream()
    for (const part of ['alpha ', 'beta ', 'gamma']) s.write(part)
    await s.end()
    return {}
  }, { card: card({ _default: { direction: 'outbound', format: 'bytes' } }) })
  const client = await env.client()
  const session = await client.sendMessage({ agentName: 'texter', requestParts: [], stream: true })
  const stream = await (await session.waitForStream()).open()
  // STRM-08: readable() is a Node Readable of the bytes that ends at stream end
  assert.equal(await text(stream.readable()), 'alpha beta gamma')
  assert.throws(() => stream.bytes(), /already being read/)
  await session.waitForTerminal(15_000)
})
