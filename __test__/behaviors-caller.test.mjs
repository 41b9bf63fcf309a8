// Behaviours of the checklist (/work/shared/spec/behaviors.md) that the code implements but no
// other test asserted. Every test runs the real SDK against a real in-process devnet; where the
// wire matters, a small recording HTTP proxy sits between the SDK and the devnet (it forwards every
// request unchanged and only remembers what passed), and a few tests use a tiny token endpoint or
// CDM server of their own (the user's side, not ours).
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import http from 'node:http'
import https from 'node:https'
import zlib from 'node:zlib'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { sdk, startNetwork, artifactText, deferred, aborted } from './helpers.mjs'

const { TaskClient, ConsumerAuth, StaticAuthProvider, textPart, RpcError, InvalidArgumentError, ConfigError, FileUploadError } = sdk

let env
const gates = new Map()
/** A gate per name: holder tasks named by their first text part wait on it. */
function gate(name) {
  if (!gates.has(name)) gates.set(name, deferred())
  return gates.get(name)
}
const deadlines = new Map()
/** The durationExpiresAtMs a pipe_hold handler saw, per task. */
function deadlineOf(taskId) {
  if (!deadlines.has(taskId)) deadlines.set(taskId, deferred())
  return deadlines.get(taskId)
}
let ctlAgent

function made(n) {
  const data = Buffer.alloc(n)
  for (let i = 0; i < n; i++) data[i] = (i * 31 + 7) & 0xff
  return data
}

before(async () => {
  // a pipe "minute" lasts 1 s; the devnet takes uploads up to 100 000 bytes
  env = await startNetwork({ paidAgents: ['premium'], minuteMs: 1000, maxUploadBytes: 100_000 })
  await env.agent('echo', (task, ctx) => ({ artifacts: [{ data: `Echo: ${ctx.requestParts.map((p) => p.text ?? '').join(' ')}`, mimeType: 'text/plain' }] }), { concurrency: 8 })
  await env.agent('premium', () => ({ artifacts: [{ data: 'paid', mimeType: 'text/plain' }] }))
  // waits for its gate (or, unless its name starts with "stubborn", for a cancel)
  await env.agent('holder', async (task, ctx) => {
    const name = ctx.requestParts[0]?.text ?? ''
    const g = gate(name).promise
    if (name.startsWith('stubborn')) await g
    else await Promise.race([g, aborted(ctx.cancelSignal)])
    return { artifacts: [{ data: ctx.isCancelled ? 'stopped' : 'released', mimeType: 'text/plain' }] }
  }, { concurrency: 16 })
  await env.agent('outcome', async (task, ctx) => {
    const mode = ctx.requestParts[0]?.text
    if (mode === 'fail') throw new Error('nope')
    if (mode === 'cancel') {
      await aborted(ctx.cancelSignal)
      return {}
    }
    return { artifacts: [{ data: made(20_000), mimeType: 'application/octet-stream', fileName: 'made.bin' }] }
  }, { concurrency: 8 })
  await env.agent('parts', async (task, ctx) => {
    const noRef = await ctx.downloadInputArtifact(ctx.requestParts[0]).then(() => 'no error', (e) => `${e.name}: ${e.message}`)
    return { artifacts: [{ data: JSON.stringify({ parts: ctx.requestParts, noRef }), mimeType: 'application/json' }] }
  })
  await env.agent('flops', (task, ctx) => {
    const mode = ctx.requestParts[0]?.text
    if (mode === 'empty') return { artifacts: [] }
    if (mode === 'none') return {}
    if (mode === 'toobig') return { artifacts: [{ data: made(150_000), mimeType: 'application/octet-stream', fileName: 'big.bin' }] }
    return undefined
  }, { concurrency: 8 })
  await env.agent('many', async (task, ctx) => {
    for (let i = 0; i < 150; i++) await ctx.publishArtifact(`a${i}`, { mimeType: 'text/plain' })
    return {}
  })
  await env.agent('pipe_hold', async (task, ctx) => {
    deadlineOf(task.taskId).resolve(task.durationExpiresAtMs)
    await aborted(ctx.cancelSignal)
    return {}
  }, { concurrency: 4 })
  await env.agent('pipe_ret', () => ({ artifacts: [{ data: 'started', mimeType: 'text/plain' }] }))
  ctlAgent = await env.agent('ctl', async (task, ctx) => {
    if (ctx.requestParts[0]?.text === 'quick') return { artifacts: [{ data: 'quick', mimeType: 'text/plain' }] }
    const atEntry = ctx.isCancelled
    await aborted(ctx.cancelSignal)
    return { artifacts: [{ data: `cancelled=${ctx.isCancelled} atEntry=${atEntry}`, mimeType: 'text/plain' }] }
  }, { concurrency: 4 })
})
after(async () => {
  for (const g of gates.values()) g.resolve()
  await env.stop()
})

// ---------------------------------------------------------------------------------------------
// helpers

