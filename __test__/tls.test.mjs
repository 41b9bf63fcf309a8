// Issue 21: the SDK over TLS as production users reach the hosted network, against the TLS devnet
// (its own CA, HTTPS with HTTP/2 by ALPN). The CA is given each way Node users give one: the
// `tls.ca` option, NODE_EXTRA_CA_CERTS, SSL_CERT_FILE; without it, and for a wrong host name, the
// certificate errors name the cause and the next step.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs'
import http2 from 'node:http2'
import https from 'node:https'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { sdk, runNode, startCli, deferred, artifactText } from './helpers.mjs'

const { TaskClient, TransportError, InvalidArgumentError, textPart, filePart } = sdk
const indexPath = fileURLToPath(new URL('../index.js', import.meta.url))
const fixture = (f) => fs.readFileSync(new URL(`./fixtures/${f}`, import.meta.url))

let net
let tls
const agents = []
const clients = []

before(async () => {
  net = await sdk.LocalNetwork.start({ tls: true })
  tls = { ca: net.caPem }
  const start = async (agentName, handler, extra = {}) => {
    const a = await sdk.startAgentInstance({ agentName, apiKey: net.apiKey, cdmUrl: net.cdmUrl, tls, handler, ...extra })
    agents.push(a)
    return a
  }
  await start('echo', (task, ctx) => ({ artifacts: [{ data: `echo: ${ctx.requestParts.map((p) => p.text).join(' ')}`, mimeType: 'text/plain' }] }))
  await start('ticker', async (task, ctx) => {
    const s = await ctx.createStream()
    for (let i = 0; i < 5; i++) s.write(Buffer.from(`tick ${i};`))
    await s.end()
    return {}
  }, { card: { identity: { agentName: 'ticker' }, runtime: { handler: './h.js' }, streams: { _default: { direction: 'outbound', format: 'bytes' } } } })
  await start('mirror', async (task, ctx) => {
    const part = ctx.requestParts[0]
    const data = await ctx.downloadInputArtifact(part)
    return { artifacts: [{ data, mimeType: 'application/octet-stream', fileName: `mirror-${part.artifactRef.fileName}` }] }
  })
  await start('relay', async (task, ctx) => {
    const s = await ctx.taskClient.sendMessage({ agentName: 'echo', requestParts: [textPart(`via relay ${ctx.requestParts[0].text}`)] })
    const texts = []
    s.onArtifact((e) => texts.push(artifactText(e)))
    const t = await s.waitForTerminal(15_000)
    return { artifacts: [{ data: `${t.state}: ${texts.join()}`, mimeType: 'text/plain' }] }
  })
})

after(async () => {
  for (const c of clients) c.destroy()
  await Promise.all(agents.map((a) => a.stop(1000)))
  await net?.stop()
})

async function client(extra = {}) {
  const c = await TaskClient.create({ billingMode: 'free', apiKey: net.apiKey, cdmUrl: net.cdmUrl, tls, ...extra })
  clients.push(c)
  return c
}

test('the TLS devnet serves https URLs, its CA in a file, and HTTP/2 to a client that offers it', async () => {
  assert.match(net.url, /^https:\/\/127\.0\.0\.1:\d+$/)
  assert.match(net.caPem, /^-----BEGIN CERTIFICATE-----/)
  assert.equal(fs.readFileSync(net.caFile, 'utf8'), net.caPem)
  assert.equal(net.env.NODE_EXTRA_CA_CERTS, net.caFile)
  const cdm = await new Promise((resolve, reject) => {
    const session = http2.connect(net.url, { ca: net.caPem })
    session.on('error', reject)
    const req = session.request({ ':path': '/config.json' })
    let body = ''
    req.on('response', (h) => assert.equal(h[':status'], 200))
    req.on('data', (d) => (body += d))
    req.on('end', () => {
      assert.equal(session.alpnProtocol, 'h2', 'HTTP/2 negotiated by ALPN')
      session.close()
      resolve(JSON.parse(body))
    })
    req.end()
  })
  assert.equal(cdm.api.baseUrl, net.url, 'the CDM points at the https URLs')
  // a client that offers only HTTP/1.1 gets it
  const h1 = await new Promise((resolve, reject) => {
    https.get(`${net.url}/time/0`, { ca: net.caPem, ALPNProtocols: ['http/1.1'] }, (res) => {
      const alpn = res.socket.alpnProtocol
      res.resume()
      res.on('end', () => resolve({ status: res.statusCode, alpn }))
    }).on('error', reject)
  })
  assert.deepEqual(h1, { status: 200, alpn: 'http/1.1' })
})

