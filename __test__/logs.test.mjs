// Logging: LOG_LEVEL, the console format, BLOCKS_DEBUG_INTERNAL subsystems, redaction, profiling.
// Settings that are read once per process (LOG_LEVEL at load, BLOCKS_DEBUG_INTERNAL, BLOCKS_PROFILE)
// are tested in child processes; the format and the logger routing in this process.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { createRequire } from 'node:module'
import { fileURLToPath } from 'node:url'
import { sdk, startNetwork, runNode, deferred } from './helpers.mjs'

const require = createRequire(import.meta.url)
const logging = require('../lib/log.js')
const root = fileURLToPath(new URL('..', import.meta.url))
const ISO = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/

let env
before(async () => {
  env = await startNetwork()
})
after(async () => {
  await env.stop()
})

/** Every variable this file varies, unset: each child states what it sets. */
const CLEAN = { LOG_LEVEL: undefined, NODE_ENV: undefined, BLOCKS_DEBUG_INTERNAL: undefined, BLOCKS_PROFILE: undefined }

/**
 * A child script: the console is captured before the SDK loads (`calls`, each `{ method, args }`),
 * then `body` runs (it may fill `result`); prints one `@@RESULT <json>` line.
 */
function script(body) {
  return `
import { createRequire } from 'node:module'
import http from 'node:http'
const calls = []
const waiters = []
for (const method of ['error', 'warn', 'log', 'info', 'debug']) {
  console[method] = (...args) => {
    const call = { method, args: JSON.parse(JSON.stringify(args)) }
    calls.push(call)
    for (const w of [...waiters]) if (w.test(call)) { waiters.splice(waiters.indexOf(w), 1); w.resolve(call) }
  }
}
/** Resolves with the first console call (past or future) that passes test(call). */
const logged = (test) => new Promise((resolve) => {
  const seen = calls.find(test)
  if (seen) resolve(seen)
  else waiters.push({ test, resolve })
})
const entry = (call) => call.args[1] ?? {}
const require = createRequire(${JSON.stringify(root)})
const sdk = require('./index.js')
const logging = require('./lib/log.js')
const flush = () => new Promise((r) => setImmediate(r))
const result = {}
${body}
process.stdout.write('@@RESULT ' + JSON.stringify({ calls, result }) + '\\n')
process.exit(0)
`
}

/** One healthy task on a fresh in-process network; the agent is stopped (which waits for the
 * task's last engine record) and one more turn lets the queued records arrive. */
const ONE_TASK = `
const net = await sdk.LocalNetwork.start()
const agent = await sdk.startAgentInstance({ agentName: 'probe', handler: async () => ({ artifacts: [{ data: 'ok', mimeType: 'text/plain' }] }), apiKey: net.apiKey, cdmUrl: net.cdmUrl })
const client = await sdk.TaskClient.create({ billingMode: 'free', apiKey: net.apiKey, cdmUrl: net.cdmUrl })
const s = await client.sendMessage({ agentName: 'probe', requestParts: [] })
result.state = (await s.waitForTerminal(15000)).state
result.taskId = s.taskId
result.apiKey = net.apiKey
result.serviceToken = net.serviceToken
client.destroy()
await agent.stop(5000)
await flush()
await net.stop()
await flush()
`

/** Run a child script; returns { calls, result, entries } (entries: the console calls flattened). */
async function child(body, vars, timeoutMs = 40_000) {
  const r = await runNode(script(body), { env: { ...CLEAN, ...vars }, timeoutMs })
  const line = r.stdout.split('\n').find((l) => l.startsWith('@@RESULT '))
  assert.ok(line, `no result from the child (exit ${r.code})\nstdout: ${r.stdout}\nstderr: ${r.stderr}`)
  assert.equal(r.code, 0, r.stderr)
  const out = JSON.parse(line.slice('@@RESULT '.length))
  assert.equal(out.result.error, undefined)
  out.entries = out.calls.map((c) => ({ method: c.method, tag: c.args[0], ...c.args[1] }))
  out.raw = r
  return out
}