/** Reject with `label` (and what was seen) unless `p` settles within `ms`. */
function within(p, ms, label) {
  let timer
  const limit = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${typeof label === 'function' ? label() : label} (gave up after ${ms} ms)`)), ms)
  })
  return Promise.race([p, limit]).finally(() => clearTimeout(timer))
}

/** Resolves once the session's task is running. */
function running(s) {
  return within(new Promise((resolve) => {
    if (s.state === 'running') return resolve()
    s.onProgress((e) => e.state === 'running' && resolve())
  }), 15_000, `task ${s.taskId} never reported running (state ${s.state})`)
}

async function consumerToken(url = env.net.url, apiKey = env.net.apiKey) {
  const r = await fetch(`${url}/api/v1/auth/agent/consumer-token`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ apiKey }),
  })
  assert.equal(r.status, 200)
  return r.json()
}

function parseJson(buf) {
  try {
    return JSON.parse(buf.toString('utf8'))
  } catch {
    return undefined
  }
}

function decode(raw, encoding) {
  if (encoding === 'gzip') return zlib.gunzipSync(raw)
  if (encoding === 'deflate') return zlib.inflateSync(raw)
  if (encoding === 'br') return zlib.brotliDecompressSync(raw)
  return raw
}

/**
 * A recording HTTP proxy in front of `targetUrl`: forwards every request unchanged and keeps
 * `{ method, path, query, headers, json, status, response, done }` per request. With `cdm: true`
 * the CDM document it forwards names the proxy as backend and realtime origin (so a client
 * created from it sends everything through the proxy).
 */
async function startRecorder(targetUrl, { cdm = false } = {}) {
  const target = new URL(targetUrl)
  // plain HTTP to the SDK (loopback); the devnet behind it may speak TLS (BLOCKS_DEVNET_TLS=1)
  const proto = target.protocol === 'https:' ? https : http
  const upstream = new proto.Agent({ keepAlive: true })
  const records = []
  const listeners = new Set()
  const notify = (rec) => {
    for (const l of [...listeners]) l(rec)
  }
  const server = http.createServer((req, res) => {
    const chunks = []
    req.on('data', (c) => chunks.push(c))
    req.on('end', () => {
      const body = Buffer.concat(chunks)
      const u = new URL(req.url, 'http://recorder')
      const rec = {
        method: req.method,
        path: u.pathname,
        query: Object.fromEntries(u.searchParams),
        headers: req.headers,
        json: parseJson(body),
        status: null,
        response: undefined,
        done: false,
      }
      records.push(rec)
      notify(rec)
      const up = proto.request(
        { hostname: target.hostname, port: target.port, method: req.method, path: req.url, headers: { ...req.headers, host: target.host }, agent: upstream },
        (ur) => {
          const rc = []
          ur.on('data', (c) => rc.push(c))
          ur.on('end', () => {
            let out = Buffer.concat(rc)
            const headers = { ...ur.headers }
            const plain = decode(out, ur.headers['content-encoding'])
            rec.status = ur.statusCode
            rec.response = parseJson(plain)
            if (cdm && req.method === 'GET' && u.pathname === '/config.json' && ur.statusCode === 200) {
              const doc = JSON.parse(plain.toString('utf8'))
              doc.api.baseUrl = recorder.url
              doc.pubnub.origin = recorder.url
              out = Buffer.from(JSON.stringify(doc))
              delete headers['content-encoding']
              delete headers['transfer-encoding']
              headers['content-length'] = String(out.length)
            }
            res.writeHead(ur.statusCode, headers)
            res.end(out)
            rec.done = true
            rec.doneAt = Date.now()
            notify(rec)
          })
          ur.on('error', () => res.destroy())
        },
      )
      up.on('error', () => res.destroy())
      up.end(body)
    })
  })
  await new Promise((r) => server.listen(0, '127.0.0.1', r))
  const recorder = {
    url: `http://127.0.0.1:${server.address().port}`,
    records,
    summary: () => records.map((r) => `${r.method} ${r.path}${r.json?.method ? ` (${r.json.method})` : ''}${r.status ? ` ${r.status}` : ''}`).join(', ') || 'nothing',
    rpc: (method) => records.filter((r) => r.path === '/api/v1/rpc' && r.json?.method === method),
    /** The first record (from index `from`) matching `pred`; answered ones only unless `pending`. */
    waitFor(pred, { what = 'a matching request', from = 0, pending = false, ms = 15_000 } = {}) {
      const ok = (r) => records.indexOf(r) >= from && (pending || r.done) && pred(r)
      const hit = records.find(ok)
      if (hit) return Promise.resolve(hit)
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          listeners.delete(l)
          reject(new Error(`no ${what} within ${ms} ms; saw: ${recorder.summary()}`))
        }, ms)
        const l = (r) => {
          if (!ok(r)) return
          clearTimeout(timer)
          listeners.delete(l)
          resolve(r)
        }
        listeners.add(l)
      })
    },
    async close() {
      server.closeAllConnections()
      upstream.destroy()
      await new Promise((r) => server.close(r))
    },
  }
  return recorder
}

/** A small HTTP server of our own (a user's token endpoint or CDM): `handler(req, body, res)`. */
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

/** Publish a message on a channel of the devnet with its service token (plays the agent side). */
async function publishTo(channel, message, meta) {
  const m = meta ? `&meta=${encodeURIComponent(JSON.stringify(meta))}` : ''
  const r = await fetch(`${env.net.url}/publish/pub-c-devnet-free/sub-c-devnet-free/0/${channel}/0?uuid=behaviors-test&auth=${env.net.serviceToken}${m}`, { method: 'POST', body: JSON.stringify(message) })
  assert.equal(r.status, 200)
}

/** The stored messages of a channel, oldest first. */
async function history(channel) {
  const r = await fetch(`${env.net.url}/v3/history/sub-key/sub-c-devnet-free/channel/${channel}?auth=${env.net.serviceToken}`)
  assert.equal(r.status, 200)
  const entries = (await r.json()).channels?.[channel] ?? []
  return entries.map((e) => e.message)
}

/** Follow a channel (replay cache, then live) until a terminal; resolves with every message seen. */
async function untilTerminal(channel, ms = 15_000) {
  const seen = []
  const deadline = Date.now() + ms
  let tt = '1000'
  while (Date.now() < deadline) {
    let body
    try {
      const r = await fetch(`${env.net.url}/v2/subscribe/sub-c-devnet-free/${channel}/0?tt=${tt}&uuid=behaviors-observer&auth=${env.net.serviceToken}`, { signal: AbortSignal.timeout(Math.max(1, deadline - Date.now())) })
      body = await r.json()
    } catch {
      break
    }
    for (const m of body.m ?? []) {
      seen.push(m.d)
      if (m.d?.type === 'terminal') return seen
    }
    tt = body.t.t
  }
  throw new Error(`no terminal on ${channel} within ${ms} ms; saw ${JSON.stringify(seen)}`)
}

const PV = sdk.PROTOCOL_VERSION

// ---------------------------------------------------------------------------------------------
// CFG

test('CFG-03 billingMode free uses the CDM playground keyset, paid the network keyset', async () => {
  const rec = await startRecorder(env.net.url)
  try {
    const free = await env.client({ realtimeOrigin: rec.url })
    const paid = await env.client({ billingMode: 'paid', realtimeOrigin: rec.url })
    assert.equal(paid.billingMode, 'paid')
    const s1 = await free.sendMessage({ agentName: 'echo', requestParts: [textPart('k')] })
    const s2 = await paid.sendMessage({ agentName: 'premium', requestParts: [] })
    await s1.waitForTerminal(15_000)
    await s2.waitForTerminal(15_000)
    // connect() reads history with the client's own keyset
    const from = rec.records.length
    const c1 = await free.connect(s1.taskId)
    const h1 = await rec.waitFor((r) => r.path.startsWith('/v3/history/') && r.path.endsWith(s1.statusChannel), { from, what: 'history read of the free task' })
    assert.equal(h1.path, `/v3/history/sub-key/sub-c-devnet-free/channel/${s1.statusChannel}`)
    const c2 = await paid.connect(s2.taskId)
    const h2 = await rec.waitFor((r) => r.path.startsWith('/v3/history/') && r.path.endsWith(s2.statusChannel), { from, what: 'history read of the paid task' })
    assert.equal(h2.path, `/v3/history/sub-key/sub-c-devnet-paid/channel/${s2.statusChannel}`)
    // and the right keyset finds the events
    assert.equal(c2.state, 'completed')
    assert.equal(artifactText(c2.listEvents().find((e) => e.type === 'artifact')), 'paid')
    assert.equal(c1.state, 'completed')
  } finally {
    await rec.close()
  }
})

test('CFG-04 create() with only a billingMode makes exactly one network call: the CDM fetch', async () => {
  const rec = await startRecorder(env.net.url, { cdm: true })
  try {
    const cdmUrl = `${rec.url}/config.json`
    const free = await TaskClient.create({ billingMode: 'free', cdmUrl })
    assert.deepEqual(rec.records.map((r) => `${r.method} ${r.path}`), ['GET /config.json'])
    const paid = await TaskClient.create({ billingMode: 'paid', cdmUrl })
    assert.deepEqual(rec.records.map((r) => `${r.method} ${r.path}`), ['GET /config.json', 'GET /config.json'])
    free.destroy()
    paid.destroy()
    // the proxy would have seen anything else: with an API key the token exchange goes through it
    const keyed = await TaskClient.create({ billingMode: 'free', cdmUrl, apiKey: env.net.apiKey })
    assert.deepEqual(rec.records.slice(2).map((r) => `${r.method} ${r.path}`), ['GET /config.json', 'POST /api/v1/auth/agent/consumer-token'])
    keyed.destroy()
  } finally {
    await rec.close()
  }
})

