// Issue 17: the official SDK's caller surface, used the way its users use it, against a real
// devnet. Wire-level checks go through a recording HTTP proxy (startHttpProxy) between the SDK and
// the devnet; the devnet itself is never mocked.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import http from 'node:http'
import { startNetwork, sdk, artifactText, aborted } from './helpers.mjs'
import { startHttpProxy } from './httpproxy.mjs'

const {
  TaskClient, AgentAuth, StaticAuthProvider, textPart, AgentAuthFatalError, AuthRefreshFailedError,
  InvalidArgumentError, RpcError,
} = sdk

let env
let proxy
before(async () => {
  env = await startNetwork()
  await env.agent('echo', async (task) => ({ artifacts: [{ data: `Echo: ${task.requestParts?.[0]?.text ?? ''}`, mimeType: 'text/plain' }] }))
  proxy = await startHttpProxy(env.net.url)
})
after(async () => {
  // the agents first: they may publish through the proxy until they stop
  await env.stop()
  await proxy.close()
})

/** A client whose every request goes through the recording proxy. */
function proxied(extra = {}) {
  return TaskClient.create({ billingMode: 'free', apiKey: env.net.apiKey, cdmUrl: `${proxy.url}/config.json`, baseUrl: proxy.url, realtimeOrigin: proxy.url, ...extra })
}

/** A consumer access token for the devnet's API key, fetched as any backend client would. */
async function consumerToken() {
  const r = await fetch(`${env.net.url}/api/v1/auth/agent/consumer-token`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ apiKey: env.net.apiKey }) })
  return (await r.json()).accessToken
}

const rpcCalls = (method) => proxy.find((r) => r.method === 'POST' && /\/rpc$/.test(r.path) && r.json?.method === method)

test('CFG-09 ownerId on the wire: "" by default, defaultOwnerId when configured, an explicit ownerId wins and is echoed', async () => {
  const client = await proxied()
  const user = client.getUserId()
  const before = rpcCalls('SendMessage').length
  const s1 = await client.sendMessage({ agentName: 'echo', requestParts: [textPart('a')] })
  assert.equal(rpcCalls('SendMessage')[before].json.params.ownerId, '')
  assert.equal(s1.ownerId, user, 'the session still knows its owner (from the reply)')
  const withDefault = await proxied({ defaultOwnerId: user })
  await withDefault.sendMessage({ agentName: 'echo', requestParts: [textPart('b')] })
  assert.equal(rpcCalls('SendMessage').at(-1).json.params.ownerId, user)
  const s3 = await client.sendMessage({ agentName: 'echo', requestParts: [textPart('c')], ownerId: user })
  assert.equal(rpcCalls('SendMessage').at(-1).json.params.ownerId, user)
  assert.equal(s3.ownerId, user)
  for (const c of [client, withDefault]) c.destroy()
})

test('CFG-08 without a baseUrl, RPCs go to <origin>/v1/blocks/sub-key/<subscribeKey>/rpc; CFG-10 updateKeys() moves them', async () => {
  const token = await consumerToken()
  const client = new TaskClient({ billingMode: 'free', subscribeKey: 'sub-c-devnet-free', realtimeOrigin: proxy.url, authProvider: new StaticAuthProvider(token) })
  const session = await client.sendMessage({ agentName: 'echo', requestParts: [textPart('fallback')] })
  const call = rpcCalls('SendMessage').at(-1)
  assert.equal(call.path, '/v1/blocks/sub-key/sub-c-devnet-free/rpc')
  assert.equal(call.headers.authorization, `Bearer ${token}`)
  assert.equal((await session.waitForTerminal(15_000)).state, 'completed')
  client.updateKeys('sub-c-devnet-paid', 'pub-c-devnet-paid')
  await client.getTask(session.taskId)
  assert.equal(rpcCalls('GetTask').at(-1).path, '/v1/blocks/sub-key/sub-c-devnet-paid/rpc')
  assert.equal(rpcCalls('GetTask').at(-1).headers.authorization, `Bearer ${token}`, 'CFG-10: the auth state is untouched')
  client.updateKeys('sub-c-unknown')
  await assert.rejects(client.getTask(session.taskId), (e) => e instanceof RpcError && /HTTP 404/.test(e.message))
  assert.throws(() => client.updateKeys(''), InvalidArgumentError)
})

test('issue 17 shape: new TaskClient({ billingMode, subscribeKey, authProvider }) with any AuthProvider object; AUTH-11 a 401 calls onAuthFailure and retries once', async () => {
  const good = await consumerToken()
  const calls = { header: 0, failure: 0, ready: 0 }
  let current = 'not-a-valid-token'
  const provider = {
    async ensureReady() {
      calls.ready++
    },
    getAuthHeader() {
      calls.header++
      return `Bearer ${current}`
    },
    async onAuthFailure() {
      calls.failure++
      current = good
      return true
    },
  }
  const client = new TaskClient({ billingMode: 'free', subscribeKey: 'sub-c-devnet-free', baseUrl: proxy.url, realtimeOrigin: proxy.url, authProvider: provider })
  const session = await client.sendMessage({ agentName: 'echo', requestParts: [textPart('custom')] })
  assert.equal((await session.waitForTerminal(15_000)).state, 'completed')
  assert.equal(calls.failure, 1, 'one refresh after the 401')
  const sends = rpcCalls('SendMessage').slice(-2)
  assert.deepEqual(sends.map((r) => r.headers.authorization), ['Bearer not-a-valid-token', `Bearer ${good}`])
  assert.ok(calls.header >= 2, 'the header is asked for on every request')
  assert.ok(calls.ready >= 1)
  // a provider that cannot refresh: the 401 comes back after one request
  const stuck = new TaskClient({ billingMode: 'free', subscribeKey: 'sub-c-devnet-free', baseUrl: proxy.url, realtimeOrigin: proxy.url, authProvider: { getAuthHeader: () => 'Bearer nope', onAuthFailure: async () => false } })
  const n = rpcCalls('GetTask').length
  await assert.rejects(stuck.getTask(session.taskId), /HTTP 401/)
  assert.equal(rpcCalls('GetTask').length, n + 1)
  assert.throws(() => new TaskClient({ billingMode: 'free', subscribeKey: 'k', authProvider: { getAuthHeader() {} } }), /getAuthHeader\(\) and onAuthFailure\(\)/)
})

