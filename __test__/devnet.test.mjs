// Issue 7 (part): the devnet as a product — the CLI as a child process, two networks side by
// side, and many agents with several instances each.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { sdk, runNodeArgs, startCli, devnetCli as cli } from './helpers.mjs'

test('blocks-devnet CLI: flags, exports, send and tasks subcommands, clean Ctrl-C', async () => {
  const help = await runNodeArgs([cli, '--help'])
  assert.equal(help.code, 0)
  assert.match(help.stdout, /blocks-devnet send AGENT TEXT/)
  const bad = await runNodeArgs([cli, '--port', 'x'])
  assert.equal(bad.code, 2)
  assert.match(bad.stderr, /--port needs a number 0-65535, got "x"/)
  const unknown = await runNodeArgs([cli, '--frobnicate'])
  assert.equal(unknown.code, 2)
  assert.match(unknown.stderr, /unknown flag --frobnicate/)
  // one parser (crates/blocks-devnet/src/cli.rs) for the JS CLI and the Rust binary: an empty key is refused by both
  const empty = await runNodeArgs([cli, '--api-key', ':someone'])
  assert.equal(empty.code, 2)
  assert.match(empty.stderr, /--api-key needs a non-empty key \(KEY or KEY:USER\)/)

  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'devnet-cli-'))
  const { child, env, port } = await startCli(['--port', '0', '--api-key', 'bk_cli:cli_user', '--agent', 'premium:paid', '--data-dir', dataDir])
  assert.equal(env.BLOCKS_API_KEY, 'bk_cli')
  assert.match(env.BLOCKS_CDM_URL, /^http:\/\/127\.0\.0\.1:\d+\/config\.json$/)
  assert.ok(fs.existsSync(path.join(dataDir, 'files')), 'the file store lives in --data-dir')
  const agent = await sdk.startAgentInstance({
    agentName: 'cli_echo',
    apiKey: env.BLOCKS_API_KEY,
    cdmUrl: env.BLOCKS_CDM_URL,
    handler: (task, ctx) => {
      ctx.reportStatus('echoing')
      return { artifacts: [{ data: `Echo: ${ctx.requestParts.map((p) => p.text).join(' ')}`, mimeType: 'text/plain' }] }
    },
  })
  try {
    // --agent premium:paid registers premium as a paid agent; other agents are free
    const registry = async (name) => {
      const r = await fetch(`http://127.0.0.1:${port}/api/v1/registry/agents?agentName=${name}`, { headers: { authorization: `Bearer ${env.BLOCKS_API_KEY}` } })
      assert.equal(r.status, 200)
      return (await r.json()).agent
    }
    assert.equal((await registry('premium')).billingMode, 'paid')
    assert.equal((await registry('cli_echo')).billingMode, 'free')
    assert.equal((await registry('not_flagged')).billingMode, 'free', 'an agent first seen through the registry, not named by --agent')
    const free = await sdk.TaskClient.create({ billingMode: 'free', apiKey: env.BLOCKS_API_KEY, cdmUrl: env.BLOCKS_CDM_URL })
    await assert.rejects(free.sendMessage({ agentName: 'premium', requestParts: [] }), (e) => e instanceof sdk.BillingModeMismatchError && e.expected === 'paid' && e.got === 'free')
    free.destroy()

    const sent = await runNodeArgs([cli, 'send', 'cli_echo', 'hello', 'cli'], { env: { ...env, LOG_LEVEL: 'warn' } })
    assert.equal(sent.code, 0, sent.stderr)
    assert.match(sent.stdout, /^task t_[a-z0-9]+/m)
    assert.match(sent.stdout, /progress: echoing/)
    assert.match(sent.stdout, /artifact text\/plain: Echo: hello cli/)
    assert.match(sent.stdout, /terminal: completed/)
    const taskId = sent.stdout.match(/task (t_[a-z0-9]+)/)[1]

    const listed = await runNodeArgs([cli, 'tasks', '--agent', 'cli_echo'], { env: { ...env, LOG_LEVEL: 'warn' } })
    assert.equal(listed.code, 0, listed.stderr)
    assert.match(listed.stdout, /^TASK\s+AGENT\s+STATE\s+CREATED/)
    assert.match(listed.stdout, new RegExp(`${taskId}\\s+cli_echo\\s+completed`))

    const missing = await runNodeArgs([cli, 'send', 'nobody_here', 'x'], { env: { ...env, LOG_LEVEL: 'warn' } })
    assert.equal(missing.code, 1)
    assert.match(missing.stderr, /nobody_here/)
    const noKey = await runNodeArgs([cli, 'tasks'], { env: { ...env, BLOCKS_API_KEY: '' } })
    assert.equal(noKey.code, 1)
    assert.match(noKey.stderr, /BLOCKS_API_KEY is not set/)
  } finally {
    await agent.stop(0)
    const exited = new Promise((r) => child.once('exit', (code, signal) => r({ code, signal })))
    child.kill('SIGINT')
    assert.deepEqual(await exited, { code: 0, signal: null })
    fs.rmSync(dataDir, { recursive: true, force: true })
  }
})

