// Issue 2: the addon, the devnet and one task end to end.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { fileURLToPath } from 'node:url'
import { sdk, startNetwork, artifactText, deferred, runNode } from './helpers.mjs'

const { TaskClient, textPart, InvalidArgumentError, RpcError, TimeoutError, ClosedError, BlocksError } = sdk
const indexPath = fileURLToPath(new URL('../index.js', import.meta.url))

let env
before(async () => {
  env = await startNetwork()
  await env.agent('echo', async (task, ctx) => {
    const text = ctx.requestParts.map((p) => p.text ?? '').join(' ')
    ctx.reportStatus(`echoing ${text}`)
    return { artifacts: [{ data: `Echo: ${text}`, mimeType: 'text/plain' }] }
  })
  await env.agent('thrower', async (task, ctx) => {
    const mode = ctx.requestParts[0]?.text
    if (mode === 'reject') return Promise.reject(new Error('handler rejected on purpose'))
    if (mode === 'sync-throw') throw new Error('handler threw on purpose')
    if (mode === 'throw-string') throw 'a bare string' // eslint-disable-line no-throw-literal
    return { artifacts: [{ data: 'unexpected' }] }
  })
  await env.agent('syncagent', (task, ctx) => ({ artifacts: [{ data: `sync ${ctx.taskId}`, mimeType: 'text/plain' }] }))
})
after(async () => {
  await env.stop()
})

test('echo round trip: progress, artifact, terminal completed', async () => {
  const client = await env.client()
  assert.equal(client.getUserId(), 'user_default')
  const session = await client.sendMessage({ agentName: 'echo', requestParts: [textPart('hello')] })
  assert.match(session.taskId, /^[A-Za-z0-9_-]+$/)
  assert.equal(session.statusChannel, `u.${session.orgId}.${session.taskId}`)
  const artifacts = []
  session.onArtifact((e) => artifacts.push(artifactText(e)))
  const terminal = await session.waitForTerminal(15_000)
  // WAIT-01: waitForTerminal() resolves with the terminal event (type, state)
  assert.equal(terminal.type, 'terminal')
  assert.equal(terminal.state, 'completed')
  assert.equal(session.state, 'completed')
  // AGT-08: the handler's return is published as artifacts, then terminal completed
  assert.deepEqual(artifacts, ['Echo: hello'])
  // SESS-11: listArtifacts() holds the artifacts received
  assert.equal(session.listArtifacts().length, 1)
  assert.equal(session.listArtifacts()[0].artifactRef.mimeType, 'text/plain')
  // SESS-07: a terminal with no opened streams closes the session
  assert.equal(session.isClosed, true)
  // LIST-01: getTask() unwraps the task: taskId, state, agentName
  const info = await client.getTask(session.taskId)
  assert.equal(info.taskId, session.taskId)
  assert.equal(info.state, 'completed')
  assert.equal(info.agentName, 'echo')
})

test('a status line reaches onProgress', async () => {
  const client = await env.client()
  const seen = deferred()
  const session = await client.sendMessage({ agentName: 'echo', requestParts: [textPart('status please')] })
  // added right after sendMessage(): a status published before it resolved is caught up (once),
  // later ones arrive live
  const messages = []
  session.onProgress((e) => {
    if (e.message) {
      messages.push(e.message)
      seen.resolve(e.message)
    }
  })
  // (a task that ended before sendMessage() resolved has its terminal at once, and its caught-up
  // events are delivered a tick later: wait for the status itself, failing with what arrived)
  const terminal = await session.waitForTerminal(15_000)
  assert.equal(terminal.state, 'completed')
  let timer
  const first = await Promise.race([seen.promise, new Promise((r) => (timer = setTimeout(r, 5000, null)))]).finally(() => clearTimeout(timer))
  // SESS-04: a progress event carries the status `message`
  assert.equal(first, 'echoing status please', `no status line reached onProgress; events: ${JSON.stringify(session.listEvents())}`)
  assert.deepEqual(messages, ['echoing status please'], 'onProgress got the status line exactly once')
})

test('state is set before onTerminal callbacks run, and onTerminal fires once', async () => {
  const client = await env.client()
  const session = await client.sendMessage({ agentName: 'echo', requestParts: [textPart('x')] })
  const states = []
  session.onTerminal(() => states.push(session.state))
  await session.waitForTerminal(15_000)
  // a listener registered after delivery gets the recorded terminal at once
  const late = []
  session.onTerminal((e) => late.push(e.state))
  // SESS-06: state is set before onTerminal runs, and onTerminal fires once
  assert.deepEqual(states, ['completed'])
  // SESS-06: a callback registered after delivery fires at once with the recorded terminal
  assert.deepEqual(late, ['completed'])
})