const engine = (entries) => entries.filter((e) => e.target)
const rank = { error: 0, warn: 1, info: 2, debug: 3 }

test('LOG-01 LOG_LEVEL sets the threshold for JS and engine records: any case; unset, empty or unknown → info; NODE_ENV is ignored', async () => {
  const cases = [
    [{}, 'info'],
    [{ LOG_LEVEL: 'ERROR' }, 'error'],
    [{ LOG_LEVEL: 'Warn' }, 'warn'],
    [{ LOG_LEVEL: 'info' }, 'info'],
    [{ LOG_LEVEL: 'DEBUG' }, 'debug'],
    [{ LOG_LEVEL: 'verbose' }, 'info'],
    [{ LOG_LEVEL: '' }, 'info'],
    [{ NODE_ENV: 'production' }, 'info'],
    [{ NODE_ENV: 'development', LOG_LEVEL: 'warn' }, 'warn'],
    [{ NODE_ENV: 'production', LOG_LEVEL: 'debug' }, 'debug'],
  ]
  const probes = `for (const l of ['error', 'warn', 'info', 'debug']) logging.log(l, 'probe ' + l)\n`
  for (const [vars, level] of cases) {
    const what = JSON.stringify(vars)
    const { entries, result } = await child(probes + ONE_TASK, vars)
    assert.equal(result.state, 'completed', what)
    const id = result.taskId
    // the JS layer
    assert.deepEqual(
      entries.filter((e) => e.message.startsWith('probe ')).map((e) => e.message),
      ['error', 'warn', 'info', 'debug'].filter((l) => rank[l] <= rank[level]).map((l) => `probe ${l}`),
      what,
    )
    // the engine: nothing above the threshold, and what the threshold allows is there
    const records = engine(entries)
    assert.deepEqual(records.filter((e) => rank[e.level] > rank[level]), [], what)
    const accepted = records.filter((e) => e.message === `task ${id} accepted`)
    const control = records.filter((e) => new RegExp(`^control StartTask ${id} tt=\\d+$`).test(e.message))
    assert.equal(accepted.length, rank[level] >= rank.info ? 1 : 0, what)
    assert.equal(control.length, level === 'debug' ? 1 : 0, what)
    if (level === 'error' || level === 'warn') assert.deepEqual(records, [], `${what}: a healthy run logs no engine warnings`)
    if (level === 'info') {
      assert.deepEqual(records.map((e) => [e.level, e.target, e.message.replace(/\d+ ms$/, 'N ms')]), [
        ['info', 'blocks::agent', `task ${id} accepted`],
        ['info', 'blocks::agent', `task ${id} completed in N ms`],
      ], what)
    }
  }
})

