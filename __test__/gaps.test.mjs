// Issue 19: behaviour no test proved yet (auth refresh, upload/download failures, inbound and
// reordered streams, drain, setup-channel access, listTasks, retry). Every test runs the real SDK
// against a real in-process devnet; wire checks go through __test__/httpproxy.mjs or a small proxy
// or server of the test's own. The devnet CLI, restarts and agent shutdown are in
// gaps-devnet.test.mjs.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import http from 'node:http'
import https from 'node:https'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { sdk, startNetwork, artifactText, deferred, aborted } from './helpers.mjs'
import { startHttpProxy } from './httpproxy.mjs'

const { TaskClient, textPart, filePart, RpcError, ConfigError, FileUploadError, ClosedError, InvalidArgumentError } = sdk

let env
let tmp
const gates = new Map()
/** Resolvers of handlers that wait until their task is terminated (kept reachable: see the GC test). */
const holds = []
const untilTerminated = () => new Promise((resolve) => holds.push(resolve))
/** A gate per name (tasks name theirs in their first text part). */
function gate(name) {
  if (!gates.has(name)) gates.set(name, deferred())
  return gates.get(name)
}

function made(n, salt = 7) {
  const data = Buffer.alloc(n)
  for (let i = 0; i < n; i++) data[i] = (i * 31 + salt) & 0xff
  return data
}

const card = (streams, taskKinds = ['request', 'pipe']) => ({ identity: { agentName: 'x' }, capabilities: { taskKinds }, runtime: { handler: './h.js' }, streams })

before(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'blocks-gaps-'))
  env = await startNetwork({ minuteMs: 1000, apiKeys: [['bk_devnet_default', 'user_default'], ['bk_gaps_two', 'user_two']] })
  await env.agent('echo', (task, ctx) => ({ artifacts: [{ data: `Echo: ${ctx.requestParts.map((p) => p.text ?? '').join(' ')}`, mimeType: 'text/plain' }] }), { concurrency: 8 })
  await env.agent('sink', () => ({ artifacts: [{ data: 'taken', mimeType: 'text/plain' }] }), { concurrency: 8 })
  await env.agent('failer', () => {
    throw new Error('fails on purpose')
  })
  // an inline artifact, then a file artifact; waits for its gate in between when asked to
  await env.agent('filer', async (task, ctx) => {
    const name = ctx.requestParts[0]?.text ?? ''
    await ctx.publishArtifact('small one', { mimeType: 'text/plain', fileName: 'a.txt' })
    await ctx.publishArtifact(made(200_000), { mimeType: 'application/octet-stream', fileName: 'big.bin' })
    if (name) await gate(name).promise
    return {}
  }, { concurrency: 8 })
})
after(async () => {
  for (const g of gates.values()) g.resolve()
  for (const h of holds) h()
  await env.stop()
  fs.rmSync(tmp, { recursive: true, force: true })
})

