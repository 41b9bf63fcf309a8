// `npm run bench`: measures the SDK against an embedded devnet and writes bench/RESULTS.md.
// `node bench/run.mjs --smoke`: a few samples, printed only (runs in `npm test` so the suite cannot rot).
import { writeFileSync, readFileSync, existsSync, mkdtempSync, rmSync } from 'node:fs'
import { execFileSync } from 'node:child_process'
import path from 'node:path'
import os from 'node:os'
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)
const { TaskClient, startAgentInstance, textPart, setLogLevel } = require('../index.js')
// per-task info lines would cost the JS thread more than the tasks themselves
if (!process.env.LOG_LEVEL) setLogLevel('warn')
import { startDevnetProcess } from './devnet-child.mjs'

const smoke = process.argv.includes('--smoke')
// `--only-echo`: the create, floor and echo rows plus the TLS echo row, merged into RESULTS.md
// (the other rows keep their last full run's values and date)
const onlyEcho = process.argv.includes('--only-echo')
const N = smoke ? 20 : 1000
const rows = []

function stats(samples) {
  const s = [...samples].sort((a, b) => a - b)
  const q = (p) => s[Math.min(s.length - 1, Math.floor(p * s.length))]
  return { median: q(0.5), p99: q(0.99), n: s.length }
}
const ms = (x) => `${x.toFixed(3)} ms`
function row(metric, value, floor, command, ratio = '') {
  rows.push({ metric, value, floor: floor ?? '', command, ratio })
  console.log(`${metric}: ${value}${floor ? ` (floor ${floor}${ratio ? `, ratio ${ratio}` : ''})` : ''}`)
}

// The floor: crates/blocks-floor, a minimal Rust caller + agent on plain HTTP (no SDK logic).
const targetDir = process.env.CARGO_TARGET_DIR ?? path.join(import.meta.dirname, '..', 'target')
const floorBin = ['release', 'debug']
  .map((p) => path.join(targetDir, 'x86_64-unknown-linux-gnu', p, 'blocks-floor'))
  .find((p) => existsSync(p) && (smoke || p.includes('release')))
function floor(mode, count) {
  if (!floorBin) {
    console.log('floor binary not built (cargo build --release -p blocks-floor --target x86_64-unknown-linux-gnu); floor rows skipped')
    return null
  }
  return JSON.parse(execFileSync(floorBin, [net.url, net.apiKey, mode, String(count)], { encoding: 'utf8' }).trim().split('\n').pop())
}

// the devnet runs in its own process: this process holds only the SDK (callers and agents)
const net = await startDevnetProcess()
const opts = { apiKey: net.apiKey, cdmUrl: net.cdmUrl }

// TaskClient.create and agent start-up
{
  const t = []
  for (let i = 0; i < (smoke ? 3 : 20); i++) {
    const t0 = performance.now()
    const c = await TaskClient.create({ billingMode: 'free', ...opts })
    t.push(performance.now() - t0)
    c.destroy()
  }
  const s = stats(t)
  row('TaskClient.create (CDM + token), median / p99', `${ms(s.median)} / ${ms(s.p99)}`, null, 'npm run bench')
  const t0 = performance.now()
  const a = await startAgentInstance({ agentName: 'bench_start', handler: () => ({}), ...opts })
  row('startAgentInstance (CDM, registry, connect, control subscribe)', ms(performance.now() - t0), null, 'npm run bench')
  await a.stop(0)
}

const echo = await startAgentInstance({ agentName: 'bench_echo', handler: (task, ctx) => ({ artifacts: [{ data: 'x', mimeType: 'text/plain' }] }), concurrency: 64, ...opts })
const client = await TaskClient.create({ billingMode: 'free', ...opts })

// floor: raw publish -> long-poll wake on the same devnet (plain HTTP, no SDK logic)
{
  const sub = 'sub-c-devnet-free'
  const t = []
  for (let i = 0; i < (smoke ? 20 : 500); i++) {
    const ch = `floor_${i}`
    const hs = await (await fetch(`${net.url}/v2/subscribe/${sub}/${ch}/0?tt=0&uuid=f`)).json()
    const poll = fetch(`${net.url}/v2/subscribe/${sub}/${ch}/0?tt=${hs.t.t}&uuid=f`).then((r) => r.json())
    await new Promise((r) => setImmediate(r))
    const t0 = performance.now()
    await fetch(`${net.url}/publish/pub-c-devnet-free/${sub}/0/${ch}/0?store=0`, { method: 'POST', body: '"x"' })
    await poll
    t.push(performance.now() - t0)
  }
  const s = stats(t)
  row('raw publish -> long-poll wake (JS fetch, floor)', `${ms(s.median)} / ${ms(s.p99)}`, null, 'npm run bench')
}

