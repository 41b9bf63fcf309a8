// Issue 10 (part): hostile input to the SDK's public functions (a seeded random search, bounded):
// whatever a caller passes, the SDK answers with one of its own errors (a BlocksError naming what
// is wrong) or a result, never a TypeError from deep inside, a crash, or a hang.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { sdk, startNetwork } from './helpers.mjs'

const SEED = Number(process.env.FUZZ_SEED ?? Date.now() % 1_000_000)
let state = SEED
const rnd = () => ((state = (state * 1103515245 + 12345) % 2147483648), state / 2147483648)
const pick = (a) => a[Math.floor(rnd() * a.length)]
const KEYS = ['kind', 'data', 'mimeType', 'size', 'fileName', 'channel', 'fileId', 'artifactRef', 'identity', 'agentName', 'runtime', 'streams', 'partId', 'contentType', 'text', 'requestParts', 'taskKind', 'duration', 'stream', 'idempotencyKey', 'billingMode']
function value(depth = 0) {
  const leaves = [null, undefined, true, 0, -1, 2 ** 53, 1e309, NaN, '', 'x', 'inline', 'file', 'pipe', 'free', '../../etc/passwd', 'text/plain', Symbol('s'), () => 1, new Uint8Array(3), 10n, 'é'.repeat(50)]
  if (depth > 2 || rnd() < 0.4) return pick(leaves)
  if (rnd() < 0.3) return Array.from({ length: Math.floor(rnd() * 4) }, () => value(depth + 1))
  return Object.fromEntries(Array.from({ length: Math.floor(rnd() * 5) }, () => [pick(KEYS), value(depth + 1)]))
}

let env
let client
before(async () => {
  env = await startNetwork()
  await env.agent('target', () => ({ artifacts: [{ data: 'ok' }] }))
  client = await env.client()
})
after(async () => {
  await env.stop()
})

/**
 * null when `f` returns or throws a BlocksError that says what is wrong; otherwise what went wrong.
 * A TimeoutError is a hang (a task that never ended, a wait that never came back), not an answer.
 */
async function outcome(f) {
  try {
    await f()
    return null
  } catch (e) {
    if (!(e instanceof sdk.BlocksError)) return `${e?.constructor?.name}: ${e?.message}`
    if (e instanceof sdk.TimeoutError) return `hang: ${e.message}`
    if (typeof e.message !== 'string' || e.message.trim() === '') return `${e.name} without a message`
    return null
  }
}

test(`pure functions answer garbage with BlocksErrors (seed ${SEED})`, async () => {
  const fns = {
    decodeInlineArtifact: (v) => sdk.decodeInlineArtifact(v),
    buildArtifactRef: (v) => sdk.buildArtifactRef(v),
    loadCard: (v) => sdk.loadCard(v),
    textPart: (v) => sdk.textPart(v, value()),
    filePart: (v) => sdk.filePart(v, value()),
    downloadArtifact: (v) => sdk.downloadArtifact(v),
  }
  const bad = new Set()
  for (let i = 0; i < 2000; i++) {
    for (const [name, f] of Object.entries(fns)) {
      const r = await outcome(() => f(value()))
      if (r) bad.add(`${name}: ${r}`)
    }
  }
  assert.deepEqual([...bad], [])
})

test(`sendMessage and TaskClient.create answer garbage options with BlocksErrors (seed ${SEED})`, async () => {
  const bad = new Set()
  for (let i = 0; i < 150; i++) {
    const opts = value()
    const withAgent = opts && typeof opts === 'object' && !Array.isArray(opts) && rnd() < 0.5 ? { ...opts, agentName: 'target' } : opts
    const r = await outcome(async () => {
      const s = await client.sendMessage(withAgent)
      await s.waitForTerminal(15_000)
    })
    if (r) bad.add(`sendMessage(${String(JSON.stringify(withAgent, (k, v) => (typeof v === 'bigint' ? `${v}n` : v))).slice(0, 120)}): ${r}`)
    const c = await outcome(async () => (await sdk.TaskClient.create({ cdmUrl: env.net.cdmUrl, ...(typeof opts === 'object' ? opts : {}), billingMode: pick(['free', 'paid', opts]) })).destroy())
    if (c) bad.add(`TaskClient.create: ${c}`)
  }
  assert.deepEqual([...bad], [])
})