test('CFG-06 a CDM without api.baseUrl and no baseUrl given rejects naming baseUrl (and the CDM errors of create())', async () => {
  const doc = await (await fetch(env.net.cdmUrl)).json()
  const cdm = await startServer((req, body, res) => {
    const d = structuredClone(doc)
    if (req.url === '/500.json') {
      res.writeHead(500)
      return res.end('down')
    }
    if (req.url === '/nobase.json') delete d.api.baseUrl
    if (req.url === '/nonet.json') delete d.network
    res.writeHead(200, { 'content-type': 'application/json' })
    res.end(JSON.stringify(d))
  })
  const saved = process.env.BLOCKS_BACKEND_URL
  delete process.env.BLOCKS_BACKEND_URL
  try {
    await assert.rejects(TaskClient.create({ billingMode: 'free', cdmUrl: `${cdm.url}/nobase.json` }), (e) => {
      assert.ok(e instanceof ConfigError, e?.constructor?.name)
      assert.match(e.message, /baseUrl/)
      return true
    })
    // an explicit baseUrl fills the gap
    const ok = await TaskClient.create({ billingMode: 'free', cdmUrl: `${cdm.url}/nobase.json`, baseUrl: env.net.url, apiKey: env.net.apiKey })
    assert.equal(ok.getUserId(), 'user_default')
    ok.destroy()
    await assert.rejects(TaskClient.create({ billingMode: 'free', cdmUrl: `${cdm.url}/500.json` }), (e) => e instanceof ConfigError && e.message === 'CDM config fetch failed: 500 Internal Server Error')
    await assert.rejects(TaskClient.create({ billingMode: 'free', cdmUrl: `${cdm.url}/nonet.json` }), (e) => e instanceof ConfigError && e.message === 'CDM config missing network keys')
  } finally {
    if (saved !== undefined) process.env.BLOCKS_BACKEND_URL = saved
    await cdm.close()
  }
})

test('CFG-11 destroy() stops background token refresh; a second destroy() is harmless', async () => {
  const calls = { a: 0, b: 0 }
  const bThird = deferred()
  const provider = (k) => async () => {
    calls[k]++
    if (k === 'b' && calls.b === 3) bThird.resolve()
    const t = await consumerToken()
    return { token: t.accessToken, expiresIn: 1, userId: t.userId }
  }
  // both tokens live 1 s: the refresh timer fires after 1 s
  const a = await TaskClient.create({ billingMode: 'free', cdmUrl: env.net.cdmUrl, tokenProvider: provider('a') })
  a.destroy()
  a.destroy()
  const b = await TaskClient.create({ billingMode: 'free', cdmUrl: env.net.cdmUrl, tokenProvider: provider('b') })
  try {
    // b (created after a) has refreshed twice: a would have refreshed by now too
    await within(bThird.promise, 10_000, () => `the live client did not refresh twice (calls ${JSON.stringify(calls)})`)
    assert.equal(calls.a, 1, 'the destroyed client never asked for another token')
  } finally {
    b.destroy()
  }
})

test('CFG-16 legacy environment variables do not change the agent (name, instance id, concurrency)', async () => {
  const legacy = {
    AGENT_NAME: 'impostor', CONCURRENCY: '9', EXPECTED_INSTANCES: '5', MAX_PENDING_BACKLOG: '0',
    MAX_RUNNING_TIME_SEC: '1', INSTANCE_ID: 'AG-fixed-1', PUBNUB_SECRET_KEY: 'sec-c-nope', NODE_ENV: 'production',
  }
  const saved = Object.fromEntries(Object.keys(legacy).map((k) => [k, process.env[k]]))
  Object.assign(process.env, legacy)
  let agent
  try {
    agent = await env.agent('legacy_env', async (task, ctx) => {
      await gate(`legacy:${ctx.requestParts[0].text}`).promise
      return {}
    }, { concurrency: 1 })
  } finally {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k]
      else process.env[k] = v
    }
  }
  assert.equal(agent.agentName, 'legacy_env')
  assert.match(agent.instanceId, /^AG-legacy_env-/)
  const client = await env.client()
  const first = await client.sendMessage({ agentName: 'legacy_env', requestParts: [textPart('1')] })
  await running(first)
  const second = await client.sendMessage({ agentName: 'legacy_env', requestParts: [textPart('2')] })
  assert.equal(second.queued, true, 'concurrency 1 from the options, not CONCURRENCY=9')
  gate('legacy:1').resolve()
  gate('legacy:2').resolve()
  assert.equal((await first.waitForTerminal(15_000)).state, 'completed')
  assert.equal((await second.waitForTerminal(15_000)).state, 'completed')
})

// ---------------------------------------------------------------------------------------------
// AUTH

test('AUTH-01 SEND-10 CFG-08 the API key is exchanged at <baseUrl>/api/v1/auth/agent/consumer-token (trailing slashes stripped) and RPCs carry its Bearer; no auth, no Authorization', async () => {
  const rec = await startRecorder(env.net.url)
  try {
    const client = await env.client({ baseUrl: `${rec.url}//` })
    const [exchange] = rec.records
    assert.equal(rec.records.length, 1, rec.summary())
    assert.equal(exchange.method, 'POST')
    assert.equal(exchange.path, '/api/v1/auth/agent/consumer-token')
    assert.deepEqual(exchange.json, { apiKey: env.net.apiKey })
    assert.match(exchange.headers['content-type'], /^application\/json/)
    const access = exchange.response.accessToken
    const e = await client.getTask('t_none').catch((x) => x)
    assert.ok(e instanceof RpcError && e.code !== 401, `an application error, got ${e?.message}`)
    const [rpc] = rec.rpc('GetTask')
    assert.equal(rpc.path, '/api/v1/rpc')
    assert.equal(rpc.headers.authorization, `Bearer ${access}`)

    const anonymous = await TaskClient.create({ billingMode: 'free', cdmUrl: env.net.cdmUrl, baseUrl: rec.url })
    await assert.rejects(anonymous.getTask('t_none'), (x) => x instanceof RpcError && x.code === 401)
    const calls = rec.rpc('GetTask')
    assert.equal(calls.length, 2)
    assert.equal(calls[1].headers.authorization, undefined)
  } finally {
    await rec.close()
  }
})

test('AUTH-02 tokenEndpoint as a URL: the SDK POSTs {} as JSON and uses the returned token as Bearer', async () => {
  const hits = []
  const endpoint = await startServer(async (req, body, res) => {
    hits.push({ method: req.method, url: req.url, type: req.headers['content-type'], body })
    const t = await consumerToken()
    res.writeHead(200, { 'content-type': 'application/json' })
    res.end(JSON.stringify({ token: t.accessToken, expiresIn: 3600, userId: t.userId }))
  })
  const rec = await startRecorder(env.net.url)
  try {
    const client = await TaskClient.create({ billingMode: 'free', cdmUrl: env.net.cdmUrl, baseUrl: rec.url, tokenEndpoint: `${endpoint.url}/my/token` })
    assert.equal(hits.length, 1)
    assert.equal(hits[0].method, 'POST')
    assert.equal(hits[0].url, '/my/token')
    assert.equal(hits[0].body, '{}')
    assert.match(hits[0].type, /^application\/json/)
    assert.equal(client.getUserId(), 'user_default')
    await client.getTask('t_none').catch(() => {})
    const [rpc] = rec.rpc('GetTask')
    assert.match(rpc.headers.authorization, /^Bearer tok_/)
    assert.notEqual(rpc.status, 401)
    client.destroy()
  } finally {
    await rec.close()
    await endpoint.close()
  }
})

