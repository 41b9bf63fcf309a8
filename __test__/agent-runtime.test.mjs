// Issue 18: the agent runtime as the official SDK has it: the handle's members, and an agent that
// never sits deaf on its control channel.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { startNetwork, sdk, deferred, artifactText } from './helpers.mjs'

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

test('AGT-13 control access refused again after every re-registration: the agent backs off, then stops and says so; a task sent afterwards runs on the next instance (not lost)', async () => {
  const logs = []
  const revokes = []
  const stopped = deferred()
  const dropped = deferred()
  const handler = async (task) => ({ artifacts: [{ data: `ok ${task.requestParts[0].text}`, mimeType: 'text/plain' }] })
  try {
    const h = await env.agent('always_revoked', handler, {
      logger: {
        error: (m) => {
          logs.push(['error', m, Date.now()])
          if (/shuts down/.test(m)) stopped.resolve(m)
        },
        // every time it registers again, its new control token is revoked too
        warn: (m) => {
          logs.push(['warn', m, Date.now()])
          if (/registered again/.test(m)) revokes.push(revokeControl(h.controlChannel))
        },
        // the embedded devnet logs here too: it says when it drops the stopped instance
        info: (m) => {
          if (m.includes(`instance ${h.instanceId} stopped heartbeating`)) dropped.resolve()
        },
        debug: () => {},
      },
    })
    const first = await client.sendMessage({ agentName: 'always_revoked', requestParts: [textPart('1')] })
    assert.equal((await first.waitForTerminal(15_000)).state, 'completed')
    revokes.push(revokeControl(h.controlChannel))
    const said = await Promise.race([
      stopped.promise,
      new Promise((resolve, reject) => setTimeout(() => reject(new Error(`the agent never stopped; logs: ${JSON.stringify(logs)}`)), 60_000).unref()),
    ])
    assert.match(said, /always_revoked .*shuts down: its control access was refused 5 times in a row/)
    const reregistered = logs.filter(([level, m]) => level === 'warn' && /registered again/.test(m))
    assert.equal(reregistered.length, 5, 'five re-registrations, then it stopped')
    // it backed off between refusals (0.5 + 1 + 2 + 4 s in all) instead of spinning
    const spread = reregistered.at(-1)[2] - reregistered[0][2]
    assert.ok(spread >= 7000, `re-registrations spread over ${spread} ms`)
    const revoked = await Promise.all(revokes)
    assert.equal(revoked.length, 6)
    // the stopped instance takes no task: its leave carried a revoked token, so the devnet
    // counts it live until its presence times out and then drops it (a task sent to it in
    // between fails agent_instance_lost: not silent). After that, a task waits for the next
    // instance of the agent and runs there.
    await dropped.promise
    const later = await client.sendMessage({ agentName: 'always_revoked', requestParts: [textPart('later')] })
    await env.agent('always_revoked', handler)
    const t = await later.waitForTerminal(30_000)
    assert.equal(t.state, 'completed', JSON.stringify(t))
    assert.equal(artifactText(later.listArtifacts()[0]), 'ok later')
  } finally {
    sdk.setLogger(null)
  }
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

test('AGT-14 SwitchEnvironment { environment, pamToken }: the control client moves to the other keyset with the new token; without a pamToken nothing changes', async () => {
  const { startHttpProxy } = await import('./httpproxy.mjs')
  const proxy = await startHttpProxy(env.net.url)
  const logs = []
  const logger = { error: (m) => logs.push(m), warn: () => {}, info: (m) => logs.push(m), debug: () => {} }
  try {
    const h = await env.agent('switcher', async () => ({}), { realtimeOrigin: proxy.url, logger })
    const send = (message, keyset = 'free') =>
      fetch(`${env.net.url}/publish/pub-c-devnet-${keyset}/sub-c-devnet-${keyset}/0/${h.controlChannel}/0?uuid=ops&store=0&auth=${env.net.serviceToken}&meta=${encodeURIComponent(JSON.stringify({ instance: h.instanceId }))}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(message),
      })
    const onPaid = () => proxy.find((r) => r.path === `/v2/subscribe/sub-c-devnet-paid/${h.controlChannel}/0`)
    const until = async (what, pred) => {
      for (let i = 0; i < 500; i++) {
        if (pred()) return
        await new Promise((r) => setTimeout(r, 20))
      }
      assert.fail(`${what} did not happen; logs: ${JSON.stringify(logs)}`)
    }
    assert.equal((await send({ type: 'SwitchEnvironment', environment: 'network' })).status, 200)
    await until('the rejection log', () => logs.some((m) => /pamToken is required/.test(m)))
    assert.equal(onPaid().length, 0, 'no new client without a token')
    assert.ok(!logs.some((m) => m.includes(env.net.serviceToken)))
    assert.equal((await send({ type: 'SwitchEnvironment', environment: 'network', pamToken: env.net.serviceToken })).status, 200)
    await until('a control subscribe on the paid keyset', () => onPaid().length > 0)
    assert.equal(onPaid()[0].query.auth, env.net.serviceToken, 'the new client carries the new token')
    await until('the old client leaving', () => proxy.find((r) => r.path.startsWith(`/v2/presence/sub-key/sub-c-devnet-free/channel/${h.controlChannel}/leave`)).length > 0)
    assert.ok(logs.some((m) => /switches its control client from playground to network \(token: present\)/.test(m)), JSON.stringify(logs))
    assert.ok(!logs.some((m) => m.includes(env.net.serviceToken)), 'token values are never logged')
    // and back: network -> playground
    const freeSubscribes = () => proxy.find((r) => r.path === `/v2/subscribe/sub-c-devnet-free/${h.controlChannel}/0`).length
    const before = freeSubscribes()
    assert.equal((await send({ type: 'SwitchEnvironment', environment: 'playground', pamToken: env.net.serviceToken }, 'paid')).status, 200)
    await until('a control subscribe on the free keyset again', () => freeSubscribes() > before)
    await until('the paid client leaving', () => proxy.find((r) => r.path.startsWith(`/v2/presence/sub-key/sub-c-devnet-paid/channel/${h.controlChannel}/leave`)).length > 0)
    assert.ok(logs.some((m) => /switches its control client from network to playground \(token: present\)/.test(m)), JSON.stringify(logs))
    await h.stop(0)
  } finally {
    sdk.setLogger(null)
    await proxy.close()
  }
})

test('AGT-15 maxRunningTimeSec: the option wins over the card, with one info line when they differ', async () => {
  const infos = []
  const logger = { error: () => {}, warn: () => {}, info: (m) => infos.push(m), debug: () => {} }
  const card = { identity: { agentName: 'x' }, capabilities: { taskKinds: ['request'] }, runtime: { handler: './h.js', maxRunningTimeSec: 300 } }
  try {
    const h = await env.agent('runtime_override', async () => ({}), { card, maxRunningTimeSec: 90, logger })
    assert.deepEqual(infos.filter((m) => /maxRunningTimeSec/.test(m)), ["maxRunningTimeSec 90 from the options overrides the card's 300"])
    await h.stop(0)
    const same = await env.agent('runtime_same', async () => ({}), { card, maxRunningTimeSec: 300, logger })
    assert.equal(infos.filter((m) => /maxRunningTimeSec/.test(m)).length, 1, 'nothing when they agree')
    await same.stop(0)
  } finally {
    sdk.setLogger(null)
  }
})

test('ERR-04 AUTH-21 an agent forced offline on a token refresh gets AgentAuthFatalError, then shuts down cleanly and says so', async () => {
  const { startHttpProxy } = await import('./httpproxy.mjs')
  const proxy = await startHttpProxy(env.net.url)
  const errors = []
  const shutDown = deferred()
  const logger = {
    error: (m) => {
      errors.push(m)
      if (/shuts down/.test(m)) shutDown.resolve()
    },
    warn: () => {},
    info: () => {},
    debug: () => {},
  }
  try {
    proxy.intercept = (r) => {
      if (r.path === '/api/v1/rpc' && r.json?.method === 'ListTasks') return { status: 401, json: { error: 'token expired' } }
      if (r.path === '/api/v1/auth/agent/refresh') return { status: 401, json: { error: 'agent forced offline', code: 'AGENT_FORCED_OFFLINE' } }
      return undefined
    }
    const seen = deferred()
    await env.agent('offline_agent', async (task, ctx) => {
      try {
        await ctx.taskClient.listTasks({})
        seen.resolve('no error')
      } catch (e) {
        seen.resolve(`${e.name} ${e instanceof sdk.AgentAuthFatalError}`)
      }
      // the handler stays: the task's end is the shutdown's
      return new Promise(() => {})
    }, { baseUrl: proxy.url, logger })
    const s = await client.sendMessage({ agentName: 'offline_agent', requestParts: [] })
    assert.equal(await seen.promise, 'AgentAuthFatalError true')
    await shutDown.promise
    const t = await s.waitForTerminal(15_000)
    assert.deepEqual([t.state, t.error], ['failed', 'agent_auth_fatal'])
    assert.ok(errors.some((m) => /AGENT_FORCED_OFFLINE/.test(m) && /takes no more tasks/.test(m)), JSON.stringify(errors))
  } finally {
    proxy.intercept = null
    sdk.setLogger(null)
    await proxy.close()
  }
})