test('with tls.ca: an echo, a bytes stream, a file upload and download, and an agent-to-agent call over TLS', async () => {
  const c = await client()
  const s = await c.sendMessage({ agentName: 'echo', requestParts: [textPart('over tls')] })
  const texts = []
  s.onArtifact((e) => texts.push(artifactText(e)))
  assert.equal((await s.waitForTerminal(15_000)).state, 'completed')
  assert.deepEqual(texts, ['echo: over tls'])

  const t = await c.sendMessage({ agentName: 'ticker', requestParts: [], stream: true })
  const ref = await t.waitForStream()
  const chunks = []
  for await (const chunk of ref.open().bytes()) chunks.push(chunk)
  assert.equal(Buffer.concat(chunks).toString(), 'tick 0;tick 1;tick 2;tick 3;tick 4;')

  const data = Buffer.alloc(300_000, 7) // above the inline limit: an upload and a file artifact
  const m = await c.sendMessage({ agentName: 'mirror', requestParts: [filePart(data, 'big.bin')] })
  const art = deferred()
  m.onArtifact((e) => art.resolve(e))
  assert.equal((await m.waitForTerminal(15_000)).state, 'completed')
  const back = await m.downloadArtifact((await art.promise).artifactRef)
  assert.equal(back.fileName, 'mirror-big.bin')
  assert.ok(back.data.equals(data), 'the file came back whole')

  const r = await c.sendMessage({ agentName: 'relay', requestParts: [textPart('hi')] })
  const relayed = []
  r.onArtifact((e) => relayed.push(artifactText(e)))
  assert.equal((await r.waitForTerminal(20_000)).state, 'completed')
  assert.deepEqual(relayed, ['completed: echo: via relay hi'])
})

/**
 * A caller in a child process (its environment decides whom it trusts): an echo, a bytes stream,
 * a file upload and download, and an agent-to-agent call; or the error it got.
 */
const fullChild = `
  const { TaskClient, textPart, filePart } = await import(${JSON.stringify(indexPath)})
  const text = (e) => Buffer.from(e.artifactRef.data, 'base64').toString()
  try {
    const c = await TaskClient.create({ billingMode: 'free', apiKey: process.env.BLOCKS_API_KEY, cdmUrl: process.env.BLOCKS_CDM_URL })
    const s = await c.sendMessage({ agentName: 'echo', requestParts: [textPart('child')] })
    s.onArtifact((e) => console.log('artifact', text(e)))
    console.log('terminal', (await s.waitForTerminal(15000)).state)
    const t = await c.sendMessage({ agentName: 'ticker', requestParts: [], stream: true })
    const chunks = []
    for await (const chunk of (await t.waitForStream()).open().bytes()) chunks.push(chunk)
    console.log('stream', Buffer.concat(chunks).toString())
    const data = Buffer.alloc(100000, 9)
    const m = await c.sendMessage({ agentName: 'mirror', requestParts: [filePart(data, 'c.bin')] })
    await m.waitForTerminal(15000)
    console.log('file', (await m.downloadArtifact(m.listArtifacts()[0])).data.equals(data))
    const r = await c.sendMessage({ agentName: 'relay', requestParts: [textPart('kid')] })
    r.onArtifact((e) => console.log('relay', text(e)))
    await r.waitForTerminal(20000)
    c.destroy()
  } catch (e) {
    console.log('error', e.name, e.code)
  }
`
const ALL = /artifact echo: child\nterminal completed\nstream tick 0;tick 1;tick 2;tick 3;tick 4;\nfile true\nrelay completed: echo: via relay kid/

