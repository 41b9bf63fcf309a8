// Issue 21: the SDK through a forward proxy, as behind a company firewall. A CONNECT tunnel to the
// TLS devnet (the `proxy` option and HTTPS_PROXY), an absolute-form proxy to a plain devnet
// (HTTP_PROXY), and NO_PROXY exempting a host. Long-polls, uploads and downloads go through it.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { fileURLToPath } from 'node:url'
import { sdk, runNode, deferred, artifactText } from './helpers.mjs'
import { startConnectProxy } from './connectproxy.mjs'

const { TaskClient, InvalidArgumentError, textPart, filePart } = sdk
const indexPath = fileURLToPath(new URL('../index.js', import.meta.url))
const HOLD_SEC = 1
// this file decides every proxy itself: none inherited from the machine (the SDK reads them when a
// client is built, and an explicit proxy still honours NO_PROXY)
for (const v of ['HTTPS_PROXY', 'https_proxy', 'HTTP_PROXY', 'http_proxy', 'ALL_PROXY', 'all_proxy', 'NO_PROXY', 'no_proxy']) delete process.env[v]

let tlsNet
let plainNet
let proxy
const agents = []
const gates = new Map()
const gate = (k) => gates.get(k) ?? gates.set(k, deferred()).get(k)

before(async () => {
  proxy = await startConnectProxy()
  // idle long-polls are answered after 1 s, so a task that waits longer outlives one poll
  tlsNet = await sdk.LocalNetwork.start({ tls: true, longPollHoldSec: HOLD_SEC })
  plainNet = await sdk.LocalNetwork.start({ longPollHoldSec: HOLD_SEC })
  for (const net of [tlsNet, plainNet]) {
    const tls = net.caPem ? { ca: net.caPem } : undefined
    agents.push(await sdk.startAgentInstance({
      agentName: 'echo', apiKey: net.apiKey, cdmUrl: net.cdmUrl, tls, concurrency: 4,
      handler: async (task, ctx) => {
        const [first] = ctx.requestParts
        if (first.artifactRef) {
          const data = await ctx.downloadInputArtifact(first)
          return { artifacts: [{ data, mimeType: 'application/octet-stream', fileName: 'back.bin' }] }
        }
        if (first.text.startsWith('gate:')) await gate(first.text).promise
        return { artifacts: [{ data: `echo: ${first.text}`, mimeType: 'text/plain' }] }
      },
    }))
  }
})

after(async () => {
  await Promise.all(agents.map((a) => a.stop(1000)))
  await tlsNet?.stop()
  await plainNet?.stop()
  await proxy?.close()
})

const texts = (session) => {
  const out = []
  session.onArtifact((e) => out.push(e))
  return out
}

test('the proxy option: every request to the TLS devnet goes through a CONNECT tunnel; a long-poll outlives the server hold, an upload and a download pass', async () => {
  const port = new URL(tlsNet.url).port
  const c = await TaskClient.create({ billingMode: 'free', apiKey: tlsNet.apiKey, cdmUrl: tlsNet.cdmUrl, tls: { ca: tlsNet.caPem }, proxy: proxy.url })
  try {
    assert.ok(proxy.connects.includes(`127.0.0.1:${port}`), `the CDM and token requests were tunnelled: ${proxy.connects}`)
    const s = await c.sendMessage({ agentName: 'echo', requestParts: [textPart('gate:tls')] })
    const got = texts(s)
    const running = deferred()
    s.onProgress((e) => e.state === 'running' && running.resolve())
    await running.promise
    // the task waits while the caller's subscribe poll is answered empty (after HOLD_SEC) and
    // polled again through the tunnel, at least twice
    await new Promise((r) => setTimeout(r, 2.2 * HOLD_SEC * 1000))
    gate('gate:tls').resolve()
    assert.equal((await s.waitForTerminal(15_000)).state, 'completed')
    assert.deepEqual(got.map(artifactText), ['echo: gate:tls'])

    const data = Buffer.alloc(200_000, 3)
    const f = await c.sendMessage({ agentName: 'echo', requestParts: [filePart(data, 'in.bin')] })
    const art = texts(f)
    assert.equal((await f.waitForTerminal(15_000)).state, 'completed')
    assert.ok((await f.downloadArtifact(art[0].artifactRef)).data.equals(data), 'upload and download through the tunnel')
    assert.ok(proxy.connects.every((t) => t === `127.0.0.1:${port}`), 'nothing went around the proxy to anywhere else')
  } finally {
    c.destroy()
  }
})

