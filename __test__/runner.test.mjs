// `blocks-run` (bin/blocks-run.js) as a child process: handler lookup, TypeScript, start-up and
// shutdown lines, bad folders, and that it sets the SDK up itself (logs, error classes).
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { startNetwork, runNodeArgs, artifactText, deferred } from './helpers.mjs'

const blocksRun = fileURLToPath(new URL('../bin/blocks-run.js', import.meta.url))
const CLEAN = { LOG_LEVEL: undefined, BLOCKS_DEBUG_INTERNAL: undefined, BLOCKS_PROFILE: undefined, BLOCKS_CDM_URL: undefined, BLOCKS_API_KEY: undefined, AGENT_SHUTDOWN_GRACE_SEC: undefined }

let env
before(async () => {
  env = await startNetwork()
})
after(async () => {
  await env.stop()
})

function agentFolder(files) {
  const dir = mkdtempSync(path.join(tmpdir(), 'blocks-run-'))
  for (const [name, content] of Object.entries(files)) writeFileSync(path.join(dir, name), typeof content === 'string' ? content : JSON.stringify(content))
  return dir
}

const card = (agentName, runtime, displayName) => ({ identity: { agentName, ...(displayName ? { displayName } : {}) }, runtime })

/**
 * Start blocks-run in `dir`; `ready` resolves (with the child) once it printed its last start-up
 * line, and rejects if it exits first; `exited` resolves with { code, signal, stdout, stderr }.
 */
function start(dir, vars = {}) {
  const ready = deferred()
  const exited = runNodeArgs([blocksRun], {
    cwd: dir,
    env: { ...CLEAN, ...vars },
    timeoutMs: 60_000,
    onStdout: (all, child) => {
      if (all.includes('[blocks-run] press Ctrl+C to stop\n')) ready.resolve(child)
    },
  })
  exited.then(
    (r) => ready.reject(new Error(`blocks-run exited before it was ready: ${JSON.stringify(r)}`)),
    (e) => ready.reject(e),
  )
  ready.promise.catch(() => {}) // callers that only want the exit do not await it
  return { ready: ready.promise, exited }
}

const network = () => ({ BLOCKS_CDM_URL: env.net.cdmUrl, BLOCKS_API_KEY: env.net.apiKey })
const lines = (text) => text.split('\n').filter(Boolean)

/** Run one task on a blocks-run agent and stop it with `signal`; returns the task's artifact text and the run. */
async function runOnce(dir, agentName, signal, vars) {
  const { ready, exited } = start(dir, vars)
  const child = await ready
  const client = await env.client()
  const s = await client.sendMessage({ agentName, requestParts: [] })
  const t = await s.waitForTerminal(15_000)
  assert.equal(t.state, 'completed', JSON.stringify(t))
  child.kill(signal)
  const run = await exited
  return { text: artifactText(s.listArtifacts()[0]), run, taskId: s.taskId }
}

const HANDLER_TS = (exports) => `
interface Task { taskId: string }
type Result = { artifacts: Array<{ data: string; mimeType: string }> }
const reply = (text: string): Result => ({ artifacts: [{ data: text, mimeType: 'text/plain' }] })
${exports}
`