/** Reject with `label` (and what was seen) unless `p` settles within `ms`. */
function within(p, ms, label) {
  let timer
  const limit = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${typeof label === 'function' ? label() : label} (gave up after ${ms} ms)`)), ms)
  })
  return Promise.race([p, limit]).finally(() => clearTimeout(timer))
}

/** Resolves with the next request the recording proxy sees that matches `pred`. */
function nextRequest(proxy, pred, ms, what) {
  const hit = deferred()
  const push = proxy.requests.push
  proxy.requests.push = function (...records) {
    const n = push.apply(this, records)
    for (const r of records) if (pred(r)) hit.resolve(r)
    return n
  }
  return within(hit.promise, ms, () => `no ${what}; saw: ${proxy.requests.map((r) => `${r.method} ${r.path}`).join(', ')}`).finally(() => {
    proxy.requests.push = push
  })
}

/** A small HTTP server of the test's own (a token endpoint, a CDM): `handler(req, body, res)`. */
async function startServer(handler) {
  const server = http.createServer((req, res) => {
    const chunks = []
    req.on('data', (c) => chunks.push(c))
    req.on('end', () => Promise.resolve(handler(req, Buffer.concat(chunks).toString('utf8'), res)).catch((e) => {
      res.writeHead(500)
      res.end(String(e))
    }))
  })
  await new Promise((r) => server.listen(0, '127.0.0.1', r))
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    close: async () => {
      server.closeAllConnections()
      await new Promise((r) => server.close(r))
    },
  }
}

async function consumerToken(url, apiKey) {
  const r = await fetch(`${url}/api/v1/auth/agent/consumer-token`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ apiKey }) })
  assert.equal(r.status, 200)
  return r.json()
}

/** Poll the devnet with `token` until it answers 401 (the token expired); fails with the statuses seen. */
async function untilRefused(url, token, ms) {
  const statuses = []
  const deadline = Date.now() + ms
  for (;;) {
    const r = await fetch(`${url}/api/v1/rpc`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
      body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'GetTask', params: { taskId: 't_missing' } }),
    })
    statuses.push(r.status)
    if (r.status === 401) return
    assert.ok(Date.now() < deadline, `the token was never refused within ${ms} ms; HTTP statuses: ${[...new Set(statuses)].join(', ')}`)
    await new Promise((res) => setTimeout(res, 50))
  }
}

// ---------------------------------------------------------------------------------------------
// Auth

test('AUTH-07 apiKey mode: an idle client refreshes at about 80% of expiresIn (POST /api/v1/auth/agent/refresh {refreshToken}, Bearer <apiKey>), again for the new token, and uses the newest token after the old ones expired', async () => {
  const TTL = 3
  const short = await startNetwork({ tokenTtlSec: TTL })
  const proxy = await startHttpProxy(short.net.url)
  proxy.rewrite = (r, res) => {
    r.answer = res.json // keep what the devnet answered
    r.answeredAt = Date.now()
    return undefined
  }
  const isRefresh = (r) => r.path === '/api/v1/auth/agent/refresh'
  try {
    const firstRefresh = nextRequest(proxy, isRefresh, TTL * 1000 + 5000, 'proactive refresh')
    const client = await TaskClient.create({ billingMode: 'free', apiKey: short.net.apiKey, cdmUrl: short.net.cdmUrl, baseUrl: proxy.url })
    try {
      const exchange = proxy.find((r) => r.path === '/api/v1/auth/agent/consumer-token')
      assert.equal(exchange.length, 1)
      const issued = exchange[0].answeredAt
      assert.equal(exchange[0].answer.expiresIn, TTL)
      const r1 = await firstRefresh
      const at1 = Date.now() - issued
      assert.ok(at1 >= TTL * 1000 * 0.6 && at1 < TTL * 1000, `first refresh ${at1} ms after the token was issued: expected about 80% of ${TTL} s`)
      assert.equal(r1.method, 'POST')
      assert.deepEqual(r1.json, { refreshToken: exchange[0].answer.refreshToken })
      assert.equal(r1.headers.authorization, `Bearer ${short.net.apiKey}`)
      // the refreshed token is refreshed in its turn, 80% of its own lifetime later
      const r2 = await nextRequest(proxy, (r) => isRefresh(r) && r !== r1, TTL * 1000 + 5000, 'second proactive refresh')
      const gap = Date.now() - r1.answeredAt
      assert.ok(gap >= TTL * 1000 * 0.6 && gap < TTL * 1000, `second refresh ${gap} ms after the first: expected about 80% of ${TTL} s`)
      assert.deepEqual(r2.json, { refreshToken: r1.answer.refreshToken }, 'the second refresh uses the refresh token the first one returned')
      for (let i = 0; r2.answer === undefined; i++) {
        assert.ok(i < 10_000, 'the answer to the second refresh never passed the proxy')
        await new Promise((res) => setImmediate(res)) // the answer is recorded as it passes back
      }
      // the first two access tokens expire; a call now goes out with the newest one, with no reactive refresh
      await untilRefused(short.net.url, r1.answer.accessToken, TTL * 1000 + 3000)
      const before = proxy.requests.length
      const e = await client.getTask('t_missing').catch((x) => x)
      assert.ok(e instanceof RpcError && e.code !== 401, `an application error, got ${e?.message}`)
      const after = proxy.requests.slice(before)
      assert.deepEqual(after.map((r) => r.path), ['/api/v1/rpc'], 'one RPC, no token request in between')
      const newest = proxy.find(isRefresh).at(-1).answer.accessToken
      assert.equal(after[0].headers.authorization, `Bearer ${newest}`)
    } finally {
      client.destroy()
    }
  } finally {
    await proxy.close()
    await short.stop()
  }
})

test('AUTH-07 tokenEndpoint mode: an idle client calls its token endpoint again at about 80% of expiresIn and uses that token once the first one expired', async () => {
  const TTL = 3
  const short = await startNetwork({ tokenTtlSec: TTL })
  const calls = []
  const second = deferred()
  const endpoint = await startServer(async (req, body, res) => {
    const t = await consumerToken(short.net.url, short.net.apiKey)
    calls.push({ at: Date.now(), method: req.method, body, token: t.accessToken })
    if (calls.length === 2) second.resolve()
    res.writeHead(200, { 'content-type': 'application/json' })
    res.end(JSON.stringify({ token: t.accessToken, expiresIn: TTL, userId: t.userId }))
  })
  try {
    const client = await TaskClient.create({ billingMode: 'free', cdmUrl: short.net.cdmUrl, tokenEndpoint: `${endpoint.url}/token` })
    try {
      assert.equal(calls.length, 1)
      await within(second.promise, TTL * 1000 + 5000, () => `the endpoint was called ${calls.length} time(s): no proactive refresh`)
      const gap = calls[1].at - calls[0].at
      assert.ok(gap >= TTL * 1000 * 0.6 && gap < TTL * 1000, `refreshed ${gap} ms after the first token: expected about 80% of ${TTL} s`)
      assert.deepEqual(calls.map((c) => [c.method, c.body]), [['POST', '{}'], ['POST', '{}']])
      await untilRefused(short.net.url, calls[0].token, TTL * 1000 + 3000)
      const n = calls.length
      const e = await client.getTask('t_missing').catch((x) => x)
      assert.ok(e instanceof RpcError && e.code !== 401, `an application error with the refreshed token, got ${e?.message}`)
      assert.equal(calls.length, n, 'no reactive refresh was needed')
    } finally {
      client.destroy()
    }
  } finally {
    await endpoint.close()
    await short.stop()
  }
})

test('AUTH-02 a plain-string tokenEndpoint: POST {} as JSON at create, and the same POST again after an HTTP 401 (one refresh, one retry)', async () => {
  const calls = []
  const endpoint = await startServer(async (req, body, res) => {
    calls.push({ method: req.method, url: req.url, type: req.headers['content-type'], body })
    const t = await consumerToken(env.net.url, env.net.apiKey)
    res.writeHead(200, { 'content-type': 'application/json' })
    // the first token is one the devnet does not know: the first RPC gets a 401
    res.end(JSON.stringify({ token: calls.length === 1 ? 'tok_not_known_here' : t.accessToken, expiresIn: 3600, userId: t.userId }))
  })
  try {
    const client = await TaskClient.create({ billingMode: 'free', cdmUrl: env.net.cdmUrl, tokenEndpoint: `${endpoint.url}/issue` })
    assert.equal(calls.length, 1)
    assert.equal(client.getUserId(), 'user_default')
    const s = await client.sendMessage({ agentName: 'echo', requestParts: [textPart('string endpoint')] })
    assert.equal(calls.length, 2, 'the 401 asked the endpoint once more')
    for (const c of calls) {
      assert.equal(c.method, 'POST')
      assert.equal(c.url, '/issue')
      assert.equal(c.body, '{}')
      assert.match(c.type, /^application\/json/)
    }
    assert.equal((await s.waitForTerminal(15_000)).state, 'completed')
    assert.equal(artifactText(s.listArtifacts()[0]), 'Echo: string endpoint')
    client.destroy()
  } finally {
    await endpoint.close()
  }
})

test('SEND-10 a client without credentials: its RPCs fail with RpcError HTTP 401 and the message says how to add credentials', async () => {
  const anonymous = await TaskClient.create({ billingMode: 'free', cdmUrl: env.net.cdmUrl })
  assert.equal(anonymous.getUserId(), null)
  const hint = 'this client has no credentials; pass apiKey, tokenEndpoint or tokenProvider to TaskClient.create()'
  for (const call of [() => anonymous.getTask('t_x'), () => anonymous.listTasks({}), () => anonymous.sendMessage({ agentName: 'echo', requestParts: [textPart('x')] })]) {
    await assert.rejects(call(), (e) => {
      assert.ok(e instanceof RpcError, `${e?.constructor?.name}: ${e?.message}`)
      assert.equal(e.code, 401)
      assert.ok(e.message.includes('HTTP 401'), e.message)
      assert.ok(e.message.includes(hint), e.message)
      return true
    })
  }
  // a client with credentials that are refused gets no such hint
  const refused = new TaskClient({ billingMode: 'free', subscribeKey: 'sub-c-devnet-free', baseUrl: env.net.url, authProvider: new sdk.StaticAuthProvider('tok_bogus') })
  await assert.rejects(refused.getTask('t_x'), (e) => e instanceof RpcError && e.code === 401 && !e.message.includes('no credentials'))
})

test('CFG-07 ConfigError from TaskClient.create(): a CDM URL that is not http(s), a CDM answering 404, a CDM missing a keyset', async () => {
  await assert.rejects(TaskClient.create({ billingMode: 'free', cdmUrl: 'ftp://127.0.0.1/config.json' }), (e) => {
    assert.ok(e instanceof ConfigError, `${e?.constructor?.name}: ${e?.message}`)
    assert.ok(e instanceof sdk.BlocksError)
    assert.equal(e.name, 'ConfigError')
    assert.equal(e.message, 'CDM URL must be http(s): "ftp://127.0.0.1/config.json"')
    return true
  })
  const doc = await (await fetch(env.net.cdmUrl)).json()
  const cdm = await startServer((req, body, res) => {
    if (req.url === '/missing.json') {
      res.writeHead(404)
      return res.end('no such document')
    }
    const d = structuredClone(doc)
    if (req.url === '/noplayground.json') delete d.playground
    if (req.url === '/nokeys.json') {
      delete d.playground
      delete d.network
    }
    res.writeHead(200, { 'content-type': 'application/json' })
    res.end(JSON.stringify(d))
  })
  try {
    await assert.rejects(TaskClient.create({ billingMode: 'free', cdmUrl: `${cdm.url}/missing.json` }), (e) => e instanceof ConfigError && e.message === 'CDM config fetch failed: 404 Not Found')
    await assert.rejects(TaskClient.create({ billingMode: 'free', cdmUrl: `${cdm.url}/noplayground.json` }), (e) => e instanceof ConfigError && e.message === 'CDM config missing playground keys')
    // the document must carry both keysets, whichever the client uses
    await assert.rejects(TaskClient.create({ billingMode: 'paid', cdmUrl: `${cdm.url}/noplayground.json` }), (e) => e instanceof ConfigError && e.message === 'CDM config missing playground keys')
    for (const billingMode of ['free', 'paid']) {
      await assert.rejects(TaskClient.create({ billingMode, cdmUrl: `${cdm.url}/nokeys.json` }), (e) => e instanceof ConfigError && /^CDM config missing (playground|network) keys$/.test(e.message), billingMode)
    }
  } finally {
    await cdm.close()
  }
})

// ---------------------------------------------------------------------------------------------
// Files

test('FILE-05 every failing upload step is a FileUploadError naming the step and carrying the HTTP status: request-upload, storage (S3) and confirm-upload; no task is sent', async () => {
  const proxy = await startHttpProxy(env.net.url)
  // the devnet names its own address in uploadUrl (the proxy forwards with the devnet's Host):
  // point the storage POST at the proxy too, so the test can answer it
  proxy.rewrite = (r, res) => (r.path === '/api/v1/files/request-upload' && res.json?.uploadUrl ? { ...res, json: { ...res.json, uploadUrl: res.json.uploadUrl.replace(/^https?:\/\/[^/]+/, proxy.url) } } : undefined)
  try {
    const client = await env.client({ baseUrl: proxy.url })
    const send = () => client.sendMessage({ agentName: 'sink', requestParts: [filePart(made(20_000), { partId: 'big', fileName: 'big.bin' })] })
    const cases = [
      ['request-upload', (r) => r.path === '/api/v1/files/request-upload', 502],
      ['S3 upload', (r) => r.path === '/storage/upload', 503],
      ['confirm-upload', (r) => r.path === '/api/v1/files/confirm-upload', 500],
    ]
    for (const [step, pred, status] of cases) {
      const mark = proxy.requests.length
      proxy.intercept = (r) => (pred(r) ? { status, json: { error: { code: 'TEST', message: `${step} refused by the test` } } } : undefined)
      try {
        await assert.rejects(send(), (e) => {
          assert.ok(e instanceof FileUploadError, `${step}: ${e?.constructor?.name}: ${e?.message}`)
          assert.equal(e.status, status, step)
          assert.ok(e.message.startsWith(`${step} failed: HTTP ${status}`), e.message)
          return true
        })
      } finally {
        proxy.intercept = null
      }
      const seen = proxy.requests.slice(mark)
      assert.ok(seen.some(pred), `${step}: the failing request went through the proxy: ${seen.map((r) => r.path).join(', ')}`)
      assert.ok(!seen.some((r) => r.json?.method === 'SendMessage'), `${step}: no SendMessage after a failed upload`)
    }
    // and with nothing refused the same call works through the same proxy
    const ok = await send()
    assert.equal((await ok.waitForTerminal(15_000)).state, 'completed')
    client.destroy()
  } finally {
    await proxy.close()
  }
})

test('FILE-05 a request-upload answered 401 is refreshed and retried once with the new token', async () => {
  const proxy = await startHttpProxy(env.net.url)
  try {
    const client = await env.client({ baseUrl: proxy.url })
    let refused = 0
    proxy.intercept = (r) => (r.path === '/api/v1/files/request-upload' && refused++ === 0 ? { status: 401, json: { error: 'token expired', code: 'UNAUTHORIZED' } } : undefined)
    const mark = proxy.requests.length
    let s
    try {
      s = await client.sendMessage({ agentName: 'sink', requestParts: [filePart(made(20_000), { partId: 'big', fileName: 'big.bin' })] })
    } finally {
      proxy.intercept = null
    }
    const seen = proxy.requests.slice(mark)
    const asks = seen.filter((r) => r.path === '/api/v1/files/request-upload')
    assert.equal(asks.length, 2, seen.map((r) => r.path).join(', '))
    const refresh = seen.findIndex((r) => r.path === '/api/v1/auth/agent/refresh' || r.path === '/api/v1/auth/agent/consumer-token')
    assert.ok(refresh > seen.indexOf(asks[0]) && refresh < seen.indexOf(asks[1]), `a token request between the two asks: ${seen.map((r) => r.path).join(', ')}`)
    assert.notEqual(asks[0].headers.authorization, asks[1].headers.authorization, 'the retry carries the new token')
    assert.equal((await s.waitForTerminal(15_000)).state, 'completed')
    client.destroy()
  } finally {
    await proxy.close()
  }
})

/**
 * An HTTP proxy that keeps the client's Host header (so the devnet's redirects and upload URLs
 * point back at it) and, while `breakBlobs` is set, cuts every blob download after its first
 * `keepBytes` bytes (the connection is destroyed mid-body).
 */
async function startBlobBreaker(targetUrl, keepBytes = 1000) {
  const target = new URL(targetUrl)
  const p = { breakBlobs: false, broken: 0, url: '' }
  const server = http.createServer((req, res) => {
    // the devnet may speak TLS (BLOCKS_DEVNET_TLS=1): X-Forwarded-Proto keeps its URLs on this plain proxy
    const up = (target.protocol === 'https:' ? https : http).request({ host: target.hostname, port: target.port, method: req.method, path: req.url, headers: { ...req.headers, 'x-forwarded-proto': 'http' } }, (r) => {
      res.writeHead(r.statusCode, r.headers)
      if (!(p.breakBlobs && req.url.startsWith('/storage/blob/'))) return r.pipe(res)
      let sent = 0
      r.on('data', (chunk) => {
        if (sent >= keepBytes) return
        const part = chunk.subarray(0, keepBytes - sent)
        sent += part.length
        res.write(part)
        if (sent >= keepBytes) {
          p.broken++
          r.destroy()
          res.socket.destroy()
        }
      })
    })
    up.on('error', () => res.destroy())
    req.pipe(up)
  })
  await new Promise((r) => server.listen(0, '127.0.0.1', r))
  p.url = `http://127.0.0.1:${server.address().port}`
  p.close = () => new Promise((r) => {
    server.closeAllConnections()
    server.close(r)
  })
  return p
}