test('AUTH-13 a failed reactive refresh is not permanent: the next call refreshes again and succeeds', async () => {
  const good = await consumerToken()
  let refreshes = 0
  const provider = {
    getAuthHeader: () => (refreshes >= 2 ? `Bearer ${good}` : 'Bearer stale'),
    async onAuthFailure() {
      refreshes++
      return refreshes >= 2 // the first refresh fails, the second works
    },
  }
  const client = new TaskClient({ billingMode: 'free', subscribeKey: 'sub-c-devnet-free', baseUrl: env.net.url, realtimeOrigin: env.net.url, authProvider: provider })
  await assert.rejects(client.listTasks({}), /HTTP 401/)
  const r = await client.listTasks({})
  assert.ok(Array.isArray(r.tasks))
  assert.equal(refreshes, 2)
  // the same with a token provider (ConsumerAuth's own machinery)
  let calls = 0
  const flaky = await TaskClient.create({
    billingMode: 'free',
    cdmUrl: env.net.cdmUrl,
    tokenProvider: async () => {
      calls++
      if (calls === 1) return { token: 'stale', expiresIn: 3600 }
      if (calls === 2) throw new Error('token service down')
      return { token: good, expiresIn: 3600 }
    },
  })
  await assert.rejects(flaky.listTasks({}), (e) => !(e instanceof AuthRefreshFailedError) && /HTTP 401/.test(e.message))
  assert.ok(Array.isArray((await flaky.listTasks({})).tasks), 'the failed refresh was not recorded as permanent')
  flaky.destroy()
})

test('AUTH-14 tokenEndpoint { url, headers, body, credentials }: the user\'s Content-Type replaces the JSON one, the body replaces {}, both reused on refresh', async () => {
  const good = await consumerToken()
  const seen = []
  const server = http.createServer((req, res) => {
    let body = ''
    req.on('data', (c) => (body += c))
    req.on('end', () => {
      seen.push({ contentType: req.headersDistinct['content-type'], custom: req.headers['x-tenant'], body })
      res.writeHead(200, { 'content-type': 'application/json' })
      res.end(JSON.stringify({ token: seen.length === 1 ? 'stale' : good, expiresIn: 3600, userId: 'from-endpoint' }))
    })
  })
  await new Promise((r) => server.listen(0, '127.0.0.1', r))
  try {
    const client = await TaskClient.create({
      billingMode: 'free',
      cdmUrl: env.net.cdmUrl,
      tokenEndpoint: { url: `http://127.0.0.1:${server.address().port}/token`, headers: { 'Content-Type': 'application/x-www-form-urlencoded', 'X-Tenant': 't1' }, body: 'grant=client', credentials: 'include' },
    })
    await client.listTasks({}) // 401 with 'stale' → refresh through the endpoint → retry
    assert.equal(seen.length, 2)
    for (const s of seen) {
      assert.deepEqual(s.contentType, ['application/x-www-form-urlencoded'], 'one Content-Type, the user\'s')
      assert.equal(s.custom, 't1')
      assert.equal(s.body, '"grant=client"')
    }
    assert.equal(client.getUserId(), 'from-endpoint')
    client.destroy()
    await assert.rejects(TaskClient.create({ billingMode: 'free', cdmUrl: env.net.cdmUrl, tokenEndpoint: { url: 'http://x', credentials: 'sometimes' } }), /credentials must be/)
    await assert.rejects(TaskClient.create({ billingMode: 'free', cdmUrl: env.net.cdmUrl, tokenEndpoint: { url: '' } }), /TokenEndpointConfig.url is required and must be a non-empty string/)
  } finally {
    server.close()
  }
})

