// Issue 19 (part): untested behaviour of the agent shutdown, blocks-run, the devnet CLI and a
// durable devnet across restarts. Agents and CLIs run as child processes where the behaviour is a
// process's (grace on SIGTERM, an instance that never comes back); everything else in-process.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { sdk, deferred, startCli, artifactText } from './helpers.mjs'

const { TaskClient, textPart, filePart, FileUploadError, BillingModeMismatchError, RpcError } = sdk
const root = fileURLToPath(new URL('..', import.meta.url))
const indexPath = path.join(root, 'index.js')

let tmp
before(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'blocks-gaps-devnet-'))
})
after(() => {
  fs.rmSync(tmp, { recursive: true, force: true })
})

function made(n, salt = 3) {
  const data = Buffer.alloc(n)
  for (let i = 0; i < n; i++) data[i] = (i * 31 + salt) & 0xff
  return data
}

/** Reject with `label` unless `p` settles within `ms`. */
function within(p, ms, label) {
  let timer
  const limit = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${typeof label === 'function' ? label() : label} (gave up after ${ms} ms)`)), ms)
  })
  return Promise.race([p, limit]).finally(() => clearTimeout(timer))
}

/**
 * Watch a child's output: `waitFor(pattern)` resolves with the match once stdout+stderr match,
 * and fails with everything the child printed if it exits first or `ms` pass.
 */
function watch(child) {
  const out = { text: '' }
  const watchers = new Set()
  const look = () => {
    for (const w of watchers) {
      const m = w.pattern.exec(out.text)
      if (m) {
        watchers.delete(w)
        w.done(null, m)
      }
    }
  }
  child.stdout.on('data', (d) => {
    out.text += d
    look()
  })
  child.stderr.on('data', (d) => {
    out.text += d
    look()
  })
  const exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal, at: Date.now() })))
  exited.then(({ code, signal }) => {
    for (const w of watchers) w.done(new Error(`the child exited (${code ?? signal}) before printing ${w.pattern}\noutput: ${out.text}`))
    watchers.clear()
  })
  const waitFor = (pattern, ms = 20_000) =>
    new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        watchers.delete(w)
        reject(new Error(`the child did not print ${pattern} within ${ms} ms\noutput: ${out.text}`))
      }, ms)
      const w = { pattern, done: (err, m) => (clearTimeout(timer), err ? reject(err) : resolve(m)) }
      watchers.add(w)
      look()
    })
  return { child, out, exited, waitFor }
}

function agentFolder(files) {
  const dir = fs.mkdtempSync(path.join(tmp, 'agent-'))
  for (const [name, content] of Object.entries(files)) fs.writeFileSync(path.join(dir, name), content)
  return dir
}

function runBlocksRun(dir, env) {
  const child = spawn(process.execPath, [path.join(root, 'bin', 'blocks-run.js')], { cwd: dir, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
  return watch(child)
}

/** A registered agent with no instance (a registry lookup with an API key registers it). */
async function register(net, agentName) {
  const r = await fetch(`${net.url}/api/v1/registry/agents?agentName=${agentName}`, { headers: { authorization: `Bearer ${net.apiKey}` } })
  assert.equal(r.status, 200)
}

// ---------------------------------------------------------------------------------------------
// Agent shutdown

test('SHUT-01 SHUT-05 stop(graceMs): a handler that outlives the grace ends failed with error agent_stopped; the stopped instance takes no new task, which waits for a live one', async () => {
  const net = await sdk.LocalNetwork.start()
  const agents = []
  try {
    const runs = { old: [], fresh: [] }
    const held = []
    const started = deferred()
    const old = await sdk.startAgentInstance({
      agentName: 'lingering',
      apiKey: net.apiKey,
      cdmUrl: net.cdmUrl,
      handler: (task) => {
        runs.old.push(task.taskId)
        started.resolve()
        return new Promise((resolve) => held.push(resolve)) // never finishes, ignores cancellation (kept reachable: a GC must not end it)
      },
    })
    agents.push(old)
    const client = await TaskClient.create({ billingMode: 'free', apiKey: net.apiKey, cdmUrl: net.cdmUrl })
    const s = await client.sendMessage({ agentName: 'lingering', requestParts: [] })
    await within(started.promise, 15_000, 'the handler never ran')
    const t0 = Date.now()
    await old.stop(400)
    const took = Date.now() - t0
    assert.ok(took >= 350, `stop(400) returned after ${took} ms: the handler was given its grace`)
    const t = await s.waitForTerminal(15_000)
    assert.equal(t.state, 'failed')
    assert.equal(t.error, 'agent_stopped')
    // a new task for the agent is not dispatched to the stopped instance: it waits, queued
    const next = await client.sendMessage({ agentName: 'lingering', requestParts: [textPart('after stop')] })
    assert.equal(next.queued, true)
    assert.equal((await client.getTask(next.taskId)).state, 'pending')
    const ran = deferred()
    agents.push(await sdk.startAgentInstance({
      agentName: 'lingering',
      apiKey: net.apiKey,
      cdmUrl: net.cdmUrl,
      handler: (task, ctx) => {
        runs.fresh.push(task.taskId)
        ran.resolve()
        return { artifacts: [{ data: `fresh: ${ctx.requestParts[0]?.text}`, mimeType: 'text/plain' }] }
      },
    }))
    assert.equal((await next.waitForTerminal(15_000)).state, 'completed')
    assert.equal(artifactText(next.listArtifacts()[0]), 'fresh: after stop')
    assert.deepEqual(runs, { old: [s.taskId], fresh: [next.taskId] }, 'the stopped instance never saw the new task')
    // a handler that finishes within the grace completes normally
    const quick = deferred()
    const release = deferred()
    const third = await sdk.startAgentInstance({
      agentName: 'graceful', apiKey: net.apiKey, cdmUrl: net.cdmUrl,
      handler: async () => {
        quick.resolve()
        await release.promise
        return { artifacts: [{ data: 'finished in time', mimeType: 'text/plain' }] }
      },
    })
    agents.push(third)
    const g = await client.sendMessage({ agentName: 'graceful', requestParts: [] })
    await within(quick.promise, 15_000, 'the graceful handler never ran')
    const stopping = third.stop(10_000)
    release.resolve()
    await stopping
    const tg = await g.waitForTerminal(15_000)
    assert.equal(tg.state, 'completed')
    assert.equal(artifactText(g.listArtifacts()[0]), 'finished in time')
    client.destroy()
  } finally {
    await Promise.all(agents.map((a) => a.stop(0)))
    await net.stop()
  }
})

test('SHUT-02 blocks-run with AGENT_SHUTDOWN_GRACE_SEC=1: on SIGTERM a handler still running after 1 s ends failed with agent_stopped, and the process exits 0', async () => {
  const net = await sdk.LocalNetwork.start()
  try {
    const dir = agentFolder({
      'agent-card.json': JSON.stringify({ identity: { agentName: 'slowpoke', displayName: 'Slowpoke' }, runtime: { handler: './handler.mjs' } }),
      'handler.mjs': `export default async function handler(task) {
        console.log('handler running ' + task.taskId)
        await (globalThis.held = new Promise(() => {})) // kept reachable: a GC must not end it
      }`,
    })
    const { child, out, exited, waitFor } = runBlocksRun(dir, { ...net.env, AGENT_SHUTDOWN_GRACE_SEC: '1' })
    await waitFor(/press Ctrl\+C/)
    const client = await TaskClient.create({ billingMode: 'free', apiKey: net.apiKey, cdmUrl: net.cdmUrl })
    const s = await client.sendMessage({ agentName: 'slowpoke', requestParts: [] })
    await waitFor(new RegExp(`handler running ${s.taskId}`))
    const t0 = Date.now()
    child.kill('SIGTERM')
    const t = await s.waitForTerminal(15_000)
    assert.equal(t.state, 'failed')
    assert.equal(t.error, 'agent_stopped')
    const { code, at } = await within(exited, 15_000, () => `blocks-run did not exit; output: ${out.text}`)
    assert.equal(code, 0, out.text)
    const took = at - t0
    assert.ok(took >= 900, `exited ${took} ms after SIGTERM: before the 1 s grace ran out`)
    assert.ok(took < 8000, `exited ${took} ms after SIGTERM: the 1 s grace was not used (default 10 s)`)
    assert.match(out.text, /\[blocks-run\] shutting down\.\.\./)
    client.destroy()
  } finally {
    await net.stop()
  }
})

test('AGT-16 blocks-run runs the export named by runtime.handlerExport in the card', async () => {
  const net = await sdk.LocalNetwork.start()
  try {
    const dir = agentFolder({
      'agent-card.json': JSON.stringify({ identity: { agentName: 'picky' }, runtime: { handler: './handler.mjs', handlerExport: 'chosen' } }),
      'handler.mjs': [
        "export default () => ({ artifacts: [{ data: 'default', mimeType: 'text/plain' }] })",
        "export const handler = () => ({ artifacts: [{ data: 'handler', mimeType: 'text/plain' }] })",
        "export const chosen = () => ({ artifacts: [{ data: 'chosen', mimeType: 'text/plain' }] })",
      ].join('\n'),
    })
    const { child, out, exited, waitFor } = runBlocksRun(dir, net.env)
    try {
      await waitFor(/press Ctrl\+C/)
      const client = await TaskClient.create({ billingMode: 'free', apiKey: net.apiKey, cdmUrl: net.cdmUrl })
      const s = await client.sendMessage({ agentName: 'picky', requestParts: [] })
      assert.equal((await s.waitForTerminal(15_000)).state, 'completed')
      assert.equal(artifactText(s.listArtifacts()[0]), 'chosen')
      client.destroy()
    } finally {
      child.kill('SIGTERM')
      assert.equal((await exited).code, 0, out.text)
    }
    // a handlerExport that names no function fails start-up, naming it
    const bad = agentFolder({
      'agent-card.json': JSON.stringify({ identity: { agentName: 'picky_bad' }, runtime: { handler: './handler.mjs', handlerExport: 'missing' } }),
      'handler.mjs': 'export const missing = 42',
    })
    const r = runBlocksRun(bad, net.env)
    const { code } = await r.exited
    assert.equal(code, 1, r.out.text)
    assert.match(r.out.text, /\[blocks-run\] fatal: .*does not export a function.*missing/)
  } finally {
    await net.stop()
  }
})

// ---------------------------------------------------------------------------------------------
// The devnet CLI

let cli
let cliAgent
async function cliNet() {
  if (cli) return cli
  cli = await startCli(['--port', '0', '--in-memory', '--log', 'warn', '--token-ttl', '2', '--api-key', 'bk_alice:alice', '--api-key', 'bk_bob', '--agent', 'vip:paid', '--max-upload-bytes', '50000'])
  cli.url = `http://127.0.0.1:${cli.port}`
  return cli
}
after(async () => {
  await cliAgent?.stop(0)
  if (cli) {
    const gone = new Promise((r) => cli.child.once('exit', r))
    cli.child.kill('SIGINT')
    await gone
  }
})