test('ART-08 a download that breaks off mid-body leaves no partial file: saveArtifacts rejects, the directory keeps only what was complete', async () => {
  const breaker = await startBlobBreaker(env.net.url)
  try {
    const client = await env.client({ realtimeOrigin: breaker.url })
    const s = await client.sendMessage({ agentName: 'filer', requestParts: [] })
    assert.equal((await s.waitForTerminal(15_000)).state, 'completed')
    assert.deepEqual(s.listArtifacts().map((r) => [r.kind, r.fileName]), [['inline', 'a.txt'], ['file', 'big.bin']])
    const dir = path.join(tmp, 'broken')
    breaker.breakBlobs = true
    await assert.rejects(s.saveArtifacts(dir), (e) => e instanceof sdk.BlocksError && /interrupted|download/i.test(e.message))
    assert.ok(breaker.broken >= 1, 'the proxy cut a blob download')
    assert.deepEqual(fs.readdirSync(dir), ['a.txt'], 'no big.bin and no temporary part file')
    await assert.rejects(s.downloadArtifact(s.listArtifacts()[1]), sdk.BlocksError)
    // the link heals: the same call writes both, byte-exact
    breaker.breakBlobs = false
    // saving again into the same directory: a.txt is there already, so it is replaced only on request
    const written = await s.saveArtifacts(dir, { overwrite: true })
    assert.deepEqual(written.map((w) => path.basename(w)), ['a.txt', 'big.bin'])
    assert.ok(fs.readFileSync(written[1]).equals(made(200_000)))
    assert.deepEqual(fs.readdirSync(dir).sort(), ['a.txt', 'big.bin'])
    client.destroy()
  } finally {
    await breaker.close()
  }
})