test('AUTH-20 AUTH-21 AUTH-22 AgentAuth: registration, refresh (a used refresh token registers again), authenticatedFetch', async () => {
  assert.throws(() => new AgentAuth('', env.net.url), /apiKey is required/)
  assert.throws(() => new AgentAuth(env.net.apiKey, ''), /baseUrl is required/)
  const payload = { agentName: 'echo', instanceId: 'AG-echo-authtest', billingMode: 'free', expectedInstances: 0, concurrency: 1 }
  const bad = new AgentAuth('bk_wrong', `${proxy.url}/`)
  await assert.rejects(bad.init(payload), (e) => e instanceof AgentAuthFatalError && /Agent registration failed/.test(e.message))
  const auth = new AgentAuth(env.net.apiKey, `${proxy.url}/`)
  await assert.rejects(auth.authenticatedFetch(`${proxy.url}/api/v1/rpc`), /AgentAuth not initialized/)
  const answer = await auth.init(payload)
  const connect = proxy.find((r) => r.path === '/api/v1/auth/agent/connect').at(-1)
  assert.equal(connect.headers.authorization, `Bearer ${env.net.apiKey}`, 'trailing slash stripped, key as bearer')
  assert.deepEqual(connect.json, payload)
  for (const k of ['accessToken', 'refreshToken', 'expiresIn', 'pamToken', 'controlChannel']) assert.ok(answer[k] !== undefined, k)
  assert.equal(auth.getAccessToken(), answer.accessToken)
  // concurrent refreshes share one request
  const n = proxy.find((r) => r.path === '/api/v1/auth/agent/refresh').length
  await Promise.all([auth.refresh(), auth.refresh(), auth.refresh()])
  const refreshes = proxy.find((r) => r.path === '/api/v1/auth/agent/refresh')
  assert.equal(refreshes.length, n + 1)
  assert.deepEqual(Object.keys(refreshes.at(-1).json), ['refreshToken'])
  assert.notEqual(auth.getAccessToken(), answer.accessToken)
  // someone used the current refresh token: the refresh registers again with the stored payload
  const connects = proxy.find((r) => r.path === '/api/v1/auth/agent/connect').length
  const current = auth.getAccessToken()
  proxy.intercept = (r) => (r.path === '/api/v1/auth/agent/refresh' ? { status: 401, json: { error: 'refresh token invalid', code: 'REFRESH_TOKEN_INVALID' } } : undefined)
  try {
    await auth.refresh()
  } finally {
    proxy.intercept = null
  }
  assert.equal(proxy.find((r) => r.path === '/api/v1/auth/agent/connect').length, connects + 1)
  assert.deepEqual(proxy.find((r) => r.path === '/api/v1/auth/agent/connect').at(-1).json, payload)
  assert.notEqual(auth.getAccessToken(), current)
  // a refused key or a forced-offline agent is fatal
  for (const code of ['API_KEY_INVALID', 'AGENT_FORCED_OFFLINE']) {
    proxy.intercept = (r) => (r.path === '/api/v1/auth/agent/refresh' ? { status: 401, json: { error: 'no', code } } : undefined)
    try {
      await assert.rejects(auth.refresh(), (e) => e instanceof AgentAuthFatalError && e.message.includes(code))
    } finally {
      proxy.intercept = null
    }
  }
  // authenticatedFetch: bearer added, the caller's headers and body kept, one refresh+retry on 401
  let first = true
  proxy.intercept = (r) => {
    if (r.path !== '/echo-auth') return undefined
    if (first) {
      first = false
      return { status: 401, json: {} }
    }
    return { status: 200, json: { auth: r.headers.authorization, tag: r.headers['x-tag'], body: r.body } }
  }
  try {
    const res = await auth.authenticatedFetch(`${proxy.url}/echo-auth`, { method: 'POST', headers: { 'x-tag': 'mine' }, body: 'hello' })
    const got = await res.json()
    assert.equal(got.auth, `Bearer ${auth.getAccessToken()}`)
    assert.equal(got.tag, 'mine')
    assert.equal(got.body, 'hello')
  } finally {
    proxy.intercept = null
  }
})

test('AUTH-23 new TaskClient({ agentAuth }): RPCs carry the agent JWT and sessions still get events', async () => {
  const auth = new AgentAuth(env.net.apiKey, proxy.url)
  await auth.init({ agentName: 'echo', instanceId: 'AG-echo-caller', billingMode: 'free', expectedInstances: 0, concurrency: 1 })
  const client = new TaskClient({ billingMode: 'free', subscribeKey: 'sub-c-devnet-free', realtimeOrigin: proxy.url, agentAuth: auth })
  const session = await client.sendMessage({ agentName: 'echo', requestParts: [textPart('as agent')] })
  assert.equal(rpcCalls('SendMessage').at(-1).headers.authorization, `Bearer ${auth.getAccessToken()}`)
  assert.equal(rpcCalls('SendMessage').at(-1).path, '/api/v1/rpc', 'the AgentAuth base URL serves as baseUrl')
  const artifact = new Promise((resolve) => session.onArtifact(resolve))
  assert.equal((await session.waitForTerminal(15_000)).state, 'completed')
  assert.equal(artifactText(await artifact), 'Echo: as agent')
  assert.throws(() => new TaskClient({ billingMode: 'free', subscribeKey: 'k', agentAuth: {} }), /agentAuth must be an AgentAuth/)
})

test('issue 17: ctx.taskClient acts as the agent (its access token), not with the API key', async () => {
  const handle = await env.agent('a2a_probe', async (task, ctx) => {
    const sub = await ctx.taskClient.sendMessage({ agentName: 'echo', requestParts: [textPart('nested')] })
    const t = await sub.waitForTerminal(15_000)
    return { artifacts: [{ data: t.state, mimeType: 'text/plain' }] }
  }, { baseUrl: proxy.url, realtimeOrigin: proxy.url })
  assert.ok(handle.agentAuth instanceof AgentAuth)
  const client = await env.client()
  const s = await client.sendMessage({ agentName: 'a2a_probe', requestParts: [textPart('go')] })
  assert.equal((await s.waitForTerminal(20_000)).state, 'completed')
  // A2A-01: ctx.taskClient is a ready client whose sub-task sessions deliver the terminal
  assert.equal(artifactText(s.listArtifacts()[0]), 'completed')
  const send = rpcCalls('SendMessage').find((r) => r.json.params.agentName === 'echo' && r.json.params.requestParts[0].text === 'nested')
  assert.ok(send, 'the sub-task went through the agent\'s backend URL')
  assert.equal(send.headers.authorization, `Bearer ${handle.agentAuth.getAccessToken()}`)
})

