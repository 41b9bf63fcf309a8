// Every example runs: its agent in-process on a devnet, its caller as a child process.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync, readdirSync, mkdtempSync, writeFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { sdk, startNetwork, runNodeArgs } from './helpers.mjs'

const root = fileURLToPath(new URL('..', import.meta.url))
const MINUTE_MS = 6000
let env

async function startExample(name) {
  const dir = path.join(root, 'examples', name)
  const card = JSON.parse(readFileSync(path.join(dir, 'agent-card.json'), 'utf8'))
  const handler = (await import(path.join(dir, 'handler.ts'))).default
  await env.agent(card.identity.agentName, handler, { card })
}

function caller(name, args = [], timeoutMs = 60_000) {
  const script = path.join(root, 'examples', name, 'caller.ts')
  return runNodeArgs([script, ...args], { env: { ...env.net.env, LOG_LEVEL: 'warn' }, timeoutMs })
}

before(async () => {
  // A pipe "minute" lasts MINUTE_MS here so the one-minute examples end in seconds, with room:
  // the lifecycle caller cancels about 1.2 s after it starts its one-minute task (it must be
  // before the expiry), and stock-sim's one-minute task sends a quote per symbol every second
  // until it expires (about six ticks).
  env = await startNetwork({ minuteMs: MINUTE_MS })
  for (const name of ['echo', 'adder', 'orchestrator', 'lifecycle', 'stock-sim', 'echo-stream', 'bidi-chat', 'file-consumer']) await startExample(name)
})
after(async () => {
  await env.stop()
})

test('echo caller', async () => {
  const r = await caller('echo', ['hi there'])
  assert.equal(r.code, 0, r.stderr)
  assert.match(r.stdout, /Artifact: Echo: hi there/)
  assert.match(r.stdout, /Terminal: completed/)
})

test('file-consumer caller: a 100 KB file is uploaded, reported on, and the results saved', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'file-consumer-test-'))
  const input = path.join(dir, 'data.bin')
  writeFileSync(input, Buffer.from(Array.from({ length: 100_000 }, (_, i) => (i * 7) & 0xff)))
  const out = path.join(dir, 'out')
  const r = await caller('file-consumer', [input, out])
  assert.equal(r.code, 0, r.stderr)
  assert.match(r.stdout, /Attaching file: data\.bin \(100000 bytes, application\/octet-stream\)/)
  assert.match(r.stdout, /Artifact: chart file image\/svg\+xml data\.bin\.bytes\.svg/)
  assert.match(r.stdout, /- size: 100000 bytes/)
  assert.match(r.stdout, /Terminal: completed/)
  assert.deepEqual(readdirSync(out).sort(), ['data.bin.bytes.svg', 'data.bin.report.md'])
  assert.match(readFileSync(path.join(out, 'data.bin.bytes.svg'), 'utf8'), /^<svg /)
  rmSync(dir, { recursive: true, force: true })
})

test('adder caller', async () => {
  const r = await caller('adder', ['5', '3'])
  assert.equal(r.code, 0, r.stderr)
  assert.match(r.stdout, /Progress: Adding 5 \+ 3/)
  assert.match(r.stdout, /Sum: 8/)
})

test('orchestrator caller', async () => {
  const r = await caller('orchestrator')
  assert.equal(r.code, 0, r.stderr)
  assert.match(r.stdout, /summary: 'Echo: completed, Adder: completed'/)
})

test('lifecycle caller', async () => {
  const r = await caller('lifecycle')
  assert.equal(r.code, 0, r.stderr)
  assert.match(r.stdout, /--- paused ---/)
  assert.match(r.stdout, /--- resumed ---/)
  assert.match(r.stdout, /Terminal: canceled; summary: \{"ticks":\d+,"reason":"canceled"\}/)
})

test('stock-sim caller: quotes stream live until the pipe duration expires', async () => {
  const r = await caller('stock-sim', ['AAPL', 'MSFT'])
  assert.equal(r.code, 0, r.stderr)
  // a shared stream (card affinity "shared"): its id is the declared key, one channel for every task
  assert.match(r.stdout, /Opened stream prices\n/)
  const quotes = r.stdout.split('\n').filter((l) => /\] (AAPL|MSFT) \$\d+\.\d\d \([+-]\d+\.\d\d\)$/.test(l))
  // one quote per symbol per second for MINUTE_MS: at least two ticks' worth must get through
  assert.ok(quotes.length >= 4, `expected quotes of at least two ticks, got ${quotes.length}:\n${r.stdout}`)
  for (const symbol of ['AAPL', 'MSFT']) assert.ok(quotes.some((l) => l.includes(`] ${symbol} $`)), `no ${symbol} quote:\n${r.stdout}`)
  // PIPE-05 PIPE-09: the pipe task ends only at its expiry, completed with completionReason duration_expired
  assert.match(r.stdout, /completionReason: 'duration_expired'/)
})

test('stock-sim: cancel ends the stream and the task canceled', async () => {
  const client = await env.client()
  const s = await client.sendMessage({ agentName: 'stock_sim', taskKind: 'pipe', duration: 60, requestParts: [sdk.textPart('{"symbols": ["X"], "tickMs": 10}')] })
  const stream = await (await s.waitForStream('prices')).open()
  const seen = []
  for await (const q of stream.events()) {
    seen.push(q.tick)
    if (seen.length === 5) await s.cancel()
  }
  assert.deepEqual(seen.slice(0, 5), [1, 2, 3, 4, 5])
  const t = await s.waitForTerminal(15_000)
  assert.equal(t.state, 'canceled')
  assert.equal(JSON.parse(Buffer.from(s.listArtifacts().at(-1).artifactRef.data, 'base64')).completionReason, 'canceled')
})

test('echo-stream caller', async () => {
  const r = await caller('echo-stream', ['the quick brown fox'])
  assert.equal(r.code, 0, r.stderr)
  assert.match(r.stdout, /Stream discovered: t_[a-z0-9]+-1 \(inbound\)/)
  assert.match(r.stdout, /\[chunk 1\] the\n\[chunk 2\] quick\n\[chunk 3\] brown\n\[chunk 4\] fox\n--- Stream ended ---/)
  assert.match(r.stdout, /Artifact: the quick brown fox/)
})

test('bidi-chat caller', async () => {
  const r = await caller('bidi-chat', ['ping', 'hello', 'bye'])
  assert.equal(r.code, 0, r.stderr)
  assert.match(r.stdout, /\[from agent\] AGENT> PING\n.*\n\[from agent\] AGENT> HELLO\n.*\n\[from agent\] AGENT> BYE/)
  assert.match(r.stdout, /Received 3 message\(s\) from agent\./)
})
