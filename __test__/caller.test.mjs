// Issue 3: the whole caller API (auth modes, refresh, connect, listTasks, lifecycle, errors).
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { sdk, startNetwork, artifactText, deferred, aborted } from './helpers.mjs'

const { TaskClient, textPart, RpcError, BillingModeMismatchError, AuthRefreshFailedError, InvalidArgumentError, BlocksError } = sdk

let env
let gate = deferred()
// taskId -> deferred resolved when the waiter agent's handler runs that task
const waiterStarted = new Map()
const startedOf = (taskId) => {
  if (!waiterStarted.has(taskId)) waiterStarted.set(taskId, deferred())
  return waiterStarted.get(taskId).promise
}
before(async () => {
  env = await startNetwork({ paidAgents: ['premium'], apiKeys: [['bk_devnet_default', 'user_default'], ['bk_second', 'user_second']] })
  await env.agent('echo', async (task, ctx) => ({ artifacts: [{ data: `Echo: ${ctx.requestParts.map((p) => p.text).join(' ')}`, mimeType: 'text/plain' }] }))
  await env.agent('waiter', async (task, ctx) => {
    startedOf(task.taskId)
    waiterStarted.get(task.taskId).resolve()
    // runs until canceled/terminated, or until the test opens the gate
    await Promise.race([gate.promise, aborted(ctx.cancelSignal)])
    return { artifacts: [{ data: ctx.isCancelled ? 'stopped' : 'released', mimeType: 'text/plain' }] }
  }, { concurrency: 8 })
  await env.agent('failer', () => {
    throw new Error('fails on purpose')
  })
})
after(async () => {
  gate.resolve()
  await env.stop()
})

async function consumerToken(apiKey = env.net.apiKey) {
  const r = await fetch(`${env.net.url}/api/v1/auth/agent/consumer-token`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ apiKey }),
  })
  assert.equal(r.status, 200)
  return r.json()
}