test('ART-07 downloads work on a session closed by close(): mid-task (the task goes on) and after the terminal', async () => {
  const client = await env.client()
  const s = await client.sendMessage({ agentName: 'filer', requestParts: [textPart('closed-mid')] })
  const both = deferred()
  const seen = []
  s.onArtifact((e) => {
    seen.push(e)
    if (seen.length === 2) both.resolve()
  })
  await within(both.promise, 15_000, () => `artifacts seen: ${seen.length}`)
  await s.close()
  assert.equal(s.isClosed, true)
  assert.equal((await client.getTask(s.taskId)).state, 'running', 'closing the session does not end the task')
  const big = await s.downloadArtifact(s.listArtifacts()[1])
  assert.ok(big.data.equals(made(200_000)))
  assert.equal(big.fileName, 'big.bin')
  assert.equal((await s.downloadArtifact(s.listArtifacts()[0])).data.toString(), 'small one')
  const written = await s.saveArtifacts(path.join(tmp, 'closed-mid'))
  assert.equal(written.length, 2)
  gate('closed-mid').resolve()
  const c = await client.connect(s.taskId)
  assert.equal((await c.waitForTerminal(15_000)).state, 'completed')
  await c.close()
  assert.equal(c.isClosed, true)
  assert.ok((await c.downloadArtifact(c.listArtifacts()[1])).data.equals(made(200_000)), 'after the terminal and close()')
})

