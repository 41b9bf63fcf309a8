// Issue 21 (part): transport errors that name the cause, and no credentials in clear over the
// network. Only loopback addresses are contacted; the refusals happen before any request.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs'
import https from 'node:https'
import net from 'node:net'
import { sdk, startNetwork } from './helpers.mjs'

const { TaskClient, TransportError, ConfigError, StaticAuthProvider } = sdk

/** A loopback port nothing listens on. */
async function deadPort() {
  const s = net.createServer()
  await new Promise((r) => s.listen(0, '127.0.0.1', r))
  const { port } = s.address()
  await new Promise((r) => s.close(r))
  return port
}

test('a refused connection is TransportError code ECONNREFUSED with the host, the causes and the next step', async () => {
  const port = await deadPort()
  await assert.rejects(TaskClient.create({ billingMode: 'free', cdmUrl: `http://127.0.0.1:${port}/config.json` }), (e) => {
    assert.ok(e instanceof TransportError, e?.constructor?.name)
    assert.equal(e.code, 'ECONNREFUSED')
    assert.equal(e.host, `127.0.0.1:${port}`)
    assert.match(e.message, /Connection refused/, 'the cause chain is kept')
    assert.match(e.message, /is blocks-devnet running\? start it with `npx blocks-devnet`/)
    return true
  })
})

test('an untrusted certificate is TransportError code CERT_UNTRUSTED, saying so', async () => {
  const dir = new URL('./fixtures/', import.meta.url)
  const server = https.createServer({ key: fs.readFileSync(new URL('selfsigned-key.pem', dir)), cert: fs.readFileSync(new URL('selfsigned-cert.pem', dir)) }, (req, res) => res.end('{}'))
  await new Promise((r) => server.listen(0, '127.0.0.1', r))
  try {
    await assert.rejects(TaskClient.create({ billingMode: 'free', cdmUrl: `https://127.0.0.1:${server.address().port}/config.json` }), (e) => {
      assert.ok(e instanceof TransportError, e?.constructor?.name)
      assert.equal(e.code, 'CERT_UNTRUSTED')
      assert.match(e.message, /signed by an unknown issuer/)
      return true
    })
  } finally {
    server.close()
  }
})

test('plain http:// to a host that is not loopback is refused before any request, unless allowed', async () => {
  const env = await startNetwork()
  try {
    // the CDM (loopback) is fine; the backend it is pointed at is not
    await assert.rejects(TaskClient.create({ billingMode: 'free', apiKey: env.net.apiKey, cdmUrl: env.net.cdmUrl, baseUrl: 'http://blocks.example.com' }), (e) => {
      assert.ok(e instanceof ConfigError, e?.constructor?.name)
      assert.match(e.message, /refusing plain http:\/\/ for the backend baseUrl \(blocks\.example\.com\)/)
      assert.match(e.message, /allowInsecureHttp: true/)
      return true
    })
    await assert.rejects(TaskClient.create({ billingMode: 'free', cdmUrl: 'http://config.example.com/config.json' }), /refusing plain http:\/\/ for the CDM URL/)
    assert.throws(() => new TaskClient({ billingMode: 'free', subscribeKey: 'k', baseUrl: 'http://blocks.example.com', authProvider: new StaticAuthProvider('t') }), /refusing plain http/)
    await assert.rejects(sdk.startAgentInstance({ agentName: 'x', handler: () => ({}), apiKey: env.net.apiKey, cdmUrl: env.net.cdmUrl, baseUrl: 'http://blocks.example.com' }), /refusing plain http:\/\/ for the backend baseUrl/)
    // opting in builds the client (nothing is sent here)
    assert.ok(new TaskClient({ billingMode: 'free', subscribeKey: 'k', baseUrl: 'http://blocks.example.com', allowInsecureHttp: true, authProvider: new StaticAuthProvider('t') }))
    // loopback (the devnet, localhost) and https are always fine
    assert.ok(new TaskClient({ billingMode: 'free', subscribeKey: 'k', baseUrl: 'http://localhost:4700', realtimeOrigin: 'http://[::1]:4700', authProvider: new StaticAuthProvider('t') }))
    assert.ok(new TaskClient({ billingMode: 'free', subscribeKey: 'k', baseUrl: 'https://blocks.example.com', authProvider: new StaticAuthProvider('t') }))
  } finally {
    await env.stop()
  }
})