/** Resolve with what `promise` gives, or fail with `describe()` once `ms` pass first. */
function within(ms, promise, describe) {
  let timer
  const limit = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no result within ${ms} ms: ${describe()}`)), ms)
  })
  return Promise.race([promise, limit]).finally(() => clearTimeout(timer))
}

/** Resolves once the waiter agent's handler runs `taskId`; fails the test after 15 s. */
const waiterRuns = (taskId) => within(15_000, startedOf(taskId), () => `the waiter agent never started ${taskId}`)

test('tokenEndpoint as a URL object with body and headers', async () => {
  const client = await TaskClient.create({
    billingMode: 'free',
    cdmUrl: env.net.cdmUrl,
    tokenEndpoint: { url: `${env.net.url}/api/v1/auth/agent/consumer-token`, headers: { 'x-test': '1' }, body: { apiKey: env.net.apiKey } },
  })
  assert.equal(client.getUserId(), 'user_default')
  const s = await client.sendMessage({ agentName: 'echo', requestParts: [textPart('te')] })
  assert.equal((await s.waitForTerminal(15_000)).state, 'completed')
  client.destroy()
  await assert.rejects(TaskClient.create({ billingMode: 'free', cdmUrl: env.net.cdmUrl, tokenEndpoint: { url: '' } }), InvalidArgumentError)
})

test('tokenProvider: called at create, and again after an HTTP 401 (one refresh, one retry)', async () => {
  let calls = 0
  const client = await TaskClient.create({
    billingMode: 'free',
    cdmUrl: env.net.cdmUrl,
    tokenProvider: async () => {
      calls++
      if (calls === 1) return { token: 'not-a-valid-token', expiresIn: 3600, userId: 'user_default' }
      const t = await consumerToken()
      return { token: t.accessToken, expiresIn: 3600, userId: t.userId }
    },
  })
  // AUTH-03: the tokenProvider is called at create()
  assert.equal(calls, 1)
  assert.equal(client.getUserId(), 'user_default')
  const s = await client.sendMessage({ agentName: 'echo', requestParts: [textPart('p')] })
  // AUTH-11 RETRY-03: an HTTP 401 gives one refresh and one retry with the new token
  assert.equal(calls, 2, 'the 401 triggered exactly one refresh')
  assert.equal((await s.waitForTerminal(15_000)).state, 'completed')
  client.destroy()
})

test('a static token that stays invalid fails with RpcError code 401 after one retry', async () => {
  let calls = 0
  const client = await TaskClient.create({
    billingMode: 'free',
    cdmUrl: env.net.cdmUrl,
    tokenProvider: () => {
      calls++
      return { token: 'always-bad', expiresIn: 3600 }
    },
  })
  // AUTH-11 ERR-01: after the one retry the call fails with RpcError, code = the HTTP status, message "HTTP 401"
  await assert.rejects(client.getTask('t_x'), (e) => e instanceof RpcError && e.code === 401 && /HTTP 401/.test(e.message))
  assert.equal(calls, 2)
  client.destroy()
})

test('proactive refresh at 80% of expiresIn: an idle client gets a new token before the old one expires, and uses it', async () => {
  // devnet tokens live 4 s and the provider says so: the refresh is due at 3.2 s, with no request
  // in flight (nothing can get a 401, so only the timer can ask for the second token)
  const EXPIRES_IN = 4
  const short = await startNetwork({ tokenTtlSec: EXPIRES_IN })
  const token = async () => {
    const r = await fetch(`${short.net.url}/api/v1/auth/agent/consumer-token`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ apiKey: short.net.apiKey }),
    })
    assert.equal(r.status, 200)
    return r.json()
  }
  const calls = []
  const tokens = []
  const second = deferred()
  const client = await TaskClient.create({
    billingMode: 'free',
    cdmUrl: short.net.cdmUrl,
    tokenProvider: async () => {
      calls.push(Date.now())
      const t = await token()
      tokens.push(t.accessToken)
      if (calls.length === 2) second.resolve()
      return { token: t.accessToken, expiresIn: EXPIRES_IN, userId: t.userId }
    },
  })
  try {
    assert.equal(calls.length, 1)
    await within(EXPIRES_IN * 1000 + 10_000, second.promise, () => `the provider was called ${calls.length} time(s): no proactive refresh`)
    const after = calls[1] - calls[0]
    // AUTH-07: tokenProvider mode: the source is called again at about 80% of expiresIn
    assert.ok(after < EXPIRES_IN * 1000, `refreshed ${after} ms after the first token, not before its ${EXPIRES_IN} s expiry`)
    assert.ok(after >= EXPIRES_IN * 1000 * 0.6, `refreshed already after ${after} ms: expected about 80% of ${EXPIRES_IN} s`)
    // wait until the devnet refuses the first token, then call: the client must already hold the
    // new one (a 401 would show up as one more provider call)
    const statuses = []
    for (let i = 0; statuses.at(-1) !== 401; i++) {
      assert.ok(i < 800, `the first token was never refused; HTTP statuses: ${[...new Set(statuses)].join(', ')}`)
      if (i > 0) await new Promise((r) => setTimeout(r, 25))
      const r = await fetch(`${short.net.url}/api/v1/rpc`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${tokens[0]}` },
        body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'GetTask', params: { taskId: 't_missing' } }),
      })
      statuses.push(r.status)
    }
    const before = calls.length
    const r = await client.getTask('t_missing').catch((e) => e)
    assert.ok(r instanceof RpcError && r.code !== 401, `expected an application error past the first token's lifetime, got ${r?.message}`)
    // AUTH-07: later requests use the new token
    assert.equal(calls.length, before, 'the call needed no reactive refresh')
  } finally {
    client.destroy()
    await short.stop()
  }
})

