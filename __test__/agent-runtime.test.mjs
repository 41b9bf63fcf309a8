// Issue 18: the agent runtime as the official SDK has it: the handle's members, and an agent that
// never sits deaf on its control channel.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { startNetwork, sdk, deferred } from './helpers.mjs'

const { textPart } = sdk

let env
let client
before(async () => {
  env = await startNetwork()
  client = await env.client()
})
after(async () => {
  await env.stop()
})

/** Revoke the control tokens of an agent's channel on the devnet (an operator revoking access). */
async function revokeControl(controlChannel) {
  const r = await fetch(`${env.net.url}/devnet/v1/revoke-control-tokens`, {
    method: 'POST',
    headers: { authorization: `Bearer ${env.net.serviceToken}`, 'content-type': 'application/json' },
    body: JSON.stringify({ controlChannel }),
  })
  assert.equal(r.status, 200)
  return (await r.json()).revoked
}

test('AGT-03 the handle exposes agentName, instanceId, subscribeKey, controlChannel, cdmConfig, taskClient, stop, publishTerminal, failStream', async () => {
  const h = await env.agent('handle_probe', async () => ({}))
  assert.equal(h.agentName, 'handle_probe')
  assert.match(h.instanceId, /^AG-handle_probe-[0-9a-f-]{36}$/)
  assert.equal(h.subscribeKey, 'sub-c-devnet-free')
  assert.match(h.controlChannel, /^agent\.agt_[a-z0-9]+\.control$/)
  assert.equal(h.cdmConfig.playground.subscribeKey, 'sub-c-devnet-free')
  assert.equal(h.cdmConfig.api.baseUrl, env.net.url)
  assert.ok(h.taskClient instanceof sdk.TaskClient)
  for (const fn of ['stop', 'publishTerminal', 'failStream']) assert.equal(typeof h[fn], 'function', fn)
})

test('AGT-13 a revoked control token: the agent registers again and takes tasks; a task sent meanwhile is not lost', async () => {
  const logs = []
  const reauthed = deferred()
  const logger = {
    error: (m) => logs.push(['error', m]),
    warn: (m) => {
      logs.push(['warn', m])
      if (/registered again/.test(m)) reauthed.resolve()
    },
    info: () => {},
    debug: () => {},
  }
  const h = await env.agent('revoked_agent', async (task) => ({ artifacts: [{ data: `ok ${task.requestParts[0].text}`, mimeType: 'text/plain' }] }), { logger })
  const first = await client.sendMessage({ agentName: 'revoked_agent', requestParts: [textPart('1')] })
  assert.equal((await first.waitForTerminal(15_000)).state, 'completed')
  assert.ok((await revokeControl(h.controlChannel)) >= 1)
  // sent while the agent's held long-poll is being refused: it must still run
  const during = await client.sendMessage({ agentName: 'revoked_agent', requestParts: [textPart('2')] })
  await reauthed.promise
  const after = await client.sendMessage({ agentName: 'revoked_agent', requestParts: [textPart('3')] })
  for (const s of [during, after]) {
    const t = await s.waitForTerminal(20_000)
    assert.equal(t.state, "completed", JSON.stringify(t))
  }
  const refused = logs.find(([level, m]) => level === 'error' && /access denied — destroying control client/.test(m))
  assert.ok(refused, JSON.stringify(logs))
  assert.doesNotMatch(refused[1], /PubNub|PAM|tok_/, 'neutral words, no token')
  sdk.setLogger(null)
})

test('LOG-07 the control link: transport_degraded (warn) once when it breaks, transport_restored (info) once when it is back', async () => {
  const { startFaultProxy } = await import('./faultproxy.mjs')
  const proxy = await startFaultProxy(env.net.url)
  const lines = []
  const restored = deferred()
  const degradedSeen = deferred()
  const logger = {
    error: () => {},
    warn: (m) => {
      lines.push(['warn', m])
      if (/event=transport_degraded/.test(m)) degradedSeen.resolve()
    },
    info: (m) => {
      lines.push(['info', m])
      if (/event=transport_restored/.test(m)) restored.resolve()
    },
    debug: () => {},
  }
  try {
    const h = await env.agent('flaky_link', async () => ({}), { realtimeOrigin: proxy.url, logger })
    proxy.refuse = true
    proxy.reset()
    // the agent sees the outage (the warning); then the link comes back
    await degradedSeen.promise
    proxy.refuse = false
    await restored.promise
    const degraded = lines.filter(([, m]) => /event=transport_degraded/.test(m))
    assert.equal(degraded.length, 1, JSON.stringify(lines))
    assert.equal(degraded[0][0], 'warn')
    assert.match(degraded[0][1], /category=(network_down|network_issues|timeout)/)
    assert.equal(lines.filter(([, m]) => /event=transport_restored/.test(m)).length, 1)
    await h.stop(0)
  } finally {
    sdk.setLogger(null)
    await proxy.close()
  }
})