// devnet alone: publishes/s while 1,000 subscribers hold long-polls (each publish wakes one).
// node:http with one bounded keep-alive pool (1,000 + 16 sockets): the devnet serves at most 1,024
// connections at once (issue 20), and fetch's pool opens as many as it likes.
{
  const http = await import('node:http')
  const sub = 'sub-c-devnet-free'
  const subscribers = smoke ? 50 : 1000
  const publishes = smoke ? 500 : 20_000
  const agent = new http.Agent({ keepAlive: true, maxSockets: subscribers + 16 })
  const call = (method, url, body) =>
    new Promise((resolve, reject) => {
      const req = http.request(url, { method, agent }, (res) => {
        let text = ''
        res.setEncoding('utf8')
        res.on('data', (d) => (text += d))
        res.on('end', () => (res.statusCode === 200 ? resolve(JSON.parse(text)) : reject(new Error(`${method} ${url}: HTTP ${res.statusCode} ${text}`))))
      })
      req.on('error', reject)
      req.end(body)
    })
  let delivered = 0
  // each subscriber reads until it sees "end", so every publish is accounted for
  // every subscriber starts from a cursor taken before the first publish
  const start = (await call('GET', `${net.url}/time/0`))[0]
  const loops = Array.from({ length: subscribers }, async (_, i) => {
    let tt = start
    for (;;) {
      const v = await call('GET', `${net.url}/v2/subscribe/${sub}/load_${i}/0?tt=${tt}&uuid=s${i}`)
      delivered += v.m.filter((m) => m.d === 'x').length
      tt = v.t.t
      if (v.m.some((m) => m.d === 'end')) return
    }
  })
  await new Promise((r) => setTimeout(r, 200))
  let sent = 0
  const t0 = performance.now()
  await Promise.all(
    Array.from({ length: 16 }, async () => {
      while (sent < publishes) {
        const i = sent++ % subscribers
        await call('POST', `${net.url}/publish/pub-c-devnet-free/${sub}/0/load_${i}/0?store=0`, '"x"')
      }
    }),
  )
  const secs = (performance.now() - t0) / 1000
  row(`devnet: publishes/s with ${subscribers} subscribers holding long-polls (16 publishers)`, `${(publishes / secs).toFixed(0)} publishes/s`, null, 'npm run bench')
  await Promise.all(Array.from({ length: subscribers }, (_, i) => call('POST', `${net.url}/publish/pub-c-devnet-free/${sub}/0/load_${i}/0?store=0`, '"end"')))
  await Promise.all(loops)
  agent.destroy()
  if (delivered < publishes) throw new Error(`only ${delivered} of ${publishes} publishes were delivered`)
}

// echo round trip: sendMessage -> terminal seen, sequential
/** Sequential echo round trips (after 10 warm-up tasks): sendMessage -> terminal seen, in ms. */
async function echoRoundTrips(c, count) {
  for (let i = 0; i < 10; i++) await (await c.sendMessage({ agentName: 'bench_echo', requestParts: [textPart('w')] })).waitForTerminal(10_000)
  const t = []
  for (let i = 0; i < count; i++) {
    const t0 = performance.now()
    await (await c.sendMessage({ agentName: 'bench_echo', requestParts: [textPart('x')] })).waitForTerminal(10_000)
    t.push(performance.now() - t0)
  }
  return stats(t)
}

let plainEcho
{
  const s = await echoRoundTrips(client, N)
  plainEcho = s
  const fl = floor('echo', N)
  row(
    `echo round trip (sendMessage -> terminal seen), ${N} sequential tasks, median / p99`,
    `${ms(s.median)} / ${ms(s.p99)}`,
    fl && `${ms(fl.median_ms)} / ${ms(fl.p99_ms)}`,
    'npm run bench',
    fl ? `${(s.median / fl.median_ms).toFixed(2)}x (target <= 3x)` : '',
  )
}