test('three failed proactive refreshes, spaced by authRetryDelaysMs, call onAuthError once and record AuthRefreshFailedError', async () => {
  const at = []
  const failed = deferred()
  const DELAYS = [300, 600]
  const client = await TaskClient.create({
    billingMode: 'free',
    cdmUrl: env.net.cdmUrl,
    authRetryDelaysMs: DELAYS,
    tokenProvider: async () => {
      at.push(performance.now())
      if (at.length === 1) {
        const t = await consumerToken()
        return { token: t.accessToken, expiresIn: 1, userId: t.userId }
      }
      throw new Error('token service down')
    },
    onAuthError: (err) => failed.resolve(err),
  })
  const err = await within(5000, failed.promise, () => `onAuthError never came (${at.length} provider calls)`)
  // AUTH-09 ERR-03: after the third failed attempt onAuthError gets the last error once, an AuthRefreshFailedError
  assert.ok(err instanceof AuthRefreshFailedError)
  assert.match(err.message, /token service down/)
  assert.equal(at.length, 4, 'first token + three proactive attempts')
  // the attempts are spaced by the configured delays (at least; a busy machine may add to them)
  assert.ok(at[2] - at[1] >= DELAYS[0] - 20, `second attempt ${Math.round(at[2] - at[1])} ms after the first`)
  assert.ok(at[3] - at[2] >= DELAYS[1] - 20, `third attempt ${Math.round(at[3] - at[2])} ms after the second`)
  // calls now fail before the network (after one more reactive attempt)
  // AUTH-10 ERR-03: after a permanent refresh failure a call rejects with AuthRefreshFailedError (only getTask is checked here)
  await assert.rejects(client.getTask('t_x'), AuthRefreshFailedError)
  client.destroy()
})

test('authRetryDelaysMs: anything but up to ten delays of 0..3600000 ms is refused with what was wrong', async () => {
  const base = { billingMode: 'free', cdmUrl: env.net.cdmUrl, tokenProvider: async () => ({ token: 't', expiresIn: 3600 }) }
  await assert.rejects(TaskClient.create({ ...base, authRetryDelaysMs: 5000 }), (e) => e instanceof sdk.InvalidArgumentError && /authRetryDelaysMs must be an array/.test(e.message))
  await assert.rejects(TaskClient.create({ ...base, authRetryDelaysMs: ['5s'] }), (e) => e instanceof sdk.InvalidArgumentError && /array of numbers/.test(e.message))
  await assert.rejects(TaskClient.create({ ...base, authRetryDelaysMs: [-1] }), (e) => e instanceof sdk.InvalidArgumentError && /between 0 and 3600000, got -1/.test(e.message))
  await assert.rejects(TaskClient.create({ ...base, authRetryDelaysMs: [NaN] }), (e) => e instanceof sdk.InvalidArgumentError && /got NaN/.test(e.message))
  await assert.rejects(TaskClient.create({ ...base, authRetryDelaysMs: new Array(11).fill(1) }), (e) => e instanceof sdk.InvalidArgumentError && /at most 10/.test(e.message))
})

test('a refresh endpoint down for a while: a failed proactive refresh is retried, and the client goes on without onAuthError', async () => {
  let calls = 0
  const recovered = deferred()
  let authError = null
  const client = await TaskClient.create({
    billingMode: 'free',
    cdmUrl: env.net.cdmUrl,
    authRetryDelaysMs: [200, 400],
    tokenProvider: async () => {
      calls++
      if (calls === 2) throw new Error('token service down')
      const t = await consumerToken()
      if (calls === 3) recovered.resolve()
      return { token: t.accessToken, expiresIn: calls === 1 ? 1 : 3600, userId: t.userId }
    },
    onAuthError: (err) => (authError = err),
  })
  await recovered.promise
  const r = await client.getTask('t_missing').catch((e) => e)
  assert.ok(r instanceof RpcError && r.code !== 401, `an application error with the fresh token, got ${r?.message}`)
  // AUTH-09: a failed proactive refresh is retried; a later success means no onAuthError
  assert.equal(authError, null)
  assert.equal(calls, 3)
  client.destroy()
})

test('BillingModeMismatchError for a paid agent called as free', async () => {
  const client = await env.client()
  const reg = await fetch(`${env.net.url}/api/v1/registry/agents?agentName=premium`, { headers: { authorization: `Bearer ${env.net.apiKey}` } })
  assert.equal((await reg.json()).agent.billingMode, 'paid')
  await assert.rejects(client.sendMessage({ agentName: 'premium', requestParts: [] }), (e) => {
    // ERR-02: data.code BillingModeMismatch is a BillingModeMismatchError (an RpcError) with expected/got
    assert.ok(e instanceof BillingModeMismatchError)
    assert.ok(e instanceof RpcError)
    assert.equal(e.expected, 'paid')
    assert.equal(e.got, 'free')
    assert.equal(e.code, -32000)
    return true
  })
})