test('AGT-16 SHUT-02 blocks-run takes runtime.handlerExport, then handler, then default; .ts runs without a build step; prints its lines; SIGINT/SIGTERM exit 0', async () => {
  const cases = [
    {
      name: 'run_custom',
      runtime: { handler: './handler.ts', handlerExport: 'custom' },
      files: {
        'handler.ts': HANDLER_TS(`export const custom = async (task: Task): Promise<Result> => reply('custom')
export async function handler(task: Task): Promise<Result> { return reply('handler') }
export default async function (task: Task): Promise<Result> { return reply('default') }`),
      },
      expected: 'custom',
      signal: 'SIGINT',
    },
    {
      name: 'run_named',
      runtime: { handler: './handler.ts' },
      files: {
        'handler.ts': HANDLER_TS(`export async function handler(task: Task): Promise<Result> { return reply('handler') }
export default async function (task: Task): Promise<Result> { return reply('default') }`),
      },
      expected: 'handler',
      signal: 'SIGTERM',
    },
    {
      // a configured export that is missing falls back to handler / default
      name: 'run_default',
      runtime: { handler: './agent.mjs', handlerExport: 'missing' },
      files: { 'agent.mjs': `export default async () => ({ artifacts: [{ data: 'default', mimeType: 'text/plain' }] })\nexport const handler = 'not a function'\n` },
      expected: 'default',
      signal: 'SIGINT',
    },
    {
      name: 'run_cjs',
      runtime: { handler: './agent.cjs' },
      files: { 'agent.cjs': `module.exports = { handler: async () => ({ artifacts: [{ data: 'cjs handler', mimeType: 'text/plain' }] }) }\n` },
      expected: 'cjs handler',
      signal: 'SIGTERM',
    },
  ]
  for (const c of cases) {
    // the credentials and LOG_LEVEL come from the folder's .env (the environment's empty values do not win)
    const dir = agentFolder({
      'agent-card.json': card(c.name, c.runtime, `Runner ${c.expected}`),
      '.env': `BLOCKS_CDM_URL=${env.net.cdmUrl}\nBLOCKS_API_KEY=${env.net.apiKey}\nLOG_LEVEL=error\n`,
      ...c.files,
    })
    const { text, run } = await runOnce(dir, c.name, c.signal, { BLOCKS_CDM_URL: '', BLOCKS_API_KEY: '' })
    assert.equal(text, c.expected, c.name)
    assert.equal(run.code, 0, `${c.name}: ${run.stderr}`)
    assert.equal(run.signal, null)
    assert.equal(run.stderr, '', c.name)
    const out = lines(run.stdout)
    assert.equal(out.length, 4, run.stdout)
    assert.equal(out[0], `[blocks-run] starting "Runner ${c.expected}" (${c.name})`)
    assert.match(out[1], new RegExp(`^\\[blocks-run\\] instance AG-${c.name}-[0-9a-f-]{36} running$`))
    assert.deepEqual(out.slice(2), ['[blocks-run] press Ctrl+C to stop', '[blocks-run] shutting down...'])
  }
})

test('AGT-16 a handler module without a function fails "does not export a function" (exit 1)', async () => {
  const cases = [
    [{ handler: './h.mjs' }, 'export const notAFunction = 1\n', 'h.mjs does not export a function (looked for handler, default)'],
    [{ handler: './h.mjs', handlerExport: 'run' }, 'export default { run: 1 }\n', 'h.mjs does not export a function (looked for run, handler, default)'],
    [{ handler: './h.ts' }, 'export const value: number = 1\n', 'h.ts does not export a function (looked for handler, default)'],
  ]
  for (const [runtime, source, message] of cases) {
    const dir = agentFolder({ 'agent-card.json': card('no_fn', runtime), [runtime.handler.slice(2)]: source })
    const run = await start(dir, network()).exited
    assert.equal(run.code, 1, run.stdout)
    assert.equal(run.stdout, '')
    assert.equal(run.stderr, `[blocks-run] fatal: ${message}\n`)
  }
})

test('SHUT-03 bad agent folders: "agent-card.json not found", "invalid JSON", missing "runtime" section, "identity.agentName is required"', async () => {
  const cases = [
    [{}, (dir) => `agent-card.json not found at ${path.join(dir, 'agent-card.json')}`],
    [{ 'agent-card.json': '{ nope' }, /^agent-card\.json is invalid JSON: .+$/],
    [{ 'agent-card.json': { identity: { agentName: 'x' } } }, () => 'agent-card.json: runtime section is missing; add "runtime": { "handler": "./handler.js" }'],
    [{ 'agent-card.json': { identity: {}, runtime: { handler: './h.mjs' } }, 'h.mjs': 'export default () => ({})' }, /^agent-card\.json: identity\.agentName is required\b/],
    [{ 'agent-card.json': { identity: { agentName: 'x' }, runtime: { handler: './gone.mjs' } } }, /^handler file .*gone\.mjs not found \(runtime\.handler in agent-card\.json\)$/],
  ]
  for (const [files, expected] of cases) {
    const dir = agentFolder(files)
    const run = await start(dir, network()).exited
    assert.equal(run.code, 1, `${JSON.stringify(files)}: ${run.stdout}`)
    assert.equal(run.stdout, '')
    const out = lines(run.stderr)
    assert.equal(out.length, 1, run.stderr)
    assert.ok(out[0].startsWith('[blocks-run] fatal: '), out[0])
    const message = out[0].slice('[blocks-run] fatal: '.length)
    if (expected instanceof RegExp) assert.match(message, expected)
    else assert.equal(message, expected(dir))
  }
})