test('LOG-01 setLogLevel() at run time applies to engine records, also to ones first seen at another level', async () => {
  const previous = logging.currentLevel()
  const got = []
  const seen = deferred()
  let want = null
  const rec = (level) => (message, meta) => {
    got.push([level, message, meta?.target])
    if (want && message === want) seen.resolve()
  }
  sdk.setLogger({ error: rec('error'), warn: rec('warn'), info: rec('info'), debug: rec('debug') })
  const ids = []
  let switchedAt = 0
  try {
    sdk.setLogLevel('info')
    const agent = await sdk.startAgentInstance({ agentName: 'level_switch', handler: () => ({}), apiKey: env.net.apiKey, cdmUrl: env.net.cdmUrl })
    const client = await env.client()
    const run = async () => {
      const s = await client.sendMessage({ agentName: 'level_switch', requestParts: [] })
      ids.push(s.taskId)
      await s.waitForTerminal(15_000)
      return s.taskId
    }
    // task 1 at info: its "control StartTask" debug record is skipped (the call site has been seen)
    const first = await run()
    want = `task ${first} accepted`
    if (got.some(([, m]) => m === want)) seen.resolve()
    await seen.promise
    switchedAt = got.length
    sdk.setLogLevel('DEBUG')
    await run()
    sdk.setLogLevel('warn')
    await run()
    await agent.stop(5000) // waits for the last task's records; one more turn delivers them
    await new Promise((r) => setImmediate(r))
  } finally {
    sdk.setLogger(null)
    sdk.setLogLevel(previous)
  }
  const of = (id) => got.filter(([, m]) => m.includes(id)).map(([l, m, t]) => [l, m.replace(/tt=\d+$/, 'tt=N').replace(/\d+ ms$/, 'N ms'), t])
  // task 1 ran at info: its info records are all there, and nothing at debug was logged while the
  // level was info (a debug record of its last moments may land after the switch to debug)
  assert.deepEqual(of(ids[0]).filter(([l]) => l === 'info'), [['info', `task ${ids[0]} accepted`, 'blocks::agent'], ['info', `task ${ids[0]} completed in N ms`, 'blocks::agent']])
  assert.deepEqual(got.slice(0, switchedAt).filter(([l]) => l === 'debug'), [], 'no debug record at info')
  assert.deepEqual(of(ids[1]).filter(([, , t]) => t === 'blocks::agent').slice(0, 2), [
    ['debug', `control StartTask ${ids[1]} tt=N`, 'blocks::agent'],
    ['info', `task ${ids[1]} accepted`, 'blocks::agent'],
  ])
  assert.deepEqual(of(ids[2]), [])
})

test('LOG-02 without a logger: console.error/warn/log get (tag, { level, message, ts, ...meta }); engine records carry their target', async () => {
  sdk.setLogger(null)
  const previous = logging.currentLevel()
  const calls = []
  const saved = {}
  let taskId = null
  const acceptedLine = deferred()
  for (const m of ['error', 'warn', 'log', 'info', 'debug']) {
    saved[m] = console[m]
    console[m] = (...args) => {
      calls.push([m, ...args])
      if (taskId && args[1]?.message === `task ${taskId} accepted`) acceptedLine.resolve()
    }
  }
  try {
    sdk.setLogLevel('debug')
    logging.log('error', 'went wrong', { taskId: 't_1' })
    logging.log('warn', 'careful')
    logging.log('info', 'hello', { count: 2 })
    logging.log('debug', 'details', { level: 'spoofed', message: 'spoofed', ts: 0, extra: true })
    await env.agent('log_format', () => ({}))
    const client = await env.client()
    const s = await client.sendMessage({ agentName: 'log_format', requestParts: [] })
    taskId = s.taskId
    if (calls.some(([, , e]) => e?.message === `task ${taskId} accepted`)) acceptedLine.resolve()
    await s.waitForTerminal(15_000)
    await acceptedLine.promise
  } finally {
    Object.assign(console, saved)
    sdk.setLogLevel(previous)
  }
  for (const [, , e] of calls) {
    assert.match(e.ts, ISO)
    assert.ok(Math.abs(Date.parse(e.ts) - Date.now()) < 60_000, e.ts)
  }
  const plain = calls.map(([m, tag, e]) => [m, tag, { ...e, ts: 'T' }])
  assert.deepEqual(plain.slice(0, 4), [
    ['error', '[Blocks]', { level: 'error', message: 'went wrong', ts: 'T', taskId: 't_1' }],
    ['warn', '[Blocks]', { level: 'warn', message: 'careful', ts: 'T' }],
    ['log', '[Blocks]', { level: 'info', message: 'hello', ts: 'T', count: 2 }],
    ['log', '[Blocks]', { level: 'debug', message: 'details', ts: 'T', extra: true }],
  ])
  assert.deepEqual(Object.keys(calls[0][2]), ['level', 'message', 'ts', 'taskId'], 'level, message, ts first')
  assert.deepEqual(plain.find(([, , e]) => e.message === `task ${taskId} accepted`), ['log', '[Blocks]', { level: 'info', message: `task ${taskId} accepted`, ts: 'T', target: 'blocks::agent' }])
  const control = plain.find(([, , e]) => e.message.startsWith(`control StartTask ${taskId} `))
  assert.deepEqual(control && [control[0], control[1], control[2].level, control[2].target], ['log', '[Blocks]', 'debug', 'blocks::agent'])
  for (const [m, tag, e] of plain) {
    assert.equal(tag, '[Blocks]')
    assert.equal(m, e.level === 'error' ? 'error' : e.level === 'warn' ? 'warn' : 'log', JSON.stringify(e))
  }
})