test('pipe duration rules are checked before any network call', async () => {
  const client = await env.client()
  for (const duration of [undefined, 0, 43201, 1.5, '5']) {
    await assert.rejects(client.sendMessage({ agentName: 'echo', taskKind: 'pipe', duration }), /Pipe tasks require a duration between 1 and 43200 minutes/)
  }
  // PIPE-02 ERR-07: a duration without taskKind pipe rejects "Request tasks must not include a duration"
  await assert.rejects(client.sendMessage({ agentName: 'echo', duration: 5 }), /Request tasks must not include a duration/)
  await assert.rejects(client.sendMessage({ agentName: 'echo', taskKind: 'stream' }), /taskKind must be 'request' or 'pipe'/)
})

test('idempotency: the same key returns the same task; a finished one comes back pre-closed', async () => {
  const client = await env.client()
  const key = `k-${Date.now()}`
  const s1 = await client.sendMessage({ agentName: 'echo', requestParts: [textPart('once')], idempotencyKey: key })
  assert.equal(s1.idempotent, false)
  await s1.waitForTerminal(15_000)
  const s2 = await client.sendMessage({ agentName: 'echo', requestParts: [textPart('twice')], idempotencyKey: key })
  // LIFE-09: resubmitting with the same key returns idempotent: true and the same task, without re-running
  assert.equal(s2.idempotent, true)
  assert.equal(s2.taskId, s1.taskId)
  // SEND-06: an idempotent hit on a completed task comes back closed, with its state
  assert.equal(s2.isClosed, true)
  assert.equal(s2.state, 'completed')
  const t = await s2.waitForTerminal()
  assert.deepEqual(t, { type: 'terminal', taskId: s1.taskId, state: 'completed' })
  // another caller's identical key is a different task
  const other = await env.client({ apiKey: 'bk_second' })
  const s3 = await other.sendMessage({ agentName: 'echo', requestParts: [], idempotencyKey: key })
  assert.notEqual(s3.taskId, s1.taskId)
  await s3.waitForTerminal(15_000)
})

test('progress published before sendMessage() resolved reaches listeners added right after it, once, before live events', async () => {
  const gate = deferred()
  await env.agent('early_bird', async (task, ctx) => {
    ctx.reportStatus('early')
    await gate.promise
    await new Promise((r) => setTimeout(r, 1005)) // past the 1 s status throttle
    ctx.reportStatus('late')
    return {}
  })
  const client = await env.client()
  const key = `early-${Date.now()}`
  const first = await client.sendMessage({ agentName: 'early_bird', requestParts: [], idempotencyKey: key })
  await new Promise((r) => first.onProgress((e) => e.message === 'early' && r()))
  // the same task again (idempotent hit): 'early' is now in its history, published before this
  // session existed
  const second = await client.sendMessage({ agentName: 'early_bird', requestParts: [], idempotencyKey: key })
  // SEND-06: an idempotent hit on a running task is a live session
  assert.equal(second.idempotent, true)
  const seen = []
  const types = []
  second.onProgress((e) => e.message && seen.push(e.message))
  second.onEvent((e) => types.push(e.type))
  gate.resolve()
  await second.waitForTerminal(15_000)
  // SEND-09 RETRY-02: events from before the session existed (history) and live ones arrive once, in order
  assert.deepEqual(seen, ['early', 'late'])
  // SESS-03: onEvent receives every event type, the terminal too
  assert.ok(types.includes('progress') && types.at(-1) === 'terminal', types.join())
  assert.deepEqual(second.listEvents().filter((e) => e.message).map((e) => e.message), ['early', 'late'])
})

