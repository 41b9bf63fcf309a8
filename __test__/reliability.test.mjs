// Issue 10 (part): network faults between the SDK and the devnet, injected by a TCP proxy.
// Every event must still be delivered exactly once and in order.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { sdk, startNetwork, deferred } from './helpers.mjs'
import { startFaultProxy } from './faultproxy.mjs'

let env
let proxy
const gates = new Map()
before(async () => {
  // idle polls are answered after 2 s, so a caller may time out a silent one after 4 s
  env = await startNetwork({ longPollHoldSec: 2 })
  proxy = await startFaultProxy(env.net.url)
  // the agent talks to the devnet directly; it emits numbered status lines when told to
  await env.agent('ticker', async (task, ctx) => {
    const n = Number(ctx.requestParts[0]?.text ?? 10)
    const name = ctx.requestParts[1]?.text
    const gate = gates.get(name)
    await gates.get(`${name}:start`)?.promise // until the caller listens
    for (let i = 1; i <= n; i++) {
      if (gate && i === Math.ceil(n / 2)) await gate.promise // the test faults the link here
      await new Promise((r) => setTimeout(r, 15))
      ctx.reportStatus(`tick ${i}`)
      await new Promise((r) => setTimeout(r, 1005)) // past the 1 s status throttle: every tick is published
    }
    return { artifacts: [{ data: `ticked ${n}`, mimeType: 'text/plain' }] }
  }, { concurrency: 8 })
})
after(async () => {
  // the agents first: they may publish through the proxy until they stop
  await env.stop()
  await proxy.close()
})