if (!onlyEcho) {
// throughput: 64 concurrent callers, one instance at concurrency 64
{
  const total = smoke ? 64 : 2000
  let next = 0
  const t0 = performance.now()
  await Promise.all(
    Array.from({ length: 64 }, async () => {
      while (next < total) {
        next++
        await (await client.sendMessage({ agentName: 'bench_echo', requestParts: [] })).waitForTerminal(30_000)
      }
    }),
  )
  const rate = total / ((performance.now() - t0) / 1000)
  const fl = floor('throughput', total)
  row(
    `throughput, 64 callers, 1 instance x 64 (${total} tasks)`,
    `${rate.toFixed(0)} tasks/s`,
    fl && `${fl.tasks_per_sec.toFixed(0)} tasks/s`,
    'npm run bench',
    fl ? `${(rate / fl.tasks_per_sec).toFixed(2)} (target >= 0.5)` : '',
  )
}

// throughput with 4 instances (concurrency 16 each)
{
  const four = await Promise.all(
    [0, 1, 2, 3].map(() => startAgentInstance({ agentName: 'bench_four', handler: () => ({ artifacts: [{ data: 'x', mimeType: 'text/plain' }] }), concurrency: 16, ...opts })),
  )
  const total = smoke ? 64 : 2000
  let next = 0
  const t0 = performance.now()
  await Promise.all(
    Array.from({ length: 64 }, async () => {
      while (next < total) {
        next++
        await (await client.sendMessage({ agentName: 'bench_four', requestParts: [] })).waitForTerminal(30_000)
      }
    }),
  )
  row(`throughput, 64 callers, 4 instances x 16 (${total} tasks)`, `${(total / ((performance.now() - t0) / 1000)).toFixed(0)} tasks/s`, null, 'npm run bench')
  await Promise.all(four.map((a) => a.stop(0)))
}

// streams: first-chunk latency (agent write -> caller receives, same clock), sustained MB/s, events/s
{
  const size = smoke ? 1 << 20 : 64 << 20
  const chunk = Buffer.alloc(64 * 1024, 7)
  const card = (name, format) => ({ identity: { agentName: name }, runtime: {}, streams: { _default: { direction: 'outbound', format } } })
  await startAgentInstance({
    agentName: 'bench_first',
    card: card('bench_first', 'events'),
    handler: async (task, ctx) => {
      const s = await ctx.createStream({ subscribeGraceMs: 0 })
      // wait until the caller says it is reading, then write one event stamped with the clock
      await new Promise((r) => setTimeout(r, 0))
      const go = Number(ctx.requestParts[0]?.text ?? 0)
      await new Promise((r) => setTimeout(r, go))
      s.write({ at: performance.now() })
      await s.end()
      return {}
    },
    ...opts,
  })
  const firsts = []
  for (let i = 0; i < (smoke ? 3 : 50); i++) {
    const session = await client.sendMessage({ agentName: 'bench_first', requestParts: [textPart('20')], stream: true })
    const stream = await (await session.waitForStream()).open()
    for await (const e of stream.events()) firsts.push(performance.now() - e.at)
    await session.waitForTerminal(30_000)
  }
  const f = stats(firsts)
  row('stream first chunk: agent write() -> caller receives, median / p99', `${ms(f.median)} / ${ms(f.p99)}`, null, 'npm run bench')

  await startAgentInstance({
    agentName: 'bench_stream',
    card: card('bench_stream', 'bytes'),
    handler: async (task, ctx) => {
      const s = await ctx.createStream({ bundleSizeBytes: 12_000, subscribeGraceMs: 0 })
      for (let sent = 0; sent < size; sent += chunk.length) s.write(chunk.subarray(0, Math.min(chunk.length, size - sent)))
      await s.end()
      return {}
    },
    ...opts,
  })
  const session = await client.sendMessage({ agentName: 'bench_stream', requestParts: [], stream: true })
  const stream = await (await session.waitForStream()).open()
  let t0 = null
  let n = 0
  for await (const c of stream.bytes()) {
    t0 ??= performance.now()
    n += c.length
  }
  const secs = (performance.now() - t0) / 1000
  row(`bytes stream: sustained (${(size / 2 ** 20).toFixed(0)} MiB, from first to last chunk)`, `${(n / 2 ** 20 / secs).toFixed(1)} MiB/s`, '>= 50 MB/s', 'npm run bench')
  await session.waitForTerminal(30_000)

  const events = smoke ? 1000 : 50_000
  await startAgentInstance({
    agentName: 'bench_events',
    card: card('bench_events', 'events'),
    handler: async (task, ctx) => {
      const s = await ctx.createStream({ subscribeGraceMs: 0 })
      for (let i = 0; i < events; i++) s.write({ i, text: 'tick' })
      await s.end()
      return {}
    },
    ...opts,
  })
  const es = await client.sendMessage({ agentName: 'bench_events', requestParts: [], stream: true })
  const estream = await (await es.waitForStream()).open()
  let e0 = null
  let count = 0
  for await (const e of estream.events()) {
    e0 ??= performance.now()
    if (e.i !== count) throw new Error(`event ${count} arrived as ${e.i}`)
    count++
  }
  row(`events stream: ${events} JSON events, in order`, `${(count / ((performance.now() - e0) / 1000)).toFixed(0)} events/s`, null, 'npm run bench')
  await es.waitForTerminal(30_000)
}

// memory: RSS per 1,000 live sessions, and RSS over many finished tasks after a warm-up
{
  const rss = () => process.memoryUsage().rss
  const MiB = (b) => `${(b / 2 ** 20).toFixed(1)} MiB`
  const live = smoke ? 50 : 1000
  const holder = await startAgentInstance({
    agentName: 'bench_hold',
    // resolves at once when the cancel came before the handler ran (a bare listener would wait forever)
    handler: (task, ctx) => new Promise((resolve) => (ctx.cancelSignal.aborted ? resolve({}) : ctx.cancelSignal.addEventListener('abort', () => resolve({})))),
    concurrency: live,
    ...opts,
  })
  globalThis.gc?.()
  const before = rss()
  const sessions = []
  for (let i = 0; i < live; i += 50) {
    sessions.push(...(await Promise.all(Array.from({ length: 50 }, () => client.sendMessage({ agentName: 'bench_hold', requestParts: [] })))))
  }
  const held = rss() - before
  row(`RSS per 1,000 live sessions (${live} sessions to running tasks, caller and agent in one process)`, MiB((held * 1000) / live), null, 'npm run bench')
  await Promise.all(sessions.map((s) => s.cancel()))
  await Promise.all(sessions.map((s) => s.waitForTerminal(30_000)))
  await holder.stop(0)

  const count = smoke ? 100 : 10_000
  let missed = 0
  const batch = async (n) => {
    for (let i = 0; i < n; i += 50) {
      await Promise.all(
        Array.from({ length: 50 }, async () => {
          const s = await client.sendMessage({ agentName: 'bench_echo', requestParts: [] })
          await s.waitForTerminal(30_000).catch(async () => {
            missed++
            console.log(`no terminal within 30 s for ${s.taskId}; backend state: ${(await client.getTask(s.taskId)).state}`)
            s.close()
          })
        }),
      )
    }
  }
  // warm-up: V8 grows its young generation and the allocators their pools over the first ~25,000
  // tasks, then RSS is flat (measured: 30,000 → 40,000 tasks +1.4 MiB); see bench/README.md
  await batch(smoke ? 50 : 25_000)
  globalThis.gc?.()
  const warm = rss()
  await batch(count)
  globalThis.gc?.()
  const after = rss()
  row(`RSS growth over ${count} finished tasks after a 25,000-task warm-up`, `${MiB(after - warm)} (${(((after - warm) / warm) * 100).toFixed(1)} %; ${MiB(warm)} → ${MiB(after)})`, '< 10 %', 'npm run bench')
  row(`tasks whose terminal the caller did not see within 30 s (of ${count})`, String(missed), '0', 'npm run bench')
}

// ListTasks with every task of the runs above on the network (per-owner index)
{
  const first = await client.listTasks({ limit: 1 })
  const t = []
  for (let i = 0; i < (smoke ? 3 : 50); i++) {
    const t0 = performance.now()
    await client.listTasks({ limit: 50, agentName: 'bench_echo' })
    t.push(performance.now() - t0)
  }
  const s = stats(t)
  row(`ListTasks (limit 50, agent filter) with ${first.totalCount} tasks on the network, median / p99`, `${ms(s.median)} / ${ms(s.p99)}`, null, 'npm run bench')
}

// the same echo round trip on a durable devnet (data directory: SQLite on the hot path)
{
  const dataDir = mkdtempSync(path.join(os.tmpdir(), 'blocks-bench-db-'))
  const durable = await startDevnetProcess({ dataDir })
  const dopts = { apiKey: durable.apiKey, cdmUrl: durable.cdmUrl }
  const dagent = await startAgentInstance({ agentName: 'bench_echo', handler: () => ({ artifacts: [{ data: 'e' }] }), ...dopts })
  const dclient = await TaskClient.create({ billingMode: 'free', ...dopts })
  const count = smoke ? 5 : N
  const s = await echoRoundTrips(dclient, count)
  row(`echo round trip on a durable devnet (dataDir: SQLite, WAL), ${count} sequential tasks, median / p99`, `${ms(s.median)} / ${ms(s.p99)}`, null, 'npm run bench')
  dclient.destroy()
  await dagent.stop(0)
  await durable.stop()
  rmSync(dataDir, { recursive: true, force: true })
}

}

