// Packaging (issue 8): install the two tarballs from dist/ (`npm run pack`) into a fresh project
// with no cargo on the PATH, then run an ESM script, a CommonJS script and a compiled TypeScript
// script against `npx blocks-devnet`, with an example agent run by the `blocks-run` bin.
// Run: npm run test:pack
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { execFileSync, spawn } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'

const root = path.resolve(import.meta.dirname, '../..')
const dist = path.join(root, 'dist')
const nodeDir = path.dirname(process.execPath)
// node 22 first; no ~/.cargo/bin, so nothing can build Rust
const PATH = [nodeDir, '/usr/local/bin', '/usr/bin', '/bin'].join(':')
const env = { ...process.env, PATH, npm_config_audit: 'false', npm_config_fund: 'false' }
delete env.CARGO_TARGET_DIR
let dir
let devnet
let agent
let exports

function run(cmd, args, extra = {}) {
  return execFileSync(cmd, args, { cwd: dir, env: { ...env, ...extra }, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 300_000 })
}

/** Start a long-running child and resolve when `pattern` appears on its stdout. */
function start(cmd, args, pattern, extra = {}, cwd = dir) {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd, env: { ...env, ...extra }, stdio: ['ignore', 'pipe', 'pipe'], detached: true })
    let out = ''
    let err = ''
    const timer = setTimeout(() => reject(new Error(`${cmd} ${args.join(' ')}: no ${pattern} within 60 s\n${out}\n${err}`)), 60_000)
    child.stdout.on('data', (d) => {
      out += d
      if (pattern.test(out)) {
        clearTimeout(timer)
        resolve({ child, out: () => out })
      }
    })
    child.stderr.on('data', (d) => (err += d))
    child.once('exit', (code) => reject(new Error(`${cmd} exited with ${code}\n${out}\n${err}`)))
  })
}

before(async () => {
  const tarballs = fs.readdirSync(dist).filter((f) => f.endsWith('.tgz')).map((f) => path.join(dist, f))
  assert.equal(tarballs.length, 2, `run npm run pack first (found ${tarballs.join(', ') || 'nothing'} in dist/)`)
  assert.throws(() => execFileSync('which', ['cargo'], { env }), 'cargo must not be on the PATH of this test')
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'blocks-pack-'))
  fs.writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ name: 'pack-test', version: '1.0.0', private: true }))
  run('npm', ['install', '--no-save', ...tarballs])
  // TypeScript and Node's types for the compiled script come from this repository
  fs.mkdirSync(path.join(dir, 'node_modules/@types'), { recursive: true })
  fs.symlinkSync(path.join(root, 'node_modules/@types/node'), path.join(dir, 'node_modules/@types/node'))
  const d = await start('npx', ['blocks-devnet', '--port', '0'], /listening on/)
  devnet = d.child
  exports = Object.fromEntries([...d.out().matchAll(/export (\w+)=(\S+)/g)].map((m) => [m[1], m[2]]))
  assert.ok(exports.BLOCKS_CDM_URL && exports.BLOCKS_API_KEY, d.out())
  // the echo example, run by the installed blocks-run bin
  const agentDir = path.join(dir, 'echo-agent')
  fs.mkdirSync(agentDir)
  fs.copyFileSync(path.join(root, 'examples/echo/agent-card.json'), path.join(agentDir, 'agent-card.json'))
  fs.copyFileSync(path.join(root, 'examples/echo/handler.ts'), path.join(agentDir, 'handler.ts'))
  fs.writeFileSync(path.join(agentDir, 'package.json'), '{ "type": "module" }')
  const a = await start(path.join(dir, 'node_modules/.bin/blocks-run'), [], /AG-echo-/, exports, agentDir)
  agent = a.child
})

/** SIGTERM a child's whole process group (npx runs the bin in a grandchild) and wait for it. */
async function stop(child) {
  if (!child || child.exitCode !== null) return
  const exited = new Promise((r) => child.once('exit', r))
  try {
    process.kill(-child.pid, 'SIGTERM')
  } catch {
    child.kill('SIGTERM')
  }
  await exited
}

after(async () => {
  await stop(agent)
  await stop(devnet)
  if (dir) fs.rmSync(dir, { recursive: true, force: true })
})