test('NODE_EXTRA_CA_CERTS adds the CA, as in Node; SSL_CERT_FILE replaces the system store with it: echo, stream, files, agent-to-agent', async () => {
  const base = { BLOCKS_CDM_URL: net.cdmUrl, BLOCKS_API_KEY: net.apiKey, NODE_EXTRA_CA_CERTS: '', SSL_CERT_FILE: '', SSL_CERT_DIR: '', BLOCKS_DEVNET_TLS: '' }
  const extra = await runNode(fullChild, { env: { ...base, NODE_EXTRA_CA_CERTS: net.caFile } })
  assert.match(extra.stdout, ALL, extra.stdout + extra.stderr)
  const certFile = await runNode(fullChild, { env: { ...base, SSL_CERT_FILE: net.caFile } })
  assert.match(certFile.stdout, ALL, certFile.stdout + certFile.stderr)
  // the same child without either: the certificate is refused
  const none = await runNode(fullChild, { env: base })
  assert.match(none.stdout, /error TransportError CERT_UNTRUSTED/, none.stdout + none.stderr)
  // an unreadable NODE_EXTRA_CA_CERTS is warned about and skipped, as Node does
  const missing = await runNode(fullChild, { env: { ...base, NODE_EXTRA_CA_CERTS: path.join(os.tmpdir(), 'no-such-ca.pem') } })
  assert.match(missing.stdout, /error TransportError CERT_UNTRUSTED/)
  assert.match(missing.stdout + missing.stderr, /ignoring extra certificates from NODE_EXTRA_CA_CERTS=.*no-such-ca\.pem: cannot read it/)
})

test('without the CA: TransportError CERT_UNTRUSTED with the host and the next step', async () => {
  const port = new URL(net.url).port
  await assert.rejects(TaskClient.create({ billingMode: 'free', apiKey: net.apiKey, cdmUrl: net.cdmUrl }), (e) => {
    assert.ok(e instanceof TransportError, e?.constructor?.name)
    assert.equal(e.code, 'CERT_UNTRUSTED')
    assert.equal(e.host, `127.0.0.1:${port}`)
    assert.match(e.message, /UnknownIssuer/, 'the cause chain is kept')
    assert.match(e.message, /the certificate at 127\.0\.0\.1:\d+ was signed by an unknown issuer; give your CA bundle with NODE_EXTRA_CA_CERTS=\/path\/ca\.pem or the `tls: \{ ca \}` option/)
    return true
  })
  // an agent without the CA fails to start the same way
  await assert.rejects(sdk.startAgentInstance({ agentName: 'no_ca', apiKey: net.apiKey, cdmUrl: net.cdmUrl, handler: () => ({}) }), (e) => e instanceof TransportError && e.code === 'CERT_UNTRUSTED')
})

test('a certificate for another host name: TransportError CERT_HOSTNAME_MISMATCH', async () => {
  const server = https.createServer({ key: fixture('other-host-key.pem'), cert: fixture('other-host.pem') }, (req, res) => res.end('{}'))
  await new Promise((r) => server.listen(0, '127.0.0.1', r))
  try {
    const cdmUrl = `https://127.0.0.1:${server.address().port}/config.json`
    await assert.rejects(TaskClient.create({ billingMode: 'free', cdmUrl, tls: { ca: fixture('devnet-ca.pem') } }), (e) => {
      assert.ok(e instanceof TransportError, e?.constructor?.name)
      assert.equal(e.code, 'CERT_HOSTNAME_MISMATCH', e.message)
      assert.match(e.message, /the certificate is not valid for the host at 127\.0\.0\.1:\d+/)
      return true
    })
  } finally {
    server.close()
  }
})