async function tokenOf(url, apiKey) {
  const r = await fetch(`${url}/api/v1/auth/agent/consumer-token`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ apiKey }) })
  return { status: r.status, body: await r.json().catch(() => null) }
}

test('blocks-devnet --token-ttl 2: access tokens say expiresIn 2 and are refused about 2 s after they were issued', async () => {
  const { url } = await cliNet()
  const issued = Date.now()
  const t = await tokenOf(url, 'bk_alice')
  assert.equal(t.status, 200)
  assert.equal(t.body.expiresIn, 2)
  const statuses = []
  for (;;) {
    const r = await fetch(`${url}/api/v1/rpc`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${t.body.accessToken}` },
      body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'ListTasks', params: {} }),
    })
    statuses.push(r.status)
    if (r.status === 401) break
    assert.ok(Date.now() - issued < 8000, `the token was still accepted after 8 s; statuses: ${[...new Set(statuses)]}`)
    await new Promise((res) => setTimeout(res, 50))
  }
  const lived = Date.now() - issued
  assert.equal(statuses[0], 200, 'the fresh token worked')
  assert.ok(lived >= 1500, `refused after ${lived} ms: sooner than its 2 s`)
})

test('blocks-devnet --api-key repeated: every key works, each as its own user (KEY:USER, or user_<n> without a user); the default key is not added', async () => {
  const { url, env } = await cliNet()
  assert.equal(env.BLOCKS_API_KEY, 'bk_alice', 'the first key is the one exported')
  const alice = await tokenOf(url, 'bk_alice')
  const bob = await tokenOf(url, 'bk_bob')
  assert.equal(alice.status, 200)
  assert.equal(alice.body.userId, 'alice')
  assert.equal(bob.status, 200)
  assert.equal(bob.body.userId, 'user_2')
  assert.equal((await tokenOf(url, 'bk_devnet_default')).status, 401)
  const a = await TaskClient.create({ billingMode: 'free', apiKey: 'bk_alice', cdmUrl: env.BLOCKS_CDM_URL })
  const b = await TaskClient.create({ billingMode: 'free', apiKey: 'bk_bob', cdmUrl: env.BLOCKS_CDM_URL })
  try {
    assert.equal(a.getUserId(), 'alice')
    assert.equal(b.getUserId(), 'user_2')
    cliAgent ??= await sdk.startAgentInstance({ agentName: 'cli_sink', apiKey: 'bk_alice', cdmUrl: env.BLOCKS_CDM_URL, concurrency: 4, handler: () => ({ artifacts: [{ data: 'ok', mimeType: 'text/plain' }] }) })
    const sa = await a.sendMessage({ agentName: 'cli_sink', requestParts: [] })
    const sb = await b.sendMessage({ agentName: 'cli_sink', requestParts: [] })
    for (const s of [sa, sb]) assert.equal((await s.waitForTerminal(15_000)).state, 'completed')
    assert.deepEqual((await a.listTasks({ agentName: 'cli_sink' })).tasks.map((t) => t.taskId), [sa.taskId])
    assert.deepEqual((await b.listTasks({ agentName: 'cli_sink' })).tasks.map((t) => t.taskId), [sb.taskId])
  } finally {
    a.destroy()
    b.destroy()
  }
})

test('blocks-devnet --max-upload-bytes 50000: a 60 000-byte file is refused with HTTP 413 (FileUploadError), a 40 000-byte one is taken', async () => {
  const { env } = await cliNet()
  const c = await TaskClient.create({ billingMode: 'free', apiKey: 'bk_alice', cdmUrl: env.BLOCKS_CDM_URL })
  try {
    cliAgent ??= await sdk.startAgentInstance({ agentName: 'cli_sink', apiKey: 'bk_alice', cdmUrl: env.BLOCKS_CDM_URL, concurrency: 4, handler: () => ({ artifacts: [{ data: 'ok', mimeType: 'text/plain' }] }) })
    await assert.rejects(c.sendMessage({ agentName: 'cli_sink', requestParts: [filePart(made(60_000), { partId: 'f', fileName: 'big.bin' })] }), (e) => {
      assert.ok(e instanceof FileUploadError, `${e?.constructor?.name}: ${e?.message}`)
      assert.equal(e.status, 413)
      assert.match(e.message, /upload limit/)
      return true
    })
    const ok = await c.sendMessage({ agentName: 'cli_sink', requestParts: [filePart(made(40_000), { partId: 'f', fileName: 'fits.bin' })] })
    assert.equal((await ok.waitForTerminal(15_000)).state, 'completed')
  } finally {
    c.destroy()
  }
})

test('blocks-devnet --agent vip:paid: the agent registers paid (network keyset); a paid caller gets its task done, a free caller is refused', async () => {
  const { env } = await cliNet()
  const vip = await sdk.startAgentInstance({ agentName: 'vip', apiKey: 'bk_alice', cdmUrl: env.BLOCKS_CDM_URL, handler: () => ({ artifacts: [{ data: 'paid work', mimeType: 'text/plain' }] }) })
  const paid = await TaskClient.create({ billingMode: 'paid', apiKey: 'bk_alice', cdmUrl: env.BLOCKS_CDM_URL })
  const free = await TaskClient.create({ billingMode: 'free', apiKey: 'bk_alice', cdmUrl: env.BLOCKS_CDM_URL })
  try {
    assert.equal(vip.billingMode, 'paid')
    assert.equal(vip.subscribeKey, 'sub-c-devnet-paid')
    const s = await paid.sendMessage({ agentName: 'vip', requestParts: [] })
    assert.equal((await s.waitForTerminal(15_000)).state, 'completed')
    assert.equal(artifactText(s.listArtifacts()[0]), 'paid work')
    await assert.rejects(free.sendMessage({ agentName: 'vip', requestParts: [] }), (e) => e instanceof BillingModeMismatchError && e.expected === 'paid' && e.got === 'free')
  } finally {
    paid.destroy()
    free.destroy()
    await vip.stop(0)
  }
})

test('LOG-01 the devnet CLI logs at the LOG_LEVEL threshold (any case) when --log is not given; --log overrides LOG_LEVEL', async () => {
  const stop = async (c) => {
    const exited = new Promise((r) => c.child.once('exit', (code, signal) => r({ code, signal })))
    c.child.kill('SIGINT')
    assert.deepEqual(await exited, { code: 0, signal: null })
  }
  const spawnCli = (args, env) => new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [path.join(root, 'bin', 'blocks-devnet.js'), ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
    const w = watch(child)
    w.waitFor(/blocks-devnet listening on (http:\/\/127\.0\.0\.1:\d+)/).then((m) => resolve({ ...w, url: m[1], cdmUrl: `${m[1]}/config.json` }), reject)
  })
  // LOG_LEVEL=DEBUG alone: one line per request
  const loud = await spawnCli(['--port', '0', '--in-memory'], { LOG_LEVEL: 'DEBUG' })
  try {
    assert.equal((await fetch(loud.cdmUrl)).status, 200)
    await loud.waitFor(/GET \/config\.json/, 10_000)
  } finally {
    await stop(loud)
  }
  // --log warn beats LOG_LEVEL=debug: the same request prints nothing
  const quiet = await spawnCli(['--port', '0', '--in-memory', '--log', 'warn'], { LOG_LEVEL: 'debug' })
  try {
    for (let i = 0; i < 3; i++) assert.equal((await fetch(quiet.cdmUrl)).status, 200)
  } finally {
    await stop(quiet)
  }
  assert.doesNotMatch(quiet.out.text, /GET \/config\.json/, quiet.out.text)
  assert.doesNotMatch(quiet.out.text, /\[blocks\]/i, `nothing below warn: ${quiet.out.text}`)
  // and --log debug beats LOG_LEVEL=error
  const forced = await spawnCli(['--port', '0', '--in-memory', '--log', 'debug'], { LOG_LEVEL: 'error' })
  try {
    assert.equal((await fetch(forced.cdmUrl)).status, 200)
    await forced.waitFor(/GET \/config\.json/, 10_000)
  } finally {
    await stop(forced)
  }
})

// ---------------------------------------------------------------------------------------------
// A durable devnet across restarts

test('a task queued for an agent with no instance survives a devnet restart and runs once an instance starts', async () => {
  const dataDir = fs.mkdtempSync(path.join(tmp, 'queued-'))
  let net = await sdk.LocalNetwork.start({ dataDir })
  let agent
  try {
    await register(net, 'later')
    const c1 = await TaskClient.create({ billingMode: 'free', apiKey: net.apiKey, cdmUrl: net.cdmUrl })
    const s = await c1.sendMessage({ agentName: 'later', requestParts: [textPart('kept across the restart')] })
    assert.equal(s.queued, true)
    await s.close()
    c1.destroy()
    await net.stop()
    net = await sdk.LocalNetwork.start({ dataDir })
    const c2 = await TaskClient.create({ billingMode: 'free', apiKey: net.apiKey, cdmUrl: net.cdmUrl })
    assert.equal((await c2.getTask(s.taskId)).state, 'pending', 'still waiting after the restart')
    const live = await c2.connect(s.taskId)
    agent = await sdk.startAgentInstance({ agentName: 'later', apiKey: net.apiKey, cdmUrl: net.cdmUrl, handler: (task, ctx) => ({ artifacts: [{ data: `ran: ${ctx.requestParts[0].text}`, mimeType: 'text/plain' }] }) })
    assert.equal((await live.waitForTerminal(15_000)).state, 'completed')
    assert.equal(artifactText(live.listArtifacts()[0]), 'ran: kept across the restart')
    c2.destroy()
  } finally {
    await agent?.stop(0)
    await net.stop()
  }
})

test('a task running on an instance that never comes back after a devnet restart fails with agent_instance_lost, seen by a caller', { timeout: 60_000 }, async () => {
  const dataDir = fs.mkdtempSync(path.join(tmp, 'lost-'))
  let net = await sdk.LocalNetwork.start({ dataDir })
  let child
  try {
    const source = `
      const { startAgentInstance } = await import(${JSON.stringify(indexPath)})
      const agent = await startAgentInstance({
        agentName: 'vanishing', apiKey: process.env.BLOCKS_API_KEY, cdmUrl: process.env.BLOCKS_CDM_URL,
        handler: (task) => {
          console.log('running ' + task.taskId)
          return (globalThis.held = new Promise(() => {}))
        },
      })
      console.log('ready ' + JSON.stringify({ instanceId: agent.instanceId, controlChannel: agent.controlChannel }))
    `
    child = watch(spawn(process.execPath, ['--input-type=module', '-e', source], { env: { ...process.env, ...net.env }, stdio: ['ignore', 'pipe', 'pipe'] }))
    const { instanceId, controlChannel } = JSON.parse((await child.waitFor(/ready (\{.*\})\n/))[1])
    const c1 = await TaskClient.create({ billingMode: 'free', apiKey: net.apiKey, cdmUrl: net.cdmUrl })
    const s = await c1.sendMessage({ agentName: 'vanishing', requestParts: [] })
    await child.waitFor(new RegExp(`running ${s.taskId}`))
    child.child.kill('SIGKILL')
    await child.exited
    await s.close()
    c1.destroy()
    await net.stop()
    net = await sdk.LocalNetwork.start({ dataDir })
    const c2 = await TaskClient.create({ billingMode: 'free', apiKey: net.apiKey, cdmUrl: net.cdmUrl })
    const live = await c2.connect(s.taskId)
    assert.equal(live.state, 'running', 'the restarted devnet still has the task running')
    // the devnet gives a known instance 20 s to heartbeat again; one heartbeat in its name that
    // declares a 1 s timeout (as an agent with a 1 s heartbeat would) makes its silence count ~6 s on
    const hb = await fetch(`${net.url}/v2/presence/sub-key/sub-c-devnet-free/channel/${controlChannel}/heartbeat?uuid=${instanceId}&heartbeat=1&auth=${net.serviceToken}`)
    assert.equal(hb.status, 200)
    const t = await live.waitForTerminal(40_000)
    assert.equal(t.state, 'failed')
    assert.equal(t.error, 'agent_instance_lost')
    assert.equal((await c2.getTask(s.taskId)).state, 'failed')
    c2.destroy()
  } finally {
    if (child && child.child.exitCode === null && child.child.signalCode === null) child.child.kill('SIGKILL')
    await net.stop()
  }
})

test('ART-07 the file index survives a devnet restart: a file artifact of a task from before it still downloads', async () => {
  const dataDir = fs.mkdtempSync(path.join(tmp, 'files-'))
  let net = await sdk.LocalNetwork.start({ dataDir })
  try {
    const agent = await sdk.startAgentInstance({
      agentName: 'archivist', apiKey: net.apiKey, cdmUrl: net.cdmUrl,
      handler: () => ({ artifacts: [{ data: made(70_000), mimeType: 'application/octet-stream', fileName: 'kept.bin' }, { data: 'inline', mimeType: 'text/plain', fileName: 'note.txt' }] }),
    })
    const c1 = await TaskClient.create({ billingMode: 'free', apiKey: net.apiKey, cdmUrl: net.cdmUrl })
    const s = await c1.sendMessage({ agentName: 'archivist', requestParts: [] })
    assert.equal((await s.waitForTerminal(15_000)).state, 'completed')
    const ref = s.listArtifacts()[0]
    assert.equal(ref.kind, 'file')
    c1.destroy()
    await agent.stop(0)
    const port = net.port
    await net.stop()
    net = await sdk.LocalNetwork.start({ dataDir, port })
    const c2 = await TaskClient.create({ billingMode: 'free', apiKey: net.apiKey, cdmUrl: net.cdmUrl })
    const again = await c2.connect(s.taskId)
    assert.equal(again.state, 'completed')
    const [file, note] = again.listArtifacts()
    assert.equal(file.fileId, ref.fileId)
    const got = await again.downloadArtifact(file)
    assert.ok(got.data.equals(made(70_000)), 'byte-exact after the restart')
    assert.equal(got.fileName, 'kept.bin')
    const written = await again.saveArtifacts(path.join(tmp, 'after-restart'))
    assert.deepEqual(written.map((w) => path.basename(w)), ['kept.bin', 'note.txt'])
    assert.ok(fs.readFileSync(written[0]).equals(made(70_000)))
    // the session from before the restart (same port) downloads it too
    assert.ok((await s.downloadArtifact(ref)).data.equals(made(70_000)))
    c2.destroy()
  } finally {
    await net.stop()
  }
})

test('listTasks and getTask after a restart: the tasks of before keep their states, and RpcError for an unknown task', async () => {
  const dataDir = fs.mkdtempSync(path.join(tmp, 'list-'))
  let net = await sdk.LocalNetwork.start({ dataDir })
  try {
    const agent = await sdk.startAgentInstance({ agentName: 'fate', apiKey: net.apiKey, cdmUrl: net.cdmUrl, handler: (task, ctx) => {
      if (ctx.requestParts[0]?.text === 'fail') throw new Error('as asked')
      return {}
    } })
    const c1 = await TaskClient.create({ billingMode: 'free', apiKey: net.apiKey, cdmUrl: net.cdmUrl })
    const ok = await c1.sendMessage({ agentName: 'fate', requestParts: [textPart('ok')] })
    const bad = await c1.sendMessage({ agentName: 'fate', requestParts: [textPart('fail')] })
    await ok.waitForTerminal(15_000)
    await bad.waitForTerminal(15_000)
    c1.destroy()
    await agent.stop(0)
    await net.stop()
    net = await sdk.LocalNetwork.start({ dataDir })
    const c2 = await TaskClient.create({ billingMode: 'free', apiKey: net.apiKey, cdmUrl: net.cdmUrl })
    const page = await c2.listTasks({ agentName: 'fate' })
    assert.equal(page.totalCount, 2)
    assert.deepEqual(Object.fromEntries(page.tasks.map((t) => [t.taskId, t.state])), { [ok.taskId]: 'completed', [bad.taskId]: 'failed' })
    await assert.rejects(c2.getTask('t_never'), RpcError)
    c2.destroy()
  } finally {
    await net.stop()
  }
})