test('LOG-02 setLogger(logger) gets logger[level](message, meta) for JS and engine records; setLogger(null) restores the console', async () => {
  const got = []
  const accepted = deferred()
  let taskId = null
  const rec = (level) => (message, meta) => {
    got.push([level, message, meta])
    if (taskId && message === `task ${taskId} accepted`) accepted.resolve()
  }
  const consoleCalls = []
  const saved = console.warn
  console.warn = (...args) => consoleCalls.push(args)
  try {
    sdk.setLogger({ error: rec('error'), warn: rec('warn'), info: rec('info'), debug: rec('debug') })
    logging.log('warn', 'to the logger', { taskId: 't_2' })
    logging.log('error', 'no meta')
    await env.agent('log_routed', () => ({}))
    const client = await env.client()
    const s = await client.sendMessage({ agentName: 'log_routed', requestParts: [] })
    taskId = s.taskId
    if (got.some(([, m]) => m === `task ${taskId} accepted`)) accepted.resolve()
    await s.waitForTerminal(15_000)
    await accepted.promise
    sdk.setLogger(null)
    logging.log('warn', 'back on the console')
  } finally {
    console.warn = saved
    sdk.setLogger(null)
  }
  assert.deepEqual(got.slice(0, 2), [
    ['warn', 'to the logger', { taskId: 't_2' }],
    ['error', 'no meta', undefined],
  ])
  assert.deepEqual(got.find(([, m]) => m === `task ${taskId} accepted`), ['info', `task ${taskId} accepted`, { target: 'blocks::agent' }])
  assert.deepEqual(consoleCalls.map(([tag, e]) => [tag, e.message]), [['[Blocks]', 'back on the console']])
  assert.throws(() => sdk.setLogger(42), TypeError)
})

test('LOG-03 LOG_LEVEL=error: a healthy agent start, task and stop print nothing at all', async () => {
  const r = await runNode(`
import { createRequire } from 'node:module'
const sdk = createRequire(${JSON.stringify(root)})('./index.js')
const result = {}
const flush = () => new Promise((r) => setImmediate(r))
${ONE_TASK}
process.exit(result.state === 'completed' ? 0 : 3)
`, { env: { ...CLEAN, LOG_LEVEL: 'error' } })
  assert.equal(r.code, 0, r.stderr)
  assert.equal(r.stdout, '')
  assert.equal(r.stderr, '')
})

// what a healthy start-up must not show at the default level: connection categories, diagnostics
// markers, realtime-plane mechanics, provider names, keys and tokens
const TRANSPORT_VOCABULARY = /pubnub|\bPAM\b|access manager|categor|diagnostic|armed|heartbeat|subscri|presence|long.?poll|timetoken|\btt=|reconnect|transport|filter-expr|\buuid\b|sub-c-|pub-c-|auth=|token|\[Transport\]/i

test('LOG-04 the default level: start-up prints no transport-internal vocabulary', async () => {
  const r = await runNode(`
import { createRequire } from 'node:module'
const sdk = createRequire(${JSON.stringify(root)})('./index.js')
const result = {}
const flush = () => new Promise((r) => setImmediate(r))
${ONE_TASK}
console.log('@@TASK ' + result.taskId)
`, { env: CLEAN })
  assert.equal(r.code, 0, r.stderr)
  const taskId = /@@TASK (\S+)/.exec(r.stdout)?.[1]
  const printed = r.stdout.replace(/@@TASK .*\n/, '') + r.stderr
  // the default level does print (the task's info lines), so the check below looks at real output
  assert.match(printed, new RegExp(`\\[Blocks\\] \\{\\s+level: 'info',\\s+message: 'task ${taskId} accepted',\\s+ts: '[^']+',\\s+target: 'blocks::agent'\\s+\\}`))
  assert.doesNotMatch(printed, TRANSPORT_VOCABULARY)
})