test('blocks-devnet CLI: data directory by default, --in-memory, --log debug prints each request, bad combinations', async () => {
  const both = await runNodeArgs([cli, '--in-memory', '--data-dir', 'x'])
  assert.equal(both.code, 2)
  assert.match(both.stderr, /--in-memory and --data-dir exclude each other/)
  const level = await runNodeArgs([cli, '--log', 'loud'])
  assert.equal(level.code, 2)
  assert.match(level.stderr, /--log must be error, warn, info or debug, got "loud"/)

  const cwd = fs.mkdtempSync(path.join(os.tmpdir(), 'devnet-cwd-'))
  try {
    const stop = async (child) => {
      const exited = new Promise((r) => child.once('exit', (code, signal) => r({ code, signal })))
      child.kill('SIGINT')
      assert.deepEqual(await exited, { code: 0, signal: null })
    }
    const durable = await startCli(['--port', '0', '--log', 'debug'], { cwd })
    assert.match(durable.out, new RegExp(`data in ${path.join(cwd, '.blocks-devnet').replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`))
    assert.ok(fs.existsSync(path.join(cwd, '.blocks-devnet', 'devnet.db')), 'the database is created in ./.blocks-devnet')
    const logged = new Promise((resolve) => {
      let seen = ''
      const look = (d) => {
        seen += d
        if (/GET \/config\.json/.test(seen)) resolve(seen)
      }
      durable.child.stdout.on('data', look)
      durable.child.stderr.on('data', look)
    })
    assert.equal((await fetch(durable.env.BLOCKS_CDM_URL)).status, 200)
    assert.match(await logged, /GET \/config\.json/, '--log debug prints one line per request')
    await stop(durable.child)

    // Ctrl-C right after the network is announced stops it cleanly (it used to be killed by the
    // default SIGINT action about half the time: the handler was installed after printing)
    for (let i = 0; i < 8; i++) {
      const throwaway = await startCli(['--port', '0', '--in-memory'], { cwd })
      assert.match(throwaway.out, /in memory: nothing is kept/)
      await stop(throwaway.child)
    }
  } finally {
    fs.rmSync(cwd, { recursive: true, force: true })
  }
})

test('LocalNetwork.start({ agents }) runs agents with the network and stops them with it', async () => {
  await assert.rejects(sdk.LocalNetwork.start({ agents: [{ agentName: 'x' }] }), /agents\[0\]\.handler must be a function/)
  await assert.rejects(sdk.LocalNetwork.start({ agents: [{ agentName: 'x', handler: () => ({}), instances: 0 }] }), /instances must be a whole number >= 1/)
  await assert.rejects(sdk.LocalNetwork.start({ inMemory: true, dataDir: '/tmp/x' }), /exclude each other/)
  const net = await sdk.LocalNetwork.start({
    agents: [
      { agentName: 'embedded_echo', instances: 2, handler: (task, ctx) => ({ artifacts: [{ data: `echo ${ctx.requestParts[0].text}` }] }) },
      { agentName: 'embedded_other', handler: () => ({}) },
    ],
  })
  try {
    assert.deepEqual(net.agents.map((a) => a.agentName), ['embedded_echo', 'embedded_echo', 'embedded_other'])
    const c = await sdk.TaskClient.create({ billingMode: 'free', apiKey: net.apiKey, cdmUrl: net.cdmUrl })
    const s = await c.sendMessage({ agentName: 'embedded_echo', requestParts: [sdk.textPart('hi')] })
    await s.waitForTerminal(15_000)
    assert.equal(sdk.decodeInlineArtifact(s.listArtifacts()[0].artifactRef).toString(), 'echo hi')
    c.destroy()
  } finally {
    const agents = [...net.agents]
    await net.stop()
    assert.equal(net.agents.length, 0)
    await Promise.all(agents.map((a) => a.stop())) // idempotent after the network stopped them
  }
})

