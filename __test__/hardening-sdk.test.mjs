// Issue 20 (SDK side): careless and hostile input on the caller's machine.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { startNetwork, sdk } from './helpers.mjs'
import { startHttpProxy } from './httpproxy.mjs'

const { textPart } = sdk

let env
let client
let tmp
before(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'blocks-hardening-'))
  env = await startNetwork()
  // artifacts with the names an agent may send: hostile, reserved, with control characters, large
  await env.agent('namer', async (task) => {
    const names = JSON.parse(task.requestParts[0].text)
    return { artifacts: names.map((fileName, i) => ({ data: i === 0 ? Buffer.alloc(20_000, 1) : `artifact ${i}`, mimeType: 'application/octet-stream', fileName })) }
  }, { concurrency: 4 })
  client = await env.client()
})
after(async () => {
  await env.stop()
  fs.rmSync(tmp, { recursive: true, force: true })
})

async function artifactsNamed(names) {
  const s = await client.sendMessage({ agentName: 'namer', requestParts: [textPart(JSON.stringify(names))] })
  assert.equal((await s.waitForTerminal(15_000)).state, 'completed')
  return s
}

test('saveArtifacts never follows a planted symlink and never overwrites an existing file unless asked', async () => {
  const dir = path.join(tmp, 'planted')
  fs.mkdirSync(dir)
  const victim = path.join(tmp, 'victim.txt')
  fs.writeFileSync(victim, 'precious')
  fs.symlinkSync(victim, path.join(dir, 'big.bin')) // a file artifact (20 KB) would land here
  fs.symlinkSync(victim, path.join(dir, 'note.txt')) // an inline one here
  fs.writeFileSync(path.join(dir, 'keep.txt'), 'mine')
  const s = await artifactsNamed(['big.bin', 'note.txt', 'keep.txt'])
  const paths = await s.saveArtifacts(dir)
  assert.equal(fs.readFileSync(victim, 'utf8'), 'precious', 'the symlinks were not followed')
  assert.equal(fs.readFileSync(path.join(dir, 'keep.txt'), 'utf8'), 'mine', 'the existing file was not overwritten')
  assert.deepEqual(paths.map((p) => path.basename(p)), ['big-1.bin', 'note-1.txt', 'keep-1.txt'])
  assert.equal(fs.readFileSync(paths[0]).length, 20_000)
  assert.equal(fs.readFileSync(paths[2], 'utf8'), 'artifact 2')
  for (const p of paths) assert.ok(fs.lstatSync(p).isFile())
  // overwrite: true replaces a regular file, but never a symlink
  const again = await s.saveArtifacts(path.join(tmp, 'fresh'))
  assert.deepEqual(again.map((p) => path.basename(p)), ['big.bin', 'note.txt', 'keep.txt'])
  fs.writeFileSync(path.join(dir, 'keep.txt'), 'old')
  const overwritten = await artifactsNamed(['keep.txt'])
  assert.deepEqual(await overwritten.saveArtifacts(dir, { overwrite: true }), [path.join(dir, 'keep.txt')])
  assert.equal(fs.readFileSync(path.join(dir, 'keep.txt')).length, 20_000)
  const onLink = await artifactsNamed(['note.txt'])
  await assert.rejects(onLink.saveArtifacts(dir, { overwrite: true }), /not a regular file \(a symlink or a directory\)/)
  assert.equal(fs.readFileSync(victim, 'utf8'), 'precious')
  assert.deepEqual(fs.readdirSync(dir).filter((n) => n.startsWith('.blocks-save-')), [], 'no temporary file is left')
})

test('saveArtifacts turns hostile, reserved and control-character names into safe ones instead of failing', async () => {
  const s = await artifactsNamed(['../../escape.txt', 'CON', 'a\u0001b\u001f.txt', '/etc/passwd', '', 'nul.txt'])
  const dir = path.join(tmp, 'names')
  const paths = await s.saveArtifacts(dir)
  assert.equal(paths.length, 6)
  for (const p of paths) assert.equal(path.dirname(p), dir, p)
  assert.deepEqual(paths.map((p) => path.basename(p)), ['escape.txt', '_CON', 'a_b_.txt', 'passwd', 'artifact-4', '_nul.txt'])
})