test('AUTH-04 any two of apiKey / tokenEndpoint / tokenProvider / anonFingerprint are refused before any request', async () => {
  const nowhere = 'http://127.0.0.1:9/none.json' // fetching it would be a TransportError
  const provider = async () => ({ token: 't', expiresIn: 60 })
  for (const extra of [
    { apiKey: 'bk_x', anonFingerprint: 'fp' },
    { tokenProvider: provider, anonFingerprint: 'fp' },
    { tokenEndpoint: 'http://127.0.0.1:9/t', tokenProvider: provider },
    { apiKey: 'bk_x', tokenProvider: provider },
  ]) {
    await assert.rejects(TaskClient.create({ billingMode: 'free', cdmUrl: nowhere, ...extra }), (e) => {
      assert.ok(e instanceof InvalidArgumentError, `${Object.keys(extra)}: ${e?.constructor?.name} ${e?.message}`)
      assert.equal(e.message, 'Only one token provider mode may be specified')
      return true
    })
  }
})

test('AUTH-07 AUTH-08 apiKey refresh at 80% of expiresIn POSTs {refreshToken} with Bearer <apiKey>; a refused refresh token falls back to a new consumer-token exchange', async () => {
  const short = await startNetwork({ tokenTtlSec: 2 })
  const rec7 = await startRecorder(short.net.url)
  const rec8 = await startRecorder(short.net.url)
  try {
    const opts = { billingMode: 'free', apiKey: short.net.apiKey, cdmUrl: short.net.cdmUrl }
    const c7 = await TaskClient.create({ ...opts, baseUrl: rec7.url })
    const c8 = await TaskClient.create({ ...opts, baseUrl: rec8.url })
    const first7 = rec7.records[0].response
    const first8 = rec8.records[0].response
    assert.equal(first7.expiresIn, 2)
    // someone else uses c8's refresh token first: the devnet then refuses it (REFRESH_TOKEN_INVALID)
    const burn = await fetch(`${short.net.url}/api/v1/auth/agent/refresh`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${short.net.apiKey}` },
      body: JSON.stringify({ refreshToken: first8.refreshToken }),
    })
    assert.equal(burn.status, 200)

    const refresh7 = await rec7.waitFor((r) => r.path === '/api/v1/auth/agent/refresh', { what: 'proactive refresh', ms: 10_000 })
    assert.equal(refresh7.method, 'POST')
    assert.deepEqual(refresh7.json, { refreshToken: first7.refreshToken })
    assert.equal(refresh7.headers.authorization, `Bearer ${short.net.apiKey}`)
    assert.equal(refresh7.headers['blocks-protocol-version'], PV)
    assert.equal(refresh7.status, 200)
    const fresh7 = refresh7.response.accessToken
    assert.notEqual(fresh7, first7.accessToken)
    const refresh8 = await rec8.waitFor((r) => r.path === '/api/v1/auth/agent/refresh', { what: 'proactive refresh', ms: 10_000 })
    assert.equal(refresh8.status, 401)
    assert.match(JSON.stringify(refresh8.response), /REFRESH_TOKEN_INVALID/)
    const again = await rec8.waitFor((r) => r.path === '/api/v1/auth/agent/consumer-token', { from: rec8.records.indexOf(refresh8) + 1, what: 'a new consumer-token exchange' })
    assert.deepEqual(again.json, { apiKey: short.net.apiKey })
    assert.equal(again.status, 200)

    // once the first tokens have expired, a request can only succeed with a new one
    const firstExpiry = Math.max(rec7.records[0].doneAt, rec8.records[0].doneAt) + 2000 + 150
    await new Promise((r) => setTimeout(r, Math.max(0, firstExpiry - Date.now())))
    const e7 = await c7.getTask('t_none').catch((x) => x)
    assert.ok(e7 instanceof RpcError && e7.code !== 401, e7?.message)
    assert.equal(rec7.rpc('GetTask')[0].headers.authorization, `Bearer ${fresh7}`, 'the refreshed token, no reactive refresh')
    const e8 = await c8.getTask('t_none').catch((x) => x)
    assert.ok(e8 instanceof RpcError && e8.code !== 401, e8?.message)
    assert.equal(rec8.rpc('GetTask')[0].headers.authorization, `Bearer ${again.response.accessToken}`, 'the re-exchanged token, no reactive refresh')
    c7.destroy()
    c8.destroy()
  } finally {
    await rec7.close()
    await rec8.close()
    await short.stop()
  }
})

test('AUTH-13 AUTH-15 AUTH-16 AUTH-17 ConsumerAuth: one init for concurrent ensureReady(), userId kept, a failed refresh keeps the old token, destroy() ends refresh; StaticAuthProvider', async () => {
  let calls = 0
  const answers = [
    () => ({ token: 'tok-1', expiresIn: 3600, userId: 'u1' }),
    () => ({ token: 'tok-2', expiresIn: 3600 }), // no userId: the previous one stays
    () => {
      throw new Error('token service down')
    },
  ]
  const auth = new ConsumerAuth({ tokenProvider: async () => answers[Math.min(calls++, 2)]() })
  assert.equal(auth.getAuthHeader(), null)
  assert.equal(auth.getUserId(), null)
  await Promise.all([auth.ensureReady(), auth.ensureReady(), auth.init(), auth.ensureReady()])
  await auth.ensureReady()
  assert.equal(calls, 1, 'initialised once')
  assert.equal(auth.getAuthHeader(), 'Bearer tok-1')
  assert.equal(auth.getUserId(), 'u1')
  assert.equal(await auth.onAuthFailure(), true)
  assert.equal(auth.getAuthHeader(), 'Bearer tok-2')
  assert.equal(auth.getUserId(), 'u1')
  assert.equal(await auth.onAuthFailure(), false, 'a failed refresh answers false')
  assert.equal(calls, 3)
  assert.equal(auth.getAuthHeader(), 'Bearer tok-2', 'and keeps the old token')
  auth.destroy()
  assert.equal(await auth.onAuthFailure(), false)
  assert.equal(calls, 3, 'no refresh after destroy()')
  assert.equal(auth.getAuthHeader(), 'Bearer tok-2', 'the header is still readable after destroy()')
  auth.destroy()

  const noUser = new ConsumerAuth({ tokenProvider: async () => ({ token: 'x', expiresIn: 3600 }) })
  await noUser.init()
  assert.equal(noUser.getUserId(), null)
  noUser.destroy()

  const fixed = new StaticAuthProvider('t')
  assert.equal(fixed.getAuthHeader(), 'Bearer t')
  assert.equal(await fixed.onAuthFailure(), false)
  assert.equal(fixed.getAuthHeader(), 'Bearer t')
})

test('AUTH-24 an anonymous viewer asks POST /api/v1/auth/anon-task-read-token {taskId, fingerprint} without Authorization; sendMessage makes no request', async () => {
  const rec = await startRecorder(env.net.url)
  try {
    const anon = await TaskClient.create({ billingMode: 'free', cdmUrl: env.net.cdmUrl, baseUrl: rec.url, anonFingerprint: 'fp-wire' })
    assert.equal(rec.records.length, 0, rec.summary())
    await assert.rejects(anon.connect('t_wire'), sdk.AnonTaskAccessDeniedError)
    assert.equal(rec.records.length, 1, rec.summary())
    const [r] = rec.records
    assert.equal(r.method, 'POST')
    assert.equal(r.path, '/api/v1/auth/anon-task-read-token')
    assert.deepEqual(r.json, { taskId: 't_wire', fingerprint: 'fp-wire' })
    assert.equal(r.headers.authorization, undefined)
    assert.equal(r.headers['blocks-protocol-version'], PV)
    await assert.rejects(anon.sendMessage({ agentName: 'echo', requestParts: [] }), /anon-mode TaskClient does not support sendMessage\(\)/)
    assert.equal(rec.records.length, 1, 'sendMessage sent nothing')
  } finally {
    await rec.close()
  }
})

// ---------------------------------------------------------------------------------------------
// SEND

test('SEND-01 SEND-05 SEND-07 SEND-08 one JSON-RPC 2.0 SendMessage POST with exactly the documented params', async () => {
  const rec = await startRecorder(env.net.url)
  try {
    const client = await env.client({ baseUrl: rec.url })
    const sends = [
      [{ agentName: 'echo', requestParts: [textPart('w')] }, {}],
      [{ agentName: 'echo', requestParts: [], idempotencyKey: `Key with spaces/äö ${Date.now()}` }, (o) => ({ idempotencyKey: o.idempotencyKey })],
      [{ agentName: 'echo', requestParts: [], taskKind: 'request' }, { extensions: { blocks: { taskKind: 'request' } } }],
      [{ agentName: 'echo', requestParts: [], consumerPublicKey: 'pk-caller-9' }, { extensions: { blocks: { consumerPublicKey: 'pk-caller-9' } } }],
      [
        {
          agentName: 'echo',
          requestParts: [],
          pushNotificationConfig: { url: 'https://hooks.example.test/x', token: 'tk', authentication: { schemes: ['Bearer'], credentials: 'c' } },
          retryPolicy: { maxAttempts: 3, backoff: { initialMs: 100, factor: 2.5 }, retryOn: ['failed'] },
        },
        (o) => ({ pushNotificationConfig: o.pushNotificationConfig, retryPolicy: o.retryPolicy }),
      ],
    ]
    for (const [i, [options, extra]] of sends.entries()) {
      const s = await client.sendMessage(options)
      await s.waitForTerminal(15_000)
      const calls = rec.rpc('SendMessage')
      assert.equal(calls.length, i + 1, `one SendMessage per sendMessage(): ${rec.summary()}`)
      const { json, headers } = calls[i]
      assert.equal(headers['content-type'], 'application/json')
      assert.equal(json.jsonrpc, '2.0')
      assert.equal(json.method, 'SendMessage')
      assert.match(String(json.id), /^rpc-\d+-[0-9a-z]{6}$/)
      const expected = {
        agentName: 'echo',
        billingMode: 'free',
        requestParts: (options.requestParts ?? []).map((p) => ({ ...p })),
        ...(typeof extra === 'function' ? extra(options) : extra),
      }
      // ownerId is always sent; its default value is CFG-09's business (not pinned here)
      const { ownerId, ...rest } = json.params
      assert.equal(typeof ownerId, 'string', `send #${i}: ownerId present`)
      assert.deepEqual(rest, expected, `send #${i}`)
      assert.ok(!('taskId' in json.params), 'the client never sends a taskId')
    }
  } finally {
    await rec.close()
  }
})