/** Resolve with what `promise` gives, or fail with `describe()` once `ms` pass first. */
function within(ms, promise, describe) {
  let timer
  const limit = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no result within ${ms} ms: ${describe()}`)), ms)
  })
  return Promise.race([promise, limit]).finally(() => clearTimeout(timer))
}

/**
 * Resolves when the proxy accepts its next connection (a client reconnecting). The proxy only
 * counts them (`connections++`); an accessor on that count turns the increments into an event.
 */
function nextConnection() {
  return new Promise((resolve) => {
    let count = proxy.connections
    Object.defineProperty(proxy, 'connections', {
      configurable: true,
      enumerable: true,
      get: () => count,
      set: (n) => {
        count = n
        Object.defineProperty(proxy, 'connections', { value: n, writable: true, configurable: true, enumerable: true })
        resolve(n)
      },
    })
  })
}

/** A plain caller (straight to the devnet) follows the task to its terminal: proof it was published. */
async function publishedToTheEnd(taskId) {
  const observer = await env.client()
  const s = await observer.connect(taskId)
  const t = await s.waitForTerminal(30_000)
  const ticks = s.listEvents().filter((e) => e.message?.startsWith('tick ')).map((e) => e.message)
  s.close()
  observer.destroy()
  return { terminal: t.state, ticks }
}

/** A caller whose backend and realtime traffic goes through the proxy. */
function callerViaProxy(extra = {}) {
  return env.client({ baseUrl: proxy.url, realtimeOrigin: proxy.url, ...extra })
}

function ticks(session) {
  const seen = []
  session.onProgress((e) => e.message?.startsWith('tick ') && seen.push(Number(e.message.slice(5))))
  return seen
}

/**
 * A 4-tick task whose agent waits before tick 2 until `release()`; resolves once the caller has
 * seen tick 1 (listeners from `beforeStart(session)` are in place before the agent begins).
 */
async function tickingTask(client, name, beforeStart = () => {}) {
  const gate = deferred()
  const start = deferred()
  gates.set(name, gate)
  gates.set(`${name}:start`, start)
  const session = await client.sendMessage({ agentName: 'ticker', requestParts: [sdk.textPart('4'), sdk.textPart(name, 'g')] })
  const seen = ticks(session)
  beforeStart(session)
  const first = new Promise((r) => session.onProgress((e) => e.message === 'tick 1' && r()))
  start.resolve()
  await first
  return { session, seen, release: gate.resolve }
}

test('a caller keeps every event, once and in order, across connection resets', { timeout: 60_000 }, async () => {
  const client = await callerViaProxy()
  const { session, seen, release } = await tickingTask(client, 'reset')
  const reconnected = nextConnection()
  proxy.reset() // the held long-poll and every pooled connection die
  release()
  await within(15_000, reconnected, () => 'the client never reconnected through the proxy')
  proxy.reset() // and again, as soon as the client has reconnected
  const t = await session.waitForTerminal(45_000)
  assert.equal(t.state, 'completed')
  // RETRY-02: no event lost or doubled across reconnects
  assert.deepEqual(seen, [1, 2, 3, 4])
  assert.equal(session.listArtifacts().length, 1)
  client.destroy()
})

test('a caller rides out a link that is down for a while (connections refused), then catches up', { timeout: 60_000 }, async () => {
  const client = await callerViaProxy()
  const { session, seen, release } = await tickingTask(client, 'down')
  proxy.refuse = true
  proxy.reset()
  release() // ticks 2.. are published while the caller cannot reach the network
  try {
    // the whole rest of the task goes out while the link is down
    assert.deepEqual(await publishedToTheEnd(session.taskId), { terminal: 'completed', ticks: ['tick 1', 'tick 2', 'tick 3', 'tick 4'] })
    assert.deepEqual(seen, [1], 'nothing reached the caller while the link was down')
  } finally {
    proxy.refuse = false
  }
  const t = await session.waitForTerminal(45_000)
  assert.equal(t.state, 'completed')
  // RETRY-02: what was published while the link was down arrives once, in order
  assert.deepEqual(seen, [1, 2, 3, 4], 'events published while the link was down arrive after it returns')
  client.destroy()
})

test('a slow link (50 ms per chunk each way) delays but does not reorder or lose events', { timeout: 60_000 }, async () => {
  const client = await callerViaProxy()
  proxy.delayMs = 50
  try {
    const start = deferred()
    gates.set('slow:start', start)
    const session = await client.sendMessage({ agentName: 'ticker', requestParts: [sdk.textPart('3'), sdk.textPart('slow', 'g')] })
    const seen = ticks(session)
    start.resolve()
    assert.equal((await session.waitForTerminal(45_000)).state, 'completed')
    // RETRY-02: a slow link loses and reorders nothing
    assert.deepEqual(seen, [1, 2, 3])
  } finally {
    proxy.delayMs = 0
    client.destroy()
  }
})

test('a blackholed long-poll (silence, no reset) is given up after longPollTimeoutMs and the caller catches up', { timeout: 60_000 }, async () => {
  const client = await callerViaProxy({ longPollTimeoutMs: 4000 })
  const { session, seen, release } = await tickingTask(client, 'hole')
  proxy.blackhole() // the held poll and every pooled connection go silent for good
  release()
  try {
    // the rest of the task is published while the caller's poll hangs
    assert.deepEqual(await publishedToTheEnd(session.taskId), { terminal: 'completed', ticks: ['tick 1', 'tick 2', 'tick 3', 'tick 4'] })
    assert.deepEqual(seen, [1], 'nothing reached the caller through the silent link')
  } finally {
    proxy.restore() // new connections work again; the silent ones never will
  }
  const t = await session.waitForTerminal(45_000)
  assert.equal(t.state, 'completed')
  // RETRY-02: after a silent link the caller catches up, once and in order
  assert.deepEqual(seen, [1, 2, 3, 4], 'events published while the poll hung arrive once, in order')
  client.destroy()
})

test('longPollTimeoutMs is validated', async () => {
  await assert.rejects(env.client({ longPollTimeoutMs: 10 }), (e) => e instanceof sdk.InvalidArgumentError && /longPollTimeoutMs.*>= 1000/.test(e.message))
  await assert.rejects(env.agent('lp', async () => {}, { longPollTimeoutMs: 'soon' }), (e) => e instanceof sdk.InvalidArgumentError && /longPollTimeoutMs/.test(e.message))
})

test('malformed messages on a task channel are skipped and reported through onError; the task carries on', { timeout: 60_000 }, async () => {
  const client = await env.client()
  const errors = []
  const fiveErrors = deferred()
  const { session, seen, release } = await tickingTask(client, 'junk', (s) =>
    s.onError((err, ctx) => {
      errors.push({ message: err.message, type: ctx.callbackType, isBlocks: err instanceof sdk.BlocksError })
      if (errors.length === 5) fiveErrors.resolve()
    }),
  )
  const junk = ['"just a string"', '{"no":"type"}', '{"type":7}', '{"type":"terminal","state":"exploded"}', JSON.stringify({ type: 'artifact', blob: 'x'.repeat(20_000) })]
  for (const body of junk) {
    const r = await fetch(`${env.net.url}/publish/pub-c-devnet-free/sub-c-devnet-free/0/${session.statusChannel}/0?uuid=intruder&auth=${env.net.serviceToken}`, { method: 'POST', body })
    assert.equal(r.status, 200)
  }
  await fiveErrors.promise
  release()
  const t = await session.waitForTerminal(45_000)
  assert.equal(t.state, 'completed', 'the bogus terminal was not taken')
  assert.deepEqual(seen, [1, 2, 3, 4])
  assert.deepEqual(errors.map((e) => e.type), Array(5).fill('malformedMessage'))
  assert.ok(errors.every((e) => e.isBlocks))
  assert.match(errors[0].message, /not a JSON object/)
  assert.match(errors[1].message, /without a `type`/)
  assert.match(errors[3].message, /valid `state`/)
  assert.match(errors[4].message, /artifactRef\.kind/)
  assert.ok(errors[4].message.length < 600, 'a huge message is shown truncated')
  client.destroy()
})

test('tokens expiring mid-task and mid-stream (2 s lifetime): the stream, a large artifact upload and the terminal still get through', { timeout: 60_000 }, async () => {
  const short = await startNetwork({ tokenTtlSec: 2 })
  try {
    const big = 'z'.repeat(40_000) // above the inline limit: uploaded with the agent's JWT, refreshed on 401
    await short.agent('slow_streamer', async (task, ctx) => {
      const s = await ctx.createStream()
      for (let i = 1; i <= 30; i++) {
        s.write({ i })
        await new Promise((r) => setTimeout(r, 100)) // 3 s: longer than every access token lives
      }
      await s.end()
      return { artifacts: [{ data: big, mimeType: 'text/plain', fileName: 'big.txt' }] }
    }, { card: { identity: { agentName: 'slow_streamer' }, capabilities: { taskKinds: ['request'] }, runtime: { handler: './h.js' }, streams: { _default: { direction: 'outbound', format: 'events' } } } })
    const client = await short.client()
    const session = await client.sendMessage({ agentName: 'slow_streamer', requestParts: [], stream: true })
    const stream = await (await session.waitForStream()).open()
    const got = []
    for await (const e of stream.events()) got.push(e.i)
    assert.deepEqual(got, Array.from({ length: 30 }, (_, i) => i + 1))
    assert.equal((await session.waitForTerminal(30_000)).state, 'completed')
    const a = await session.downloadArtifact(session.listArtifacts()[0])
    assert.equal(a.data.toString(), big)
    // and the caller's own calls still work with a refreshed token
    // RETRY-03: with 2 s tokens the caller's calls still work (reactive refresh + retry)
    assert.equal((await client.getTask(session.taskId)).state, 'completed')
  } finally {
    await short.stop()
  }
})