test('a handler that rejects fails the task with its message', async () => {
  const client = await env.client()
  const session = await client.sendMessage({ agentName: 'thrower', requestParts: [textPart('reject')] })
  const terminal = await session.waitForTerminal(15_000)
  assert.equal(terminal.state, 'failed')
  // ERR-08 AGT-08: a handler failure is terminal failed with its message as `error`
  assert.equal(terminal.error, 'handler rejected on purpose')
  assert.equal(session.listArtifacts().length, 0)
})

test('a handler that throws synchronously fails the task with its message', async () => {
  const client = await env.client()
  const s1 = await client.sendMessage({ agentName: 'thrower', requestParts: [textPart('sync-throw')] })
  // ERR-08 AGT-08: a handler exception is terminal failed with its message as `error`
  assert.equal((await s1.waitForTerminal(15_000)).error, 'handler threw on purpose')
  const s2 = await client.sendMessage({ agentName: 'thrower', requestParts: [textPart('throw-string')] })
  const t2 = await s2.waitForTerminal(15_000)
  assert.equal(t2.state, 'failed')
  assert.equal(t2.error, 'a bare string')
})

test('a handler may return synchronously (non-async function)', async () => {
  const client = await env.client()
  const session = await client.sendMessage({ agentName: 'syncagent', requestParts: [textPart('x')] })
  const terminal = await session.waitForTerminal(15_000)
  assert.equal(terminal.state, 'completed')
  assert.equal(artifactText(session.listArtifacts()[0]), `sync ${session.taskId}`)
})

test('unsubscribe stops delivery and is idempotent', async () => {
  const client = await env.client()
  const gate = deferred()
  const started = deferred()
  const agentName = 'gated'
  await env.agent(agentName, async (task, ctx) => {
    started.resolve()
    await gate.promise
    await ctx.publishArtifact('first', { mimeType: 'text/plain' })
    await ctx.publishArtifact('second', { mimeType: 'text/plain' })
    return {}
  })
  const session = await client.sendMessage({ agentName, requestParts: [] })
  const kept = []
  const dropped = []
  session.onArtifact((e) => kept.push(artifactText(e)))
  const off = session.onArtifact((e) => dropped.push(artifactText(e)))
  // SESS-03: onArtifact returns an unsubscribe function
  assert.equal(off(), true)
  assert.equal(off(), false)
  await started.promise
  gate.resolve()
  await session.waitForTerminal(15_000)
  assert.deepEqual(kept, ['first', 'second'])
  // SESS-03: an unsubscribed callback is never called again
  assert.deepEqual(dropped, [])
})

test('a throwing listener goes to onError and does not stop other listeners', async () => {
  const client = await env.client()
  const session = await client.sendMessage({ agentName: 'echo', requestParts: [textPart('boom')] })
  const errors = []
  const others = []
  session.onError((err, ctx) => errors.push([err.message, ctx.callbackType, ctx.event.type]))
  session.onTerminal(() => {
    throw new Error('listener bug')
  })
  session.onTerminal((e) => others.push(e.state))
  await session.waitForTerminal(15_000)
  assert.deepEqual(others, ['completed'])
  assert.deepEqual(errors, [['listener bug', 'onTerminal', 'terminal']])
})

test('waitForTerminal rejects with TimeoutError, and close() rejects pending waits', async () => {
  const client = await env.client()
  // registered (a registry lookup with an API key registers it) but no instance runs: the task stays queued
  const reg = await fetch(`${env.net.url}/api/v1/registry/agents?agentName=nobody_home`, {
    headers: { authorization: `Bearer ${env.net.apiKey}` },
  })
  assert.equal(reg.status, 200)
  const session = await client.sendMessage({ agentName: 'nobody_home', requestParts: [textPart('x')] })
  assert.equal(session.queued, true)
  await assert.rejects(session.waitForTerminal(200), (e) => {
    assert.ok(e instanceof TimeoutError)
    assert.ok(e instanceof BlocksError)
    // WAIT-03: no terminal in time rejects "waitForTerminal timed out after <ms>ms"
    assert.equal(e.message, 'waitForTerminal timed out after 200ms')
    return true
  })
  assert.equal(session.state, undefined)
  const pending = session.waitForTerminal()
  session.close()
  // WAIT-04 SESS-09: close() while waiting rejects waitForTerminal with "TaskSession closed"
  await assert.rejects(pending, (e) => e instanceof ClosedError && e.message === 'TaskSession closed')
  await assert.rejects(session.waitForTerminal(), ClosedError)
  // SESS-09: close() is idempotent
  session.close() // idempotent
  await assert.rejects(session.waitForTerminal(-1), InvalidArgumentError)
})

