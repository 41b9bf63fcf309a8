// Shared test helpers: every suite runs the real SDK against a real in-process devnet on loopback.
import { spawn } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import { createRequire } from 'node:module'
import path from 'node:path'
import tls from 'node:tls'

const require = createRequire(import.meta.url)
export const sdk = require('../index.js')

/**
 * `BLOCKS_DEVNET_TLS=1` (the one variable): every devnet of `startNetwork` serves HTTPS, signed by
 * the test CA of fixtures/. This process trusts that CA from here on (Node's fetch and https via
 * `tls.setDefaultCACertificates`, the SDK via `NODE_EXTRA_CA_CERTS`, which child processes
 * inherit and Node reads at their start). `npm run test:tls` runs suites this way.
 */
export const TLS = process.env.BLOCKS_DEVNET_TLS === '1'
const fixtures = path.join(import.meta.dirname, 'fixtures')
export const TEST_CA = path.join(fixtures, 'devnet-ca.pem')
if (TLS) {
  if (typeof tls.setDefaultCACertificates !== 'function') throw new Error(`BLOCKS_DEVNET_TLS=1 needs tls.setDefaultCACertificates (Node >= 22.19; this is ${process.version}): run the tests with npm test, which uses the pinned Node`)
  const pem = fs.readFileSync(TEST_CA, 'utf8')
  if (!tls.getCACertificates('default').some((c) => c.trim() === pem.trim())) {
    tls.setDefaultCACertificates([...tls.getCACertificates('default'), pem])
  }
  const extra = process.env.NODE_EXTRA_CA_CERTS
  if (!extra) process.env.NODE_EXTRA_CA_CERTS = TEST_CA
  else if (path.resolve(extra) !== TEST_CA && !fs.readFileSync(extra, 'utf8').includes(pem.trim())) {
    // keep what the machine already trusts extra (a company CA), plus the test CA
    const both = path.join(os.tmpdir(), `blocks-test-ca-${process.pid}.pem`)
    fs.writeFileSync(both, `${fs.readFileSync(extra, 'utf8').trimEnd()}\n${pem}`)
    process.env.NODE_EXTRA_CA_CERTS = both
    process.on('exit', () => fs.rmSync(both, { force: true }))
  }
}
/** The `tls` option of a devnet signed by the test CA. */
export const testCaTls = () => ({ caCert: fs.readFileSync(TEST_CA), caKey: fs.readFileSync(path.join(fixtures, 'devnet-ca-key.pem')) })

/** Start a devnet (over TLS with `BLOCKS_DEVNET_TLS=1`); returns it with helpers bound to it. */
export async function startNetwork(options = {}) {
  const net = await sdk.LocalNetwork.start(TLS && options.tls === undefined ? { tls: testCaTls(), ...options } : options)
  const clients = []
  const agents = []
  return {
    net,
    /** A caller client on this network. */
    async client(extra = {}) {
      const c = await sdk.TaskClient.create({ billingMode: 'free', apiKey: net.apiKey, cdmUrl: net.cdmUrl, ...extra })
      clients.push(c)
      return c
    },
    /** An agent instance on this network. */
    async agent(agentName, handler, extra = {}) {
      const a = await sdk.startAgentInstance({ agentName, handler, apiKey: net.apiKey, cdmUrl: net.cdmUrl, ...extra })
      agents.push(a)
      return a
    },
    async stop() {
      for (const c of clients) c.destroy()
      await Promise.all(agents.map((a) => a.stop(1000)))
      await net.stop()
    },
  }
}

/** Decode an inline artifact event's data as UTF-8. */
export function artifactText(event) {
  return Buffer.from(event.artifactRef.data ?? '', 'base64').toString('utf8')
}

/** A promise with its resolve function exposed. */
/**
 * Resolves when `signal` aborts, at once if it already has. (A bare
 * `addEventListener('abort')` never fires for a signal that aborted before the listener was added:
 * a handler that awaits it after the cancel came hangs.)
 */
export function aborted(signal) {
  return new Promise((resolve) => (signal.aborted ? resolve() : signal.addEventListener('abort', resolve, { once: true })))
}

export function deferred() {
  let resolve, reject
  const promise = new Promise((res, rej) => {
    resolve = res
    reject = rej
  })
  return { promise, resolve, reject }
}

/**
 * Run Node with `args` as a child process; resolves with { code, signal, stdout, stderr, ms }.
 * `onStdout(allSoFar, child)` sees the output as it arrives (e.g. to kill the child at a point).
 */
export function runNodeArgs(args, { env = {}, timeoutMs = 20_000, cwd, onStdout } = {}) {
  return new Promise((resolve, reject) => {
    const started = Date.now()
    const child = spawn(process.execPath, args, { env: { ...process.env, ...env }, cwd, stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d) => {
      stdout += d
      onStdout?.(stdout, child)
    })
    child.stderr.on('data', (d) => (stderr += d))
    const timer = setTimeout(() => {
      child.kill('SIGKILL')
      reject(new Error(`child did not exit within ${timeoutMs} ms\nstdout: ${stdout}\nstderr: ${stderr}`))
    }, timeoutMs)
    child.on('exit', (code, signal) => {
      clearTimeout(timer)
      resolve({ code, signal, stdout, stderr, ms: Date.now() - started })
    })
  })
}

/** Run a Node ES module given as source text as a child process. */
export function runNode(source, options) {
  return runNodeArgs(['--input-type=module', '-e', source], options)
}

/** The devnet CLI (bin/blocks-devnet.js). */
export const devnetCli = path.join(import.meta.dirname, '..', 'bin', 'blocks-devnet.js')

/**
 * Start the devnet CLI as a child process; resolves once it prints its exports, with the child,
 * the exports (`env`), what it printed and its port.
 */
export function startCli(args, { cwd } = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [devnetCli, ...args], { stdio: ['ignore', 'pipe', 'pipe'], cwd })
    let out = ''
    let err = ''
    child.stdout.on('data', (d) => {
      out += d
      const m = /blocks-devnet listening on https?:\/\/127\.0\.0\.1:(\d+).*\n/.exec(out)
      if (m) {
        const env = Object.fromEntries([...out.matchAll(/export (\w+)=(\S+)/g)].map((x) => [x[1], x[2]]))
        resolve({ child, env, out, port: Number(m[1]), stderr: () => err })
      }
    })
    child.stderr.on('data', (d) => (err += d))
    child.once('exit', (code) => reject(new Error(`blocks-devnet exited with ${code}: ${out}${err}`)))
  })
}

/** SIGKILL a child process and wait until it is gone. */
export async function kill9(child) {
  if (child.exitCode !== null || child.signalCode !== null) return
  const gone = new Promise((r) => child.once('exit', r))
  child.kill('SIGKILL')
  await gone
}
