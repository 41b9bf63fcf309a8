#!/usr/bin/env node
'use strict'
// `blocks-run`: run the agent in the current folder (agent-card.json + handler module).
//
// The SDK is loaded through its package entry (index.js), after `.env`: that is what registers
// the error classes and the log sink, so a handler that imports nothing from the SDK still gets
// the engine's logs (LOG_LEVEL and BLOCKS_DEBUG_INTERNAL from `.env` apply) and the SDK's error
// classes from `ctx`.
const path = require('node:path')
const fs = require('node:fs')
const { pathToFileURL } = require('node:url')
const { parseEnv } = require('node:util')

function loadDotEnv(dir) {
  const file = path.join(dir, '.env')
  if (!fs.existsSync(file)) return
  const vars = parseEnv(fs.readFileSync(file, 'utf8'))
  for (const [k, v] of Object.entries(vars)) if (process.env[k] === undefined || process.env[k] === '') process.env[k] = v
}

const TS = /\.(ts|mts|cts)$/

async function importHandlerModule(file) {
  if (TS.test(file) && !process.features.typescript) {
    throw new Error(
      `${path.basename(file)} is TypeScript and this Node (${process.version}) cannot strip types: use Node 22.18 or later, or run with NODE_OPTIONS=--experimental-strip-types`,
    )
  }
  try {
    return await import(pathToFileURL(file).href)
  } catch (e) {
    if (e && e.code === 'ERR_UNSUPPORTED_TYPESCRIPT_SYNTAX') {
      throw new Error(`${path.basename(file)}: ${e.message} (Node runs .ts files by stripping the types: enums, namespaces and parameter properties need a build step)`)
    }
    throw e
  }
}

/** The handler: `runtime.handlerExport`, else `handler`, else `default` (also inside a CommonJS / double-wrapped default). */
async function loadHandler(dir, card) {
  const file = path.resolve(dir, card.runtime?.handler ?? './handler.ts')
  if (!fs.existsSync(file)) throw new Error(`handler file ${file} not found (runtime.handler in agent-card.json)`)
  const mod = await importHandlerModule(file)
  const names = [...new Set([card.runtime?.handlerExport, 'handler', 'default'].filter((n) => typeof n === 'string' && n))]
  const scopes = [mod]
  if (mod && mod.default && typeof mod.default === 'object') scopes.push(mod.default)
  for (const scope of scopes) for (const name of names) if (typeof scope[name] === 'function') return scope[name]
  throw new Error(`${path.basename(file)} does not export a function (looked for ${names.join(', ')})`)
}

async function main() {
  const dir = process.cwd()
  loadDotEnv(dir)
  const sdk = require('../index.js')
  const card = sdk.loadCard(path.join(dir, 'agent-card.json'))
  const handler = await loadHandler(dir, card)
  const name = card.identity.displayName ?? card.identity.agentName
  console.log(`[blocks-run] starting "${name}" (${card.identity.agentName})`)
  // signal handlers before anything is printed as ready: a Ctrl-C right after start-up must drain,
  // not kill the process with the default action
  const graceSec = Number(process.env.AGENT_SHUTDOWN_GRACE_SEC ?? 10)
  let agent = null
  let stopping = false
  const shutdown = async () => {
    if (stopping) {
      if (!agent) process.exit(0) // a second Ctrl-C while still starting: do not wait
      return
    }
    stopping = true
    console.log('[blocks-run] shutting down...')
    if (!agent) return // still starting: stopped (without a grace period) as soon as it is up
    await agent.stop(Number.isFinite(graceSec) && graceSec >= 0 ? graceSec * 1000 : 10_000)
    process.exit(0)
  }
  process.on('SIGINT', shutdown)
  process.on('SIGTERM', shutdown)
  agent = await sdk.startAgentInstance({ card, handler })
  if (stopping) {
    await agent.stop(0)
    process.exit(0)
  }
  console.log(`[blocks-run] instance ${agent.instanceId} running`)
  console.log('[blocks-run] press Ctrl+C to stop')
}

main().catch((e) => {
  console.error(`[blocks-run] fatal: ${require('../lib/log.js').redact((e && e.message) || e)}`)
  process.exit(1)
})
