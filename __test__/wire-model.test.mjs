// Issue 22 (typed core): task events are read by the typed wire model (blocks-wire) and reach
// listeners with every field they carried; errors become their JS class through one table,
// also on synchronous native calls.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { createRequire } from 'node:module'
import { sdk, startNetwork, deferred } from './helpers.mjs'

const native = createRequire(import.meta.url)('../native.js')

let env
const gate = deferred()
before(async () => {
  env = await startNetwork()
  await env.agent('holder', async (task, ctx) => {
    ctx.reportStatus('held')
    await gate.promise
    return 'done'
  })
})
after(() => env.stop())

test('a raw string written on an events stream throws InvalidArgumentError synchronously (the rule lives only in the engine)', { timeout: 60_000 }, async () => {
  let refused = 'accepted'
  await env.agent('events_writer', async (task, ctx) => {
    const s = await ctx.createStream()
    try {
      s.write('not an event')
    } catch (e) {
      refused = `${e instanceof sdk.InvalidArgumentError}: ${e.message}`
    }
    s.write({ ok: true })
    await s.end()
  }, { card: { identity: { agentName: 'events_writer' }, capabilities: { taskKinds: ['request'] }, runtime: { handler: './h.js' }, streams: { _default: { direction: 'outbound', format: 'events' } } } })
  const client = await env.client()
  const session = await client.sendMessage({ agentName: 'events_writer', stream: true, requestParts: [sdk.textPart('x')] })
  const t = await session.waitForTerminal(30_000)
  assert.equal(t.state, 'completed', JSON.stringify(t))
  assert.equal(refused, 'true: write() does not accept raw strings in format: "events" (pass an object, or use a bytes stream)')
  client.destroy()
})

/** Publish a raw message on a task's status channel, as any producer could. */
async function publishRaw(channel, message) {
  const url = `${env.net.url}/publish/pub-c-devnet-free/sub-c-devnet-free/0/${channel}/0?uuid=producer&auth=${env.net.serviceToken}`
  const r = await fetch(url, { method: 'POST', body: JSON.stringify(message) })
  assert.equal(r.status, 200)
}

test('events keep the fields the model does not know; a wrong-typed optional field is dropped and the event still delivered; an unknown type reaches onEvent whole', { timeout: 60_000 }, async () => {
  const client = await env.client()
  const session = await client.sendMessage({ agentName: 'holder', requestParts: [sdk.textPart('x')] })
  const progress = []
  const events = []
  const errors = []
  const sawOther = deferred()
  const sawOdd = deferred()
  session.onEvent((e) => {
    events.push(e)
    if (e.type === 'vendor_note') sawOther.resolve()
  })
  session.onProgress((e) => {
    progress.push(e)
    if (e.custom === 'kept') sawOdd.resolve()
  })
  session.onError((err, ctx) => errors.push({ message: err.message, type: ctx.callbackType }))
  const held = new Promise((r) => session.onProgress((e) => e.message === 'held' && r()))
  await held
  await publishRaw(session.statusChannel, { type: 'progress', taskId: session.taskId, message: 5, custom: 'kept' })
  await publishRaw(session.statusChannel, { type: 'vendor_note', taskId: session.taskId, note: { deep: [1, { two: 2 }] } })
  await sawOdd.promise
  await sawOther.promise
  const odd = progress.find((e) => e.custom === 'kept')
  assert.deepEqual(odd, { type: 'progress', taskId: session.taskId, custom: 'kept' }, 'the wrong-typed message is dropped, the rest kept')
  const other = events.find((e) => e.type === 'vendor_note')
  assert.deepEqual(other, { type: 'vendor_note', taskId: session.taskId, note: { deep: [1, { two: 2 }] } })
  // a terminal with fields of a newer protocol and an error of the wrong type: it still ends the
  // task (first valid terminal wins) and keeps the fields the model does not know
  const terminal = session.waitForTerminal(30_000)
  await publishRaw(session.statusChannel, { type: 'terminal', taskId: session.taskId, state: 'failed', error: { code: 'E' }, retryAfterMs: 250, details: { code: 'X' } })
  const t = await terminal
  assert.equal(t.state, 'failed')
  assert.equal(t.error, undefined)
  assert.equal(t.retryAfterMs, 250)
  assert.deepEqual(t.details, { code: 'X' })
  assert.deepEqual(errors, [])
  gate.resolve()
  client.destroy()
})

test('every engine error code maps to an SDK error class (one table in the binding)', () => {
  const classes = native.errorClasses()
  assert.ok(classes.length >= 10, String(classes))
  for (const name of classes) {
    assert.equal(typeof sdk[name], 'function', `${name} is exported`)
    assert.ok(new sdk[name]('x') instanceof sdk.BlocksError, `${name} is a BlocksError`)
  }
})

test('synchronous and asynchronous native errors are instances of their class', async () => {
  // synchronous: the devnet's flag parser
  assert.throws(() => native.devnetCheckArgs(['--port', 'eighty']), (e) => e instanceof sdk.InvalidArgumentError && /--port/.test(e.message))
  // asynchronous: the same parser behind a Promise
  await assert.rejects(native.NativeLocalNetwork.startFromArgs(['--no-such-flag']), (e) => e instanceof sdk.InvalidArgumentError && /--no-such-flag/.test(e.message))
})