test('two networks side by side keep their agents and tasks apart', async () => {
  const a = await sdk.LocalNetwork.start()
  const b = await sdk.LocalNetwork.start()
  const started = []
  try {
    assert.notEqual(a.port, b.port)
    for (const [net, label] of [[a, 'A'], [b, 'B']]) {
      started.push(await sdk.startAgentInstance({ agentName: 'twin', apiKey: net.apiKey, cdmUrl: net.cdmUrl, handler: () => ({ artifacts: [{ data: label }] }) }))
    }
    for (const [net, label] of [[a, 'A'], [b, 'B']]) {
      const c = await sdk.TaskClient.create({ billingMode: 'free', apiKey: net.apiKey, cdmUrl: net.cdmUrl })
      const s = await c.sendMessage({ agentName: 'twin', requestParts: [] })
      await s.waitForTerminal(15_000)
      assert.equal(sdk.decodeInlineArtifact(s.listArtifacts()[0].artifactRef).toString(), label)
      assert.equal((await c.listTasks()).tasks.length, 1)
      c.destroy()
    }
  } finally {
    await Promise.all(started.map((x) => x.stop(0)))
    await a.stop()
    await b.stop()
  }
})

test('50 agents x 2 instances register and share their tasks', async () => {
  const net = await sdk.LocalNetwork.start()
  const instances = []
  try {
    const opts = { apiKey: net.apiKey, cdmUrl: net.cdmUrl, concurrency: 1 }
    for (let i = 0; i < 50; i++) {
      for (let k = 0; k < 2; k++) {
        let release
        const gate = new Promise((r) => (release = r))
        const inst = await sdk.startAgentInstance({
          agentName: `many_${i}`,
          ...opts,
          handler: async () => {
            await gate // hold the only slot until both tasks of this agent are running
            return { artifacts: [{ data: `${i}/${k}` }] }
          },
        })
        instances.push({ inst, release, agent: i })
      }
    }
    const client = await sdk.TaskClient.create({ billingMode: 'free', apiKey: net.apiKey, cdmUrl: net.cdmUrl })
    const sessions = []
    for (let i = 0; i < 50; i++) for (let j = 0; j < 2; j++) sessions.push(await client.sendMessage({ agentName: `many_${i}`, requestParts: [] }))
    // every instance holds exactly one task: each agent's two tasks went to its two instances
    await Promise.all(sessions.map((s) => new Promise((r) => (s.state === 'running' ? r() : s.onProgress((e) => e.state === 'running' && r())))))
    assert.ok(instances.every((x) => x.inst.activeTasks === 1), 'each of the 100 instances runs one task')
    for (const x of instances) x.release()
    const results = await Promise.all(sessions.map(async (s) => (await s.waitForTerminal(30_000), sdk.decodeInlineArtifact(s.listArtifacts()[0].artifactRef).toString())))
    for (let i = 0; i < 50; i++) assert.deepEqual(results.slice(2 * i, 2 * i + 2).sort(), [`${i}/0`, `${i}/1`])
    client.destroy()
  } finally {
    await Promise.all(instances.map((x) => x.inst.stop(0)))
    await net.stop()
  }
})

