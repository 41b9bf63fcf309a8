#!/usr/bin/env node
'use strict'
// `blocks-run`: run the agent in the current folder (agent-card.json + handler module).
const path = require('node:path')
const fs = require('node:fs')
const { pathToFileURL } = require('node:url')
const { parseEnv } = require('node:util')
const { loadCard, startAgentInstance } = require('../lib/agent.js')

function loadDotEnv(dir) {
  const file = path.join(dir, '.env')
  if (!fs.existsSync(file)) return
  const vars = parseEnv(fs.readFileSync(file, 'utf8'))
  for (const [k, v] of Object.entries(vars)) if (process.env[k] === undefined || process.env[k] === '') process.env[k] = v
}

async function loadHandler(dir, card) {
  const file = path.resolve(dir, card.runtime?.handler ?? './handler.ts')
  if (!fs.existsSync(file)) throw new Error(`handler file ${file} not found (runtime.handler in agent-card.json)`)
  let mod = await import(pathToFileURL(file).href)
  if (mod && mod.default && typeof mod.default === 'object' && mod.default.default) mod = mod.default
  const names = [card.runtime?.handlerExport, 'default', 'handler'].filter(Boolean)
  for (const name of names) if (typeof mod[name] === 'function') return mod[name]
  throw new Error(`${path.basename(file)} does not export a function (looked for ${names.join(', ')})`)
}

async function main() {
  const dir = process.cwd()
  loadDotEnv(dir)
  const card = loadCard(path.join(dir, 'agent-card.json'))
  const handler = await loadHandler(dir, card)
  const name = card.identity.displayName ?? card.identity.agentName
  console.log(`[blocks-run] starting "${name}" (${card.identity.agentName})`)
  // signal handlers before anything is printed as ready: a Ctrl-C right after start-up must drain,
  // not kill the process with the default action
  const graceSec = Number(process.env.AGENT_SHUTDOWN_GRACE_SEC ?? 10)
  let agent = null
  let stopping = false
  const shutdown = async () => {
    if (stopping) return
    stopping = true
    console.log('[blocks-run] shutting down...')
    await agent?.stop(Number.isFinite(graceSec) && graceSec >= 0 ? graceSec * 1000 : 10_000)
    process.exit(0)
  }
  process.on('SIGINT', shutdown)
  process.on('SIGTERM', shutdown)
  agent = await startAgentInstance({ card, handler })
  if (stopping) {
    await agent.stop(0)
    process.exit(0)
  }
  console.log(`[blocks-run] instance ${agent.instanceId} running`)
  console.log('[blocks-run] press Ctrl+C to stop')
}

main().catch((e) => {
  console.error(`[blocks-run] fatal: ${e && e.message}`)
  process.exit(1)
})
