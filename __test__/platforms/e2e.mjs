// Run by the platform tests inside the emulated (qemu arm64) or musl Node, in a project where the
// packed tarballs are installed: an echo agent and an echo_stream agent, ROUNDS echo tasks timed
// one after the other (send → terminal, after one warm-up), then a stream task read to its end.
// Against an embedded devnet (LocalNetwork), or, when BLOCKS_CDM_URL / BLOCKS_API_KEY are set,
// against that network (the cross-built devnet binary). Prints one JSON line last.
import { createRequire } from 'node:module'
import fs from 'node:fs'
import { LocalNetwork, TaskClient, startAgentInstance, textPart, decodeInlineArtifact } from '@blocks-network/sdk'

const require = createRequire(import.meta.url)
const rounds = Number(process.env.ROUNDS ?? 20)
const card = (f) => JSON.parse(fs.readFileSync(new URL(f, import.meta.url), 'utf8'))

// the examples' echo and echo_stream handlers (examples/echo, examples/echo-stream), in plain JS
const echo = async (task, ctx) => ({ artifacts: [{ data: `Echo: ${ctx.requestParts.map((p) => p.text).join(' ')}`, mimeType: 'text/plain' }] })
async function echoStream(task, ctx) {
  const text = ctx.requestParts.map((p) => p.text ?? '').join(' ').trim()
  const stream = await ctx.createStream()
  for (const word of text.split(/\s+/)) stream.write({ text: word })
  await stream.end()
  return { artifacts: [{ data: text, mimeType: 'text/plain' }] }
}

const started = performance.now()
const external = process.env.BLOCKS_CDM_URL
const net = external ? null : await LocalNetwork.start()
const conn = external ? { apiKey: process.env.BLOCKS_API_KEY, cdmUrl: external } : { apiKey: net.apiKey, cdmUrl: net.cdmUrl }
const agents = [
  await startAgentInstance({ card: card('./echo-card.json'), handler: echo, ...conn }),
  await startAgentInstance({ card: card('./echo-stream-card.json'), handler: echoStream, ...conn }),
]
const client = await TaskClient.create({ billingMode: 'free', ...conn })
const startupMs = performance.now() - started

const times = []
for (let i = 0; i <= rounds; i++) {
  const t0 = performance.now()
  const s = await client.sendMessage({ agentName: 'echo', requestParts: [textPart(`hello ${i}`)] })
  const terminal = await s.waitForTerminal(60_000)
  const ms = performance.now() - t0
  const text = decodeInlineArtifact(s.listArtifacts()[0]).toString('utf8')
  if (terminal.state !== 'completed' || text !== `Echo: hello ${i}`) throw new Error(`echo ${i}: ${terminal.state} ${text}`)
  await s.close()
  if (i > 0) times.push(ms) // round 0 warms up
}

const s = await client.sendMessage({ agentName: 'echo_stream', requestParts: [textPart('one two three four five')], stream: true })
const ref = await s.waitForStream()
const words = []
for await (const e of ref.open().events()) words.push(e.text)
const streamTerminal = await s.waitForTerminal(60_000)
const streamArtifact = decodeInlineArtifact(s.listArtifacts()[0]).toString('utf8')
await s.close()

client.destroy()
for (const a of agents) await a.stop()
if (net) await net.stop()

const sorted = [...times].sort((a, b) => a - b)
const median = sorted.length ? (sorted[(sorted.length - 1) >> 1] + sorted[sorted.length >> 1]) / 2 : null
console.log(
  JSON.stringify({
    arch: process.arch,
    node: process.version,
    glibc: process.report.getReport().header.glibcVersionRuntime ?? null,
    bindings: Object.keys(require.cache).filter((k) => k.endsWith('.node')),
    devnet: external ? 'external' : 'embedded',
    startupMs: Math.round(startupMs),
    echoRounds: times.length,
    echoMedianMs: median === null ? null : Number(median.toFixed(1)),
    echoMinMs: Number(sorted[0]?.toFixed(1)),
    echoMaxMs: Number(sorted.at(-1)?.toFixed(1)),
    words,
    streamState: streamTerminal.state,
    streamArtifact,
  }),
)