// ---------------------------------------------------------------------------------------------
// Streams

test('STRM-07 STRM-11 an inbound stream of a pipe task: the caller writes, the agent reads every event in order until the caller ends it', async () => {
  await env.agent('collector', async (task, ctx) => {
    const s = await ctx.createStream()
    ctx.reportStatus(`reading ${s.direction}`)
    const got = []
    for await (const e of s.events()) got.push(e)
    await ctx.publishArtifact(JSON.stringify(got), { mimeType: 'application/json' })
    await aborted(ctx.cancelSignal)
    return {}
  }, { card: card({ uploads: { direction: 'inbound', format: 'events' } }, ['pipe']) })
  const client = await env.client()
  const session = await client.sendMessage({ agentName: 'collector', taskKind: 'pipe', duration: 30, requestParts: [] })
  const reading = deferred()
  session.onProgress((e) => e.message?.startsWith('reading') && reading.resolve(e.message))
  const ref = await session.waitForStream('uploads')
  assert.equal(ref.descriptor.agentDirection, 'inbound')
  assert.equal(ref.descriptor.localDirection, 'outbound', 'the caller writes an inbound stream')
  assert.equal(await within(reading.promise, 15_000, 'the agent never started reading'), 'reading inbound')
  const stream = ref.open()
  assert.throws(() => stream.events(), /Cannot read from an outbound-only stream/)
  const artifact = deferred()
  session.onArtifact((e) => artifact.resolve(e))
  for (let n = 1; n <= 25; n++) stream.write({ n })
  await stream.end()
  assert.equal(stream.isActive, false)
  assert.throws(() => stream.write({ n: 26 }), /Cannot write to an ended stream/)
  const got = JSON.parse(artifactText(await within(artifact.promise, 15_000, 'the agent never reported what it read')))
  assert.deepEqual(got, Array.from({ length: 25 }, (_, i) => ({ n: i + 1 })))
  await session.cancel()
  assert.equal((await session.waitForTerminal(15_000)).state, 'canceled')
})

/** An agent that opens an outbound events stream, writes {n: 1}, then waits for its gate. */
async function feedAgent() {
  await env.agent('feeder', async (task, ctx) => {
    const s = await ctx.createStream()
    s.write({ n: 1 })
    await s.flush()
    await gate(ctx.requestParts[0].text).promise
    return {}
  }, { card: card({ feed: { direction: 'outbound', format: 'events' } }), concurrency: 4 })
}

/** Publish a raw frame on a stream channel with the caller's stream token (plays the writer). */
async function frame(ref, body) {
  const url = `${env.net.url}/publish/pub-c-devnet-free/sub-c-devnet-free/0/${ref.descriptor.channel}/0?store=0&uuid=gaps-writer&auth=${ref.descriptor.token}`
  const r = await fetch(url, { method: 'POST', body: JSON.stringify({ streamId: ref.descriptor.streamId, ts: Date.now(), protocolVersion: sdk.PROTOCOL_VERSION, ...body }) })
  assert.equal(r.status, 200)
}
const events = (seq, n) => ({ type: 'stream_events', seq, events: [{ n }] })

test('STRM-12 a gap is skipped after reorderTimeoutMs (a late item below it is dropped); with reorderTimeoutMs 0 items come in arrival order, duplicates dropped, and stream_end ends at once', async () => {
  await feedAgent()
  const client = await env.client()
  const open = async (name, reorderTimeoutMs) => {
    const session = await client.sendMessage({ agentName: 'feeder', requestParts: [textPart(name)], stream: true })
    const ref = await session.waitForStream('feed')
    const it = ref.open({ reorderTimeoutMs }).events()[Symbol.asyncIterator]()
    assert.deepEqual((await it.next()).value, { n: 1 }, 'the agent\'s own first event (seq 1): the reader is live')
    return { session, ref, it }
  }
  const TIMEOUT = 400
  const waiting = await open('gap-wait', TIMEOUT)
  await frame(waiting.ref, events(3, 3)) // seq 2 is missing
  const t0 = Date.now()
  assert.deepEqual((await within(waiting.it.next(), 5000, 'seq 3 never came after the gap')).value, { n: 3 })
  const waited = Date.now() - t0
  assert.ok(waited >= TIMEOUT - 50, `seq 3 came after ${waited} ms: the gap must be waited for about ${TIMEOUT} ms`)
  assert.ok(waited < TIMEOUT + 2000, `seq 3 came only after ${waited} ms`)
  await frame(waiting.ref, events(2, 2)) // too late: below what was delivered
  await frame(waiting.ref, events(4, 4))
  assert.deepEqual((await waiting.it.next()).value, { n: 4 })
  await frame(waiting.ref, { type: 'stream_end', seq: 5 })
  assert.equal((await within(waiting.it.next(), 5000, 'stream_end did not end the reader')).done, true)

  const arrival = await open('gap-arrival', 0)
  for (const [seq, n] of [[4, 4], [2, 2], [2, 2], [3, 3]]) await frame(arrival.ref, events(seq, n))
  const got = []
  for (let i = 0; i < 3; i++) got.push((await within(arrival.it.next(), 5000, () => `arrival-order reader stalled after ${JSON.stringify(got)}`)).value.n)
  assert.deepEqual(got, [4, 2, 3], 'arrival order, no waiting, the duplicate seq 2 dropped')
  await frame(arrival.ref, { type: 'stream_end', seq: 9 }) // seqs 5..8 never came: no wait in arrival mode
  const t1 = Date.now()
  assert.equal((await within(arrival.it.next(), 5000, 'stream_end did not end the arrival-order reader')).done, true)
  assert.ok(Date.now() - t1 < 600, 'ended without waiting for the missing seqs')
  for (const name of ['gap-wait', 'gap-arrival']) gate(name).resolve()
  for (const s of [waiting.session, arrival.session]) assert.equal((await s.waitForTerminal(15_000)).state, 'completed')
})

