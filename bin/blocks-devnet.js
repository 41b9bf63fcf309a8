#!/usr/bin/env node
'use strict'
// `npx blocks-devnet`: run a local Blocks Network until Ctrl-C. The flags are parsed by the engine
// (crates/blocks-devnet/src/cli.rs, shared with the Rust binary); `--help` lists them.
const { LocalNetwork } = require('../index.js')

/** The flags of the network come from the engine's parser (the same as the Rust binary's). */
const usage = () => `${require('../native.js').devnetUsage().replace(/^usage: /, 'usage:\n  ')}
                                                           run a local network until Ctrl-C
  blocks-devnet send AGENT TEXT [--paid] [--timeout SECS]  send one task, print its events
  blocks-devnet tasks [--agent NAME] [--state STATE] [--limit N] [--paid]   list your tasks
send and tasks use BLOCKS_CDM_URL and BLOCKS_API_KEY (the exports the network prints).`

/** The caller subcommands: a client from BLOCKS_CDM_URL / BLOCKS_API_KEY. */
async function client(flags) {
  const { TaskClient } = require('../index.js')
  if (!process.env.BLOCKS_API_KEY) {
    throw new Error('BLOCKS_API_KEY is not set: run `npx blocks-devnet` and paste the exports it prints')
  }
  return TaskClient.create({ billingMode: flags.includes('--paid') ? 'paid' : 'free', apiKey: process.env.BLOCKS_API_KEY })
}

function flag(args, name) {
  const i = args.indexOf(name)
  if (i < 0) return undefined
  const v = args[i + 1]
  if (v === undefined || v.startsWith('--')) throw new Error(`${name} needs a value`)
  return v
}

async function send(args) {
  const [agentName, ...rest] = args
  const text = rest.filter((a, i) => !a.startsWith('--') && !(i > 0 && rest[i - 1] === '--timeout')).join(' ')
  if (!agentName || agentName.startsWith('--')) throw new Error('send needs an agent name: blocks-devnet send AGENT TEXT')
  const timeout = Number(flag(args, '--timeout') ?? 60)
  const { textPart, decodeInlineArtifact } = require('../index.js')
  const c = await client(args)
  try {
    const session = await c.sendMessage({ agentName, requestParts: text ? [textPart(text)] : [] })
    console.log(`task ${session.taskId}${session.queued ? ' (queued)' : ''}`)
    session.onProgress((e) => console.log(`progress: ${e.message ?? `state ${e.state}`}`))
    session.onArtifact((e) => {
      const r = e.artifactRef
      const body = r.kind === 'inline' && /^(text\/|application\/json)/.test(r.mimeType) ? decodeInlineArtifact(r).toString('utf8') : `(${r.kind}, ${r.size} bytes)`
      console.log(`artifact${e.outputId ? ` ${e.outputId}` : ''} ${r.mimeType}: ${body}`)
    })
    const t = await session.waitForTerminal(timeout * 1000)
    console.log(`terminal: ${t.state}${t.error ? ` (${t.error})` : ''}`)
    return t.state === 'completed' ? 0 : 1
  } finally {
    c.destroy()
  }
}

async function tasks(args) {
  const c = await client(args)
  try {
    const limit = flag(args, '--limit')
    const page = await c.listTasks({ agentName: flag(args, '--agent'), state: flag(args, '--state'), limit: limit === undefined ? undefined : Number(limit) })
    const rows = page.tasks.map((t) => [t.taskId, t.agentName ?? '', t.state ?? '', t.createdTime ?? ''])
    const widths = [0, 1, 2].map((i) => Math.max(['TASK', 'AGENT', 'STATE'][i].length, ...rows.map((r) => r[i].length)))
    const line = (r) => r.map((v, i) => (i < 3 ? v.padEnd(widths[i]) : v)).join('  ')
    console.log(line(['TASK', 'AGENT', 'STATE', 'CREATED']))
    for (const r of rows) console.log(line(r))
    if (page.next) console.log(`(more: --limit, next cursor ${page.next})`)
    return 0
  } finally {
    c.destroy()
  }
}

async function main() {
  const [sub, ...rest] = process.argv.slice(2)
  if (sub === 'send' || sub === 'tasks') {
    try {
      process.exitCode = await (sub === 'send' ? send(rest) : tasks(rest))
    } catch (e) {
      console.error(`blocks-devnet ${sub}: ${e.message}`)
      process.exitCode = 1
    }
    return
  }
  const argv = process.argv.slice(2)
  if (argv.includes('-h') || argv.includes('--help')) {
    console.log(usage())
    return
  }
  // the flags are checked (and the log level set) before anything starts
  try {
    const log = require('../native.js').devnetCheckArgs(argv)
    if (log) require('../index.js').setLogLevel(log)
  } catch (e) {
    console.error(`blocks-devnet: ${e.message}`)
    process.exit(2)
  }
  // signal handlers first: a Ctrl-C that comes right after the exports are printed (or during
  // start-up) must stop the network cleanly, not kill the process with the default action
  let net = null
  let stopping = false
  const keepAlive = setInterval(() => {}, 1 << 30)
  const shutdown = async () => {
    if (stopping) return
    stopping = true
    clearInterval(keepAlive)
    await net?.stop()
    process.exit(0)
  }
  process.on('SIGINT', shutdown)
  process.on('SIGTERM', shutdown)
  net = await LocalNetwork._startFromArgs(argv)
  if (stopping) {
    await net.stop()
    process.exit(0)
  }
  console.log(`export BLOCKS_CDM_URL=${net.cdmUrl}`)
  console.log(`export BLOCKS_API_KEY=${net.apiKey}`)
  if (net.caFile) console.log(`export NODE_EXTRA_CA_CERTS=${net.caFile}`)
  const data = net.dataDir === null ? 'in memory: nothing is kept' : `data in ${require('node:path').resolve(net.dataDir)}`
  console.log(`blocks-devnet listening on ${net.url} (${data}; Ctrl-C to stop)`)
}

main().catch((e) => {
  console.error(`blocks-devnet: ${e.message}`)
  process.exit(1)
})