test('SEND-09 a refused history read still yields a usable session', async () => {
  const client = await proxied()
  proxy.intercept = (r) => (r.path.startsWith('/v3/history/') ? { status: 403, json: { error: true, status: 403, message: 'Forbidden' } } : undefined)
  let session
  try {
    session = await client.sendMessage({ agentName: 'echo', requestParts: [textPart('no history')] })
  } finally {
    proxy.intercept = null
  }
  assert.equal((await session.waitForTerminal(15_000)).state, 'completed')
  client.destroy()
})

test('ERR-09 an RPC whose connection is reset is retried (up to 3 attempts); a refused connection is not', async () => {
  const client = await proxied()
  const before = rpcCalls('ListTasks').length
  proxy.resetNext(2, (r) => r.json?.method === 'ListTasks')
  const r = await client.listTasks({})
  assert.ok(Array.isArray(r.tasks))
  assert.equal(rpcCalls('ListTasks').length, before + 3)
  proxy.resetNext(3, (r) => r.json?.method === 'ListTasks')
  await assert.rejects(client.listTasks({}), (e) => e instanceof RpcError && e.code == null && /ListTasks/.test(e.message))
  assert.equal(rpcCalls('ListTasks').length, before + 6, 'three attempts, then the error')
  const dead = new TaskClient({ billingMode: 'free', subscribeKey: 'k', baseUrl: 'http://127.0.0.1:9', authProvider: new StaticAuthProvider('t') })
  const t0 = Date.now()
  await assert.rejects(dead.listTasks({}), RpcError)
  assert.ok(Date.now() - t0 < 500, 'connection refused fails at once (no back-off)')
  client.destroy()
})

test('LIST-03 LIST-04 getAgentCard sends the client\'s credential; AuthRefreshFailedError when the provider cannot produce one', async () => {
  const client = await proxied()
  const card = await client.getAgentCard('echo')
  assert.ok(card && card.identity && card.identity.agentName === 'echo', JSON.stringify(card))
  const read = proxy.find((r) => r.path === '/api/v1/registry/agents').at(-1)
  assert.match(read.headers.authorization, /^Bearer [^ ]+$/)
  assert.equal(await client.getAgentCard('no_such_agent_here'), null)
  const broken = new TaskClient({
    billingMode: 'free', subscribeKey: 'k', baseUrl: proxy.url,
    authProvider: { getAuthHeader: () => { throw new Error('vault sealed') }, onAuthFailure: async () => false },
  })
  await assert.rejects(broken.getAgentCard('echo'), (e) => e instanceof AuthRefreshFailedError && /vault sealed/.test(e.message))
  client.destroy()
})

test('LIST-04 getAgentCard "not found": one refresh and one retry with a refreshable provider; a single request and null without one', async () => {
  const reads = (name) => proxy.find((r) => r.path === '/api/v1/registry/agents' && r.query.agentName === name).length
  let refreshes = 0
  const provider = (canRefresh) => ({
    getAuthHeader: () => `Bearer ${env.net.apiKey}`,
    onAuthFailure: async () => {
      refreshes++
      return canRefresh
    },
  })
  // the registry answers "not found" for these names (the devnet would register an agent a user names)
  proxy.intercept = (r) =>
    r.path === '/api/v1/registry/agents' && r.query.agentName?.startsWith('missing_card_') ? { status: 404, json: { message: `Agent '${r.query.agentName}' not found` } } : undefined
  try {
    const refreshing = new TaskClient({ billingMode: 'free', subscribeKey: 'k', baseUrl: proxy.url, authProvider: provider(true) })
    assert.equal(await refreshing.getAgentCard('missing_card_a'), null)
    assert.equal(reads('missing_card_a'), 2, 'one retry after the refresh')
    assert.equal(refreshes, 1, 'one refresh')
    refreshes = 0
    const fixed = new TaskClient({ billingMode: 'free', subscribeKey: 'k', baseUrl: proxy.url, authProvider: provider(false) })
    assert.equal(await fixed.getAgentCard('missing_card_b'), null)
    assert.equal(reads('missing_card_b'), 1, 'a provider that cannot refresh: one request')
    const anonymous = new TaskClient({ billingMode: 'free', subscribeKey: 'k', baseUrl: proxy.url })
    assert.equal(await anonymous.getAgentCard('missing_card_c'), null)
    assert.equal(reads('missing_card_c'), 1, 'no provider: one request')
    for (const c of [refreshing, fixed, anonymous]) c.destroy()
  } finally {
    proxy.intercept = null
  }
})

test('PIPE-01 the pipe duration message is the official text', async () => {
  const client = await env.client()
  for (const duration of [undefined, 0, 43201]) {
    await assert.rejects(client.sendMessage({ agentName: 'echo', taskKind: 'pipe', duration }), { message: 'Pipe tasks require a duration between 1 and 43200 minutes' })
  }
  await assert.rejects(client.sendMessage({ agentName: 'echo', taskKind: 'pipe', duration: 1.5 }), /Pipe tasks require a duration between 1 and 43200 minutes \(whole minutes; got 1.5\)/)
})

// ---------------------------------------------------------------------------------------------
// Answers the devnet never gives on its own, shaped by the proxy (the SDK's side is what is tested)

test('SEND-03 a SendMessage answer without extensions.blocks: statusChannel is derived u.<ownerId>.<taskId>, readToken null', async () => {
  const client = await proxied()
  proxy.rewrite = (r, res) => {
    if (r.json?.method !== 'SendMessage' || !res.json?.result) return undefined
    const { extensions: _e, ...result } = res.json.result
    return { ...res, json: { ...res.json, result } }
  }
  let session
  try {
    session = await client.sendMessage({ agentName: 'echo', requestParts: [textPart('bare')] })
  } finally {
    proxy.rewrite = null
  }
  assert.equal(session.readToken, null)
  assert.equal(session.statusChannel, `u.${session.ownerId}.${session.taskId}`)
  await session.close()
  client.destroy()
})

