#!/usr/bin/env node
'use strict'
// `npx blocks-devnet`: run a local Blocks Network until Ctrl-C.
// Flags: --port N, --api-key KEY[:USER] (repeatable), --agent NAME:paid|free (repeatable), --token-ttl SECS,
// --data-dir DIR (database and files; default .blocks-devnet in the current directory), --in-memory,
// --max-upload-bytes N, --allow-host NAME (repeatable: a host name served besides the loopback ones),
// --ack-timeout SECS (how long an agent instance has to acknowledge a task before it is sent again),
// --log error|warn|info|debug (debug prints one line per request)
const { LocalNetwork } = require('../index.js')

function parse(argv) {
  const opts = { apiKeys: [], paidAgents: [], allowedHosts: [] }
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i]
    const value = () => {
      const v = argv[++i]
      if (v === undefined) throw new Error(`${flag} needs a value`)
      return v
    }
    switch (flag) {
      case '--port': {
        const v = value()
        const port = Number(v)
        if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`--port needs a number 0-65535, got ${v}`)
        opts.port = port
        break
      }
      case '--api-key': {
        const [key, user] = value().split(':')
        opts.apiKeys.push([key, user || `user_${opts.apiKeys.length + 1}`])
        break
      }
      case '--agent': {
        const [name, mode = 'free'] = value().split(':')
        if (mode !== 'free' && mode !== 'paid') throw new Error(`--agent ${name}:${mode}: billing mode must be free or paid`)
        if (mode === 'paid') opts.paidAgents.push(name)
        break
      }
      case '--token-ttl': {
        const v = Number(value())
        if (!(v > 0)) throw new Error('--token-ttl needs a positive number of seconds')
        opts.tokenTtlSec = v
        break
      }
      case '--ack-timeout': {
        const v = value()
        const secs = Number(v)
        if (!(Number.isFinite(secs) && secs > 0)) throw new Error(`--ack-timeout needs seconds, got "${v}"`)
        opts.ackTimeoutMs = secs * 1000
        break
      }
      case '--tls':
        opts.tls = opts.tls ?? true
        break
      case '--tls-ca':
      case '--tls-ca-key': {
        const file = value()
        let pem
        try {
          pem = require('node:fs').readFileSync(file, 'utf8')
        } catch (e) {
          throw new Error(`${flag} ${file}: ${e.message}`)
        }
        opts.tls = typeof opts.tls === 'object' ? opts.tls : {}
        opts.tls[flag === '--tls-ca' ? 'caCert' : 'caKey'] = pem
        break
      }
      case '--data-dir':
        opts.dataDir = value()
        break
      case '--in-memory':
        opts.inMemory = true
        break
      case '--allow-host': {
        const v = value()
        if (!v.replace(/^\.+/, '').trim() || /[/\s:]/.test(v)) throw new Error(`--allow-host needs a host name (no port, no scheme), got ${v}`)
        opts.allowedHosts.push(v)
        break
      }
      case '--log': {
        const v = value()
        if (!['error', 'warn', 'info', 'debug'].includes(v)) throw new Error(`--log must be error, warn, info or debug, got ${v}`)
        opts.log = v
        break
      }
      case '--max-upload-bytes': {
        const v = Number(value())
        if (!Number.isSafeInteger(v) || v < 0) throw new Error('--max-upload-bytes needs a non-negative integer')
        opts.maxUploadBytes = v
        break
      }
      case '-h':
      case '--help':
        console.log(USAGE)
        process.exit(0)
        break
      default:
        throw new Error(`unknown flag ${flag} (try --help)`)
    }
  }
  if (opts.apiKeys.length === 0) delete opts.apiKeys
  if (opts.allowedHosts.length === 0) delete opts.allowedHosts
  if (opts.inMemory && opts.dataDir !== undefined) throw new Error('--in-memory and --data-dir exclude each other: choose one')
  if (!opts.inMemory && opts.dataDir === undefined) opts.dataDir = '.blocks-devnet'
  if (opts.inMemory) delete opts.inMemory
  return opts
}

const USAGE = `usage:
  blocks-devnet [--port N] [--api-key KEY[:USER]]... [--agent NAME:paid|free]... [--token-ttl SECS]
                [--data-dir DIR | --in-memory] [--max-upload-bytes N] [--allow-host NAME]...
                [--ack-timeout SECS] [--tls [--tls-ca CERT.pem --tls-ca-key KEY.pem]] [--log LEVEL]
                                                           run a local network until Ctrl-C
      --data-dir DIR  database and files (default .blocks-devnet in the current directory);
                      the network keeps its agents, tasks, history and files across restarts
      --in-memory     keep nothing (a throwaway network)
      --allow-host NAME  also serve this host name (besides localhost, 127.0.0.0/8, [::1]; .NAME: and
                      every name under it); requests for other hosts get 421 (DNS rebinding)
      --tls           serve HTTPS: a CA kept in DIR/tls (made on first use) signs a certificate for
                      localhost, 127.0.0.1 and ::1; trust it with the NODE_EXTRA_CA_CERTS export
      --tls-ca CERT.pem --tls-ca-key KEY.pem  sign with this CA instead (with --tls)
      --ack-timeout SECS  how long an agent instance has to acknowledge a task before it is sent
                      again, to another instance if there is one (default 30); after three
                      unanswered sends the task fails with task_not_acknowledged
      --log LEVEL     error | warn | info | debug (debug: one line per request)
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
  let opts
  try {
    opts = parse(process.argv.slice(2))
  } catch (e) {
    console.error(`blocks-devnet: ${e.message}`)
    process.exit(2)
  }
  const { log, ...netOpts } = opts
  if (log) require('../index.js').setLogLevel(log)
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
  net = await LocalNetwork.start(netOpts)
  if (stopping) {
    await net.stop()
    process.exit(0)
  }
  console.log(`export BLOCKS_CDM_URL=${net.cdmUrl}`)
  console.log(`export BLOCKS_API_KEY=${net.apiKey}`)
  if (net.caFile) console.log(`export NODE_EXTRA_CA_CERTS=${net.caFile}`)
  const data = netOpts.dataDir === undefined ? 'in memory: nothing is kept' : `data in ${require('node:path').resolve(netOpts.dataDir)}`
  console.log(`blocks-devnet listening on ${net.url} (${data}; Ctrl-C to stop)`)
}

main().catch((e) => {
  console.error(`blocks-devnet: ${e.message}`)
  process.exit(1)
})