test('connect() to a finished task rebuilds it from history', async () => {
  const client = await env.client()
  const s = await client.sendMessage({ agentName: 'echo', requestParts: [textPart('history')] })
  await s.waitForTerminal(15_000)
  const c = await client.connect(s.taskId)
  assert.equal(c.taskId, s.taskId)
  // CONN-03: a terminal task: state from history, not closed until close(), artifacts from history, waitForTerminal at once
  assert.equal(c.state, 'completed')
  assert.equal(c.isClosed, false, 'a history-only session is not closed until close()')
  assert.equal(c.listArtifacts().length, 1)
  assert.equal(artifactText(c.listArtifacts()[0]), 'Echo: history')
  const types = c.listEvents().map((e) => e.type)
  assert.deepEqual(types, ['progress', 'artifact', 'terminal'])
  assert.equal((await c.waitForTerminal()).state, 'completed')
  c.close()
  assert.equal(c.isClosed, true)
})

test('connect() to an active task is live; cancel reaches the handler and ends it canceled', async () => {
  const client = await env.client()
  const s = await client.sendMessage({ agentName: 'waiter', requestParts: [] })
  await waiterRuns(s.taskId)
  const c = await client.connect({ taskId: s.taskId })
  // CONN-04: connect() to an active task gives a live session
  assert.equal(c.state, 'running')
  const cancelAck = deferred()
  c.onCancelRequested((e) => cancelAck.resolve(e))
  // LIFE-01: cancelTask sends CancelTask (the devnet acts on it)
  await client.cancelTask(s.taskId)
  const ack = await cancelAck.promise
  assert.equal(ack.taskId, s.taskId)
  const t = await c.waitForTerminal(15_000)
  assert.equal(t.state, 'canceled')
  assert.equal(artifactText(c.listArtifacts().at(-1)), 'stopped')
  assert.equal((await s.waitForTerminal(15_000)).state, 'canceled')
})

test('terminate ends a task canceled with reason terminated', async () => {
  const client = await env.client()
  const s = await client.sendMessage({ agentName: 'waiter', requestParts: [] })
  await waiterRuns(s.taskId)
  // LIFE-02 LIFE-01: session.terminate() sends TerminateTask
  await s.terminate()
  const t = await s.waitForTerminal(15_000)
  assert.equal(t.state, 'canceled')
  // LIFE-04: TerminateTask ends the task canceled with reason terminated
  assert.equal(t.reason, 'terminated')
})

test('pause and resume publish system events', async () => {
  const client = await env.client()
  const s = await client.sendMessage({ agentName: 'waiter', requestParts: [] })
  await waiterRuns(s.taskId)
  const statuses = []
  const both = deferred()
  s.onEvent((e) => {
    if (e.type === 'system') statuses.push(e.status)
    if (statuses.length === 2) both.resolve()
  })
  // LIFE-01: pauseTask / resumeTask send PauseTask / ResumeTask
  await client.pauseTask(s.taskId)
  await client.resumeTask(s.taskId)
  await both.promise
  // LIFE-08: pause/resume only show as system events on the task channel
  assert.deepEqual(statuses, ['paused', 'resumed'])
  // LIFE-02: session.cancel() sends CancelTask
  await s.cancel()
  assert.equal((await s.waitForTerminal(15_000)).state, 'canceled')
})

