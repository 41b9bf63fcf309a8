// Issue 4: the agent runtime (admission, concurrency, cancellation, pipe tasks, A2A, blocks-run).
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { mkdtempSync, writeFileSync, readFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { sdk, startNetwork, artifactText, deferred, aborted } from './helpers.mjs'

const { textPart } = sdk
const root = fileURLToPath(new URL('..', import.meta.url))
const example = (name) => path.join(root, 'examples', name)
const loadExample = async (name) => ({
  card: JSON.parse(readFileSync(path.join(example(name), 'agent-card.json'), 'utf8')),
  handler: (await import(path.join(example(name), 'handler.ts'))).default,
})

let env
before(async () => {
  env = await startNetwork({ minuteMs: 400 })
})
after(async () => {
  await env.stop()
})

const json = (event) => JSON.parse(artifactText(event))
async function running(client, taskId) {
  let state
  for (let i = 0; i < 5000; i++) {
    state = (await client.getTask(taskId)).state
    if (state === 'running') return
    await new Promise((r) => setImmediate(r))
  }
  throw new Error(`task ${taskId} never started (last state: ${state})`)
}

/** Resolve with what `promise` gives, or fail with `describe()` once `ms` pass first. */
function within(ms, promise, describe) {
  let timer
  const limit = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no result within ${ms} ms: ${describe()}`)), ms)
  })
  return Promise.race([promise, limit]).finally(() => clearTimeout(timer))
}

test('concurrency 1 queues the second task until the first ends; concurrency 3 runs three at once', { timeout: 30_000 }, async () => {
  const client = await env.client()
  const gates = []
  const started = []
  const startedAll = deferred()
  const startedSecond = deferred()
  await env.agent('solo', async (task) => {
    started.push(task.taskId)
    const g = deferred()
    gates.push(g)
    if (started.length === 1) startedAll.resolve()
    if (started.length === 2) startedSecond.resolve()
    await g.promise
    return {}
  }, { concurrency: 1 })
  const a = await client.sendMessage({ agentName: 'solo', requestParts: [] })
  await startedAll.promise
  const b = await client.sendMessage({ agentName: 'solo', requestParts: [] })
  assert.equal(b.queued, true)
  assert.equal((await client.getTask(b.taskId)).state, 'pending')
  gates[0].resolve()
  await a.waitForTerminal(15_000)
  await startedSecond.promise
  assert.deepEqual(started, [a.taskId, b.taskId])
  gates[1].resolve()
  await b.waitForTerminal(15_000)

  const three = deferred()
  const inFlight = []
  const release = deferred()
  await env.agent('trio', async (task) => {
    inFlight.push(task.taskId)
    if (inFlight.length === 3) three.resolve()
    await release.promise
    return {}
  }, { concurrency: 3 })
  const sessions = await Promise.all([0, 1, 2].map(() => client.sendMessage({ agentName: 'trio', requestParts: [] })))
  // AGT-09: concurrency: N runs N tasks in parallel
  await three.promise // all three handlers run at the same time
  release.resolve()
  for (const s of sessions) assert.equal((await s.waitForTerminal(15_000)).state, 'completed')
})

test('cancel aborts ctx.cancelSignal; what the handler returns is published before terminal canceled', async () => {
  const client = await env.client()
  const seen = deferred()
  await env.agent('cancellable', async (task, ctx) => {
    await aborted(ctx.cancelSignal)
    seen.resolve({ aborted: ctx.cancelSignal.aborted, cancelled: ctx.isCancelled, expired: ctx.isExpired })
    return { artifacts: [{ data: 'partial result', mimeType: 'text/plain' }] }
  })
  const s = await client.sendMessage({ agentName: 'cancellable', requestParts: [] })
  await running(client, s.taskId)
  await s.cancel()
  // LIFE-03 CTX-02: CancelTask aborts ctx.cancelSignal; isCancelled true, isExpired false
  assert.deepEqual(await seen.promise, { aborted: true, cancelled: true, expired: false })
  const t = await s.waitForTerminal(15_000)
  assert.equal(t.state, 'canceled')
  assert.equal(t.reason, undefined)
  // LIFE-03: what the handler returned is published, then terminal canceled
  assert.equal(artifactText(s.listArtifacts()[0]), 'partial result')
})

test('terminate ends a handler that ignores cancellation, and frees its capacity for the next task', async () => {
  const client = await env.client()
  let calls = 0
  const agent = await env.agent('stubborn', (task, ctx) => (++calls === 1 ? new Promise(() => {}) : { artifacts: [{ data: 'next' }] }), { terminateGraceMs: 200, concurrency: 1 })
  const s = await client.sendMessage({ agentName: 'stubborn', requestParts: [] })
  await running(client, s.taskId)
  await client.terminateTask(s.taskId)
  const t = await s.waitForTerminal(15_000)
  assert.equal(t.state, 'canceled')
  // LIFE-04: TerminateTask of a running task gives terminal canceled with reason terminated
  assert.equal(t.reason, 'terminated')
  // the runaway handler still runs, but the task is over: the only slot takes the next task
  // (the network dispatches as soon as it sees the terminal; was: agent_at_capacity)
  assert.equal(agent.activeTasks, 0)
  const next = await client.sendMessage({ agentName: 'stubborn', requestParts: [] })
  assert.equal((await next.waitForTerminal(15_000)).state, 'completed')
})

test('pipe tasks: a voluntary return publishes no terminal; a later cancel ends it canceled', async () => {
  const client = await env.client()
  const seen = deferred()
  const returned = deferred()
  const lines = []
  // the engine logs when it parks a pipe task whose handler returned: the point after which a
  // terminal would have been published
  const logger = {
    error: () => {}, warn: () => {}, debug: () => {},
    info: (m) => {
      lines.push(m)
      if (/^pipe task \S+ handler returned; the task stays open$/.test(m)) returned.resolve(m)
    },
  }
  await env.agent('pipe_quick', (task, ctx) => {
    seen.resolve({ taskKind: ctx.taskKind, duration: task.duration, expiresAt: task.durationExpiresAtMs, now: Date.now() })
    return { artifacts: [{ data: 'started', mimeType: 'text/plain' }] }
  }, { logger })
  try {
    // 60 devnet minutes (24 s here): the task cannot expire before the cancel below
    const s = await client.sendMessage({ agentName: 'pipe_quick', taskKind: 'pipe', duration: 60, requestParts: [] })
    const early = deferred()
    s.onTerminal((t) => early.resolve(t))
    const artifact = deferred()
    s.onArtifact((a) => artifact.resolve(a))
    const seenByHandler = await within(15_000, seen.promise, () => 'the handler never ran')
    assert.equal(seenByHandler.taskKind, 'pipe')
    assert.equal(seenByHandler.duration, 60)
    assert.ok(seenByHandler.expiresAt > seenByHandler.now, JSON.stringify(seenByHandler))
    const first = await within(15_000, Promise.race([returned.promise.then((line) => ({ line })), early.promise.then((terminal) => ({ terminal }))]),
      () => `neither a terminal nor the parked-task log line; info lines: ${JSON.stringify(lines)}`)
    // PIPE-04: a pipe handler that returns publishes no terminal; the task stays open
    assert.equal(first.terminal, undefined, `a terminal was published after the handler returned: ${JSON.stringify(first.terminal)}`)
    assert.equal(first.line, `pipe task ${s.taskId} handler returned; the task stays open`)
    // what the handler returned is published, and reaches the caller, before any terminal
    assert.equal(artifactText(await within(15_000, artifact.promise, () => 'the artifact never reached the caller')), 'started')
    assert.equal((await client.getTask(s.taskId)).state, 'running', 'the backend still has the task open')
    assert.equal(s.listEvents().filter((e) => e.type === 'terminal').length, 0)
    // PIPE-07: a CancelTask after the handler returned still publishes terminal canceled
    await s.cancel()
    assert.equal((await s.waitForTerminal(15_000)).state, 'canceled')
    assert.equal(s.listEvents().filter((e) => e.type === 'terminal').length, 1)
  } finally {
    sdk.setLogger(null)
  }
})

test('pipe tasks expire: completed with completionReason duration_expired, with isExpired set', async () => {
  const client = await env.client()
  const flags = deferred()
  await env.agent('pipe_expiring', async (task, ctx) => {
    await aborted(ctx.cancelSignal)
    flags.resolve({ expired: ctx.isExpired, cancelled: ctx.isCancelled })
    return {}
  })
  // a devnet "minute" lasts 400 ms here
  const s = await client.sendMessage({ agentName: 'pipe_expiring', taskKind: 'pipe', duration: 1, requestParts: [] })
  const t = await s.waitForTerminal(15_000)
  assert.equal(t.state, 'completed')
  // PIPE-05: expiry ends the pipe task completed with completionReason duration_expired
  assert.equal(t.completionReason, 'duration_expired')
  // PIPE-05 CTX-02: expiry aborts the signal with isExpired and isCancelled true
  assert.deepEqual(await flags.promise, { expired: true, cancelled: true })
  // a pipe whose handler returned is expired by the backend's ExpireTask
  await env.agent('pipe_returned', () => ({}))
  const s2 = await client.sendMessage({ agentName: 'pipe_returned', taskKind: 'pipe', duration: 1, requestParts: [] })
  const t2 = await s2.waitForTerminal(15_000)
  // PIPE-07 PIPE-09: a pipe whose handler returned early ends only at expiry, completed + duration_expired
  assert.equal(t2.completionReason, 'duration_expired')
})

test('reportStatus is throttled to one per second, and the last status is never dropped', async () => {
  const client = await env.client()
  await env.agent('chatty', async (task, ctx) => {
    ctx.reportStatus('one')
    ctx.reportStatus('two')
    ctx.reportStatus('three')
    return {}
  })
  const s = await client.sendMessage({ agentName: 'chatty', requestParts: [] })
  await s.waitForTerminal(15_000)
  const c = await client.connect(s.taskId)
  const messages = c.listEvents().filter((e) => e.type === 'progress' && e.message).map((e) => e.message)
  // CTX-03: the first status is published at once, later ones in the 1 s window coalesce to the latest, flushed when the handler returns
  assert.deepEqual(messages, ['one', 'three'])
  c.close()
})

async function publishControl(agent, message, meta) {
  const url = `${env.net.url}/publish/pub-c-devnet-free/${agent.subscribeKey}/0/${agent.controlChannel}/0?auth=${env.net.serviceToken}&meta=${encodeURIComponent(JSON.stringify(meta))}`
  const r = await fetch(url, { method: 'POST', body: JSON.stringify(message) })
  assert.equal(r.status, 200)
}

async function firstEvent(channel) {
  // tt=1000 replays the cache, or holds until something is published
  const r = await fetch(`${env.net.url}/v2/subscribe/sub-c-devnet-free/${channel}/0?tt=1000&uuid=observer&auth=${env.net.serviceToken}`)
  return (await r.json()).m[0]?.d
}

/** Every event on `channel` (service token, from the start), read until a terminal arrives. */
async function untilTerminal(channel, limitMs = 15_000) {
  const events = []
  const deadline = Date.now() + limitMs
  let tt = '1000' // replays the cache, then holds until something is published
  while (!events.some((e) => e?.type === 'terminal')) {
    assert.ok(Date.now() < deadline, `no terminal on ${channel} within ${limitMs} ms; events: ${JSON.stringify(events)}`)
    const r = await (await fetch(`${env.net.url}/v2/subscribe/sub-c-devnet-free/${channel}/0?tt=${tt}&uuid=observer&auth=${env.net.serviceToken}`)).json()
    events.push(...r.m.map((m) => m.d))
    tt = r.t.t
  }
  return events
}

test('admission: unsupported version, invalid pipe and capacity are refused with the spec errors; broadcast is ignored', async () => {
  const gate = deferred()
  const busyStarted = deferred()
  const agent = await env.agent('gatekeeper', async (task) => {
    if (task.taskId === 'busy_1') {
      busyStarted.resolve()
      await gate.promise
    }
    return {}
  }, { concurrency: 1 })
  const target = { instance: agent.instanceId }
  const start = (taskId, extra = {}) => ({ type: 'StartTask', taskId, protocolVersion: '2026-05-01', ownerId: 'user_x', orgId: 'user_x', requestParts: [], writeToken: env.net.serviceToken, ...extra })
  await publishControl(agent, start('adm_version', { protocolVersion: '2099-01-01' }), target)
  // AGT-11 ERR-08: a targeted StartTask with an unsupported protocolVersion gets terminal failed unsupported_protocol_version
  assert.deepEqual(await firstEvent('u.user_x.adm_version'), { type: 'terminal', taskId: 'adm_version', state: 'failed', error: 'unsupported_protocol_version', protocolVersion: '2099-01-01' })
  await publishControl(agent, start('adm_pipe', { taskKind: 'pipe', duration: 0 }), target)
  // PIPE-03 ERR-08: a pipe StartTask with duration 0 gets terminal failed invalid_start_task
  assert.equal((await firstEvent('u.user_x.adm_pipe')).error, 'invalid_start_task')
  await publishControl(agent, start('busy_1'), target)
  await busyStarted.promise
  await publishControl(agent, start('adm_capacity'), target)
  // AGT-09 ERR-08: at capacity a targeted StartTask gets terminal failed agent_at_capacity on its own channel
  assert.equal((await firstEvent('u.user_x.adm_capacity')).error, 'agent_at_capacity')
  // broadcast at capacity: silently ignored (nothing on its channel), then a targeted one proves order
  await publishControl(agent, start('adm_broadcast'), { broadcast: 'true' })
  await publishControl(agent, start('adm_after'), target)
  assert.equal((await firstEvent('u.user_x.adm_after')).error, 'agent_at_capacity')
  const hist = await (await fetch(`${env.net.url}/v3/history/sub-key/sub-c-devnet-free/channel/u.user_x.adm_broadcast?auth=${env.net.serviceToken}`)).json()
  // AGT-09: a broadcast StartTask at capacity is silently ignored
  assert.deepEqual(hist.channels['u.user_x.adm_broadcast'], [])
  gate.resolve()
  // the task that held the slot runs to its end: read its channel until the terminal
  const events = await untilTerminal('u.user_x.busy_1')
  assert.equal(events[0].type, 'progress')
  assert.deepEqual(events.at(-1), { type: 'terminal', taskId: 'busy_1', state: 'completed', protocolVersion: '2026-05-01' })
})

test('examples: adder sums and explains bad input; orchestrator calls echo and adder through ctx.taskClient', async () => {
  const client = await env.client()
  for (const name of ['echo', 'adder', 'orchestrator']) {
    const { card, handler } = await loadExample(name)
    await env.agent(card.identity.agentName, handler, { card })
  }
  const s = await client.sendMessage({ agentName: 'adder', requestParts: [textPart(JSON.stringify({ a: 5, b: 3 }), 'numbers')] })
  await s.waitForTerminal(15_000)
  assert.deepEqual(json(s.listArtifacts()[0]), { ok: true, a: 5, b: 3, sum: 8 })
  const bad = await client.sendMessage({ agentName: 'adder', requestParts: [textPart('{"a": "x", "b": 1}')] })
  const t = await bad.waitForTerminal(15_000)
  assert.equal(t.state, 'failed')
  // AGT-08: a handler that throws gives terminal failed with its message
  assert.match(t.error, /two finite numbers/)
  const o = await client.sendMessage({ agentName: 'orchestrator', requestParts: [textPart(JSON.stringify({ echoText: 'hi', a: 2, b: 40 }))] })
  assert.equal((await o.waitForTerminal(30_000)).state, 'completed')
  const result = json(o.listArtifacts()[0])
  // A2A-01 A2A-02: ctx.taskClient starts sub-tasks on other agents (in parallel, Promise.all) and their results are aggregated
  assert.equal(result.summary, 'Echo: completed, Adder: completed')
  assert.equal(result.echo.artifact, 'Echo: hi')
  assert.equal(JSON.parse(result.adder.artifact).sum, 42)
})

test('example lifecycle: pause/resume reach the caller, cancel ends the pipe task canceled', async () => {
  const client = await env.client()
  const { card, handler } = await loadExample('lifecycle')
  await env.agent('lifecycle', handler, { card })
  const s = await client.sendMessage({ agentName: 'lifecycle', taskKind: 'pipe', duration: 60, requestParts: [textPart('{"tickMs": 20}')] })
  const system = []
  const resumed = deferred()
  s.onEvent((e) => {
    if (e.type === 'system') system.push(e.status)
    if (e.status === 'resumed') resumed.resolve()
  })
  await running(client, s.taskId)
  await client.pauseTask(s.taskId)
  await client.resumeTask(s.taskId)
  await resumed.promise
  // LIFE-08: pause/resume appear as system events on the task channel
  assert.deepEqual(system, ['paused', 'resumed'])
  await s.cancel()
  assert.equal((await s.waitForTerminal(15_000)).state, 'canceled')
  const summary = json(s.listArtifacts().at(-1))
  assert.equal(summary.reason, 'canceled')
  assert.ok(summary.ticks >= 1)
})

test('the logger option receives the engine logs', async () => {
  const lines = []
  const completedLine = deferred()
  let taskId = null
  const check = () => taskId && lines.some(([, m]) => m.startsWith(`task ${taskId} completed in `)) && completedLine.resolve()
  const record = (level) => (m) => {
    lines.push([level, m])
    check()
  }
  const logger = { error: record('error'), warn: record('warn'), info: record('info'), debug: record('debug') }
  await env.agent('logged', () => ({}), { logger })
  const client = await env.client()
  const s = await client.sendMessage({ agentName: 'logged', requestParts: [] })
  taskId = s.taskId
  check()
  await s.waitForTerminal(15_000)
  // engine records are forwarded asynchronously: wait for the "completed" line
  await within(15_000, completedLine.promise, () => `no "completed" line; got ${JSON.stringify(lines)}`)
  assert.ok(lines.some(([l, m]) => l === 'info' && m === `task ${s.taskId} accepted`), JSON.stringify(lines))
  assert.ok(lines.some(([l, m]) => l === 'info' && m.startsWith(`task ${s.taskId} completed in `)))
  sdk.setLogger(null)
})

function agentFolder(files) {
  const dir = mkdtempSync(path.join(tmpdir(), 'blocks-agent-'))
  for (const [name, content] of Object.entries(files)) writeFileSync(path.join(dir, name), content)
  return dir
}

/**
 * Watch a child's output: `waitFor(pattern)` resolves with the match once stdout matches, and
 * fails with everything the child printed if it exits first or `ms` pass.
 */
function watchChild(child) {
  const out = { stdout: '', stderr: '' }
  const watchers = new Set()
  const look = () => {
    for (const w of watchers) {
      const m = w.pattern.exec(out.stdout)
      if (m) {
        watchers.delete(w)
        w.done(null, m)
      }
    }
  }
  child.stdout.on('data', (d) => {
    out.stdout += d
    look()
  })
  child.stderr.on('data', (d) => (out.stderr += d))
  const exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })))
  exited.then(({ code, signal }) => {
    for (const w of watchers) w.done(new Error(`the child exited (${code ?? signal}) before printing ${w.pattern}\nstdout: ${out.stdout}\nstderr: ${out.stderr}`))
    watchers.clear()
  })
  const waitFor = (pattern, ms = 20_000) =>
    new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        watchers.delete(w)
        reject(new Error(`the child did not print ${pattern} within ${ms} ms\nstdout: ${out.stdout}\nstderr: ${out.stderr}`))
      }, ms)
      const w = { pattern, done: (err, m) => (clearTimeout(timer), err ? reject(err) : resolve(m)) }
      watchers.add(w)
      look()
      if (child.exitCode !== null || child.signalCode !== null) w.done(new Error(`the child has exited before printing ${pattern}\nstdout: ${out.stdout}\nstderr: ${out.stderr}`))
    })
  return { child, out, exited, waitFor }
}

function runBlocksRun(dir, extraEnv = {}) {
  const child = spawn(process.execPath, [path.join(root, 'bin', 'blocks-run.js')], { cwd: dir, env: { ...process.env, ...extraEnv }, stdio: ['ignore', 'pipe', 'pipe'] })
  return watchChild(child)
}

test('blocks-run: loads .env, card and handler; SIGTERM drains the running task and exits 0', async () => {
  const dir = agentFolder({
    'agent-card.json': JSON.stringify({ identity: { agentName: 'runner', displayName: 'Runner' }, runtime: { handler: './handler.ts' } }),
    // a TypeScript handler (Node 22 strips the types)
    // it says when it runs, and finishes only once the process got SIGTERM: the drain must wait
    'handler.ts': `export default async function handler(task: { taskId: string }, ctx: { reportStatus(m: string): void }): Promise<object> {
      const terminated = new Promise((r) => process.once('SIGTERM', r))
      ctx.reportStatus('working')
      console.log('handler running ' + task.taskId)
      await terminated
      return { artifacts: [{ data: 'finished after SIGTERM', mimeType: 'text/plain' }] }
    }`,
    '.env': `BLOCKS_CDM_URL=${env.net.cdmUrl}\nBLOCKS_API_KEY=${env.net.apiKey}\n`,
  })
  const { child, out, exited, waitFor } = runBlocksRun(dir, { BLOCKS_CDM_URL: '', BLOCKS_API_KEY: '' })
  await waitFor(/press Ctrl\+C/)
  // SHUT-02: .env of the folder loaded, the start lines printed
  assert.match(out.stdout, /\[blocks-run\] starting "Runner" \(runner\)/)
  assert.match(out.stdout, /\[blocks-run\] instance AG-runner-[0-9a-f-]+ running/)
  const client = await env.client()
  const s = await client.sendMessage({ agentName: 'runner', requestParts: [] })
  await waitFor(new RegExp(`handler running ${s.taskId}`))
  child.kill('SIGTERM') // mid-task: the handler is waiting for exactly this
  const t = await s.waitForTerminal(15_000)
  assert.equal(t.state, 'completed')
  // AGT-16: a .ts handler (default export) runs without a build step
  assert.equal(artifactText(s.listArtifacts()[0]), 'finished after SIGTERM')
  const { code } = await exited
  // SHUT-02: on SIGTERM it prints "shutting down...", stops the instance and exits 0
  assert.equal(code, 0, out.stderr)
  assert.match(out.stdout, /\[blocks-run\] shutting down\.\.\./)
})

test('blocks-run: bad agent folders fail with a message naming the problem', async () => {
  const cases = [
    // SHUT-03: agent-card.json not found, invalid JSON, no runtime, no identity.agentName; AGT-16: "does not export a function"
    [{}, /agent-card\.json not found/],
    [{ 'agent-card.json': '{ nope' }, /invalid JSON/],
    [{ 'agent-card.json': JSON.stringify({ identity: { agentName: 'x' } }) }, /runtime/],
    [{ 'agent-card.json': JSON.stringify({ runtime: {} }) }, /identity/],
    [{ 'agent-card.json': JSON.stringify({ identity: { agentName: 'bad-name' }, runtime: { handler: './h.mjs' } }) }, /identity\.agentName.*underscores/],
    [{ 'agent-card.json': JSON.stringify({ identity: { agentName: 'x' }, runtime: { handler: './h.mjs' } }), 'h.mjs': 'export const notAFunction = 1' }, /does not export a function/],
  ]
  for (const [files, pattern] of cases) {
    const { out, exited } = runBlocksRun(agentFolder(files), { BLOCKS_CDM_URL: env.net.cdmUrl, BLOCKS_API_KEY: env.net.apiKey })
    const { code } = await exited
    assert.equal(code, 1, `${JSON.stringify(files)}: ${out.stdout}`)
    // SHUT-02: a start-up failure prints "[blocks-run] fatal: <msg>" and exits 1
    assert.match(out.stderr, /\[blocks-run\] fatal: /)
    assert.match(out.stderr, pattern)
  }
})

test('several instances of one agent share load; each task runs on exactly one instance', async () => {
  const client = await env.client()
  const seen = { a: [], b: [] }
  const both = deferred()
  const release = deferred()
  const handler = (who) => async (task) => {
    seen[who].push(task.taskId)
    if (seen.a.length + seen.b.length === 4) both.resolve()
    await release.promise
    return {}
  }
  await env.agent('twin', handler('a'), { concurrency: 2 })
  await env.agent('twin', handler('b'), { concurrency: 2 })
  const sessions = await Promise.all([0, 1, 2, 3].map(() => client.sendMessage({ agentName: 'twin', requestParts: [] })))
  await both.promise
  release.resolve()
  for (const s of sessions) assert.equal((await s.waitForTerminal(15_000)).state, 'completed')
  assert.equal(seen.a.length, 2, JSON.stringify(seen))
  assert.equal(seen.b.length, 2, JSON.stringify(seen))
  assert.equal(new Set([...seen.a, ...seen.b]).size, 4, 'no task ran twice')
})

test('an agent reconnects after its connections drop, without losing the control subscription', { timeout: 60_000 }, async () => {
  const net = await import('node:net')
  const target = new URL(env.net.url)
  const sockets = new Set()
  const proxy = net.createServer((client) => {
    const upstream = net.connect(Number(target.port), target.hostname)
    sockets.add(client)
    sockets.add(upstream)
    client.pipe(upstream).pipe(client)
    const drop = () => {
      client.destroy()
      upstream.destroy()
    }
    client.on('error', drop)
    upstream.on('error', drop)
    client.on('close', drop)
    upstream.on('close', drop)
  })
  await new Promise((r) => proxy.listen(0, '127.0.0.1', r))
  const origin = `${target.protocol}//127.0.0.1:${proxy.address().port}` // a TCP relay: TLS passes through
  try {
    await env.agent('roamer', (task, ctx) => ({ artifacts: [{ data: 'still here', mimeType: 'text/plain' }] }), { realtimeOrigin: origin })
    const client = await env.client()
    const first = await client.sendMessage({ agentName: 'roamer', requestParts: [] })
    assert.equal((await first.waitForTerminal(15_000)).state, 'completed')
    // the network drops: every connection through the proxy is reset
    for (const s of sockets) s.resetAndDestroy ? s.resetAndDestroy() : s.destroy()
    const second = await client.sendMessage({ agentName: 'roamer', requestParts: [] })
    // RETRY-01: the control client re-subscribes after its connections were reset and takes the next task
    assert.equal((await second.waitForTerminal(45_000)).state, 'completed')
    assert.equal(artifactText(second.listArtifacts()[0]), 'still here')
  } finally {
    for (const s of sockets) s.destroy()
    proxy.close()
  }
})

