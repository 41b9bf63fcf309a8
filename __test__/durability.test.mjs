// Issues 7 and 10 (part): the devnet keeps what it acknowledged across SIGKILL and restart, mid-task
// and mid-stream; a caller process that dies resumes its task with connect(taskId).
import { test } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { pathToFileURL } from 'node:url'
import { sdk, deferred, startCli, kill9, runNode } from './helpers.mjs'

const sdkUrl = pathToFileURL(path.resolve(import.meta.dirname, '..', 'index.js')).href
const card = { identity: { agentName: 'durable' }, capabilities: { taskKinds: ['request'] }, runtime: { handler: './h.js' }, streams: { _default: { direction: 'outbound', format: 'events' } } }

test('devnet SIGKILL and restart mid-task and mid-stream: nothing acknowledged is lost', { timeout: 90_000 }, async () => {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'devnet-kill-'))
  let devnet = await startCli(['--port', '0', '--data-dir', dataDir, '--log', 'warn'])
  const { port, env } = devnet
  const gates = { task: deferred(), stream: deferred() }
  const agent = await sdk.startAgentInstance({
    agentName: 'durable',
    card,
    apiKey: env.BLOCKS_API_KEY,
    cdmUrl: env.BLOCKS_CDM_URL,
    concurrency: 4,
    handler: async (task, ctx) => {
      const mode = ctx.requestParts[0]?.text
      if (mode === 'quick') return { artifacts: [{ data: 'quick done' }] }
      if (mode === 'task') {
        ctx.reportStatus('before the kill')
        await gates.task.promise
        ctx.reportStatus('after the restart')
        return { artifacts: [{ data: 'survived' }] }
      }
      const s = await ctx.createStream()
      for (let i = 1; i <= 5; i++) s.write({ n: i })
      await s.flush()
      await gates.stream.promise
      for (let i = 6; i <= 10; i++) s.write({ n: i })
      await s.end()
      return {}
    },
  })
  const client = await sdk.TaskClient.create({ billingMode: 'free', apiKey: env.BLOCKS_API_KEY, cdmUrl: env.BLOCKS_CDM_URL })
  try {
    const quick = await client.sendMessage({ agentName: 'durable', requestParts: [sdk.textPart('quick')] })
    assert.equal((await quick.waitForTerminal(15_000)).state, 'completed')

    const task = await client.sendMessage({ agentName: 'durable', requestParts: [sdk.textPart('task')] })
    const statuses = []
    const before = deferred()
    task.onProgress((e) => {
      if (e.message) statuses.push(e.message)
      if (e.message === 'before the kill') before.resolve()
    })
    const streamed = await client.sendMessage({ agentName: 'durable', requestParts: [sdk.textPart('stream')], stream: true })
    const reader = await (await streamed.waitForStream()).open()
    const items = []
    const firstFive = deferred()
    const readAll = (async () => {
      for await (const e of reader.events()) {
        items.push(e.n)
        if (items.length === 5) firstFive.resolve()
      }
    })()
    await before.promise
    await firstFive.promise

    await kill9(devnet.child)
    devnet = await startCli(['--port', String(port), '--data-dir', dataDir, '--log', 'warn'])
    gates.task.resolve()
    gates.stream.resolve()

    const t = await task.waitForTerminal(45_000)
    assert.equal(t.state, 'completed')
    assert.deepEqual(statuses, ['before the kill', 'after the restart'], 'each status once, in order')
    assert.equal(sdk.decodeInlineArtifact(task.listArtifacts()[0].artifactRef).toString(), 'survived')
    await readAll
    assert.deepEqual(items, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 'the stream resumes across the restart, in order, once')
    assert.equal((await streamed.waitForTerminal(45_000)).state, 'completed')

    // what was acknowledged before the kill is still there: the task list, states and history
    const again = await sdk.TaskClient.create({ billingMode: 'free', apiKey: env.BLOCKS_API_KEY, cdmUrl: env.BLOCKS_CDM_URL })
    const listed = await again.listTasks()
    assert.deepEqual(new Set(listed.tasks.map((x) => x.taskId)), new Set([quick.taskId, task.taskId, streamed.taskId]))
    const replay = await again.connect(quick.taskId)
    assert.equal(replay.state, 'completed')
    assert.equal(sdk.decodeInlineArtifact(replay.listArtifacts()[0].artifactRef).toString(), 'quick done')
    again.destroy()
  } finally {
    client.destroy()
    await agent.stop(0)
    await kill9(devnet.child)
    fs.rmSync(dataDir, { recursive: true, force: true })
  }
})

test('a caller process killed mid-task: a new process resumes it with connect(taskId) and sees every event once', { timeout: 60_000 }, async () => {
  const net = await sdk.LocalNetwork.start()
  const gate = deferred()
  const agent = await sdk.startAgentInstance({
    agentName: 'slow_steps',
    apiKey: net.apiKey,
    cdmUrl: net.cdmUrl,
    handler: async (task, ctx) => {
      ctx.reportStatus('step 1')
      await gate.promise
      await new Promise((r) => setTimeout(r, 1005)) // past the 1 s status throttle
      ctx.reportStatus('step 2')
      return { artifacts: [{ data: 'finished' }] }
    },
  })
  try {
    const env = { BLOCKS_CDM_URL: net.cdmUrl, BLOCKS_API_KEY: net.apiKey, LOG_LEVEL: 'warn' }
    // the first caller sends the task, prints its id once step 1 is seen, and then is killed
    const first = runNode(
      `const { default: sdk } = await import(${JSON.stringify(sdkUrl)})
      const c = await sdk.TaskClient.create({ billingMode: 'free', apiKey: process.env.BLOCKS_API_KEY })
      const s = await c.sendMessage({ agentName: 'slow_steps', requestParts: [] })
      s.onProgress((e) => e.message === 'step 1' && console.log('TASK ' + s.taskId))
      await new Promise(() => {})`,
      { env, timeoutMs: 30_000, onStdout: (text, child) => /TASK t_/.test(text) && child.kill('SIGKILL') },
    )
    const r1 = await first
    assert.equal(r1.signal, 'SIGKILL', r1.stderr)
    const taskId = /TASK (t_\w+)/.exec(r1.stdout)[1]
    gate.resolve()
    const second = await runNode(
      `const { default: sdk } = await import(${JSON.stringify(sdkUrl)})
      const c = await sdk.TaskClient.create({ billingMode: 'free', apiKey: process.env.BLOCKS_API_KEY })
      const s = await c.connect(${JSON.stringify(taskId)})
      const t = await s.waitForTerminal(30_000)
      const seen = s.listEvents().filter((e) => e.type === 'progress' && e.message).map((e) => e.message)
      console.log(JSON.stringify({ state: t.state, seen, artifact: sdk.decodeInlineArtifact(s.listArtifacts()[0].artifactRef).toString() }))
      c.destroy()`,
      { env, timeoutMs: 40_000 },
    )
    assert.equal(second.code, 0, second.stderr)
    assert.deepEqual(JSON.parse(second.stdout.trim().split('\n').pop()), { state: 'completed', seen: ['step 1', 'step 2'], artifact: 'finished' })
  } finally {
    await agent.stop(0)
    await net.stop()
  }
})