test('SEND-02 the session exposes taskId, orgId, ownerId, idempotent, queued, pushConfigId, readToken and statusChannel from the SendMessage answer', async () => {
  const rec = await startRecorder(env.net.url)
  try {
    const client = await env.client({ baseUrl: rec.url })
    const s = await client.sendMessage({ agentName: 'echo', requestParts: [textPart('fields')] })
    const [call] = rec.rpc('SendMessage')
    const result = call.response.result
    assert.equal(typeof result.extensions.blocks.readToken, 'string')
    assert.equal(s.taskId, result.taskId)
    assert.equal(s.orgId, result.orgId)
    assert.equal(s.ownerId, 'user_default')
    assert.equal(s.idempotent, result.idempotent)
    assert.equal(s.queued, result.queued)
    assert.equal(s.pushConfigId, result.pushConfigId ?? undefined)
    assert.equal(s.readToken, result.extensions.blocks.readToken)
    assert.equal(s.statusChannel, result.extensions.blocks.streamChannels.status)
    assert.equal((await s.waitForTerminal(15_000)).state, 'completed')
  } finally {
    await rec.close()
  }
})

test('SEND-04 each session has its own realtime client subscribing with its own read token; closing one leaves the other working', async () => {
  const rec = await startRecorder(env.net.url)
  try {
    const client = await env.client({ realtimeOrigin: rec.url })
    const a = await client.sendMessage({ agentName: 'holder', requestParts: [textPart('send4a')] })
    const b = await client.sendMessage({ agentName: 'holder', requestParts: [textPart('send4b')] })
    assert.notEqual(a.readToken, b.readToken)
    const subA = await rec.waitFor((r) => r.path.startsWith('/v2/subscribe/') && r.path.includes(a.statusChannel), { pending: true, what: `a subscribe to ${a.statusChannel}` })
    const subB = await rec.waitFor((r) => r.path.startsWith('/v2/subscribe/') && r.path.includes(b.statusChannel), { pending: true, what: `a subscribe to ${b.statusChannel}` })
    assert.equal(subA.query.auth, a.readToken)
    assert.equal(subB.query.auth, b.readToken)
    assert.match(subA.query.uuid, /^blocks-task-/)
    assert.notEqual(subA.query.uuid, subB.query.uuid, 'two clients, two uuids')
    assert.ok(!subA.path.includes(b.statusChannel), 'a session subscribes to its own channel only')
    await a.close()
    assert.equal(a.isClosed, true)
    gate('send4a').resolve()
    gate('send4b').resolve()
    const t = await b.waitForTerminal(15_000)
    assert.equal(t.state, 'completed')
    assert.equal(artifactText(b.listEvents().find((e) => e.type === 'artifact')), 'released')
  } finally {
    await rec.close()
  }
})

test('SEND-11 FILE-07 the handler gets each request part as sent (partId, text, contentType, data, extra fields); file refs arrive intact; a part without artifactRef cannot be downloaded', async () => {
  const client = await env.client()
  const parts = [
    { partId: 'p1', text: 'hello', contentType: 'text/plain', data: { k: [1, 2], nested: { ok: true } }, extraField: 'kept' },
    { text: 'no id' },
    { partId: 'big', file: made(20_000), fileName: 'big.bin', contentType: 'application/octet-stream' },
  ]
  const s = await client.sendMessage({ agentName: 'parts', requestParts: parts })
  const art = deferred()
  s.onArtifact((e) => art.resolve(e))
  assert.equal((await s.waitForTerminal(15_000)).state, 'completed')
  const seen = JSON.parse(artifactText(await art.promise))
  assert.deepEqual(seen.parts[0], parts[0])
  assert.deepEqual(seen.parts[1], parts[1])
  const big = seen.parts[2]
  assert.equal(big.partId, 'big')
  assert.equal(big.contentType, 'application/octet-stream')
  assert.equal(big.artifactRef.kind, 'file')
  assert.equal(big.artifactRef.fileName, 'big.bin')
  assert.equal(typeof big.artifactRef.channel, 'string')
  assert.ok(big.artifactRef.channel.length > 0)
  assert.equal(typeof big.artifactRef.fileId, 'string')
  assert.ok(big.artifactRef.fileId.length > 0)
  assert.match(seen.noRef, /^InvalidArgumentError: .*no artifactRef/)
})