test('an agent process killed mid-task: the devnet notices by presence and fails the task', { timeout: 60_000 }, async () => {
  const indexPath = path.join(root, 'index.js')
  const source = `
    const { startAgentInstance } = await import(${JSON.stringify(indexPath)})
    const agent = await startAgentInstance({
      agentName: 'doomed', apiKey: process.env.BLOCKS_API_KEY, cdmUrl: process.env.BLOCKS_CDM_URL,
      handler: (task) => {
        console.log('running ' + task.taskId)
        return new Promise(() => {})
      },
    })
    console.log('ready ' + JSON.stringify({ instanceId: agent.instanceId, controlChannel: agent.controlChannel }))
  `
  const child = spawn(process.execPath, ['--input-type=module', '-e', source], { env: { ...process.env, ...env.net.env }, stdio: ['ignore', 'pipe', 'pipe'] })
  const { exited, waitFor } = watchChild(child)
  const { instanceId, controlChannel } = JSON.parse((await waitFor(/ready (\{.*\})\n/))[1])
  const client = await env.client()
  const s = await client.sendMessage({ agentName: 'doomed', requestParts: [] })
  await waitFor(new RegExp(`running ${s.taskId}`))
  child.kill('SIGKILL')
  await exited
  // The instance declared a 20 s presence timeout; the devnet drops an instance 5 s after its
  // timeout ran out. Instead of waiting 25 s, one last heartbeat in the dead instance's name
  // declares a 1 s timeout, as an agent with a 1 s heartbeat would: its silence is noticed ~6 s on.
  const hb = await fetch(`${env.net.url}/v2/presence/sub-key/sub-c-devnet-free/channel/${controlChannel}/heartbeat?uuid=${instanceId}&heartbeat=1&auth=${env.net.serviceToken}`)
  assert.equal(hb.status, 200)
  const t = await s.waitForTerminal(30_000)
  assert.equal(t.state, 'failed')
  assert.equal(t.error, 'agent_instance_lost')
})