const child = (agent, text) => `
  const { TaskClient, textPart } = await import(${JSON.stringify(indexPath)})
  const c = await TaskClient.create({ billingMode: 'free', apiKey: process.env.BLOCKS_API_KEY, cdmUrl: process.env.BLOCKS_CDM_URL })
  const s = await c.sendMessage({ agentName: ${JSON.stringify(agent)}, requestParts: [textPart(${JSON.stringify(text)})] })
  s.onArtifact((e) => console.log('artifact', Buffer.from(e.artifactRef.data, 'base64').toString()))
  console.log('terminal', (await s.waitForTerminal(15000)).state)
  c.destroy()
`
const clean = { HTTPS_PROXY: '', https_proxy: '', HTTP_PROXY: '', http_proxy: '', ALL_PROXY: '', all_proxy: '', NO_PROXY: '', no_proxy: '' }

test('HTTPS_PROXY tunnels a caller to the TLS devnet; with NO_PROXY naming the host the proxy sees nothing', async () => {
  const env = { ...clean, ...tlsNet.env, HTTPS_PROXY: proxy.url }
  const before = proxy.connects.length
  const r = await runNode(child('echo', 'via env'), { env })
  assert.match(r.stdout, /artifact echo: via env\nterminal completed/, r.stdout + r.stderr)
  assert.ok(proxy.connects.length > before, 'the caller went through the proxy')
  const skip = proxy.connects.length
  const direct = await runNode(child('echo', 'direct'), { env: { ...env, NO_PROXY: '127.0.0.1' } })
  assert.match(direct.stdout, /terminal completed/, direct.stdout + direct.stderr)
  assert.equal(proxy.connects.length, skip, 'NO_PROXY: not one CONNECT')
})

test('HTTP_PROXY forwards a caller to a plain devnet, long-polls included; NO_PROXY exempts it', async () => {
  const env = { ...clean, ...plainNet.env, HTTP_PROXY: proxy.url }
  const before = proxy.forwarded.length
  // the task waits until the caller's subscribe long-poll has come through the proxy
  const subscribed = deferred()
  proxy.onForward = (u) => new URL(u).pathname.startsWith('/v2/subscribe/') && subscribed.resolve()
  subscribed.promise.then(() => gate('gate:plain').resolve())
  try {
    const r = await runNode(child('echo', 'gate:plain'), { env })
    assert.match(r.stdout, /artifact echo: gate:plain\nterminal completed/, r.stdout + r.stderr)
  } finally {
    proxy.onForward = undefined
  }
  const seen = proxy.forwarded.slice(before).map((u) => new URL(u).pathname)
  assert.ok(seen.includes('/config.json') && seen.some((p) => p.startsWith('/v2/subscribe/')), `CDM and subscribe polls were forwarded: ${seen}`)
  const skip = proxy.forwarded.length
  const direct = await runNode(child('echo', 'plain direct'), { env: { ...env, NO_PROXY: '127.0.0.1,localhost' } })
  assert.match(direct.stdout, /terminal completed/, direct.stdout + direct.stderr)
  assert.equal(proxy.forwarded.length, skip, 'NO_PROXY: nothing forwarded')
})

test('a proxy option that is not a URL is InvalidArgumentError naming it', async () => {
  const base = { billingMode: 'free', apiKey: plainNet.apiKey, cdmUrl: plainNet.cdmUrl }
  await assert.rejects(TaskClient.create({ ...base, proxy: 'not a proxy' }), (e) => e instanceof InvalidArgumentError && /proxy "not a proxy" is not a proxy URL/.test(e.message))
  await assert.rejects(TaskClient.create({ ...base, proxy: 3128 }), (e) => e instanceof InvalidArgumentError && /proxy must be a URL string/.test(e.message))
})