test('STRM-12 on a network that reorders and repeats stream messages (streamChaos): reorderTimeoutMs 0 yields them in arrival order, each once; the default reorders them', { timeout: 60_000 }, async () => {
  const chaos = await startNetwork({ streamChaos: true })
  try {
    await chaos.agent('shuffled', async (task, ctx) => {
      const s = await ctx.createStream({ bundleSizeBytes: 1 }) // one event per message
      for (let i = 0; i < 60; i++) s.write({ i })
      await s.end()
      return {}
    }, { card: card({ _default: { direction: 'outbound', format: 'events' } }), concurrency: 2 })
    const client = await chaos.client()
    const read = async (options) => {
      const session = await client.sendMessage({ agentName: 'shuffled', requestParts: [], stream: true })
      const stream = (await session.waitForStream()).open(options)
      const got = []
      for await (const e of stream.events()) got.push(e.i)
      await session.waitForTerminal(15_000)
      return got
    }
    const arrival = await read({ reorderTimeoutMs: 0 })
    assert.equal(new Set(arrival).size, arrival.length, `no item twice: ${arrival}`)
    assert.ok(arrival.some((v, k) => k > 0 && v < arrival[k - 1]), `the chaos knob reordered the messages, and they came as they arrived: ${arrival}`)
    // arrival mode ends at stream_end: a message the knob held back behind the marker may be lost
    assert.ok(arrival.length >= 55, `most items arrived: ${arrival.length}`)
    const ordered = await read({ reorderTimeoutMs: 2000 })
    assert.deepEqual(ordered, Array.from({ length: 60 }, (_, i) => i))
  } finally {
    await chaos.stop()
  }
})

test('SESS-08 after the terminal the session stays open while an opened stream is still being read, and closes once that stream has ended', async () => {
  await env.agent('drainer', async (task, ctx) => {
    const s = await ctx.createStream()
    s.write({ n: 1 })
    await s.flush()
    await gate(ctx.requestParts[0].text).promise
    for (let n = 2; n <= 5; n++) s.write({ n })
    await s.end()
    return { artifacts: [{ data: 'drained', mimeType: 'text/plain' }] }
  }, { card: card({ _default: { direction: 'outbound', format: 'events' } }) })
  const client = await env.client()
  const session = await client.sendMessage({ agentName: 'drainer', requestParts: [textPart('drain-1')], stream: true })
  const terminals = []
  session.onTerminal((t) => terminals.push(t.state))
  const stream = (await session.waitForStream()).open()
  const it = stream.events()[Symbol.asyncIterator]()
  assert.deepEqual((await it.next()).value, { n: 1 })
  gate('drain-1').resolve()
  assert.equal((await session.waitForTerminal(15_000)).state, 'completed')
  assert.deepEqual(terminals, ['completed'], 'onTerminal fired')
  assert.equal(session.isClosed, false, 'the session waits for the opened stream')
  assert.equal(stream.isActive, true)
  const rest = []
  for (let r = await it.next(); !r.done; r = await it.next()) rest.push(r.value.n)
  assert.deepEqual(rest, [2, 3, 4, 5], 'everything written before the terminal is still delivered')
  for (let i = 0; !session.isClosed; i++) {
    assert.ok(i < 100, 'the session did not close after its last open stream ended')
    await new Promise((r) => setImmediate(r))
  }
  assert.equal(stream.isActive, false)
})

test('STRM-06 openAllStreams() opens every stream the caller can read, in announcement order, and gives the same clients again; no readable stream gives []', async () => {
  await env.agent('three_streams', async (task, ctx) => {
    for (const declaredStream of ['ticks', 'uploads', 'chat']) await ctx.createStream({ declaredStream })
    return untilTerminated()
  }, {
    terminateGraceMs: 100,
    card: card({ chat: { direction: 'bidirectional', format: 'events' }, ticks: { direction: 'outbound', format: 'events' }, uploads: { direction: 'inbound', format: 'bytes' } }, ['pipe']),
  })
  const client = await env.client()
  const s = await client.sendMessage({ agentName: 'three_streams', taskKind: 'pipe', duration: 30, requestParts: [] })
  const refs = {}
  for (const name of ['ticks', 'uploads', 'chat']) refs[name] = await s.waitForStream(name)
  assert.deepEqual(s.listStreams().map((r) => r.declaredStream), ['ticks', 'uploads', 'chat'], 'announcement order')
  const opened = await s.openAllStreams()
  assert.deepEqual(opened.map((h) => h.streamId), [refs.ticks.streamId, refs.chat.streamId], 'ticks (inbound here) and chat (bidirectional); uploads is the caller\'s to write')
  assert.deepEqual([refs.ticks.isOpen, refs.uploads.isOpen, refs.chat.isOpen], [true, false, true])
  const again = await s.openAllStreams()
  assert.equal(again.length, 2)
  assert.ok(again[0] === opened[0] && again[1] === opened[1], 'the same clients while they are active')
  await s.terminate()
  assert.equal((await s.waitForTerminal(15_000)).state, 'canceled')
  // a finished task's never-opened streams are unavailable: skipped
  const c = await client.connect(s.taskId)
  assert.equal(c.listStreams().length, 3)
  assert.deepEqual(await c.openAllStreams(), [])
  await c.close()
  // a task without streams
  const plain = await client.sendMessage({ agentName: 'echo', requestParts: [textPart('none')] })
  await plain.waitForTerminal(15_000)
  assert.deepEqual(await plain.openAllStreams(), [])
})