test('listTasks filters and pages with cursors', async () => {
  const client = await env.client({ apiKey: 'bk_second' })
  const ids = []
  for (let i = 0; i < 5; i++) {
    const s = await client.sendMessage({ agentName: 'echo', requestParts: [textPart(`n${i}`)] })
    ids.push(s.taskId)
    await s.waitForTerminal(15_000)
  }
  const seen = []
  let cursor
  let pages = 0
  do {
    // LIST-02: ListTasks with agentName, limit, cursor gives { tasks, next }
    const page = await client.listTasks({ agentName: 'echo', limit: 2, cursor })
    assert.ok(page.tasks.length <= 2)
    seen.push(...page.tasks.map((t) => t.taskId))
    cursor = page.next
    pages++
  } while (cursor && pages < 20)
  assert.ok(pages >= 3, `expected several pages, got ${pages}`)
  for (const id of ids) assert.ok(seen.includes(id), `${id} listed`)
  assert.equal(new Set(seen).size, seen.length, 'no task twice across pages')
  // tasks of this user in three more states: failed, canceled, and one still running
  const failed = await client.sendMessage({ agentName: 'failer', requestParts: [] })
  assert.equal((await failed.waitForTerminal(15_000)).state, 'failed')
  const canceled = await client.sendMessage({ agentName: 'waiter', requestParts: [] })
  await waiterRuns(canceled.taskId)
  await canceled.cancel()
  assert.equal((await canceled.waitForTerminal(15_000)).state, 'canceled')
  const running = await client.sendMessage({ agentName: 'waiter', requestParts: [] })
  await waiterRuns(running.taskId)
  try {
    const expected = { completed: ids, failed: [failed.taskId], canceled: [canceled.taskId], running: [running.taskId] }
    const listed = {}
    for (const state of Object.keys(expected)) {
      // LIST-02: the state filter
      const page = await client.listTasks({ state, limit: 100 })
      assert.ok(page.tasks.every((t) => t.state === state), `state ${state}: ${JSON.stringify(page.tasks.map((t) => t.state))}`)
      listed[state] = page.tasks.map((t) => t.taskId)
    }
    // each task is listed under its own state and under no other
    for (const [state, mine] of Object.entries(expected)) {
      for (const [filter, got] of Object.entries(listed)) {
        for (const id of mine) assert.equal(got.includes(id), filter === state, `${state} task ${id} ${filter === state ? 'missing from' : 'listed under'} state ${filter}`)
      }
    }
    const all = await client.listTasks({ limit: 100 })
    assert.equal(all.tasks.length, Object.values(listed).flat().length, 'the filters split the unfiltered list')
  } finally {
    await running.cancel()
    await running.waitForTerminal(15_000)
  }
  // the first user's tasks are not in the second user's list
  const mine = await (await env.client()).listTasks({ limit: 100 })
  assert.ok(!mine.tasks.some((t) => ids.includes(t.taskId)))
})

test('getAgentCard returns the registry card or null', async () => {
  const client = await env.client()
  const card = await client.getAgentCard('echo')
  assert.ok(card !== null && typeof card === 'object', `expected a card object, got ${JSON.stringify(card)}`)
  assert.equal(card.identity?.agentName, 'echo', JSON.stringify(card))
  // LIST-03: the registry card, or null for an unknown agent
  assert.equal(await client.getAgentCard('never_registered_agent'), null)
})

test('destroy() is idempotent and live sessions keep working', async () => {
  const client = await env.client()
  const s = await client.sendMessage({ agentName: 'echo', requestParts: [textPart('after destroy')] })
  client.destroy()
  client.destroy()
  assert.equal((await s.waitForTerminal(15_000)).state, 'completed')
})

test('errors from ESM and CJS are the same classes', async () => {
  // the ESM entry (what `import` resolves to through package.json "exports") and the CommonJS one
  const esm = await import('../index.mjs')
  const cjs = sdk
  const names = ['BlocksError', 'RpcError', 'BillingModeMismatchError', 'AuthRefreshFailedError', 'AgentAuthFatalError', 'AnonTaskAccessDeniedError',
    'StreamUnavailableError', 'TransportError', 'ConfigError', 'InvalidArgumentError', 'TimeoutError', 'ClosedError', 'FileUploadError']
  for (const n of names) {
    assert.equal(typeof esm[n], 'function', `index.mjs exports ${n}`)
    assert.equal(esm[n], cjs[n], `${n} is the same class from index.mjs and index.js`)
  }
  assert.equal(esm.TaskClient, cjs.TaskClient)
  assert.equal(esm.default.RpcError, cjs.RpcError)
  // an error raised by a client made through the ESM entry is an instance of the CommonJS class
  const viaEsm = await esm.TaskClient.create({ billingMode: 'free', apiKey: env.net.apiKey, cdmUrl: env.net.cdmUrl })
  const e = await viaEsm.getTask('t_nope').catch((x) => x)
  viaEsm.destroy()
  assert.ok(e instanceof esm.RpcError)
  assert.ok(e instanceof RpcError)
  assert.ok(e instanceof BlocksError)
  // ERR-01: an RPC failure is an RpcError named 'RpcError'
  assert.equal(e.name, 'RpcError')
})