test('LOG-05 BLOCKS_DEBUG_INTERNAL: unknown tokens (incl. 1, 0, true, false) warn once with [Blocks] and event debug_internal_unknown_token; suppressed at error level', async () => {
  // loading the SDK a second time (a fresh module cache) must not warn again
  const body = `
await flush()
for (const k of Object.keys(require.cache)) if (!k.endsWith('native.js') && !k.endsWith('.node')) delete require.cache[k]
require('./index.js')
await flush()
`
  const messy = ' diagnostics , 1,true, 0 ,,false,Bogus , forward_transport,1 '
  const { entries } = await child(body, { BLOCKS_DEBUG_INTERNAL: messy })
  assert.equal(entries.length, 1, JSON.stringify(entries))
  assert.match(entries[0].ts, ISO)
  assert.deepEqual({ ...entries[0], ts: 'T' }, {
    method: 'warn',
    tag: '[Blocks]',
    level: 'warn',
    message: 'BLOCKS_DEBUG_INTERNAL: unknown token(s) 1, true, 0, false, Bogus ignored; known tokens: diagnostics, forward_transport',
    ts: 'T',
    event: 'debug_internal_unknown_token',
    tokens: ['1', 'true', '0', 'false', 'Bogus'],
  })
  // a logger set right after loading the SDK receives the warning
  const routed = await child(`sdk.setLogger({ warn: (m, meta) => result.warned = [m, meta] })\nawait flush()\n`, { BLOCKS_DEBUG_INTERNAL: 'yes' })
  assert.deepEqual(routed.entries, [])
  assert.deepEqual(routed.result.warned, ['BLOCKS_DEBUG_INTERNAL: unknown token(s) yes ignored; known tokens: diagnostics, forward_transport', { event: 'debug_internal_unknown_token', tokens: ['yes'] }])
  for (const vars of [
    { BLOCKS_DEBUG_INTERNAL: messy, LOG_LEVEL: 'error' },
    { BLOCKS_DEBUG_INTERNAL: 'diagnostics,forward_transport' },
    { BLOCKS_DEBUG_INTERNAL: ' Diagnostics , FORWARD_TRANSPORT ' },
    { BLOCKS_DEBUG_INTERNAL: '' },
    {},
  ]) {
    assert.deepEqual((await child(body, vars)).entries, [], JSON.stringify(vars))
  }
})

/**
 * An agent whose realtime origin is a fake server: every subscribe answers `subscribeStatus`
 * (with `subscribeBody`), everything else 200. Waits for `attempts` subscribe requests.
 */
const FAKE_REALTIME = (subscribeStatus, subscribeBody, attempts) => `
let subscribes = 0
const reached = []
const fake = http.createServer((req, res) => {
  req.resume()
  if (req.url.startsWith('/v2/subscribe/')) {
    subscribes++
    for (const r of reached.filter((r) => subscribes >= r.n)) { reached.splice(reached.indexOf(r), 1); r.resolve() }
    res.writeHead(${subscribeStatus}, { 'content-type': 'application/json' })
    res.end(${JSON.stringify(subscribeBody)})
    return
  }
  res.writeHead(200, { 'content-type': 'application/json' })
  res.end('{"status":200,"message":"OK","payload":{},"service":"Presence"}')
})
await new Promise((r) => fake.listen(0, '127.0.0.1', r))
const net = await sdk.LocalNetwork.start()
const agent = await sdk.startAgentInstance({ agentName: 'deaf', handler: async () => ({}), apiKey: net.apiKey, cdmUrl: net.cdmUrl, realtimeOrigin: 'http://127.0.0.1:' + fake.address().port })
result.channel = agent.controlChannel
result.apiKey = net.apiKey
await new Promise((resolve) => (subscribes >= ${attempts} ? resolve() : reached.push({ n: ${attempts}, resolve })))
await flush()
await agent.stop(1000)
await flush()
fake.closeAllConnections()
fake.close()
await net.stop()
`