/** `await using` compiled by TypeScript (Node 22 has Symbol.asyncDispose but not the syntax). */
async function awaitUsing() {
  const ts = (await import('typescript')).default
  const source = 'export async function scope(resource, inside) { await using r = resource; return await inside(r) }'
  const out = ts.transpileModule(source, { compilerOptions: { target: ts.ScriptTarget.ES2022, module: ts.ModuleKind.ESNext } }).outputText
  assert.match(out, /Symbol\.asyncDispose/, 'the compiled code disposes through Symbol.asyncDispose')
  return (await import(`data:text/javascript,${encodeURIComponent(out)}`)).scope
}

test('SESS-09 asyncClose() resolves once the opened streams have ended and rejects pending waits; await using (Symbol.asyncDispose) does the same', async () => {
  await env.agent('holding_stream', async (task, ctx) => {
    const s = await ctx.createStream()
    s.write({ hi: 1 })
    await s.flush()
    return untilTerminated()
  }, { card: card({ chat: { direction: 'bidirectional', format: 'events' } }, ['pipe']), concurrency: 4, terminateGraceMs: 100 })
  const client = await env.client()
  const open = async () => {
    const session = await client.sendMessage({ agentName: 'holding_stream', taskKind: 'pipe', duration: 30, requestParts: [] })
    const stream = (await session.waitForStream('chat')).open()
    const it = stream.events()[Symbol.asyncIterator]()
    assert.deepEqual((await it.next()).value, { hi: 1 })
    return { session, stream, it }
  }
  const a = await open()
  const pending = assert.rejects(a.session.waitForTerminal(), (e) => e instanceof ClosedError && e.message === 'TaskSession closed')
  const streamWait = assert.rejects(a.session.waitForStream('never_announced'), ClosedError)
  const closing = a.session.asyncClose()
  assert.ok(closing instanceof Promise)
  assert.equal(await closing, undefined)
  assert.equal(a.session.isClosed, true)
  assert.equal(a.stream.isActive, false, 'the stream had ended when asyncClose() resolved')
  assert.equal((await a.it.next()).done, true)
  await pending
  await streamWait
  await a.session.asyncClose() // idempotent

  const b = await open()
  assert.equal(typeof b.session[Symbol.asyncDispose], 'function')
  const scope = await awaitUsing()
  const inside = await scope(b.session, async (s) => {
    assert.equal(s.isClosed, false, 'open inside the block')
    return 'done'
  })
  assert.equal(inside, 'done')
  assert.equal(b.session.isClosed, true, 'disposed at the end of the block')
  assert.equal(b.stream.isActive, false)
  assert.equal((await b.it.next()).done, true)
  // the tasks themselves go on until ended
  for (const { session } of [a, b]) {
    const state = (await client.getTask(session.taskId)).state
    if (state !== 'running') assert.fail(`task ${session.taskId} is ${state}: ${JSON.stringify((await client.connect(session.taskId)).listEvents())}`)
  }
  for (const { session } of [a, b]) await client.terminateTask(session.taskId)
  for (const { session } of [a, b]) assert.equal((await (await client.connect(session.taskId)).waitForTerminal(15_000)).state, 'canceled')
})

test('AGT-08 a handler whose promise never settles (and nothing else references) keeps its task running until it is terminated, also after a garbage collection', async () => {
  const source = `
    const sdk = (await import(${JSON.stringify(path.resolve(import.meta.dirname, '..', 'index.js'))})).default
    const net = await sdk.LocalNetwork.start({})
    let started
    const run = new Promise((r) => (started = r))
    const agent = await sdk.startAgentInstance({ agentName: 'forever', apiKey: net.apiKey, cdmUrl: net.cdmUrl, terminateGraceMs: 100,
      handler: () => { started(); return new Promise(() => {}) } })
    const client = await sdk.TaskClient.create({ billingMode: 'free', apiKey: net.apiKey, cdmUrl: net.cdmUrl })
    const s = await client.sendMessage({ agentName: 'forever', requestParts: [] })
    await run
    for (let i = 0; i < 5; i++) { globalThis.gc(); await new Promise((r) => setImmediate(r)) }
    const early = await s.waitForTerminal(1500).catch(() => null)
    if (!early) await s.terminate()
    const t = early ?? await s.waitForTerminal(15000)
    console.log(JSON.stringify({ early: Boolean(early), state: t.state, reason: t.reason, error: t.error }))
    client.destroy(); await agent.stop(0); await net.stop()`
  const { runNodeArgs } = await import('./helpers.mjs')
  const r = await runNodeArgs(['--expose-gc', '--input-type=module', '-e', source], { env: { LOG_LEVEL: 'error' }, timeoutMs: 60_000 })
  assert.equal(r.code, 0, r.stderr)
  assert.deepEqual(JSON.parse(r.stdout.trim().split('\n').pop()), { early: false, state: 'canceled', reason: 'terminated' })
})

// Not an SDK bug (it was thought one): the cancel arrives during createStream()'s subscribe grace,
// so the signal is already aborted when the handler first looks at it, and an 'abort' listener
// added to an aborted AbortSignal never fires (standard AbortSignal behaviour). A handler checks
// `signal.aborted` first, as this one now does.
test('LIFE-03 CTX-02 a cancel reaches a handler waiting on ctx.cancelSignal after it created a stream the caller has not read', async () => {
  await env.agent('cancel_with_stream', async (task, ctx) => {
    await ctx.createStream()
    await aborted(ctx.cancelSignal)
    return { artifacts: [{ data: `aborted cancelled=${ctx.isCancelled}`, mimeType: 'text/plain' }] }
  }, { card: card({ _default: { direction: 'outbound', format: 'events' } }, ['pipe']), terminateGraceMs: 100 })
  const client = await env.client()
  const s = await client.sendMessage({ agentName: 'cancel_with_stream', taskKind: 'pipe', duration: 30, requestParts: [] })
  await s.waitForStream()
  await s.cancel()
  try {
    const t = await s.waitForTerminal(5000)
    assert.equal(t.state, 'canceled')
    assert.equal(artifactText(s.listArtifacts()[0]), 'aborted cancelled=true')
  } finally {
    if (!s.state || s.state === 'running') await s.terminate().catch(() => {})
  }
})