test('configuration precedence: explicit option > BLOCKS_* env > CDM', async () => {
  const saved = { ...process.env }
  try {
    // env beats the CDM: a bogus backend URL in the env breaks the token exchange
    // CFG-05: explicit option > env > CDM (BLOCKS_BACKEND_URL, BLOCKS_CDM_URL, BLOCKS_SUBSCRIBE_KEY; BLOCKS_PUBLISH_KEY is not checked)
    process.env.BLOCKS_BACKEND_URL = 'http://127.0.0.1:9'
    await assert.rejects(TaskClient.create({ billingMode: 'free', apiKey: env.net.apiKey, cdmUrl: env.net.cdmUrl }), /consumer-token failed/)
    // an explicit option beats the env
    const c = await TaskClient.create({ billingMode: 'free', apiKey: env.net.apiKey, cdmUrl: env.net.cdmUrl, baseUrl: env.net.url })
    assert.equal(c.getUserId(), 'user_default')
    c.destroy()
    delete process.env.BLOCKS_BACKEND_URL
    // BLOCKS_CDM_URL is used when no cdmUrl is given
    process.env.BLOCKS_CDM_URL = env.net.cdmUrl
    const viaEnv = await TaskClient.create({ billingMode: 'free', apiKey: env.net.apiKey })
    assert.equal(viaEnv.getUserId(), 'user_default')
    // keys: env beats the CDM (a key the devnet does not know makes connect fail), explicit beats env
    const s = await viaEnv.sendMessage({ agentName: 'echo', requestParts: [textPart('k')] })
    await s.waitForTerminal(15_000)
    process.env.BLOCKS_SUBSCRIBE_KEY = 'sub-c-unknown'
    const badKeys = await TaskClient.create({ billingMode: 'free', apiKey: env.net.apiKey })
    await assert.rejects(badKeys.connect(s.taskId), /400|unknown subscribe key/)
    const goodKeys = await TaskClient.create({ billingMode: 'free', apiKey: env.net.apiKey, subscribeKey: 'sub-c-devnet-free' })
    const c2 = await goodKeys.connect(s.taskId)
    assert.equal(c2.state, 'completed')
    c2.close()
    for (const x of [viaEnv, badKeys, goodKeys]) x.destroy()
  } finally {
    for (const k of ['BLOCKS_BACKEND_URL', 'BLOCKS_CDM_URL', 'BLOCKS_SUBSCRIBE_KEY']) {
      if (saved[k] === undefined) delete process.env[k]
      else process.env[k] = saved[k]
    }
  }
})

test('direct construction with a StaticAuthProvider or a ConsumerAuth', async () => {
  // CFG-02: new TaskClient() without or with an invalid billingMode throws the exact message
  assert.throws(() => new TaskClient({ subscribeKey: 's' }), (e) => e instanceof InvalidArgumentError && e.message === "TaskClient requires a billingMode option ('free' or 'paid')")
  assert.throws(() => new TaskClient({ billingMode: 'network', subscribeKey: 's' }), /requires a billingMode/)
  assert.throws(() => new TaskClient({ billingMode: 'free' }), /subscribeKey/)
  const t = await consumerToken()
  const direct = new TaskClient({
    billingMode: 'free',
    subscribeKey: 'sub-c-devnet-free',
    publishKey: 'pub-c-devnet-free',
    baseUrl: env.net.url,
    realtimeOrigin: env.net.url,
    authProvider: new sdk.StaticAuthProvider(t.accessToken),
  })
  const s = await direct.sendMessage({ agentName: 'echo', requestParts: [textPart('direct')] })
  assert.equal((await s.waitForTerminal(15_000)).state, 'completed')
  assert.equal(artifactText(s.listArtifacts()[0]), 'Echo: direct')

  let calls = 0
  const auth = new sdk.ConsumerAuth({
    tokenProvider: async () => {
      calls++
      const x = await consumerToken()
      return { token: x.accessToken, expiresIn: 3600, userId: x.userId }
    },
  })
  assert.equal(auth.getAuthHeader(), null)
  await auth.init()
  assert.match(auth.getAuthHeader(), /^Bearer tok_/)
  assert.equal(auth.getUserId(), 'user_default')
  // concurrent refreshes share one call to the provider
  const [a, b, c] = await Promise.all([auth.onAuthFailure(), auth.onAuthFailure(), auth.onAuthFailure()])
  assert.deepEqual([a, b, c], [true, true, true])
  assert.equal(calls, 2)
  const viaAuth = new TaskClient({ billingMode: 'free', subscribeKey: 'sub-c-devnet-free', baseUrl: env.net.url, realtimeOrigin: env.net.url, authProvider: auth })
  assert.equal((await viaAuth.getTask(s.taskId)).state, 'completed')
  auth.destroy()
  auth.destroy()
  // AUTH-05: a ConsumerAuth with no mode is refused with the spec message (thrown by the constructor, not at init)
  assert.throws(() => new sdk.ConsumerAuth({}), (e) => e instanceof sdk.InvalidArgumentError && /requires one of: apiKey, tokenEndpoint, or tokenProvider/.test(e.message))
})