test('AUTH-18 an X-Write-Affinity from an auth answer is echoed on later backend calls while it is valid; junk values are not', async () => {
  const until = Math.floor(Date.now() / 1000) + 120
  proxy.rewrite = (r, res) => (r.path === '/api/v1/auth/agent/consumer-token' ? { ...res, headers: { ...res.headers, 'x-write-affinity': String(until) } } : undefined)
  let client
  try {
    client = await proxied()
  } finally {
    proxy.rewrite = null
  }
  await client.listTasks({})
  assert.equal(rpcCalls('ListTasks').at(-1).headers['x-write-affinity'], String(until))
  // a malformed value never replaces the valid one
  proxy.rewrite = (r, res) => (r.json?.method === 'ListTasks' ? { ...res, headers: { ...res.headers, 'x-write-affinity': 'Infinity' } } : undefined)
  try {
    await client.listTasks({})
  } finally {
    proxy.rewrite = null
  }
  await client.listTasks({})
  assert.equal(rpcCalls('ListTasks').at(-1).headers['x-write-affinity'], String(until))
  client.destroy()
})

test('CONN-08 a read-token request answered 401 is refreshed and retried with the new token', async () => {
  const client = await proxied()
  const done = await client.sendMessage({ agentName: 'echo', requestParts: [textPart('old')] })
  await done.waitForTerminal(15_000)
  let refused = false
  proxy.intercept = (r) => {
    if (r.path !== '/api/v1/auth/task-read-token' || refused) return undefined
    refused = true
    return { status: 401, json: { error: 'token expired', code: 'UNAUTHORIZED' } }
  }
  let c
  try {
    c = await client.connect(done.taskId)
  } finally {
    proxy.intercept = null
  }
  const asks = proxy.find((r) => r.path === '/api/v1/auth/task-read-token').slice(-2)
  assert.equal(asks.length, 2)
  assert.notEqual(asks[0].headers.authorization, asks[1].headers.authorization, 'the retry carries the refreshed token')
  assert.equal(c.state, 'completed')
  client.destroy()
})

test('CONN-05 history says terminal while GetTask still says running: the history wins, and a pre-loaded stream is StreamUnavailableError', async () => {
  await env.agent('stream_once', async (task, ctx) => {
    const s = await ctx.createStream()
    s.write('x')
    await s.end()
    return {}
  }, { card: { identity: { agentName: 'x' }, capabilities: { taskKinds: ['request'] }, runtime: { handler: './h.js' }, streams: { _default: { direction: 'outbound', format: 'bytes' } } } })
  const client = await proxied()
  const s = await client.sendMessage({ agentName: 'stream_once', requestParts: [], stream: true })
  await s.waitForTerminal(15_000)
  proxy.rewrite = (r, res) => (r.json?.method === 'GetTask' && res.json?.result?.task ? { ...res, json: { ...res.json, result: { task: { ...res.json.result.task, state: 'running' } } } } : undefined)
  let c
  try {
    c = await client.connect(s.taskId)
  } finally {
    proxy.rewrite = null
  }
  assert.equal(c.state, 'completed')
  const ref = c.listStreams()[0]
  assert.ok(ref, 'the stream is pre-loaded from history')
  assert.throws(() => ref.open(), (e) => e instanceof sdk.StreamUnavailableError && /completed/.test(e.message))
  await c.close()
  client.destroy()
})

// ---------------------------------------------------------------------------------------------
// The rest of the official surface

test('CFG-07 fetchCdmConfig(url?): explicit url, else BLOCKS_CDM_URL; HTTP and shape failures name the cause', async () => {
  const docs = { '/good': { status: 200, json: { playground: { publishKey: 'p', subscribeKey: 's' }, network: { publishKey: 'p2', subscribeKey: 's2' } } }, '/down': { status: 503, json: {} }, '/nokeys': { status: 200, json: { network: { publishKey: 'p2', subscribeKey: 's2' } } }, '/nonet': { status: 200, json: { playground: { publishKey: 'p', subscribeKey: 's' } } } }
  const server = http.createServer((req, res) => {
    const d = docs[req.url] ?? { status: 404, json: {} }
    res.writeHead(d.status, { 'content-type': 'application/json' })
    res.end(JSON.stringify(d.json))
  })
  await new Promise((r) => server.listen(0, '127.0.0.1', r))
  const base = `http://127.0.0.1:${server.address().port}`
  try {
    assert.equal((await sdk.fetchCdmConfig(`${base}/good`)).network.subscribeKey, 's2')
    await assert.rejects(sdk.fetchCdmConfig(`${base}/down`), { message: 'CDM config fetch failed: 503 Service Unavailable' })
    await assert.rejects(sdk.fetchCdmConfig(`${base}/nokeys`), { message: 'CDM config missing playground keys' })
    await assert.rejects(sdk.fetchCdmConfig(`${base}/nonet`), { message: 'CDM config missing network keys' })
    const saved = process.env.BLOCKS_CDM_URL
    process.env.BLOCKS_CDM_URL = env.net.cdmUrl
    try {
      assert.equal((await sdk.fetchCdmConfig()).api.baseUrl, env.net.url)
    } finally {
      if (saved === undefined) delete process.env.BLOCKS_CDM_URL
      else process.env.BLOCKS_CDM_URL = saved
    }
    assert.equal(sdk.DEFAULT_CDM_URL, 'https://config.blocks.ai/config.json')
    // CFG-13 the legacy config document
    docs['/legacy'] = { status: 200, json: { subscribeKey: 'sub-1' } }
    docs['/legacy-bad'] = { status: 200, json: { publishKey: 'p' } }
    assert.deepEqual(await sdk.loadBlocksConfig(`${base}/legacy`), { publishKey: '', subscribeKey: 'sub-1', blocksBackendUrl: '' })
    await assert.rejects(sdk.loadBlocksConfig(`${base}/legacy-bad`), /missing subscribeKey/)
    await assert.rejects(sdk.loadBlocksConfig(`${base}/down`), /Failed to load Blocks config/)
  } finally {
    server.close()
  }
})