// ---------------------------------------------------------------------------------------------
// Devnet rules and caller RPCs

test('stream setup channels (setup.<org>.<task>) take only that task\'s write token: no token, a read token or another task\'s write token is refused', async () => {
  const proxy = await startHttpProxy(env.net.url)
  try {
    await env.agent('setup_probe', async (task, ctx) => {
      const s = await ctx.createStream()
      await s.end()
      return {}
    }, { card: card({ _default: { direction: 'outbound', format: 'events' } }), realtimeOrigin: proxy.url, concurrency: 2 })
    const client = await env.client()
    const run = async () => {
      const s = await client.sendMessage({ agentName: 'setup_probe', requestParts: [], stream: true })
      assert.equal((await s.waitForTerminal(15_000)).state, 'completed')
      const setup = `setup.${s.orgId}.${s.taskId}`
      const pub = proxy.find((r) => r.path.includes(`/${setup}/`) && r.path.startsWith('/publish/'))
      assert.ok(pub.length >= 1, `the agent published on ${setup}: ${proxy.requests.map((r) => r.path).join(', ')}`)
      return { s, setup, writeToken: pub[0].query.auth }
    }
    const a = await run()
    const b = await run()
    assert.ok(a.writeToken && b.writeToken && a.writeToken !== b.writeToken)
    const publish = async (channel, auth, body = { type: 'stream_setup_probe' }) => {
      const r = await fetch(`${env.net.url}/publish/pub-c-devnet-free/sub-c-devnet-free/0/${channel}/0?uuid=gaps${auth ? `&auth=${auth}` : ''}`, { method: 'POST', body: JSON.stringify(body) })
      return { status: r.status, body: await r.json() }
    }
    for (const [what, auth] of [['no token', undefined], ['the read token', a.s.readToken], ['another task\'s write token', b.writeToken], ['a made-up token', 'tok_made_up']]) {
      const r = await publish(a.setup, auth)
      assert.equal(r.status, 403, what)
      assert.equal(r.body.service, 'Access Manager', `${what}: refused by access control`)
    }
    // the task's own write token passes access control; the setup function then judges the message
    const own = await publish(a.setup, a.writeToken)
    assert.equal(own.status, 403)
    assert.equal(own.body.service, 'Blocks Devnet Functions', 'past access control, answered by the setup handshake')
    assert.equal(own.body.message.ok, false)
    assert.match(own.body.message.error.message, /accept only stream_setup messages/)
    // and it may not open streams of another task either
    assert.equal((await publish(b.setup, a.writeToken)).body.service, 'Access Manager')
  } finally {
    await proxy.close()
  }
})

test('LIST-02 listTasks: ownerId of the caller lists its own tasks, another ownerId is refused; totalCount counts every match, not only the page', async () => {
  const two = await env.client({ apiKey: 'bk_gaps_two' })
  assert.equal(two.getUserId(), 'user_two')
  const mine = []
  for (let i = 0; i < 3; i++) {
    const s = await two.sendMessage({ agentName: 'echo', requestParts: [textPart(`two ${i}`)] })
    await s.waitForTerminal(15_000)
    mine.push(s.taskId)
  }
  const f = await two.sendMessage({ agentName: 'failer', requestParts: [] })
  assert.equal((await f.waitForTerminal(15_000)).state, 'failed')
  mine.push(f.taskId)
  const page = await two.listTasks({ ownerId: 'user_two', limit: 2 })
  assert.equal(page.tasks.length, 2)
  assert.equal(page.totalCount, 4, 'all four tasks of user_two, two on this page')
  assert.ok(page.next, 'a cursor to the rest')
  assert.ok(page.tasks.every((t) => mine.includes(t.taskId)))
  const rest = await two.listTasks({ ownerId: 'user_two', limit: 2, cursor: page.next })
  assert.equal(rest.totalCount, 4)
  assert.deepEqual(new Set([...page.tasks, ...rest.tasks].map((t) => t.taskId)), new Set(mine))
  assert.equal((await two.listTasks({ agentName: 'echo', limit: 1 })).totalCount, 3)
  assert.equal((await two.listTasks({ state: 'failed' })).totalCount, 1)
  assert.equal((await two.listTasks({ ownerId: '' })).totalCount, 4, 'an empty ownerId means the caller')
  await assert.rejects(two.listTasks({ ownerId: 'user_default' }), (e) => e instanceof RpcError && /you can only list your own tasks/.test(e.message))
})

test('LIFE-01 retryTask of a canceled task starts a new task with the same request, which runs to completion; retrying the completed retry is refused', async () => {
  let attempt = 0
  const firstRunning = deferred()
  await env.agent('retry_canceled', async (task, ctx) => {
    attempt++
    if (attempt === 1) {
      firstRunning.resolve()
      await aborted(ctx.cancelSignal)
      return {}
    }
    return { artifacts: [{ data: `attempt ${attempt}: ${ctx.requestParts.map((p) => p.text).join(',')}`, mimeType: 'text/plain' }] }
  })
  const client = await env.client()
  const s = await client.sendMessage({ agentName: 'retry_canceled', requestParts: [textPart('same request')] })
  await within(firstRunning.promise, 15_000, 'the first attempt never ran')
  await s.cancel()
  assert.equal((await s.waitForTerminal(15_000)).state, 'canceled')
  const retry = await client.retryTask(s.taskId)
  assert.equal(typeof retry.taskId, 'string')
  assert.notEqual(retry.taskId, s.taskId)
  const again = await client.connect(retry.taskId)
  assert.equal((await again.waitForTerminal(15_000)).state, 'completed')
  assert.equal(artifactText(again.listArtifacts()[0]), 'attempt 2: same request')
  assert.equal((await client.getTask(s.taskId)).state, 'canceled', 'the canceled task stays canceled')
  await assert.rejects(client.retryTask(retry.taskId), (e) => e instanceof RpcError && /only failed or canceled tasks can be retried/.test(e.message))
  await assert.rejects(client.retryTask(''), InvalidArgumentError)
})