// ---------------------------------------------------------------------------------------------
// PIPE

test('PIPE-06 exactly one terminal: expiry (local timer and ExpireTask) gives one completed; a cancel before expiry gives canceled, never a later expiry', async () => {
  const client = await env.client()
  const expiring = await client.sendMessage({ agentName: 'pipe_hold', taskKind: 'pipe', duration: 1, requestParts: [] })
  const canceled = await client.sendMessage({ agentName: 'pipe_hold', taskKind: 'pipe', duration: 1, requestParts: [] })
  const cancelDeadline = await within(deadlineOf(canceled.taskId).promise, 15_000, 'the second pipe handler never started')
  await canceled.cancel()
  const tc = await canceled.waitForTerminal(15_000)
  assert.ok(Date.now() < cancelDeadline, 'the cancel landed before the expiry (the test needs that)')
  assert.equal(tc.state, 'canceled')
  assert.equal(tc.completionReason, undefined)
  const te = await expiring.waitForTerminal(15_000)
  assert.equal(te.state, 'completed')
  assert.equal(te.completionReason, 'duration_expired')
  const expireDeadline = await deadlineOf(expiring.taskId).promise
  // past both deadlines by a margin: the other expiry path had its chance to publish
  const settle = Math.max(expireDeadline, cancelDeadline) + 600 - Date.now()
  if (settle > 0) await new Promise((r) => setTimeout(r, settle))
  const terminals = async (s) => (await history(s.statusChannel)).filter((m) => m.type === 'terminal').map((m) => [m.state, m.completionReason ?? null])
  assert.deepEqual(await terminals(expiring), [['completed', 'duration_expired']])
  assert.deepEqual(await terminals(canceled), [['canceled', null]])
})

test('PIPE-07 TerminateTask after a pipe handler returned still publishes canceled with reason terminated', async () => {
  const client = await env.client()
  const s = await client.sendMessage({ agentName: 'pipe_ret', taskKind: 'pipe', duration: 60, requestParts: [] })
  const started = deferred()
  s.onArtifact((e) => started.resolve(e))
  assert.equal(artifactText(await within(started.promise, 15_000, 'no artifact from the pipe handler')), 'started')
  await assert.rejects(s.waitForTerminal(200), sdk.TimeoutError) // parked: the handler returned, the task lives on
  await client.terminateTask(s.taskId)
  const t = await s.waitForTerminal(15_000)
  assert.equal(t.state, 'canceled')
  assert.equal(t.reason, 'terminated')
})

// ---------------------------------------------------------------------------------------------
// LIFE

async function publishControl(message) {
  await publishTo(ctlAgent.controlChannel, message, { instance: ctlAgent.instanceId })
}
const startTask = (taskId, text) => ({
  type: 'StartTask', taskId, protocolVersion: PV, ownerId: 'user_x', orgId: 'user_x',
  requestParts: text ? [{ partId: 'text', text }] : [], writeToken: env.net.serviceToken,
})

test('LIFE-05 a CancelTask right behind its StartTask is still observed by the task', async () => {
  const taskId = `l5_${Date.now()}`
  await publishControl(startTask(taskId))
  await publishControl({ type: 'CancelTask', taskId })
  const seen = await untilTerminal(`u.user_x.${taskId}`)
  const terminal = seen.at(-1)
  assert.equal(terminal.state, 'canceled', JSON.stringify(seen))
  const artifact = seen.find((m) => m.type === 'artifact')
  assert.match(artifactText(artifact), /^cancelled=true /)
})

test('LIFE-06 Cancel/Expire/TerminateTask for a task not in flight publish nothing and break nothing', async () => {
  const ghost = `ghost_${Date.now()}`
  for (const type of ['CancelTask', 'ExpireTask', 'TerminateTask']) await publishControl({ type, taskId: ghost })
  // the control channel is processed in order: a task started after them proves they were handled
  const probe = `l6_${Date.now()}`
  await publishControl(startTask(probe, 'quick'))
  const seen = await untilTerminal(`u.user_x.${probe}`)
  assert.equal(seen.at(-1).state, 'completed', JSON.stringify(seen))
  assert.deepEqual(await history(`u.user_x.${ghost}`), [])
  assert.equal(ctlAgent.activeTasks, 0)
})

test('LIFE-07 cancel_requested fires once, replays to a late listener, ignores duplicates, and never replays after the terminal', async () => {
  const client = await env.client()
  const s = await client.sendMessage({ agentName: 'holder', requestParts: [textPart('stubborn-l7')] })
  await running(s)
  const first = []
  const got = deferred()
  s.onCancelRequested((e) => {
    first.push(e)
    got.resolve(e)
  })
  await client.cancelTask(s.taskId)
  const ack = await within(got.promise, 15_000, 'no cancel_requested')
  assert.equal(ack.type, 'cancel_requested')
  assert.equal(ack.taskId, s.taskId)
  const late = []
  s.onCancelRequested((e) => late.push(e))
  assert.deepEqual(late, [ack], 'a late listener gets the first event at once')
  // a duplicate on the wire, then a marker that proves it was processed
  await publishTo(s.statusChannel, { type: 'cancel_requested', taskId: s.taskId, protocolVersion: PV })
  const marker = deferred()
  s.onProgress((e) => e.message === 'marker-l7' && marker.resolve())
  await publishTo(s.statusChannel, { type: 'progress', taskId: s.taskId, message: 'marker-l7' })
  await within(marker.promise, 15_000, 'the marker progress never arrived')
  assert.equal(first.length, 1)
  assert.equal(late.length, 1)
  gate('stubborn-l7').resolve()
  const t = await s.waitForTerminal(15_000)
  assert.equal(t.state, 'canceled')
  const after = []
  s.onCancelRequested((e) => after.push(e))
  assert.deepEqual(after, [], 'nothing replays once a terminal was delivered')
  assert.equal(first.length, 1)
})

// ---------------------------------------------------------------------------------------------
// SESS / WAIT / ART

test('SESS-10 a throwing callback: others still run; onError gets {callbackType, entryPoint}; without onError a console.warn names it; a throwing onError does not loop', async () => {
  sdk.setLogger(null)
  const client = await env.client()
  const warns = []
  const realWarn = console.warn
  console.warn = (...args) => {
    // LOG-02: (tag, { level, message, ts, ...meta })
    warns.push(typeof args[1] === 'object' && args[1] ? `${args[0]} ${args[1].message}` : args.join(' '))
  }
  try {
    const s1 = await client.sendMessage({ agentName: 'echo', requestParts: [textPart('e1')] })
    const errors = []
    const others = []
    s1.onError((err, ctx) => errors.push({ message: err.message, callbackType: ctx.callbackType, entryPoint: ctx.entryPoint, type: ctx.event?.type }))
    s1.onTerminal(() => {
      throw new Error('boom-1')
    })
    s1.onTerminal((e) => others.push(e.state))
    await s1.waitForTerminal(15_000)
    assert.deepEqual(others, ['completed'])
    assert.deepEqual(errors, [{ message: 'boom-1', callbackType: 'onTerminal', entryPoint: 'taskSession', type: 'terminal' }])

    const s2 = await client.sendMessage({ agentName: 'echo', requestParts: [textPart('e2')] })
    s2.onTerminal(() => {
      throw new Error('boom-2')
    })
    await s2.waitForTerminal(15_000)
    assert.deepEqual(warns.filter((w) => w.includes(s2.taskId)), [`[Blocks] onTerminal callback of task ${s2.taskId} threw: boom-2`])

    const s3 = await client.sendMessage({ agentName: 'echo', requestParts: [textPart('e3')] })
    let onErrorCalls = 0
    s3.onError(() => {
      onErrorCalls++
      throw new Error('onError broke')
    })
    s3.onTerminal(() => {
      throw new Error('boom-3')
    })
    await s3.waitForTerminal(15_000)
    assert.equal(onErrorCalls, 1)
    assert.deepEqual(warns.filter((w) => w.includes(s3.taskId)), [`[Blocks] onError callback of task ${s3.taskId} threw: onError broke`])
  } finally {
    console.warn = realWarn
  }
})

