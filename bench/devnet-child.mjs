// A devnet in its own process for the benchmarks, so only the SDK's memory and CPU are measured in
// the benchmark process. Prints `{ url, cdmUrl, apiKey }` as one JSON line; stops when stdin ends.
// Options: a JSON object as argv[2] (LocalNetwork.start options).
import { createRequire } from 'node:module'
import { once } from 'node:events'
import { spawn } from 'node:child_process'

const require = createRequire(import.meta.url)

if (process.argv[1] === new URL(import.meta.url).pathname) {
  const { LocalNetwork } = require('../index.js')
  // the benchmarks hold more than the default 1,024 connections (1,000 live sessions, 1,000 subscribers)
  const net = await LocalNetwork.start({ maxConnections: 8192, ...JSON.parse(process.argv[2] ?? '{}') })
  console.log(JSON.stringify({ url: net.url, cdmUrl: net.cdmUrl, apiKey: net.apiKey, serviceToken: net.serviceToken, caPem: net.caPem }))
  process.stdin.resume()
  await once(process.stdin, 'end')
  await net.stop()
  process.exit(0)
}

/** Start the child; resolves with `{ url, cdmUrl, apiKey, stop() }`. */
export async function startDevnetProcess(options = {}) {
  const child = spawn(process.execPath, [new URL(import.meta.url).pathname, JSON.stringify(options)], {
    env: { ...process.env, LOG_LEVEL: 'warn' },
    stdio: ['pipe', 'pipe', 'inherit'],
  })
  let buf = ''
  for await (const chunk of child.stdout) {
    buf += chunk
    if (buf.includes('\n')) break
  }
  const info = JSON.parse(buf.split('\n')[0])
  return {
    ...info,
    pid: child.pid,
    async stop() {
      child.stdin.end()
      await once(child, 'exit')
    },
  }
}
