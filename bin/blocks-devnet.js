#!/usr/bin/env node
'use strict'
// `npx blocks-devnet`: run a local Blocks Network until Ctrl-C.
// Flags: --port N, --api-key KEY[:USER] (repeatable), --agent NAME:paid|free (repeatable), --token-ttl SECS,
// --data-dir DIR (where files are kept; default a temporary directory), --max-upload-bytes N
const { LocalNetwork } = require('../index.js')

function parse(argv) {
  const opts = { apiKeys: [], paidAgents: [] }
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
      case '--data-dir':
        opts.dataDir = value()
        break
      case '--max-upload-bytes': {
        const v = Number(value())
        if (!Number.isSafeInteger(v) || v < 0) throw new Error('--max-upload-bytes needs a non-negative integer')
        opts.maxUploadBytes = v
        break
      }
      case '-h':
      case '--help':
        console.log('usage: blocks-devnet [--port N] [--api-key KEY[:USER]]... [--agent NAME:paid|free]... [--token-ttl SECS] [--data-dir DIR] [--max-upload-bytes N]')
        process.exit(0)
        break
      default:
        throw new Error(`unknown flag ${flag} (try --help)`)
    }
  }
  if (opts.apiKeys.length === 0) delete opts.apiKeys
  return opts
}

async function main() {
  let opts
  try {
    opts = parse(process.argv.slice(2))
  } catch (e) {
    console.error(`blocks-devnet: ${e.message}`)
    process.exit(2)
  }
  const net = await LocalNetwork.start(opts)
  console.log(`export BLOCKS_CDM_URL=${net.cdmUrl}`)
  console.log(`export BLOCKS_API_KEY=${net.apiKey}`)
  console.log(`blocks-devnet listening on ${net.url} (Ctrl-C to stop)`)
  const keepAlive = setInterval(() => {}, 1 << 30)
  const shutdown = async () => {
    clearInterval(keepAlive)
    await net.stop()
    process.exit(0)
  }
  process.once('SIGINT', shutdown)
  process.once('SIGTERM', shutdown)
}

main().catch((e) => {
  console.error(`blocks-devnet: ${e.message}`)
  process.exit(1)
})