test('access control: callers read only their own task channels, agents only their control channel, writes need the task token', async () => {
  const net = await sdk.LocalNetwork.start({ apiKeys: [['bk_alice', 'alice'], ['bk_bob', 'bob']] })
  const sub = 'sub-c-devnet-free'
  const get = async (p) => (await fetch(`${net.url}${p}`)).status
  const post = async (channel, auth, body) =>
    (await fetch(`${net.url}/publish/pub-c-devnet-free/${sub}/0/${channel}/0?uuid=x${auth ? `&auth=${auth}` : ''}`, { method: 'POST', body: JSON.stringify(body) })).status
  const agents = []
  try {
    agents.push(await sdk.startAgentInstance({ agentName: 'guarded', apiKey: 'bk_alice', cdmUrl: net.cdmUrl, handler: () => ({ artifacts: [{ data: 'secret' }] }) }))
    agents.push(await sdk.startAgentInstance({ agentName: 'other_agent', apiKey: 'bk_bob', cdmUrl: net.cdmUrl, handler: () => ({}) }))
    const alice = await sdk.TaskClient.create({ billingMode: 'free', apiKey: 'bk_alice', cdmUrl: net.cdmUrl })
    const bob = await sdk.TaskClient.create({ billingMode: 'free', apiKey: 'bk_bob', cdmUrl: net.cdmUrl })
    const mine = await alice.sendMessage({ agentName: 'guarded', requestParts: [] })
    await mine.waitForTerminal(15_000)
    const theirs = await bob.sendMessage({ agentName: 'guarded', requestParts: [] })
    await theirs.waitForTerminal(15_000)
    const ch = mine.statusChannel

    // reading a task channel: its own read token only
    assert.equal(await get(`/v3/history/sub-key/${sub}/channel/${ch}?auth=${mine.readToken}`), 200)
    assert.equal(await get(`/v3/history/sub-key/${sub}/channel/${ch}`), 403)
    assert.equal(await get(`/v3/history/sub-key/${sub}/channel/${ch}?auth=${theirs.readToken}`), 403)
    assert.equal(await get(`/v2/subscribe/${sub}/${ch}/0?tt=1000&uuid=bob&auth=${theirs.readToken}`), 403)
    assert.equal(await get(`/v2/subscribe/${sub}/${ch}/0?tt=1000&uuid=bob&auth=tok_made_up`), 403)
    // through the SDK: bob cannot connect to alice's task, alice can
    await assert.rejects(bob.connect(mine.taskId), /another user|403|not found/i)
    assert.equal((await alice.connect(mine.taskId)).state, 'completed')

    // writing to a task channel: a read token is not enough
    assert.equal(await post(ch, mine.readToken, { type: 'terminal', state: 'failed' }), 403)
    assert.equal(await post(ch, undefined, { type: 'terminal', state: 'failed' }), 403)

    // control channels: only their own control token (bob's agent cannot listen to alice's)
    const [guarded, other] = agents
    assert.equal(await get(`/v2/subscribe/${sub}/${guarded.controlChannel}/0?tt=1000&uuid=x`), 403)
    assert.equal(await post(guarded.controlChannel, undefined, { type: 'StartTask', taskId: 'forged' }), 403)
    assert.notEqual(guarded.controlChannel, other.controlChannel)
    // presence too: nobody else can keep alice's instance alive, make it leave, or set its state
    const presence = `/v2/presence/sub-key/${sub}/channel/${guarded.controlChannel}`
    const bobsControl = await (await fetch(`${net.url}/api/v1/auth/agent/connect`, { method: 'POST', headers: { authorization: 'Bearer bk_bob', 'content-type': 'application/json' }, body: JSON.stringify({ agentName: 'other_agent', instanceId: 'AG-other_agent-x' }) })).json()
    for (const auth of ['', `&auth=${bobsControl.pamToken}`, `&auth=${theirs.readToken}`]) {
      assert.equal(await get(`${presence}/heartbeat?uuid=${guarded.instanceId}&heartbeat=60${auth}`), 403)
      assert.equal(await get(`${presence}/leave?uuid=${guarded.instanceId}${auth}`), 403)
      assert.equal(await get(`${presence}/uuid/${guarded.instanceId}/data?state=%7B%7D${auth}`), 403)
    }

    // API keys and backend tokens are checked
    const bad = await fetch(`${net.url}/api/v1/auth/agent/consumer-token`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ apiKey: 'bk_nobody' }) })
    assert.equal(bad.status, 401)
    assert.match(await bad.text(), /API_KEY_INVALID/)
    const rpc = await fetch(`${net.url}/api/v1/rpc`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'GetTask', params: { taskId: mine.taskId } }) })
    assert.equal(rpc.status, 401, 'an RPC without a token is refused with HTTP 401')
    const rpcBody = await rpc.json()
    assert.equal(rpcBody.result, undefined)
    assert.equal(rpcBody.error?.code, 401)
    assert.match(rpcBody.error?.message, /^Unauthorized/)
    await assert.rejects(bob.getTask(mine.taskId), /not found/i)

    // the network's service token passes every rule (for tests and tools)
    assert.equal(await get(`/v3/history/sub-key/${sub}/channel/${ch}?auth=${net.serviceToken}`), 200)
    alice.destroy()
    bob.destroy()
  } finally {
    await Promise.all(agents.map((a) => a.stop(0)))
    await net.stop()
  }
})