test('events of a task that finished before anyone listened are still seen', async () => {
  const client = await env.client()
  const session = await client.sendMessage({ agentName: 'syncagent', requestParts: [] })
  // wait until the backend says the task is done, then start listening
  const states = []
  for (let i = 0; states.at(-1) !== 'completed'; i++) {
    assert.ok(i < 2000, `the task did not complete on the backend; states seen: ${[...new Set(states)].join(', ')}`)
    if (i > 0) await new Promise((r) => setTimeout(r, 5))
    states.push((await client.getTask(session.taskId)).state)
  }
  const terminals = []
  const artifacts = []
  session.onTerminal((e) => terminals.push(e.state))
  session.onArtifact((e) => artifacts.push(artifactText(e)))
  assert.equal((await session.waitForTerminal(15_000)).state, 'completed')
  // SEND-09 RETRY-02: the session caught up from history: terminal and artifact arrive once though the task ended before any listener
  assert.deepEqual(terminals, ['completed'])
  assert.deepEqual(artifacts, [`sync ${session.taskId}`])
})

test('bad options give clear errors before any network call', async () => {
  await assert.rejects(TaskClient.create({}), (e) => {
    assert.ok(e instanceof InvalidArgumentError)
    // CFG-01 ERR-07: no or a bad billingMode rejects with the exact message, before any network call
    assert.equal(e.message, "TaskClient.create() requires a billingMode option ('free' or 'paid')")
    return true
  })
  for (const billingMode of ['pad', 'PAID', 'network', 1]) {
    await assert.rejects(TaskClient.create({ billingMode, cdmUrl: 'http://127.0.0.1:9/none' }), /requires a billingMode option/)
  }
  await assert.rejects(TaskClient.create(), InvalidArgumentError)
  await assert.rejects(
    TaskClient.create({ billingMode: 'free', apiKey: 'a', tokenEndpoint: 'http://x' }),
    // AUTH-04: two token provider modes are refused
    /Only one token provider mode may be specified/,
  )
  const client = await env.client()
  await assert.rejects(client.sendMessage({ requestParts: [] }), /sendMessage requires agentName/)
  await assert.rejects(client.sendMessage({ agentName: 'bad-name' }), /letters, digits and underscores/)
  await assert.rejects(client.sendMessage({ agentName: 'echo', requestParts: 'nope' }), /requestParts must be an array/)
  assert.throws(() => textPart(42), InvalidArgumentError)
})

test('an unknown agent gives an RpcError naming it', async () => {
  const client = await env.client()
  await assert.rejects(client.sendMessage({ agentName: 'no_such_agent_xyz', requestParts: [] }), (e) => {
    assert.ok(e instanceof RpcError, `expected RpcError, got ${e?.constructor?.name}: ${e?.message}`)
    assert.match(e.message, /no_such_agent_xyz/)
    assert.equal(typeof e.code, 'number')
    return true
  })
})

test('a wrong API key is refused with a clear error', async () => {
  await assert.rejects(
    TaskClient.create({ billingMode: 'free', apiKey: 'bk_wrong', cdmUrl: env.net.cdmUrl }),
    // AUTH-06: a refused consumer-token exchange rejects "consumer-token failed: HTTP 401"
    (e) => e instanceof BlocksError && /consumer-token failed: HTTP 401/.test(e.message),
  )
})

test('an unreachable CDM gives a TransportError naming the URL', async () => {
  await assert.rejects(TaskClient.create({ billingMode: 'free', cdmUrl: 'http://127.0.0.1:9/config.json' }), (e) => {
    assert.ok(e instanceof sdk.TransportError, e?.constructor?.name)
    assert.match(e.message, /127\.0\.0\.1:9/)
    return true
  })
})

test('an idle client does not keep the process alive', async () => {
  const source = `
    const { TaskClient } = await import(${JSON.stringify(indexPath)})
    const c = await TaskClient.create({ billingMode: 'free', apiKey: process.env.BLOCKS_API_KEY, cdmUrl: process.env.BLOCKS_CDM_URL })
    console.log('created', c.getUserId())
  `
  const r = await runNode(source, { env: env.net.env })
  // SHUT-04: an idle client holds nothing that keeps the process alive
  assert.equal(r.code, 0, r.stderr)
  assert.match(r.stdout, /created user_default/)
})

test('a live session keeps the process alive until its terminal, then lets it exit', async () => {
  const source = `
    const { TaskClient, textPart } = await import(${JSON.stringify(indexPath)})
    const c = await TaskClient.create({ billingMode: 'free', apiKey: process.env.BLOCKS_API_KEY, cdmUrl: process.env.BLOCKS_CDM_URL })
    const s = await c.sendMessage({ agentName: 'echo', requestParts: [textPart('child')] })
    s.onTerminal((t) => console.log('terminal', t.state))
  `
  const r = await runNode(source, { env: env.net.env })
  // SHUT-04: once the task ended, nothing the SDK holds keeps the process alive
  assert.equal(r.code, 0, r.stderr)
  assert.match(r.stdout, /terminal completed/)
})