test('CFG-14 PROTO-01 the package root exports the official surface', () => {
  for (const name of ['TaskClient', 'textPart', 'filePart', 'filePartFromPath', 'fetchCdmConfig', 'getAgent', 'fetchAgentRegistry', 'fetchAgentsBySkill', 'fetchAgentsByTag', 'fetchAgentsByListing', 'removeAgent', 'loadBlocksConfig', 'AgentAuth', 'ConsumerAuth', 'StaticAuthProvider', 'StreamRef', 'downloadArtifact', 'decodeInlineArtifact', 'buildArtifactRef', 'isProtocolVersionSupported']) {
    assert.equal(typeof sdk[name], 'function', name)
  }
  assert.equal(sdk.BLOCKS_MAX_UPLOAD_BYTES, 26214400)
  assert.equal(sdk.CURRENT_PROTOCOL_VERSION, '2026-05-01')
  assert.match(sdk.CURRENT_PROTOCOL_VERSION, /^\d{4}-\d{2}-\d{2}$/)
  assert.ok(sdk.SUPPORTED_PROTOCOL_VERSIONS.includes(sdk.CURRENT_PROTOCOL_VERSION))
  assert.equal(sdk.isProtocolVersionSupported(sdk.CURRENT_PROTOCOL_VERSION), true)
  for (const v of ['', '2099-01-01', undefined, 20260501]) assert.equal(sdk.isProtocolVersionSupported(v), false, String(v))
  assert.equal(sdk.PROTOCOL_VERSION_HEADER, 'Blocks-Protocol-Version')
})

test('LIST-05 LIST-06 AUTH-25 the registry: getAgent maps the record, the list helpers page with include=full, removeAgent', async () => {
  const opts = { baseUrl: proxy.url, apiKey: env.net.apiKey }
  const echo = await sdk.getAgent('echo', opts)
  assert.equal(echo.agentName, 'echo')
  assert.equal(echo.displayName, 'echo')
  assert.equal(echo.billingMode, 'free')
  assert.ok(typeof echo.createdAt === 'string' && !('registeredAt' in echo))
  assert.ok(echo.card && echo.listing)
  assert.equal(proxy.find((r) => r.path === '/api/v1/registry/agents').at(-1).headers.authorization, `Bearer ${env.net.apiKey}`)
  assert.equal(await sdk.getAgent('no_such_agent_x', { baseUrl: proxy.url }), null)
  assert.equal(proxy.find((r) => r.path === '/api/v1/registry/agents').at(-1).headers.authorization, undefined, 'no key, no Authorization')
  const all = await sdk.fetchAgentRegistry({ ...opts, limit: 200 })
  assert.ok(all.agents.some((a) => a.agentName === 'echo'))
  assert.equal(all.totalCount, all.agents.length)
  const last = proxy.find((r) => r.path === '/api/v1/registry/agents').at(-1)
  assert.equal(last.query.include, 'full')
  assert.equal(last.query.limit, '200')
  assert.equal(last.headers.authorization, `Bearer ${env.net.apiKey}`, 'AUTH-25: fetchAgentRegistry sends the key as a bearer')
  // paging: one agent per page, following next
  const names = []
  let cursor
  for (let i = 0; i < 100; i++) {
    const page = await sdk.fetchAgentRegistry({ ...opts, limit: 1, cursor })
    names.push(...page.agents.map((a) => a.agentName))
    if (!page.next) break
    cursor = page.next
  }
  assert.deepEqual(names, all.agents.map((a) => a.agentName))
  const priv = await sdk.fetchAgentsByListing('private', opts)
  assert.ok(priv.agents.every((a) => a.listing === 'private') && priv.agents.length > 0)
  const lastList = () => proxy.find((r) => r.path === '/api/v1/registry/agents').at(-1)
  assert.equal(lastList().query.listing, 'private')
  assert.equal(lastList().headers.authorization, `Bearer ${env.net.apiKey}`, 'AUTH-25: fetchAgentsByListing')
  assert.deepEqual(await sdk.fetchAgentsByTag('finance', opts), { agents: [], totalCount: 0 })
  assert.equal(lastList().query.tag, 'finance')
  assert.equal(lastList().headers.authorization, `Bearer ${env.net.apiKey}`, 'AUTH-25: fetchAgentsByTag')
  assert.deepEqual(await sdk.fetchAgentsBySkill('summarize', opts), { agents: [], totalCount: 0 })
  assert.equal(lastList().query.skill, 'summarize')
  assert.equal(lastList().headers.authorization, `Bearer ${env.net.apiKey}`, 'AUTH-25: fetchAgentsBySkill')
  await sdk.fetchAgentsBySkill('summarize', { baseUrl: proxy.url })
  assert.equal(lastList().headers.authorization, undefined, 'AUTH-25: no key, no Authorization on the list helpers either')
  // a 404 from the registry is an empty page
  proxy.intercept = (r) => (r.path === '/api/v1/registry/agents' && r.query.include ? { status: 404, json: { message: 'no registry here' } } : undefined)
  try {
    assert.deepEqual(await sdk.fetchAgentRegistry(opts), { agents: [], totalCount: 0 })
  } finally {
    proxy.intercept = null
  }
  // removeAgent: DELETE, true once, then false
  const temp = await env.agent('temp_agent', async () => ({}))
  await temp.stop(0)
  assert.equal(await sdk.removeAgent('temp_agent', { ...opts, reason: 'test' }), true)
  const del = proxy.find((r) => r.method === 'DELETE').at(-1)
  assert.equal(del.query.agentName, 'temp_agent')
  assert.deepEqual(del.json, { reason: 'test' })
  assert.equal(await sdk.removeAgent('temp_agent', opts), false)
  assert.equal(await sdk.getAgent('temp_agent', { baseUrl: proxy.url }), null)
  await assert.rejects(sdk.removeAgent('echo', { baseUrl: proxy.url }), /HTTP 401/)
  assert.throws(() => sdk.getAgent('echo', {}), /options.baseUrl/)
})

