// Soak: many tasks through several agent instances with random cancels, terminates, pauses,
// failures and streams, on a devnet that writes everything to its database.
//
//   npm run soak                                5,000 warm-up + 10,000 tasks, 4 instances (~80 s)
//   node bench/soak.mjs --tasks 400 --warmup 0  a reduced run (what `npm test` does)
//
// Afterwards: every task is terminal with the state its operation implies, every caller saw exactly
// one terminal, every stream arrived whole and in order, no handler is left running, and the process
// exits by itself (no session, subscription or handle left open). RSS is reported after a warm-up
// and at the end (callers and agents; the devnet runs in a child process). Prints one JSON report
// line; exit code 1 when anything is wrong.
import { createRequire } from 'node:module'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'

const require = createRequire(import.meta.url)
const { TaskClient, startAgentInstance, textPart, setLogLevel } = require('../index.js')
import { startDevnetProcess } from './devnet-child.mjs'

const arg = (name, dflt) => {
  const i = process.argv.indexOf(name)
  return i < 0 ? dflt : Number(process.argv[i + 1])
}
const TASKS = arg('--tasks', 10_000)
// tasks run first whose memory growth is not judged (the allocator and caches settle; see
// bench/README.md): RSS is compared between the end of the warm-up and the end
const WARMUP = arg('--warmup', 5_000)
const TOTAL = WARMUP + TASKS
const INSTANCES = arg('--instances', 4)
const CALLERS = arg('--callers', 48)
const SEED = arg('--seed', 7)
setLogLevel('error')

// a small seeded PRNG (mulberry32): the same seed gives the same mix of operations
let state = SEED >>> 0
const random = () => {
  state = (state + 0x6d2b79f5) >>> 0
  let t = state
  t = Math.imul(t ^ (t >>> 15), t | 1)
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296
}
const OPS = [
  ['echo', 0.35, 'completed'],
  ['stream', 0.15, 'completed'],
  ['cancel', 0.15, 'canceled'],
  ['terminate', 0.1, 'canceled'],
  ['pause', 0.15, 'completed'],
  ['fail', 0.1, 'failed'],
]
const pick = () => {
  let r = random()
  for (const op of OPS) if ((r -= op[1]) < 0) return op
  return OPS[0]
}
const STREAM_EVENTS = 20

const card = {
  identity: { agentName: 'soak' },
  capabilities: { taskKinds: ['request'] },
  runtime: { handler: './soak.js' },
  streams: { _default: { direction: 'outbound', format: 'events' } },
}
const until = (signal, ms) =>
  new Promise((resolve) => {
    if (signal.aborted) return resolve()
    const t = setTimeout(resolve, ms)
    signal.addEventListener('abort', () => (clearTimeout(t), resolve()), { once: true })
  })

async function handler(task, ctx) {
  const op = ctx.requestParts[0]?.text
  switch (op) {
    case 'echo':
      return { artifacts: [{ data: `echo ${ctx.taskId}` }] }
    case 'stream': {
      const s = await ctx.createStream() // the default grace: the caller subscribes before the first write
      for (let i = 1; i <= STREAM_EVENTS; i++) s.write({ i })
      await s.end()
      return {}
    }
    case 'cancel':
      await until(ctx.cancelSignal, 30_000) // ends when the caller cancels
      return {}
    case 'terminate':
      await new Promise((r) => setTimeout(r, 2000)) // ignores cancellation: terminate ends the task first
      return {}
    case 'pause':
      await until(ctx.cancelSignal, 150)
      return { artifacts: [{ data: 'paused and resumed' }] }
    case 'fail':
      throw new Error('asked to fail')
    default:
      throw new Error(`unknown op ${op}`)
  }
}