test('tls.ca that is not a PEM certificate, or of the wrong type, is InvalidArgumentError naming it', async () => {
  const base = { billingMode: 'free', apiKey: net.apiKey, cdmUrl: net.cdmUrl }
  await assert.rejects(TaskClient.create({ ...base, tls: { ca: 'not a certificate' } }), (e) => e instanceof InvalidArgumentError && /tls\.ca\[0\] holds no certificate/.test(e.message))
  await assert.rejects(TaskClient.create({ ...base, tls: { ca: 42 } }), (e) => e instanceof InvalidArgumentError && /tls\.ca must be PEM text/.test(e.message))
  await assert.rejects(TaskClient.create({ ...base, tls: 'ca.pem' }), (e) => e instanceof InvalidArgumentError && /tls must be an object/.test(e.message))
  assert.throws(() => new TaskClient({ billingMode: 'free', subscribeKey: 'k', tls: { ca: [net.caPem, 'junk'] } }), (e) => e instanceof InvalidArgumentError && /tls\.ca\[1\] holds no certificate/.test(e.message))
  assert.throws(() => new sdk.ConsumerAuth({ apiKey: 'k', baseUrl: net.url, tls: { ca: 'junk' } }), (e) => e instanceof InvalidArgumentError && /tls\.ca\[0\]/.test(e.message))
  assert.throws(() => new sdk.AgentAuth('k', net.url, { tls: { ca: 'junk' } }), (e) => e instanceof InvalidArgumentError && /tls\.ca\[0\]/.test(e.message))
})

test('ConsumerAuth, AgentAuth, new TaskClient and the registry functions take tls.ca too', async () => {
  const auth = new sdk.ConsumerAuth({ apiKey: net.apiKey, baseUrl: net.url, tls })
  await auth.init()
  assert.match(auth.getAuthHeader(), /^Bearer /)
  const direct = new TaskClient({ billingMode: 'free', subscribeKey: 'sub-c-devnet-free', publishKey: 'pub-c-devnet-free', baseUrl: net.url, realtimeOrigin: net.url, authProvider: auth, tls })
  clients.push(direct)
  const s = await direct.sendMessage({ agentName: 'echo', requestParts: [textPart('direct')] })
  const texts = []
  s.onArtifact((e) => texts.push(artifactText(e)))
  assert.equal((await s.waitForTerminal(15_000)).state, 'completed')
  assert.deepEqual(texts, ['echo: direct'])
  auth.destroy()
  // the module functions take it too
  assert.equal((await sdk.fetchCdmConfig(net.cdmUrl, { tls })).api.baseUrl, net.url)
  await assert.rejects(sdk.fetchCdmConfig(net.cdmUrl), (e) => e.code === 'CERT_UNTRUSTED')
  assert.equal((await sdk.getAgent('echo', { baseUrl: net.url, apiKey: net.apiKey, tls })).agentName, 'echo')
  const agentAuth = new sdk.AgentAuth(net.apiKey, net.url, { tls })
  const connected = await agentAuth.init({ agentName: 'tls_identity', instanceId: 'tls-identity-1', concurrency: 1 })
  assert.ok(connected.accessToken)
})

test('a durable TLS devnet keeps its CA across restarts (blocks-devnet --tls prints the NODE_EXTRA_CA_CERTS export)', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'blocks-tls-'))
  try {
    const first = await sdk.LocalNetwork.start({ tls: true, dataDir: dir })
    const pem = first.caPem
    assert.equal(first.caFile, path.join(dir, 'tls', 'ca.pem'))
    assert.equal(fs.statSync(path.join(dir, 'tls', 'ca-key.pem')).mode & 0o077, 0, 'the CA key is private')
    await first.stop()
    const cli = await startCli(['--port', '0', '--data-dir', dir, '--tls'])
    try {
      assert.equal(cli.env.NODE_EXTRA_CA_CERTS, path.join(dir, 'tls', 'ca.pem'))
      assert.equal(fs.readFileSync(cli.env.NODE_EXTRA_CA_CERTS, 'utf8'), pem, 'the same CA after a restart')
      assert.match(cli.out, /listening on https:\/\/127\.0\.0\.1:/)
      const c = await TaskClient.create({ billingMode: 'free', apiKey: cli.env.BLOCKS_API_KEY, cdmUrl: cli.env.BLOCKS_CDM_URL, tls: { ca: pem } })
      assert.ok(c.getUserId())
      c.destroy()
    } finally {
      cli.child.kill('SIGINT')
      await new Promise((r) => cli.child.once('exit', r))
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
})
