// Issue 20: the devnet against hostile and careless input, attacked from outside — raw sockets
// (node:net), a second user's API key, the CLI (bin/blocks-devnet.js) as a child process whose
// memory is read from /proc. Each test asserts the safe outcome.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs'
import net from 'node:net'
import zlib from 'node:zlib'
import { sdk, runNodeArgs, startCli, devnetCli as cli, deferred, startNetwork } from './helpers.mjs'

const SUB = 'sub-c-devnet-free'
const PUB = 'pub-c-devnet-free'

/** A memory figure of a process from /proc, in KiB (VmRSS: now, VmHWM: peak). */
function kib(pid, field) {
  const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))
  assert.ok(m, `${field} of ${pid}`)
  return Number(m[1])
}

/** Stop a CLI child with Ctrl-C and wait for it. */
async function stop(child) {
  if (child.exitCode !== null || child.signalCode !== null) return
  const exited = new Promise((r) => child.once('exit', r))
  child.kill('SIGINT')
  await exited
}

/** A raw TCP connection: collects what the server sends, resolves `closed` when it closes. */
function connect(port) {
  const sock = net.connect(port, '127.0.0.1')
  const conn = { sock, data: Buffer.alloc(0), closed: deferred(), waiters: [] }
  sock.on('data', (d) => {
    conn.data = Buffer.concat([conn.data, d])
    for (const w of conn.waiters.splice(0)) w()
  })
  sock.on('error', () => {})
  sock.on('close', () => {
    conn.closed.resolve(Date.now())
    for (const w of conn.waiters.splice(0)) w()
  })
  conn.ready = new Promise((r, j) => {
    sock.once('connect', r)
    sock.once('error', j)
  })
  return conn
}

/** Parse one whole response from the front of `conn.data` (removing it), or null. */
function takeResponse(conn) {
  const end = conn.data.indexOf('\r\n\r\n')
  if (end < 0) return null
  const head = conn.data.subarray(0, end).toString()
  const len = Number(/^content-length:\s*(\d+)/im.exec(head)?.[1] ?? 0)
  if (conn.data.length < end + 4 + len) return null
  const body = conn.data.subarray(end + 4, end + 4 + len).toString()
  conn.data = conn.data.subarray(end + 4 + len)
  let json = null
  try {
    json = JSON.parse(body)
  } catch {}
  return { status: Number(head.split(' ')[1]), head, body, json }
}

/** The next response on `conn` (fails when the connection closes first). */
async function response(conn) {
  for (;;) {
    const r = takeResponse(conn)
    if (r) return r
    if (conn.sock.destroyed) throw new Error(`the connection closed before a whole response: ${conn.data}`)
    await new Promise((res) => conn.waiters.push(res))
  }
}

/** Send `request` on a new connection and read the answer. */
async function raw(port, request) {
  const c = connect(port)
  await c.ready
  c.sock.write(request)
  const r = await response(c)
  c.sock.destroy()
  return r
}