test('a duplicate StartTask for a task in flight is ignored; consumerPublicKey reaches the handler', async () => {
  const calls = {}
  const gate = deferred()
  const started = deferred()
  const secondTask = deferred()
  const agent = await env.agent('dedup', async (task, ctx) => {
    calls[task.taskId] = (calls[task.taskId] ?? 0) + 1
    started.resolve()
    if (task.taskId === 'dup_2') secondTask.resolve()
    await gate.promise
    return { artifacts: [{ data: ctx.consumerPublicKey ?? 'none', mimeType: 'text/plain' }] }
  }, { concurrency: 4 })
  const start = { type: 'StartTask', taskId: 'dup_1', protocolVersion: '2026-05-01', ownerId: 'user_x', orgId: 'user_x', requestParts: [] }
  await publishControl(agent, start, { instance: agent.instanceId })
  await started.promise
  await publishControl(agent, start, { instance: agent.instanceId })
  // the second copy is ignored: prove the agent processed it by sending a third message after it
  const later = { ...start, taskId: 'dup_2' }
  await publishControl(agent, later, { instance: agent.instanceId })
  await within(15_000, secondTask.promise, () => `dup_2 never ran; calls: ${JSON.stringify(calls)}`)
  assert.deepEqual(calls, { dup_1: 1, dup_2: 1 })
  gate.resolve()
  const client = await env.client()
  const s = await client.sendMessage({ agentName: 'dedup', requestParts: [], consumerPublicKey: 'pk-caller-1' })
  await s.waitForTerminal(15_000)
  // CTX-01: ctx.consumerPublicKey is the StartTask value
  assert.equal(artifactText(s.listArtifacts()[0]), 'pk-caller-1')
})