test('LIST-07 channel helpers', () => {
  const { channels } = sdk
  assert.equal(sdk.taskChannel('org_1', 't_1'), 'u.org_1.t_1')
  assert.throws(() => sdk.taskChannel('', 't'), /orgId required/)
  assert.throws(() => sdk.taskChannel('o', ''), /taskId required/)
  assert.equal(sdk.controlChannel('agt_1'), 'agent.agt_1.control')
  assert.equal(sdk.streamChannel('echo', 't_1-1'), 'stream.echo.t_1-1')
  assert.equal(sdk.setupChannel('o', 't'), 'setup.o.t')
  assert.equal(channels.registryAll(), 'registry.all')
  assert.equal(channels.registryPublic(), 'registry.public')
  assert.equal(channels.registryPrivate(), 'registry.private')
  assert.equal(channels.registryLog(), 'registry.log')
  assert.equal(channels.registrySkill('  Text-Summary  v2.1 '), 'registry.skill.text_summary_v2.1')
  assert.equal(channels.skillSlug('--Code  Review--'), 'code_review')
  for (const id of ['agent', 'OBS', 'sys', 'u', 'Anonymous', 'SYSTEM']) assert.equal(channels.isReservedOwnerId(id), true, id)
  assert.equal(channels.isReservedOwnerId('user_1'), false)
})

test('SESS-12 client.subscribeToTask(taskId, ownerId, callbacks): typed callbacks, onEvent sees everything, one terminal, unsubscribe()', async () => {
  const client = await env.client()
  const s = await client.sendMessage({ agentName: 'echo', requestParts: [textPart('sub')] })
  const types = []
  const artifacts = []
  let terminals = 0
  const terminal = new Promise((resolve) => {
    const sub = client.subscribeToTask(s.taskId, s.ownerId, {
      onEvent: (e) => types.push(e.type),
      onArtifact: (e) => artifacts.push(e),
      onTerminal: (e) => {
        terminals++
        resolve({ e, sub })
      },
      onError: (err) => resolve({ err }),
    })
    assert.equal(typeof sub.unsubscribe, 'function')
  })
  const { e, sub, err } = await terminal
  assert.ifError(err)
  assert.equal(e.state, 'completed')
  assert.equal(terminals, 1)
  assert.equal(artifacts.length, 1)
  assert.equal(artifactText(artifacts[0]), 'Echo: sub')
  assert.ok(types.includes('artifact') && types.includes('terminal'), types.join(','))
  sub.unsubscribe()
  const failed = await new Promise((resolve) => client.subscribeToTask('t_nope', undefined, { onError: resolve }))
  assert.ok(failed instanceof sdk.BlocksError)
})

test('SESS-08 drainWindowMs and autoDrain: false decide how long a session waits for open streams after the terminal', async () => {
  const card = { identity: { agentName: 'x' }, capabilities: { taskKinds: ['pipe'] }, runtime: { handler: './h.js' }, streams: { chat: { direction: 'bidirectional', format: 'events' } } }
  await env.agent('chatty', async (task, ctx) => {
    const s = await ctx.createStream()
    s.write({ hi: 1 })
    await s.flush()
    await aborted(ctx.cancelSignal)
    return {}
  }, { card, concurrency: 4 })
  const client = await env.client()
  const open = async (extra) => {
    const session = await client.sendMessage({ agentName: 'chatty', taskKind: 'pipe', duration: 5, requestParts: [], ...extra })
    const stream = (await session.waitForStream('chat')).open()
    const it = stream.events()[Symbol.asyncIterator]()
    assert.deepEqual((await it.next()).value, { hi: 1 })
    return { session, it }
  }
  const now = await open({ autoDrain: false })
  const windowed = await open({ drainWindowMs: 300 })
  const standard = await open({})
  await Promise.all([now, windowed, standard].map(({ session }) => session.cancel()))
  await now.session.waitForTerminal(15_000)
  assert.equal(now.session.isClosed, true, 'autoDrain: false closes at the terminal')
  await windowed.session.waitForTerminal(15_000)
  await standard.session.waitForTerminal(15_000)
  assert.equal(windowed.session.isClosed, false, 'still draining right after the terminal')
  assert.equal((await windowed.it.next()).done, true, 'the drain window ends the stream')
  assert.equal(windowed.session.isClosed, true)
  assert.equal(standard.session.isClosed, false, 'the default window (30 s) is still open')
  await standard.session.close()
  assert.equal((await standard.it.next()).done, true)
  await assert.rejects(client.sendMessage({ agentName: 'chatty', taskKind: 'pipe', duration: 5, drainWindowMs: -1 }), /drainWindowMs must be a non-negative number/)
  await assert.rejects(client.sendMessage({ agentName: 'chatty', taskKind: 'pipe', duration: 5, autoDrain: 'no' }), /autoDrain must be true or false/)
})