// the same echo round trip over TLS (the TLS devnet: rustls, HTTP/2 by ALPN), as production runs
{
  const secure = await startDevnetProcess({ tls: true })
  const topts = { apiKey: secure.apiKey, cdmUrl: secure.cdmUrl, tls: { ca: secure.caPem } }
  const tagent = await startAgentInstance({ agentName: 'bench_echo', handler: () => ({ artifacts: [{ data: 'e' }] }), ...topts })
  const tclient = await TaskClient.create({ billingMode: 'free', ...topts })
  const count = smoke ? 5 : N
  const s = await echoRoundTrips(tclient, count)
  row(
    `echo round trip over TLS (HTTPS devnet, HTTP/2), ${count} sequential tasks, median / p99`,
    `${ms(s.median)} / ${ms(s.p99)}`,
    null,
    'npm run bench',
    `${(s.median / plainEcho.median).toFixed(2)}x plain HTTP`,
  )
  tclient.destroy()
  await tagent.stop(0)
  await secure.stop()
}

client.destroy()
await echo.stop(0)
await net.stop()

const machine = `${os.cpus().length} x ${os.cpus()[0]?.model ?? 'cpu'}, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB, Node ${process.version}, ${os.platform()} ${os.release()}`
const md = [
  '# Benchmark results',
  '',
  `Machine: ${machine}. Build: the addon as built by the last \`napi build\` (\`npm run bench\` builds release first).`,
  `Run: ${new Date().toISOString()}`,
  '',
  '| metric | value | floor | ratio | command |',
  '|---|---|---|---|---|',
  ...rows.map((r) => `| ${r.metric} | ${r.value} | ${r.floor} | ${r.ratio} | \`${r.command}\` |`),
  '',
].join('\n')
const resultsFile = new URL('./RESULTS.md', import.meta.url)
if (smoke) console.log('bench smoke: ok')
else if (onlyEcho && existsSync(resultsFile)) {
  // replace the rows measured now, append new ones, say so under the date of the full run
  const line = (r) => `| ${r.metric} | ${r.value} | ${r.floor} | ${r.ratio} | \`${r.command}\` |`
  const old = readFileSync(resultsFile, 'utf8').trimEnd().split('\n').filter((l) => !l.startsWith('Partial run'))
  for (const r of rows) {
    const i = old.findIndex((l) => l.startsWith(`| ${r.metric} |`))
    if (i >= 0) old[i] = line(r)
    else old.push(line(r))
  }
  const at = old.findIndex((l) => l.startsWith('Run: '))
  old.splice(at + 1, 0, `Partial run (\`node bench/run.mjs --only-echo\`, ${new Date().toISOString()}): ${rows.map((r) => r.metric.split(',')[0]).join('; ')}`)
  writeFileSync(resultsFile, old.join('\n') + '\n')
} else writeFileSync(resultsFile, md)
process.exit(0)