test('SESS-13 WAIT-02 ART-07 LIFE-02 pre-closed sessions (idempotent hits on completed/failed/canceled tasks): terminal at once, no streams, downloads still work', async () => {
  const client = await env.client()
  const stamp = Date.now()
  const keys = { completed: `ok-${stamp}`, failed: `fail-${stamp}`, canceled: `cancel-${stamp}` }
  const artifact = deferred()
  const first = await Promise.all([
    client.sendMessage({ agentName: 'outcome', requestParts: [textPart('ok')], idempotencyKey: keys.completed }),
    client.sendMessage({ agentName: 'outcome', requestParts: [textPart('fail')], idempotencyKey: keys.failed }),
    client.sendMessage({ agentName: 'outcome', requestParts: [textPart('cancel')], idempotencyKey: keys.canceled }),
  ])
  first[0].onArtifact((e) => artifact.resolve(e))
  await running(first[2])
  await first[2].cancel()
  assert.deepEqual(await Promise.all(first.map(async (s) => (await s.waitForTerminal(15_000)).state)), ['completed', 'failed', 'canceled'])
  for (const [i, state] of ['completed', 'failed', 'canceled'].entries()) {
    const again = await client.sendMessage({ agentName: 'outcome', requestParts: [textPart('again')], idempotencyKey: keys[state] })
    const expected = { type: 'terminal', taskId: first[i].taskId, state }
    assert.equal(again.idempotent, true)
    assert.equal(again.taskId, first[i].taskId)
    assert.equal(again.isClosed, true)
    assert.equal(again.state, state)
    const terminals = []
    again.onTerminal((t) => terminals.push(t))
    assert.deepEqual(terminals, [expected], `${state}: onTerminal fires at registration`)
    assert.deepEqual(await again.waitForTerminal(), expected)
    assert.deepEqual(again.listStreams(), [])
    assert.equal(again.pause, undefined, 'no pause() on a session')
    assert.equal(again.resume, undefined, 'no resume() on a session')
    if (state === 'completed') {
      const ref = (await artifact.promise).artifactRef
      assert.equal(ref.kind, 'file')
      const got = await again.downloadArtifact(ref)
      assert.ok(got.data.equals(made(20_000)), 'byte-exact download through a pre-closed session')
      assert.equal(got.fileName, 'made.bin')
    }
  }
})

test('ART-03 ART-08 {artifacts: []}, {} and undefined publish no artifact and complete; saveArtifacts() of none is [] and creates the directory', async () => {
  const client = await env.client()
  const dirRoot = fs.mkdtempSync(path.join(os.tmpdir(), 'behaviors-art-'))
  try {
    for (const mode of ['empty', 'none', 'undef']) {
      const s = await client.sendMessage({ agentName: 'flops', requestParts: [textPart(mode)] })
      const artifacts = []
      s.onArtifact((e) => artifacts.push(e))
      assert.equal((await s.waitForTerminal(15_000)).state, 'completed', mode)
      assert.deepEqual(artifacts, [], mode)
      const c = await client.connect(s.taskId)
      assert.deepEqual(c.listEvents().map((e) => e.type), ['progress', 'terminal'], mode)
      const dir = path.join(dirRoot, mode, 'nested')
      assert.deepEqual(await s.saveArtifacts(dir), [])
      assert.ok(fs.statSync(dir).isDirectory(), `${mode}: directory created`)
    }
  } finally {
    fs.rmSync(dirRoot, { recursive: true, force: true })
  }
})

test('ART-04 FILE-05 an upload the network refuses: an agent artifact fails the task (nothing inlined), a caller file rejects with "request-upload failed: HTTP 413"', async () => {
  const client = await env.client()
  const s = await client.sendMessage({ agentName: 'flops', requestParts: [textPart('toobig')] })
  const t = await s.waitForTerminal(15_000)
  assert.equal(t.state, 'failed')
  assert.match(t.error, /^request-upload failed: HTTP 413/)
  const c = await client.connect(s.taskId)
  assert.deepEqual(c.listEvents().map((e) => e.type), ['progress', 'terminal'], 'no artifact event, inline or file')
  // the caller side: 150 000 bytes is within the SDK limit (25 MiB) but above this network's
  await assert.rejects(
    client.sendMessage({ agentName: 'echo', requestParts: [{ partId: 'big', file: made(150_000), fileName: 'big.bin', contentType: 'application/octet-stream' }] }),
    (e) => {
      assert.ok(e instanceof FileUploadError, `${e?.constructor?.name}: ${e?.message}`)
      assert.match(e.message, /^request-upload failed: HTTP 413/)
      assert.equal(e.status, 413)
      return true
    },
  )
})

// ---------------------------------------------------------------------------------------------
// FILE

test('FILE-01 FILE-02 AUTH-19 small files go inline, large ones through request-upload / storage / confirm-upload; every backend call carries Blocks-Protocol-Version', async () => {
  const rec = await startRecorder(env.net.url)
  try {
    const client = await env.client({ baseUrl: rec.url })
    const inline = await client.sendMessage({
      agentName: 'echo',
      requestParts: [{ partId: 'small', file: Buffer.from('abc'), fileName: 'a.txt', contentType: 'text/plain', text: 'drop me' }],
    })
    await inline.waitForTerminal(15_000)
    const [first] = rec.rpc('SendMessage')
    assert.deepEqual(first.json.params.requestParts, [
      { partId: 'small', contentType: 'text/plain', artifactRef: { kind: 'inline', mimeType: 'text/plain', size: 3, data: 'YWJj', fileName: 'a.txt' } },
    ])
    assert.ok(!('uploadSessionId' in first.json.params))
    assert.equal(rec.records.filter((r) => r.path.startsWith('/api/v1/files/')).length, 0)

    const mark = rec.records.length
    const big = made(20_000)
    const uploaded = await client.sendMessage({
      agentName: 'echo',
      requestParts: [textPart('t'), { partId: 'big', file: big, fileName: 'big.bin', contentType: 'application/octet-stream' }],
    })
    await uploaded.waitForTerminal(15_000)
    const after = rec.records.slice(mark)
    const ru = after.find((r) => r.path === '/api/v1/files/request-upload')
    const cu = after.find((r) => r.path === '/api/v1/files/confirm-upload')
    const sm = after.find((r) => r.json?.method === 'SendMessage')
    assert.ok(ru && cu && sm, rec.summary())
    assert.ok(after.indexOf(ru) < after.indexOf(cu) && after.indexOf(cu) < after.indexOf(sm), rec.summary())
    assert.deepEqual(ru.json, { role: 'consumer-input', partId: 'big', agentName: 'echo', fileName: 'big.bin', fileSize: 20_000, mimeType: 'application/octet-stream' })
    assert.deepEqual(cu.json, { uploadId: ru.response.uploadId })
    assert.equal(sm.json.params.uploadSessionId, ru.response.uploadSessionId)
    assert.deepEqual(sm.json.params.requestParts, [{ partId: 'text', text: 't' }, { partId: 'big', contentType: 'application/octet-stream' }])

    const c = await client.connect(uploaded.taskId)
    assert.equal(c.state, 'completed')
    await client.listTasks({ limit: 1 })
    const backend = rec.records.filter((r) => r.path.startsWith('/api/v1/'))
    const paths = new Set(backend.map((r) => r.path))
    for (const p of ['/api/v1/auth/agent/consumer-token', '/api/v1/rpc', '/api/v1/files/request-upload', '/api/v1/files/confirm-upload', '/api/v1/auth/task-read-token']) {
      assert.ok(paths.has(p), `${p} was called: ${rec.summary()}`)
    }
    for (const r of backend) assert.equal(r.headers['blocks-protocol-version'], PV, `${r.method} ${r.path}`)
  } finally {
    await rec.close()
  }
})