test('SHUT-02 a start-up failure prints "[blocks-run] fatal: <msg>" and exits 1, without the API key', async () => {
  const dir = agentFolder({ 'agent-card.json': card('run_refused', { handler: './h.mjs' }, 'Refused'), 'h.mjs': 'export default () => ({})' })
  const run = await start(dir, { BLOCKS_CDM_URL: env.net.cdmUrl, BLOCKS_API_KEY: 'bk_not_a_real_key_1234', LOG_LEVEL: 'error' }).exited
  assert.equal(run.code, 1)
  assert.deepEqual(lines(run.stdout), ['[blocks-run] starting "Refused" (run_refused)'])
  const out = lines(run.stderr)
  assert.equal(out.length, 1, run.stderr)
  assert.match(out[0], /^\[blocks-run\] fatal: \S.+$/)
  assert.ok(!run.stderr.includes('bk_not_a_real_key_1234'))
})

test('SHUT-02 LOG-02 blocks-run sets the SDK up itself: a handler importing nothing gets engine logs (LOG_LEVEL=debug) and the SDK\'s error classes from ctx', async () => {
  // the handler imports nothing: what it sees of the SDK is what blocks-run set up. It reports the
  // errors ctx gives it (name and the SDK's class brand chain, which `instanceof` checks).
  const handler = `
const BRANDS = Symbol.for('@blocks-network/sdk.errorBrands')
const describe = (e) => ({ name: e.name, classes: e[BRANDS] ?? null, isError: e instanceof Error })
export async function handler(task, ctx) {
  const report = {}
  try { await ctx.createStream({}) ; report.createStream = 'no error' } catch (e) { report.createStream = describe(e) }
  try { await ctx.downloadInputArtifact({}) ; report.download = 'no error' } catch (e) { report.download = describe(e) }
  return { artifacts: [{ data: JSON.stringify(report), mimeType: 'application/json' }] }
}
`
  const dir = agentFolder({ 'agent-card.json': card('run_bare', { handler: './handler.mjs' }, 'Bare'), 'handler.mjs': handler })
  const { text, run, taskId } = await runOnce(dir, 'run_bare', 'SIGINT', { ...network(), LOG_LEVEL: 'debug' })
  assert.equal(run.code, 0, run.stderr)
  const expected = { name: 'InvalidArgumentError', classes: ['InvalidArgumentError', 'BlocksError'], isError: true }
  assert.deepEqual(JSON.parse(text), { createStream: expected, download: expected })
  // engine records, in the SDK's console format, at debug and info
  const entry = (level, message) =>
    new RegExp(`\\[Blocks\\] \\{\\s+level: '${level}',\\s+message: '${message}',\\s+ts: '[0-9T:.Z-]+',\\s+target: 'blocks::agent'\\s+\\}`)
  assert.match(run.stdout, entry('debug', `control StartTask ${taskId} tt=\\d+`))
  assert.match(run.stdout, entry('info', `task ${taskId} accepted`))
  assert.match(run.stdout, entry('info', `task ${taskId} completed in \\d+ ms`))
  const own = lines(run.stdout).filter((l) => l.startsWith('[blocks-run]'))
  assert.equal(own[0], '[blocks-run] starting "Bare" (run_bare)')
  assert.match(own[1], /^\[blocks-run\] instance AG-run_bare-[0-9a-f-]{36} running$/)
  assert.deepEqual(own.slice(2), ['[blocks-run] press Ctrl+C to stop', '[blocks-run] shutting down...'])
})