test('LOG-05 diagnostics: the realtime plane\'s debug records show only with BLOCKS_DEBUG_INTERNAL=diagnostics (LOG_LEVEL=debug does not imply it; warn silences it)', async () => {
  // the subscribe loop fails (HTTP 500): attempt 1 is a warning, attempt 2 a diagnostics record,
  // logged before attempt 3 is sent; the child waits for the third request
  const scenario = FAKE_REALTIME(500, 'upstream broke', 3)
  const [debugOnly, debugDiag, defaultDiag, warnDiag] = await Promise.all([
    child(scenario, { LOG_LEVEL: 'debug' }),
    child(scenario, { LOG_LEVEL: 'debug', BLOCKS_DEBUG_INTERNAL: 'diagnostics' }),
    child(scenario, { BLOCKS_DEBUG_INTERNAL: ' Diagnostics ' }),
    child(scenario, { LOG_LEVEL: 'warn', BLOCKS_DEBUG_INTERNAL: 'diagnostics' }),
  ])
  const diagnostics = (out) => engine(out.entries).filter((e) => e.target === 'blocks::realtime' && e.level === 'debug')
  const lost = (out) => engine(out.entries).filter((e) => e.message === `subscription to ${out.result.channel} lost (HTTP 500: upstream broke); reconnecting`)
  for (const out of [debugOnly, debugDiag, defaultDiag, warnDiag]) {
    assert.deepEqual(lost(out).map((e) => [e.method, e.tag, e.level, e.target]), [['warn', '[Blocks]', 'warn', 'blocks::realtime']])
  }
  const second = (out) => `subscription to ${out.result.channel}: attempt 2 failed (HTTP 500: upstream broke); next in 2s`
  assert.deepEqual(diagnostics(debugOnly), [])
  assert.ok(engine(debugOnly.entries).some((e) => e.level === 'debug'), 'LOG_LEVEL=debug shows the other debug records')
  for (const out of [debugDiag, defaultDiag]) {
    const records = diagnostics(out)
    assert.deepEqual(records.slice(0, 1).map((e) => [e.method, e.tag, e.message]), [['log', '[Blocks]', second(out)]])
    // (attempt 3's record may follow, if its answer came before the agent stopped)
    for (const e of records.slice(1)) assert.match(e.message, /: attempt 3 failed \(HTTP 500: upstream broke\); next in 4s$/)
  }
  // at the default level only the opted-in subsystem's debug records show
  assert.deepEqual(engine(defaultDiag.entries).filter((e) => e.level === 'debug' && e.target !== 'blocks::realtime'), [])
  assert.deepEqual(diagnostics(warnDiag), [])
})