test('FILE-04 a large in-memory Blob is spooled to a private temporary file and streamed, and the file is removed', async () => {
  const os = await import('node:os')
  const fs = await import('node:fs')
  await env.agent('sizer', async (task, ctx) => {
    const data = await ctx.downloadInputArtifact(ctx.requestParts[0])
    return { artifacts: [{ data: `${data.length}:${data.every((b) => b === 9)}`, mimeType: 'text/plain' }] }
  })
  const client = await env.client()
  const temps = () => fs.readdirSync(os.tmpdir()).filter((n) => n.startsWith('blocks-upload-'))
  const before = temps()
  // a Blob that can only be read as a stream: reading it whole (arrayBuffer, bytes, text) fails the test
  class StreamOnlyBlob extends Blob {
    arrayBuffer() {
      throw new Error('the SDK read the large Blob into memory (arrayBuffer)')
    }
    bytes() {
      throw new Error('the SDK read the large Blob into memory (bytes)')
    }
    text() {
      throw new Error('the SDK read the large Blob into memory (text)')
    }
  }
  const blob = new StreamOnlyBlob([Buffer.alloc(300_000, 9)], { type: 'application/octet-stream' })
  let streamed = 0
  const stream = blob.stream.bind(blob)
  blob.stream = () => (streamed++, stream())
  const s = await client.sendMessage({ agentName: 'sizer', requestParts: [sdk.filePart(blob, 'big.bin')] })
  assert.equal(streamed, 1, 'the Blob was read once, as a stream')
  await s.waitForTerminal(15_000)
  assert.equal(artifactText(s.listArtifacts()[0]), '300000:true')
  assert.deepEqual(temps(), before, 'the spool file is gone')
})

test('PIPE-08 handle.publishTerminal(taskId, { state }) ends a pipe task whose handler returned; an unknown task rejects "No cached credentials"', async () => {
  const card = { identity: { agentName: 'x' }, capabilities: { taskKinds: ['pipe'] }, runtime: { handler: './h.js' } }
  let ran
  const started = new Promise((resolve) => (ran = resolve))
  const handle = await env.agent('pipe_done', async (task) => {
    ran(task.taskId)
    return {}
  }, { card })
  const client = await env.client()
  const s = await client.sendMessage({ agentName: 'pipe_done', taskKind: 'pipe', duration: 30, requestParts: [] })
  assert.equal(await started, s.taskId)
  // the handler's return publishes no terminal (PIPE-04); the handle can
  await handle.publishTerminal(s.taskId, { state: 'completed', reason: 'done_early' })
  const t = await s.waitForTerminal(15_000)
  assert.equal(t.state, 'completed')
  assert.equal(t.reason, 'done_early')
  await assert.rejects(handle.publishTerminal(s.taskId, { state: 'completed' }), /No cached credentials/)
  await assert.rejects(handle.publishTerminal('t_unknown', { state: 'failed' }), /No cached credentials/)
  await assert.rejects(handle.publishTerminal(s.taskId, { state: 'running' }), /needs a terminal state/)
})

test('LIFE-07 SESS-12 subscribeToTask: onCancelRequested fires once for a cancel, then one terminal', async () => {
  const card = { identity: { agentName: 'x' }, capabilities: { taskKinds: ['pipe'] }, runtime: { handler: './h.js' } }
  await env.agent('sub_pipe', async (task, ctx) => {
    ctx.reportStatus('waiting')
    await aborted(ctx.cancelSignal)
    return {}
  }, { card })
  const client = await env.client()
  const s = await client.sendMessage({ agentName: 'sub_pipe', taskKind: 'pipe', duration: 5, requestParts: [] })
  const cancels = []
  const terminals = []
  let waiting
  const progressed = new Promise((resolve) => (waiting = resolve))
  let ended
  const terminal = new Promise((resolve) => (ended = resolve))
  const sub = client.subscribeToTask(s.taskId, s.ownerId, {
    onProgress: (e) => e.message === 'waiting' && waiting(),
    onCancelRequested: (e) => cancels.push(e),
    onTerminal: (e) => {
      terminals.push(e)
      ended(e)
    },
    onError: (err) => ended({ err }),
  })
  await progressed
  await s.cancel()
  const t = await terminal
  assert.ifError(t.err)
  assert.equal(t.state, 'canceled')
  assert.equal(cancels.length, 1, 'one cancel_requested reached onCancelRequested')
  assert.equal(cancels[0].type, 'cancel_requested')
  await s.waitForTerminal(15_000)
  assert.equal(terminals.length, 1)
  sub.unsubscribe()
})

test('CFG-14 BLOCKS_MAX_UPLOAD_BYTES is a constant: an environment variable of that name does not change it', async () => {
  const { execFileSync } = await import('node:child_process')
  const out = execFileSync(process.execPath, ['-e', "process.stdout.write(String(require('./index.js').BLOCKS_MAX_UPLOAD_BYTES))"], {
    cwd: new URL('..', import.meta.url),
    env: { ...process.env, BLOCKS_MAX_UPLOAD_BYTES: '1' },
    encoding: 'utf8',
  })
  assert.equal(out, '26214400')
})
