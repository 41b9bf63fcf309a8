// `npm run bench`: measures the SDK against an embedded devnet and writes bench/RESULTS.md.
// `node bench/run.mjs --smoke`: a few samples, printed only (runs in `npm test` so the suite cannot rot).
import { writeFileSync } from 'node:fs'
import os from 'node:os'
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)
const { LocalNetwork, TaskClient, startAgentInstance, textPart } = require('../index.js')

const smoke = process.argv.includes('--smoke')
const N = smoke ? 20 : 1000
const rows = []

function stats(samples) {
  const s = [...samples].sort((a, b) => a - b)
  const q = (p) => s[Math.min(s.length - 1, Math.floor(p * s.length))]
  return { median: q(0.5), p99: q(0.99), n: s.length }
}
const ms = (x) => `${x.toFixed(3)} ms`
function row(metric, value, floor, command) {
  rows.push({ metric, value, floor: floor ?? '', command })
  console.log(`${metric}: ${value}${floor ? ` (floor ${floor})` : ''}`)
}

const net = await LocalNetwork.start()
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

// echo round trip: sendMessage -> terminal seen, sequential
{
  for (let i = 0; i < 10; i++) await (await client.sendMessage({ agentName: 'bench_echo', requestParts: [textPart('w')] })).waitForTerminal(10_000)
  const t = []
  for (let i = 0; i < N; i++) {
    const t0 = performance.now()
    const s = await client.sendMessage({ agentName: 'bench_echo', requestParts: [textPart('x')] })
    await s.waitForTerminal(10_000)
    t.push(performance.now() - t0)
  }
  const s = stats(t)
  row(`echo round trip, ${N} sequential tasks, median / p99`, `${ms(s.median)} / ${ms(s.p99)}`, null, 'npm run bench')
}

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
  row(`throughput, 64 callers, 1 instance x 64 (${total} tasks)`, `${(total / ((performance.now() - t0) / 1000)).toFixed(0)} tasks/s`, null, 'npm run bench')
}

// bytes stream: first chunk latency and sustained MB/s
{
  const size = smoke ? 1 << 20 : 64 << 20
  const chunk = Buffer.alloc(64 * 1024, 7)
  await startAgentInstance({
    agentName: 'bench_stream',
    card: { identity: { agentName: 'bench_stream' }, runtime: {}, streams: { _default: { direction: 'outbound', format: 'bytes' } } },
    handler: async (task, ctx) => {
      const s = await ctx.createStream({ bundleSizeBytes: 12_000, subscribeGraceMs: 0 })
      s.write(chunk.subarray(0, 1))
      for (let sent = 1; sent < size; sent += chunk.length) s.write(chunk.subarray(0, Math.min(chunk.length, size - sent)))
      await s.end()
      return {}
    },
    ...opts,
  })
  const session = await client.sendMessage({ agentName: 'bench_stream', requestParts: [], stream: true })
  const stream = await (await session.waitForStream()).open()
  const t0 = performance.now()
  let first = null
  let n = 0
  for await (const c of stream.bytes()) {
    first ??= performance.now() - t0
    n += c.length
  }
  const secs = (performance.now() - t0) / 1000
  row('bytes stream: first chunk after open', ms(first), null, 'npm run bench')
  row(`bytes stream: sustained (${(size / 2 ** 20).toFixed(0)} MiB)`, `${(n / 2 ** 20 / secs).toFixed(1)} MiB/s`, null, 'npm run bench')
  await session.waitForTerminal(30_000)
}

// memory: RSS after many finished tasks
{
  const before = process.memoryUsage().rss
  const count = smoke ? 100 : 10_000
  let missed = 0
  for (let i = 0; i < count; i += 50) {
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
  const after = process.memoryUsage().rss
  row(`RSS growth over ${count} finished tasks`, `${((after - before) / 2 ** 20).toFixed(1)} MiB (${(((after - before) / before) * 100).toFixed(1)} %)`, null, 'npm run bench')
  row(`tasks whose terminal the caller did not see within 30 s (of ${count})`, String(missed), '0', 'npm run bench')
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
  '| metric | value | floor | command |',
  '|---|---|---|---|',
  ...rows.map((r) => `| ${r.metric} | ${r.value} | ${r.floor} | \`${r.command}\` |`),
  '',
].join('\n')
if (smoke) console.log('bench smoke: ok')
else writeFileSync(new URL('./RESULTS.md', import.meta.url), md)
process.exit(0)