test('LOG-06 the transport library is silent by default (also at LOG_LEVEL=debug); forward_transport forwards it as [Transport] entries at mapped levels', async () => {
  const [plain, debug, forwarded, forwardedWarn] = await Promise.all([
    child(ONE_TASK, {}),
    child(ONE_TASK, { LOG_LEVEL: 'debug' }),
    child(ONE_TASK, { BLOCKS_DEBUG_INTERNAL: 'forward_transport' }),
    child(ONE_TASK, { BLOCKS_DEBUG_INTERNAL: 'forward_transport', LOG_LEVEL: 'warn' }),
  ])
  const transportCrate = (e) => /^(pubnub|reqwest|hyper|hyper_util|h2)(::|$)/.test(e.target ?? '')
  for (const out of [plain, debug, forwardedWarn]) {
    assert.equal(out.result.state, 'completed')
    assert.deepEqual(out.entries.filter((e) => transportCrate(e) || e.tag === '[Transport]'), [])
  }
  assert.ok(debug.entries.some((e) => e.level === 'debug' && e.target === 'blocks::agent'), 'debug records of the SDK itself do show')
  const transport = forwarded.entries.filter((e) => e.tag === '[Transport]')
  assert.ok(transport.length > 0)
  // every [Transport] entry is a transport crate's record, on the console method of its level
  for (const e of transport) {
    assert.ok(transportCrate(e), JSON.stringify(e))
    assert.equal(e.method, { error: 'error', warn: 'warn', info: 'log', debug: 'log' }[e.level], JSON.stringify(e))
  }
  assert.deepEqual(forwarded.entries.filter((e) => transportCrate(e) && e.tag !== '[Transport]'), [])
  // the realtime client's info record (its configuration: keys redacted) and the HTTP client's debug ones
  const config = transport.find((e) => e.target.startsWith('pubnub::') && e.message.startsWith('Client Configuration'))
  assert.equal(config?.level, 'info', JSON.stringify(transport.map((e) => e.message)))
  assert.match(config.message, /publish_key: Some\("\[redacted\]"\)\n subscribe_key: \[redacted\]\n/)
  assert.ok(transport.some((e) => e.target === 'reqwest::connect' && e.level === 'debug' && /^starting new connection: http:\/\/127\.0\.0\.1:\d+\/$/.test(e.message)))
  assert.doesNotMatch(JSON.stringify(forwarded.calls), /(sub|pub)-c-devnet/)
  // the SDK's own records keep their tag
  assert.ok(forwarded.entries.some((e) => e.tag === '[Blocks]' && e.message === `task ${forwarded.result.taskId} accepted`))
})

test('LOG-08 the logging path redacts auth=/token=/Bearer/JWT/bk_ keys and realtime keys, and keeps vendor words out of SDK entries', () => {
  const got = []
  sdk.setLogger({ warn: (m, meta) => got.push([m, meta]) })
  try {
    logging.log(
      'warn',
      'GET /v2/subscribe/sub-c-0a1b2c/ch/0?auth=qEF2AkF0GmZ&uuid=u1 token=abc123 Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1In0.c2ln ' +
        'key bk_live_9f8e {"pamToken":"p0F2AkF0", "apiKey": "k-1"} publish_key: Some("pub-c-77") subscribe_key: sub-c-88 ' +
        'raw jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1In0.c2ln; PubNub Access Manager PAM',
      { detail: 'access_token=zzz', tokens: ['bk_x1'], count: 3 },
    )
  } finally {
    sdk.setLogger(null)
  }
  assert.deepEqual(got, [[
    'GET /v2/subscribe/sub-c-[redacted]/ch/0?auth=[redacted]&uuid=u1 token=[redacted] Authorization: Bearer [redacted] ' +
      'key bk_[redacted] {"pamToken":"[redacted]", "apiKey": "[redacted]"} publish_key: Some("[redacted]") subscribe_key: [redacted] ' +
      'raw jwt [redacted-jwt]; realtime access control access',
    { detail: 'access_token=[redacted]', tokens: ['bk_[redacted]'], count: 3 },
  ]])
  // idempotent, and ordinary text is left alone
  assert.equal(logging.redact(got[0][0]), got[0][0])
  const plain = 'task t_abc completed in 12 ms; token refresh failed: HTTP 503'
  assert.equal(logging.redact(plain), plain)
})

test('LOG-08 engine records at LOG_LEVEL=debug print no tokens, API keys or realtime keys (the devnet logs its request URLs)', async () => {
  const out = await child(ONE_TASK, { LOG_LEVEL: 'debug' })
  const printed = JSON.stringify(out.calls)
  assert.ok(printed.includes('auth=[redacted]'), 'the request URLs (with auth=) were logged, redacted')
  for (const secret of [out.result.apiKey, out.result.serviceToken]) assert.ok(!printed.includes(secret), `${secret} was printed`)
  assert.doesNotMatch(printed, /auth=(?!\[redacted\])|(sub|pub)-c-devnet|eyJ[\w-]+\.eyJ|bk_(?!\[redacted\])/)
  assert.doesNotMatch(printed, /pubnub|access manager|\bPAM\b/i)
})

