// `node bench/files-memory.mjs [MB]` (default 200): RSS growth of a caller process that uploads a
// file of that size (filePartFromPath, streamed from disk) and downloads one of the same size
// (session.saveArtifacts, streamed to disk). The devnet and the agent run in a child process so
// only the caller's memory is measured. Target: growth under 64 MB.
import { spawn } from 'node:child_process'
import { createHash } from 'node:crypto'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { createRequire } from 'node:module'
import { once } from 'node:events'

const require = createRequire(import.meta.url)
const sdk = require('../index.js')
const mb = Number(process.argv[2] ?? 200)
const size = mb * 1024 * 1024

if (process.env.FILES_BENCH_CHILD) {
  // child: devnet + an agent returning a generated artifact of the size asked for
  const net = await sdk.LocalNetwork.start({ maxUploadBytes: size + 1024 })
  await sdk.startAgentInstance({
    agentName: 'big_files', apiKey: net.apiKey, cdmUrl: net.cdmUrl,
    handler: async (task, ctx) => {
      const n = Number(ctx.requestParts.find((p) => p.text)?.text ?? 0)
      const data = Buffer.alloc(n, 0x5a)
      await ctx.publishArtifact(data, { fileName: 'generated.bin', mimeType: 'application/octet-stream' })
      return {}
    },
  })
  console.log(JSON.stringify(net.env))
  await once(process.stdin, 'end')
  await net.stop()
  process.exit(0)
}

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'blocks-files-bench-'))
const input = path.join(dir, 'input.bin')
{
  const fd = fs.openSync(input, 'w')
  const chunk = Buffer.alloc(1 << 20, 0xa5)
  for (let i = 0; i < mb; i++) fs.writeSync(fd, chunk)
  fs.closeSync(fd)
}
const child = spawn(process.execPath, [new URL(import.meta.url).pathname, String(mb)], {
  env: { ...process.env, FILES_BENCH_CHILD: '1', LOG_LEVEL: 'warn' },
  stdio: ['pipe', 'pipe', 'inherit'],
})
const [line] = await once(child.stdout, 'data')
const env = JSON.parse(String(line).split('\n')[0])

const client = await sdk.TaskClient.create({ billingMode: 'free', apiKey: env.BLOCKS_API_KEY, cdmUrl: env.BLOCKS_CDM_URL, maxUploadBytes: size + 1024 })
globalThis.gc?.()
const base = process.memoryUsage().rss
let peak = base
const sampler = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 20)

const t0 = performance.now()
const session = await client.sendMessage({
  agentName: 'big_files',
  requestParts: [sdk.textPart(String(size)), await sdk.filePartFromPath(input, 'upload')],
})
const t1 = performance.now()
await session.waitForTerminal(600_000)
const t2 = performance.now()
const [saved] = await session.saveArtifacts(path.join(dir, 'out'))
const t3 = performance.now()
clearInterval(sampler)
peak = Math.max(peak, process.memoryUsage().rss)

const digest = createHash('sha256')
for await (const c of fs.createReadStream(saved)) digest.update(c)
const expected = createHash('sha256').update(Buffer.alloc(size, 0x5a)).digest('hex')
const ok = fs.statSync(saved).size === size && digest.digest('hex') === expected
const MiB = (b) => `${(b / 1048576).toFixed(1)} MiB`
console.log(`file size: ${mb} MiB`)
console.log(`upload (sendMessage with a ${mb} MiB file): ${(t1 - t0).toFixed(0)} ms (${(mb / ((t1 - t0) / 1000)).toFixed(0)} MiB/s)`)
console.log(`agent publishes a ${mb} MiB artifact: ${(t2 - t1).toFixed(0)} ms`)
console.log(`download (saveArtifacts): ${(t3 - t2).toFixed(0)} ms (${(mb / ((t3 - t2) / 1000)).toFixed(0)} MiB/s)`)
console.log(`caller RSS: base ${MiB(base)}, peak ${MiB(peak)}, growth ${MiB(peak - base)} (target < 64 MiB)`)
console.log(`download byte-exact: ${ok}`)
client.destroy()
child.stdin.end()
await once(child, 'exit')
fs.rmSync(dir, { recursive: true, force: true })
process.exitCode = ok && peak - base < 64 * 1048576 ? 0 : 1