test('saveArtifacts writes into the directory the user named, even when that directory is a symlink (as mkdir -p does)', async () => {
  const elsewhere = path.join(tmp, 'elsewhere')
  fs.mkdirSync(elsewhere)
  const parent = path.join(tmp, 'parent')
  fs.mkdirSync(parent)
  fs.symlinkSync(elsewhere, path.join(parent, 'out'))
  // the given directory itself may be a symlink the user chose: that is followed, as mkdir -p does
  const s = await artifactsNamed(['x.txt'])
  await s.saveArtifacts(path.join(parent, 'out'))
  assert.deepEqual(fs.readdirSync(elsewhere), ['x.txt'])
})

test('isClosed is true as soon as waitForTerminal resolves, also for tasks that ended before sendMessage resolved', async () => {
  await env.agent('instant', async () => ({}), { concurrency: 8 })
  const open = []
  for (let i = 0; i < 60; i++) {
    const s = await client.sendMessage({ agentName: 'instant', requestParts: [] })
    await s.waitForTerminal(15_000)
    if (!s.isClosed) open.push(s.taskId)
  }
  assert.deepEqual(open, [], 'sessions still open right after their terminal')
})

test('no token, JWT or API key reaches a log line, even when publishes fail and the level is debug', async () => {
  const proxy = await startHttpProxy(env.net.url)
  const lines = []
  const capture = (level) => (m, meta) => lines.push(`${level} ${m} ${JSON.stringify(meta ?? {})}`)
  sdk.setLogger({ error: capture('error'), warn: capture('warn'), info: capture('info'), debug: capture('debug') })
  sdk.setLogLevel('debug')
  try {
    // the task channel refuses the agent's publishes: the agent logs what failed
    proxy.intercept = (r) => (r.path.startsWith('/publish/') && r.path.includes('/u.') ? { status: 403, json: { error: true, status: 403, message: 'Forbidden', service: 'Access Manager' } } : undefined)
    const h = await env.agent('leaky', async () => ({ artifacts: [{ data: 'x', mimeType: 'text/plain' }] }), { realtimeOrigin: proxy.url })
    const s = await client.sendMessage({ agentName: 'leaky', requestParts: [] })
    await s.waitForTerminal(3000).catch(() => {})
    await s.close()
    await h.stop(0)
    assert.ok(lines.some((l) => /could not publish/.test(l)), 'the failure was logged')
    const secrets = [env.net.apiKey, env.net.serviceToken, ...new Set(proxy.requests.map((r) => r.query.auth).filter(Boolean))]
    for (const l of lines) {
      for (const secret of secrets) assert.ok(!l.includes(secret), `a secret in: ${l.slice(0, 300)}`)
      assert.doesNotMatch(l, /auth=(?!\[redacted\])[^&\s"]+/, l.slice(0, 300))
    }
  } finally {
    proxy.intercept = null
    sdk.setLogLevel(process.env.LOG_LEVEL ?? 'info')
    sdk.setLogger(null)
    await proxy.close()
  }
})

test('a terminal whose publish got no answer (the connection dropped after the request was sent) is sent again: the task does not stay running', async () => {
  const proxy = await startHttpProxy(env.net.url)
  try {
    const h = await env.agent('terminal_retry', async () => ({}), { realtimeOrigin: proxy.url })
    const isTerminal = (r) => r.path.startsWith('/publish/') && r.json?.type === 'terminal'
    proxy.resetNext(2, isTerminal)
    const s = await client.sendMessage({ agentName: 'terminal_retry', requestParts: [] })
    assert.equal((await s.waitForTerminal(30_000)).state, 'completed')
    assert.equal(proxy.find(isTerminal).length, 3, 'two attempts without an answer, then the one the network took')
    assert.equal((await client.getTask(s.taskId)).state, 'completed')
    await h.stop(0)
  } finally {
    await proxy.close()
  }
})