test('LOG-08 a refused subscription logs a neutral line with the HTTP status, not the server\'s body', async () => {
  const body = JSON.stringify({ message: 'Forbidden', payload: { channels: ['c'] }, error: true, service: 'Access Manager', status: 403 })
  const out = await child(FAKE_REALTIME(403, body, 1).replace('await new Promise((resolve) => (subscribes', `await logged((c) => /refused/.test(entry(c).message ?? ''))\nawait new Promise((resolve) => (subscribes`), {})
  // the realtime line (the agent may also say it registered again: that line is about the agent)
  // (a re-registered agent may be refused again by the fake server: one line per refusal, all alike)
  const refused = out.entries.filter((e) => e.target === 'blocks::realtime' && /refused/.test(e.message)).slice(0, 1)
  assert.deepEqual(refused.map((e) => [e.method, e.tag, e.level, e.target, e.message]), [
    ['warn', '[Blocks]', 'warn', 'blocks::realtime', `subscription to ${out.result.channel} refused by the realtime service (HTTP 403: access denied)`],
  ])
  const printed = out.raw.stdout + out.raw.stderr
  assert.doesNotMatch(printed.replace(/@@RESULT .*/, ''), /access manager|pubnub|Forbidden/i)
})

test('LOG-09 BLOCKS_PROFILE with timing logs one dispatch-timing line per task (ms deltas); otherwise nothing', async () => {
  const twoTasks = `
const net = await sdk.LocalNetwork.start()
const agent = await sdk.startAgentInstance({ agentName: 'timed', handler: async () => { await new Promise((r) => setTimeout(r, 40)); return {} }, apiKey: net.apiKey, cdmUrl: net.cdmUrl })
const client = await sdk.TaskClient.create({ billingMode: 'free', apiKey: net.apiKey, cdmUrl: net.cdmUrl })
result.ids = []
for (let i = 0; i < 2; i++) {
  const s = await client.sendMessage({ agentName: 'timed', requestParts: [] })
  await s.waitForTerminal(15000)
  result.ids.push(s.taskId)
}
client.destroy()
await agent.stop(5000)
await flush()
await net.stop()
`
  const [on, off, other] = await Promise.all([
    child(twoTasks, { BLOCKS_PROFILE: 'cpu, Timing ' }),
    child(twoTasks, {}),
    child(twoTasks, { BLOCKS_PROFILE: 'cpu' }),
  ])
  const timing = (out) => out.entries.filter((e) => /dispatch timing/.test(e.message))
  assert.deepEqual(timing(off), [])
  assert.deepEqual(timing(other), [])
  const lines = timing(on)
  assert.deepEqual(lines.map((e) => [e.method, e.tag, e.level, e.target]), [
    ['log', '[Blocks]', 'info', 'blocks::profile'],
    ['log', '[Blocks]', 'info', 'blocks::profile'],
  ])
  const re = /^dispatch timing task (\S+): received->handler_start (\d+\.\d) ms, handler (\d+\.\d) ms, handler_end->terminal_published (\d+\.\d) ms, total (\d+\.\d) ms$/
  const parsed = lines.map((e) => {
    const m = re.exec(e.message)
    assert.ok(m, e.message)
    return { id: m[1], start: Number(m[2]), handler: Number(m[3]), terminal: Number(m[4]), total: Number(m[5]) }
  })
  assert.deepEqual(parsed.map((p) => p.id), on.result.ids)
  for (const p of parsed) {
    assert.ok(p.handler >= 35, `the handler waited 40 ms: ${JSON.stringify(p)}`)
    assert.ok(Math.abs(p.start + p.handler + p.terminal - p.total) <= 0.2, JSON.stringify(p))
  }
})