test('the binary comes from the platform package, not a build', () => {
  const installed = fs.readdirSync(path.join(dir, 'node_modules/@blocks-network'))
  assert.deepEqual(installed.sort(), ['sdk', 'sdk-linux-x64-gnu'])
  assert.ok(!fs.readdirSync(path.join(dir, 'node_modules/@blocks-network/sdk')).some((f) => f.endsWith('.node')))
  const ldd = execFileSync('ldd', [path.join(dir, 'node_modules/@blocks-network/sdk-linux-x64-gnu/blocks-sdk.linux-x64-gnu.node')], { encoding: 'utf8' })
  assert.doesNotMatch(ldd, /libssl|libcrypto/)
})

test('an ESM script with named imports calls the echo agent', () => {
  fs.writeFileSync(path.join(dir, 'esm.mjs'), `
import { TaskClient, textPart, RpcError, StreamUnavailableError } from '@blocks-network/sdk'
import { StreamRef } from '@blocks-network/sdk/stream'
import * as all from '@blocks-network/sdk'
const client = await TaskClient.create({ billingMode: 'free', apiKey: process.env.BLOCKS_API_KEY })
const s = await client.sendMessage({ agentName: 'echo', requestParts: [textPart('from esm')] })
const t = await s.waitForTerminal(30000)
console.log(t.state, Buffer.from(s.listArtifacts()[0].artifactRef.data, 'base64').toString())
console.log(typeof RpcError, typeof StreamUnavailableError, typeof StreamRef, Object.keys(all).length > 20)
client.destroy()
`)
  const out = run(process.execPath, ['esm.mjs'], exports)
  assert.match(out, /completed Echo: from esm/)
  assert.match(out, /function function function true/)
})

test('a CommonJS script works, and errors are the same classes from require and import', () => {
  fs.writeFileSync(path.join(dir, 'cjs.cjs'), `
const { TaskClient, textPart, InvalidArgumentError } = require('@blocks-network/sdk')
;(async () => {
  const esm = await import('@blocks-network/sdk')
  const client = await TaskClient.create({ billingMode: 'free', apiKey: process.env.BLOCKS_API_KEY })
  const s = await client.sendMessage({ agentName: 'echo', requestParts: [textPart('from cjs')] })
  console.log((await s.waitForTerminal(30000)).state)
  try { await client.sendMessage({ agentName: 'echo', taskKind: 'pipe' }) } catch (e) {
    console.log(e instanceof InvalidArgumentError, e instanceof esm.InvalidArgumentError, esm.TaskClient === TaskClient)
  }
  client.destroy()
})()
`)
  const out = run(process.execPath, ['cjs.cjs'], exports)
  assert.match(out, /completed\ntrue true true/)
})

test('a TypeScript caller compiles under --strict (module nodenext) and runs', () => {
  fs.writeFileSync(path.join(dir, 'caller.mts'), `
import { TaskClient, textPart, type TerminalEvent } from '@blocks-network/sdk'
const client = await TaskClient.create({ billingMode: 'free', apiKey: process.env.BLOCKS_API_KEY })
const s = await client.sendMessage({ agentName: 'echo', requestParts: [textPart('from ts')] })
const t: TerminalEvent = await s.waitForTerminal(30_000)
const first = s.listArtifacts()[0] // an ArtifactRef
console.log(t.state, first.kind === 'inline' ? Buffer.from(first.data, 'base64').toString() : '')
client.destroy()
`)
  const tsc = path.join(root, 'node_modules/typescript/bin/tsc')
  run(process.execPath, [tsc, '--strict', '--module', 'nodenext', '--moduleResolution', 'nodenext', '--target', 'es2022', '--types', 'node', 'caller.mts'])
  const out = run(process.execPath, ['caller.mjs'], exports)
  assert.match(out, /completed Echo: from ts/)
})

test('npm publish --dry-run accepts both packages', () => {
  for (const t of fs.readdirSync(dist).filter((f) => f.endsWith('.tgz'))) {
    const out = execFileSync('npm', ['publish', '--dry-run', '--access', 'public', path.join(dist, t)], { env, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] })
    assert.match(out, /\+ @blocks-network\/sdk/)
  }
})