test('anonymous viewers: no auth, no sendMessage, and a 403 read token is AnonTaskAccessDeniedError', async () => {
  // AUTH-24: anonFingerprint: paid refused, no user id, no sendMessage
  await assert.rejects(TaskClient.create({ billingMode: 'paid', cdmUrl: env.net.cdmUrl, anonFingerprint: 'fp' }), /anonFingerprint/)
  const anon = await TaskClient.create({ billingMode: 'free', cdmUrl: env.net.cdmUrl, anonFingerprint: 'fp-1' })
  assert.equal(anon.getUserId(), null)
  await assert.rejects(anon.sendMessage({ agentName: 'echo', requestParts: [] }), /anon-mode TaskClient does not support sendMessage\(\)/)
  await assert.rejects(anon.connect('t_someone_elses'), (e) => {
    // AUTH-24 ERR-06: a 403 read token is AnonTaskAccessDeniedError with 403 in the message
    assert.ok(e instanceof sdk.AnonTaskAccessDeniedError, e?.constructor?.name)
    assert.match(e.message, /\b403\b/)
    return true
  })
  // without any auth, connect() refuses before the network
  const noAuth = await TaskClient.create({ billingMode: 'free', cdmUrl: env.net.cdmUrl })
  // CONN-01: connect() without auth rejects "connect() requires an authenticated TaskClient"
  await assert.rejects(noAuth.connect('t_x'), /connect\(\) requires an authenticated TaskClient/)
})

test('an agent whose API key is refused gets AgentAuthFatalError', async () => {
  await assert.rejects(
    sdk.startAgentInstance({ agentName: 'echo', handler: () => ({}), apiKey: 'bk_revoked', cdmUrl: env.net.cdmUrl }),
    // ERR-04: a refused agent registration is AgentAuthFatalError "Agent registration failed"
    (e) => e instanceof sdk.AgentAuthFatalError && /Agent registration failed/.test(e.message),
  )
})

test('retryTask runs a failed task again as a new task', async () => {
  let attempt = 0
  await env.agent('flaky', () => {
    attempt++
    if (attempt === 1) throw new Error('first attempt fails')
    return { artifacts: [{ data: `attempt ${attempt}`, mimeType: 'text/plain' }] }
  })
  const client = await env.client()
  const s = await client.sendMessage({ agentName: 'flaky', requestParts: [] })
  assert.equal((await s.waitForTerminal(15_000)).error, 'first attempt fails')
  // LIFE-01: retryTask sends RetryTask; the failed task runs again as a new task
  const retry = await client.retryTask(s.taskId)
  assert.notEqual(retry.taskId, s.taskId)
  const again = await client.connect(retry.taskId)
  assert.equal((await again.waitForTerminal(15_000)).state, 'completed')
  assert.equal(artifactText(again.listArtifacts()[0]), 'attempt 2')
  await assert.rejects(client.retryTask(retry.taskId), /only failed or canceled tasks can be retried/)
})