const get = (path, host = '127.0.0.1') => `GET ${path} HTTP/1.1\r\nHost: ${host}\r\n\r\n`
const pct = (s) => encodeURIComponent(s).replace(/[()'!*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`)

test('hostile requests from raw sockets (filters nested thousands deep, JSON nested past 128) get 400 and the CLI devnet lives', async () => {
  const { child, port } = await startCli(['--port', '0', '--in-memory'])
  try {
    // one unauthenticated request like this killed the devnet (stack overflow)
    const thousands = await raw(port, get(`/v2/subscribe/${SUB}/open/0?tt=0&uuid=x&filter-expr=${pct('('.repeat(5000))}`))
    assert.equal(thousands.status, 400, thousands.body)
    assert.match(thousands.json.message, /limit is 1024/)
    const deep = await raw(port, get(`/v2/subscribe/${SUB}/open/0?tt=0&uuid=x&filter-expr=${pct('('.repeat(1000))}`))
    assert.equal(deep.status, 400)
    assert.match(deep.json.message, /nested deeper than 32/)
    const body = '['.repeat(100_000)
    const json = await raw(port, `POST /api/v1/rpc HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: ${body.length}\r\n\r\n${body}`)
    assert.equal(json.json.error.code, -32700, json.body)
    const msg = '['.repeat(200) + ']'.repeat(200)
    const pub = await raw(port, `POST /publish/${PUB}/${SUB}/0/open/0?uuid=x HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: ${msg.length}\r\n\r\n${msg}`)
    assert.equal(pub.status, 400)
    assert.equal(child.exitCode, null, 'still running')
    assert.equal((await raw(port, get('/time/0'))).status, 200)
  } finally {
    await stop(child)
  }
})

/** 1 GiB of zeros as a ~1 MiB gzip body: one full-flushed MiB repeated, then the final block. */
function gzipBomb(mib = 1024) {
  const block = zlib.deflateRawSync(Buffer.alloc(1024 * 1024), { level: 9, finishFlush: zlib.constants.Z_FULL_FLUSH })
  const header = Buffer.from([0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255])
  const last = Buffer.from([0x03, 0x00])
  return Buffer.concat([header, ...Array(mib).fill(block), last, Buffer.alloc(8)])
}

test('a gzip bomb (1 MiB inflating to 1 GiB) gets 413 and the devnet process does not grow by it', async () => {
  const bomb = gzipBomb()
  assert.ok(bomb.length < 1.5 * 1024 * 1024, `${bomb.length}`)
  // the weapon works: a 64 MiB charge inflates completely
  assert.equal(zlib.inflateRawSync(gzipBomb(64).subarray(10, -8)).length, 64 * 1024 * 1024)
  const { child, port } = await startCli(['--port', '0', '--in-memory'])
  try {
    assert.equal((await raw(port, get('/time/0'))).status, 200)
    const base = kib(child.pid, 'VmRSS')
    for (const path of [`/publish/${PUB}/${SUB}/0/bomb/0?uuid=x`, '/api/v1/rpc']) {
      const r = await fetch(`http://127.0.0.1:${port}${path}`, { method: 'POST', headers: { 'content-encoding': 'gzip' }, body: bomb })
      assert.equal(r.status, 413, path)
      assert.match((await r.json()).message, /larger than 8388608 bytes/)
    }
    const peak = kib(child.pid, 'VmHWM')
    // it grew by over 1 GiB before; now by the body limit (8 MiB) and buffers at most
    assert.ok(peak < base + 128 * 1024, `RSS ${base} KiB before, peak ${peak} KiB`)
    const ok = await fetch(`http://127.0.0.1:${port}/publish/${PUB}/${SUB}/0/fine/0?uuid=x`, { method: 'POST', headers: { 'content-encoding': 'gzip' }, body: zlib.gzipSync('{"ok":1}') })
    assert.equal(ok.status, 200)
  } finally {
    await stop(child)
  }
})

test("another user's instance id is refused with 403; its owner keeps receiving tasks", async () => {
  const { child, port, env } = await startCli(['--port', '0', '--in-memory', '--api-key', 'bk_alice:alice', '--api-key', 'bk_bob:bob'])
  const cdmUrl = env.BLOCKS_CDM_URL
  const alice = await sdk.startAgentInstance({
    agentName: 'alice_echo',
    apiKey: 'bk_alice',
    cdmUrl,
    handler: (task, ctx) => ({ artifacts: [{ data: `alice: ${ctx.requestParts.map((p) => p.text).join(' ')}`, mimeType: 'text/plain' }] }),
  })
  try {
    const connectAs = (key, agentName) =>
      fetch(`http://127.0.0.1:${port}/api/v1/auth/agent/connect`, {
        method: 'POST',
        headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
        body: JSON.stringify({ agentName, instanceId: alice.instanceId, concurrency: 1 }),
      })
    for (const agentName of ['bob_agent', 'alice_echo']) {
      const r = await connectAs('bk_bob', agentName)
      assert.equal(r.status, 403, agentName)
      const e = await r.json()
      assert.equal(e.code, 'INSTANCE_ID_TAKEN')
      assert.match(e.message, /instance id AG-alice_echo-.* is registered by another user; choose another instance id/)
    }
    // Alice's instance was not taken over: her tasks still reach it and complete
    const caller = await sdk.TaskClient.create({ billingMode: 'free', apiKey: 'bk_alice', cdmUrl })
    try {
      const s = await caller.sendMessage({ agentName: 'alice_echo', requestParts: [sdk.textPart('still mine')] })
      const texts = []
      s.onArtifact((e) => texts.push(Buffer.from(e.artifactRef.data ?? '', 'base64').toString('utf8')))
      const t = await s.waitForTerminal(15_000)
      assert.equal(t.state, 'completed')
      assert.deepEqual(texts, ['alice: still mine'])
    } finally {
      caller.destroy()
    }
  } finally {
    await alice.stop(1000)
    await stop(child)
  }
})

/**
 * An instance that registers and subscribes to its control channel (so the devnet counts it live)
 * and then never reads it: the StartTasks sent to it go unanswered, as to an agent that hangs.
 */
async function muteInstance(net, agentName) {
  const instanceId = `mute-${agentName}`
  const r = await fetch(`${net.url}/api/v1/auth/agent/connect`, {
    method: 'POST',
    headers: { authorization: `Bearer ${net.apiKey}`, 'content-type': 'application/json' },
    body: JSON.stringify({ agentName, instanceId, concurrency: 4 }),
  })
  assert.equal(r.status, 200)
  const { controlChannel, pamToken } = await r.json()
  const sub = (tt) => fetch(`${net.url}/v2/subscribe/${SUB}/${controlChannel}/0?uuid=${instanceId}&auth=${pamToken}&tt=${tt}`).then((x) => x.json())
  const cursor = (await sub(0)).t.t
  return {
    /** What reached the control channel since the handshake (one poll). */
    async received() {
      return (await sub(cursor)).m.map((m) => m.d)
    },
  }
}

test('a task no instance acknowledges is sent again to another instance, and fails with task_not_acknowledged after three unanswered sends', async () => {
  const env = await startNetwork({ ackTimeoutMs: 1500 })
  try {
    const client = await env.client()
    // only a mute instance: three StartTasks, one per ack timeout, then the task fails with a reason
    const alone = await muteInstance(env.net, 'mute_alone')
    const t0 = Date.now() // before the send: the first StartTask goes out while it is answered
    const lost = await client.sendMessage({ agentName: 'mute_alone', requestParts: [sdk.textPart('nobody answers')] })
    const t = await lost.waitForTerminal(20_000)
    assert.equal(t.state, 'failed')
    assert.match(t.error, /^task_not_acknowledged: no instance of agent "mute_alone" acknowledged the task within 1.5 s \(3 StartTasks sent\)/)
    assert.ok(Date.now() - t0 >= 4500, `failed after ${Date.now() - t0} ms: three ack timeouts of 1.5 s must pass first`)
    const starts = (await alone.received()).filter((m) => m.type === 'StartTask' && m.taskId === lost.taskId)
    assert.equal(starts.length, 3, 'the StartTask went to the only instance three times')
    assert.equal((await client.getTask(lost.taskId)).state, 'failed')

  } finally {
    await env.stop()
  }
  // a mute instance and, after the task was sent to it, a working one: the task moves over and
  // completes (a longer bound here: the working agent has two of them to start and register)
  const env2 = await startNetwork({ ackTimeoutMs: 4000 })
  try {
    const client = await env2.client()
    const mute = await muteInstance(env2.net, 'mute_then_real')
    const s = await client.sendMessage({ agentName: 'mute_then_real', requestParts: [sdk.textPart('hello')] })
    const first = (await mute.received()).filter((m) => m.type === 'StartTask').map((m) => m.taskId)
    assert.deepEqual(first, [s.taskId], 'the task went to the mute instance first (it was the only one)')
    await env2.agent('mute_then_real', (task, ctx) => ({ artifacts: [{ data: `real: ${ctx.requestParts[0].text}`, mimeType: 'text/plain' }] }))
    const texts = []
    s.onArtifact((e) => texts.push(Buffer.from(e.artifactRef.data ?? '', 'base64').toString('utf8')))
    assert.equal((await s.waitForTerminal(20_000)).state, 'completed')
    assert.deepEqual(texts, ['real: hello'])
  } finally {
    await env2.stop()
  }
})

test('ackTimeoutMs and --ack-timeout refuse what is not a positive time', async () => {
  await assert.rejects(sdk.LocalNetwork.start({ ackTimeoutMs: 0 }), /ackTimeoutMs must be a positive number of milliseconds, got 0/)
  const r = await runNodeArgs([cli, '--ack-timeout', 'soon'])
  assert.notEqual(r.code, 0)
  assert.match(r.stderr, /--ack-timeout needs seconds, got "soon"/)
})

test('slowloris: a half-sent request head is closed after the 10 s header timeout while a long-poll held past it still works', async () => {
  const { child, port } = await startCli(['--port', '0', '--in-memory'])
  try {
    const handshake = await raw(port, get(`/v2/subscribe/${SUB}/lp/0?tt=0&uuid=r`))
    const cursor = handshake.json.t.t
    // a long-poll (held up to 60 s by default) and a slowloris start together
    const poll = connect(port)
    await poll.ready
    poll.sock.write(get(`/v2/subscribe/${SUB}/lp/0?tt=${cursor}&uuid=r`))
    const slow = connect(port)
    await slow.ready
    const started = Date.now()
    slow.sock.write('GET /time/0 HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ')
    const closedAt = await slow.closed.promise
    const took = closedAt - started
    assert.ok(took >= 9_000 && took < 15_000, `closed after ${took} ms`)
    assert.equal(slow.data.length, 0, 'no answer, the connection is just closed')
    // the poll is still held, past the header timeout: a publish ends it
    const published = await fetch(`http://127.0.0.1:${port}/publish/${PUB}/${SUB}/0/lp/0?uuid=p`, { method: 'POST', body: '"after the timeout"' })
    assert.equal(published.status, 200)
    const held = await response(poll)
    assert.equal(held.status, 200)
    assert.equal(held.json.m[0].d, 'after the timeout')
    assert.ok(Date.now() - started >= 9_000)
    poll.sock.destroy()
  } finally {
    await stop(child)
  }
})

test('DNS rebinding: requests for other host names get 421; --allow-host adds names', async () => {
  const bad = await runNodeArgs([cli, '--allow-host', 'http://x.test'])
  assert.equal(bad.code, 2)
  assert.match(bad.stderr, /--allow-host needs a host name/)
  const { child, port } = await startCli(['--port', '0', '--in-memory', '--allow-host', 'devnet.test'])
  try {
    for (const host of ['evil.example', `evil.example:${port}`, 'localhost.evil.example', '0.0.0.0']) {
      const r = await raw(port, get('/config.json', host))
      assert.equal(r.status, 421, host)
      assert.match(r.json.message, /Misdirected Request.*--allow-host/)
    }
    for (const host of [`127.0.0.1:${port}`, `localhost:${port}`, '[::1]', 'devnet.test']) {
      assert.equal((await raw(port, get('/config.json', host))).status, 200, host)
    }
    // a rebound page cannot publish either
    const r = await raw(port, get(`/publish/${PUB}/${SUB}/0/rebound/0/1`, 'evil.example'))
    assert.equal(r.status, 421)
  } finally {
    await stop(child)
  }
})

test('a publish flood to open channels keeps the CLI devnet under its memory bound; messages over 32 KiB get 413', async () => {
  const { child, port } = await startCli(['--port', '0', '--in-memory'])
  try {
    const url = `http://127.0.0.1:${port}`
    const big = await fetch(`${url}/publish/${PUB}/${SUB}/0/big/0?uuid=x`, { method: 'POST', body: JSON.stringify('x'.repeat(32 * 1024)) })
    assert.equal(big.status, 413)
    assert.match((await big.json()).message, /^Message Too Large/)
    const base = kib(child.pid, 'VmRSS')
    // 32 KiB of zeros, about 512 KiB parsed; 1,200 of them kept over 1 GiB before
    const dense = `[${'0,'.repeat(15_999)}0]`
    let next = 0
    const worker = async () => {
      while (next < 1200) {
        const i = next++
        const channel = i % 2 ? `flood.${i}` : 'flood'
        const r = await fetch(`${url}/publish/${PUB}/${SUB}/0/${channel}/0?uuid=f`, { method: 'POST', body: dense })
        assert.equal(r.status, 200)
        await r.arrayBuffer()
      }
    }
    await Promise.all([worker(), worker(), worker(), worker()])
    const peak = kib(child.pid, 'VmHWM')
    // the network keeps at most 128 MiB of messages (estimated), the oldest dropped first
    assert.ok(peak < base + 256 * 1024, `RSS ${base} KiB before the flood, peak ${peak} KiB`)
    const h = await (await fetch(`${url}/v3/history/sub-key/${SUB}/channel/flood.1`)).json()
    assert.deepEqual(h.channels['flood.1'], [], 'the oldest open channel was dropped')
    assert.equal((await fetch(`${url}/time/0`)).status, 200)
  } finally {
    await stop(child)
  }
})