export async function soak() {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'blocks-soak-'))
  // the devnet runs in its own process (with a database): the RSS figures are the SDK's
  const net = await startDevnetProcess({ dataDir })
  const opts = { apiKey: net.apiKey, cdmUrl: net.cdmUrl }
  const agents = []
  for (let i = 0; i < INSTANCES; i++) {
    agents.push(await startAgentInstance({ ...opts, card, handler, concurrency: 32, terminateGraceMs: 100 }))
  }
  const clients = await Promise.all(Array.from({ length: 4 }, () => TaskClient.create({ billingMode: 'free', ...opts })))
  const problems = []
  const counts = Object.fromEntries(OPS.map(([op]) => [op, 0]))
  const ids = []
  let next = 0
  let done = 0
  let warmRss = 0
  const memory = []
  const started = performance.now()

  /** `promise`, or a rejection naming what did not happen within `ms`. */
  const within = (promise, ms, what) => {
    let timer
    return Promise.race([promise, new Promise((_, reject) => (timer = setTimeout(() => reject(new Error(`${what}: nothing within ${ms} ms`)), ms)))]).finally(() => clearTimeout(timer))
  }

  async function one(client) {
    const [op, , expected] = pick()
    counts[op]++
    const session = await client.sendMessage({ agentName: 'soak', requestParts: [textPart(op)], stream: op === 'stream' })
    ids.push(session.taskId)
    let terminals = 0
    session.onTerminal(() => terminals++)
    const running = new Promise((r) => {
      if (session.state === 'running') r()
      session.onProgress((e) => e.state === 'running' && r())
    })
    let streamed = null
    const where = `${session.taskId} (${op})`
    if (op === 'stream') {
      const s = await within((await within(session.waitForStream(), 30_000, `${where} stream announcement`)).open(), 30_000, `${where} stream open`)
      streamed = []
      await within((async () => {
        for await (const e of s.events()) streamed.push(e.i)
      })(), 30_000, `${where} stream end`)
    } else if (op === 'cancel') {
      await within(running, 30_000, `${where} running`).catch((e) => {
        throw new Error(`${e.message}; session state ${session.state}, events ${session.listEvents().map((x) => `${x.type}:${x.state ?? ''}`).join(',')}`)
      })
      await session.cancel()
    } else if (op === 'terminate') {
      await within(running, 30_000, `${where} running`).catch((e) => {
        throw new Error(`${e.message}; session state ${session.state}, events ${session.listEvents().map((x) => `${x.type}:${x.state ?? ''}`).join(',')}`)
      })
      await session.terminate()
    } else if (op === 'pause') {
      await within(running, 30_000, `${where} running`).catch((e) => {
        throw new Error(`${e.message}; session state ${session.state}, events ${session.listEvents().map((x) => `${x.type}:${x.state ?? ''}`).join(',')}`)
      })
      await client.pauseTask(session.taskId)
      await client.resumeTask(session.taskId)
    }
    const t = await session.waitForTerminal(60_000)
    const terminalEvents = session.listEvents().filter((e) => e.type === 'terminal').length
    if (t.state !== expected) problems.push(`${session.taskId} (${op}) ended ${t.state} (${t.error ?? t.reason ?? ''}), expected ${expected}`)
    // listEvents() holds live events (a terminal already in history at send time is pre-loaded)
    if (terminals !== 1 || terminalEvents > 1) problems.push(`${session.taskId} (${op}): ${terminals} terminal callbacks, ${terminalEvents} terminal events`)
    if (streamed && streamed.join() !== Array.from({ length: STREAM_EVENTS }, (_, i) => i + 1).join()) {
      problems.push(`${session.taskId}: stream gave ${streamed.length} events out of order or short`)
    }
  }

  await Promise.all(
    Array.from({ length: CALLERS }, async (_, k) => {
      const client = clients[k % clients.length]
      while (next < TOTAL) {
        next++
        try {
          await one(client)
        } catch (e) {
          const id = /t_[a-z0-9]+/.exec(e.message)?.[0]
          let detail = ''
          if (id) {
            const info = await clients[0].getTask(id).catch((err) => ({ state: err.message }))
            const h = await fetch(`${net.url}/v3/history/sub-key/sub-c-devnet-free/channel/u.${info.owner}.${id}?auth=${net.serviceToken}`).then((r) => r.json()).catch(() => null)
            const types = h?.channels ? Object.values(h.channels)[0].map((m) => `${m.message.type}:${m.message.state ?? m.message.status ?? m.message.message ?? ''}@${m.timetoken}`) : []
            detail = ` [network: ${info.state} on ${info.instance}; history ${types.join(' ')}]`
          }
          problems.push(`caller error: ${e.message}${detail}`)
        }
        done++
        const step = Math.max(1, Math.floor(TOTAL / 10))
        if (done % step === 0 || done === WARMUP) {
          globalThis.gc?.()
          const m = process.memoryUsage()
          if (done === (WARMUP || step * 2)) warmRss = m.rss
          memory.push(`${done}: rss ${(m.rss / 2 ** 20).toFixed(0)} heap ${(m.heapUsed / 2 ** 20).toFixed(0)} ext ${(m.external / 2 ** 20).toFixed(0)}`)
        }
      }
    }),
  )
  const seconds = (performance.now() - started) / 1000
  // the network agrees: every task is terminal, and no instance still holds one
  const nonTerminal = []
  for (const id of ids) {
    const info = await clients[0].getTask(id)
    if (!['completed', 'failed', 'canceled'].includes(info.state)) nonTerminal.push(`${id}: ${info.state}`)
  }
  if (nonTerminal.length) problems.push(`${nonTerminal.length} tasks not terminal on the network: ${nonTerminal.slice(0, 5).join(', ')}`)
  // handlers that ignored a terminate finish on their own within 2 s; then no instance holds one
  const drainBy = Date.now() + 10_000
  while (agents.some((a) => a.activeTasks !== 0) && Date.now() < drainBy) await new Promise((r) => setTimeout(r, 50))
  const busy = agents.filter((a) => a.activeTasks !== 0).map((a) => `${a.instanceId}: ${a.activeTasks}`)
  if (busy.length) problems.push(`instances still running handlers: ${busy.join(', ')}`)
  globalThis.gc?.()
  const endRss = process.memoryUsage().rss
  for (const c of clients) c.destroy()
  await Promise.all(agents.map((a) => a.stop(0)))
  await net.stop()
  fs.rmSync(dataDir, { recursive: true, force: true })
  return {
    tasks: ids.length,
    warmup: WARMUP,
    instances: INSTANCES,
    callers: CALLERS,
    seed: SEED,
    ops: counts,
    seconds: Number(seconds.toFixed(1)),
    tasksPerSecond: Math.round(ids.length / seconds),
    rssAfterWarmupMiB: Number((warmRss / 2 ** 20).toFixed(1)),
    rssAtEndMiB: Number((endRss / 2 ** 20).toFixed(1)),
    memory,
    rssGrowthPercent: warmRss ? Number((((endRss - warmRss) / warmRss) * 100).toFixed(1)) : null,
    problems,
  }
}

const report = await soak()
console.log(JSON.stringify(report))
// no process.exit: the process must end by itself (nothing left open)
process.exitCode = report.problems.length === 0 && report.tasks === TOTAL ? 0 : 1