test('FILE-03 a large file with no backend baseUrl is refused before any request', async () => {
  const direct = new TaskClient({ billingMode: 'free', subscribeKey: 'sub-c-devnet-free' })
  await assert.rejects(
    direct.sendMessage({ agentName: 'echo', requestParts: [{ partId: 'big', file: made(20_000), fileName: 'b.bin' }] }),
    (e) => {
      assert.ok(e instanceof InvalidArgumentError, `${e?.constructor?.name}: ${e?.message}`)
      assert.match(e.message, /^File upload requires a backend baseUrl/)
      return true
    },
  )
})

// ---------------------------------------------------------------------------------------------
// CONN

test('CONN-02 connect() calls GetTask, then asks a read token with the Bearer, then reads the history with that token', async () => {
  const client = await env.client()
  const s = await client.sendMessage({ agentName: 'echo', requestParts: [textPart('conn2')] })
  await s.waitForTerminal(15_000)
  const rec = await startRecorder(env.net.url)
  try {
    const viewer = await env.client({ baseUrl: rec.url, realtimeOrigin: rec.url })
    const access = rec.records[0].response.accessToken
    const mark = rec.records.length
    const c = await viewer.connect(s.taskId)
    const after = rec.records.slice(mark)
    const iGet = after.findIndex((r) => r.json?.method === 'GetTask')
    const iTok = after.findIndex((r) => r.path === '/api/v1/auth/task-read-token')
    const iHist = after.findIndex((r) => r.path.startsWith('/v3/history/'))
    assert.ok(iGet >= 0 && iTok > iGet && iHist > iTok, `order: ${rec.summary()}`)
    assert.deepEqual(after[iGet].json.params, { taskId: s.taskId })
    const tok = after[iTok]
    assert.equal(tok.method, 'POST')
    assert.deepEqual(tok.json, { taskId: s.taskId, role: 'consumer' })
    assert.equal(tok.headers.authorization, `Bearer ${access}`)
    assert.equal(tok.headers['blocks-protocol-version'], PV)
    assert.equal(typeof tok.response.pamToken, 'string')
    assert.equal(after[iHist].query.auth, tok.response.pamToken)
    assert.equal(after[iHist].path, `/v3/history/sub-key/sub-c-devnet-free/channel/${tok.response.channel}`)
    assert.equal(c.readToken, tok.response.pamToken)
    assert.equal(c.statusChannel, tok.response.channel)
    assert.equal(c.state, 'completed')
  } finally {
    await rec.close()
  }
})

test('CONN-06 a long history is read newest first in pages of 100 (cursor = oldest timetoken of the page) and replayed in order', async () => {
  const client = await env.client()
  const s = await client.sendMessage({ agentName: 'many', requestParts: [] })
  assert.equal((await s.waitForTerminal(30_000)).state, 'completed')
  const rec = await startRecorder(env.net.url)
  try {
    const viewer = await env.client({ realtimeOrigin: rec.url })
    const c = await viewer.connect(s.taskId)
    const reads = rec.records.filter((r) => r.path.startsWith('/v3/history/'))
    assert.equal(reads.length, 2, rec.summary())
    const page = (r) => r.response.channels[s.statusChannel]
    assert.equal(reads[0].query.max, '100')
    assert.equal(reads[0].query.start, undefined)
    assert.equal(page(reads[0]).length, 100)
    const oldest = page(reads[0]).map((e) => BigInt(String(e.timetoken))).reduce((a, b) => (b < a ? b : a))
    assert.equal(reads[1].query.max, '100')
    assert.equal(reads[1].query.start, String(oldest))
    assert.equal(page(reads[1]).length, 52) // running + 150 artifacts + terminal = 152
    const events = c.listEvents()
    assert.equal(events.length, 152)
    assert.equal(events[0].type, 'progress')
    assert.equal(events.at(-1).type, 'terminal')
    assert.deepEqual(events.filter((e) => e.type === 'artifact').map(artifactText), Array.from({ length: 150 }, (_, i) => `a${i}`))
  } finally {
    await rec.close()
  }
})

test('CONN-09 CONN-04 stream announcements with an invalid format, affinity or direction are dropped, live and from history; valid ones are pre-loaded on connect', async () => {
  const client = await env.client()
  const s = await client.sendMessage({ agentName: 'holder', requestParts: [textPart('conn9')] })
  await running(s)
  const announced = deferred()
  s.onProgress((e) => e.streamEvent === 'stream_started' && announced.resolve())
  const entry = (id, over) => ({ channel: `stream.holder.${id}`, token: 'tok', format: 'events', affinity: 'dedicated', direction: 'outbound', ...over })
  await publishTo(s.statusChannel, {
    type: 'progress',
    taskId: s.taskId,
    streamEvent: 'stream_started',
    streams: {
      bad_format: entry('bad_format', { format: 'xml' }),
      bad_affinity: entry('bad_affinity', { affinity: 'sticky' }),
      bad_direction: entry('bad_direction', { direction: 'sideways' }),
      no_format: entry('no_format', { format: undefined }),
      good_1: entry('good_1'),
    },
  })
  await within(announced.promise, 15_000, 'the announcement never reached the session')
  assert.deepEqual(s.listStreams().map((r) => r.descriptor.streamId), ['good_1'])
  const c = await client.connect(s.taskId)
  assert.equal(c.state, 'running')
  assert.deepEqual(c.listStreams().map((r) => r.descriptor.streamId), ['good_1'])
  const d = c.listStreams()[0].descriptor
  assert.equal(d.channel, 'stream.holder.good_1')
  assert.equal(d.format, 'events')
  assert.equal(d.affinity, 'dedicated')
  assert.equal(d.agentDirection, 'outbound')
  assert.equal(d.localDirection, 'inbound')
  gate('conn9').resolve()
  assert.equal((await s.waitForTerminal(15_000)).state, 'completed')
  assert.equal((await c.waitForTerminal(15_000)).state, 'completed')
})
