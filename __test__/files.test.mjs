// Issue 5: artifacts and files, inline and uploaded, both directions.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { sdk, startNetwork } from './helpers.mjs'

const {
  textPart, filePart, filePartFromPath, downloadArtifact, decodeInlineArtifact, buildArtifactRef,
  InvalidArgumentError, FileUploadError, BLOCKS_MAX_UPLOAD_BYTES, ARTIFACT_INLINE_LIMIT_BYTES,
} = sdk

const sha = (b) => createHash('sha256').update(b).digest('hex')

let env
let client
let tmp
before(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'blocks-files-'))
  env = await startNetwork({ maxUploadBytes: 64 * 1024 * 1024 })
  // digests every file input and returns each one back as an artifact
  await env.agent('mirror', async (task, ctx) => {
    const artifacts = []
    for (const part of ctx.requestParts) {
      if (!part.artifactRef) continue
      const data = await ctx.downloadInputArtifact(part)
      ctx.reportStatus(`${part.partId} ${part.artifactRef.kind} ${data.length} ${sha(data)}`)
      artifacts.push({ data, mimeType: part.artifactRef.mimeType, fileName: `back-${part.artifactRef.fileName}`, outputId: part.partId })
    }
    return { artifacts }
  }, { concurrency: 4 })
  // produces an artifact of the requested size
  await env.agent('maker', async (task, ctx) => {
    const n = Number(ctx.requestParts[0].text)
    const data = Buffer.alloc(n)
    for (let i = 0; i < n; i++) data[i] = (i * 31 + 7) & 0xff
    await ctx.publishArtifact(data, { mimeType: 'application/octet-stream', fileName: `made-${n}.bin`, outputId: 'blob' })
    return { artifacts: [{ data: 'done', mimeType: 'text/plain' }] }
  }, { concurrency: 4 })
  client = await env.client({ maxUploadBytes: 64 * 1024 * 1024 })
})
after(async () => {
  await env.stop()
  fs.rmSync(tmp, { recursive: true, force: true })
})

function made(n) {
  const data = Buffer.alloc(n)
  for (let i = 0; i < n; i++) data[i] = (i * 31 + 7) & 0xff
  return data
}

test('part helpers build the documented objects', async () => {
  // FILE-06: textPart, filePart (defaults, File name/type inferred) and filePartFromPath build the documented parts
  assert.deepEqual(textPart('hi'), { partId: 'text', text: 'hi' })
  const p = filePart(Buffer.from('abc'))
  assert.equal(p.partId, 'file')
  assert.equal(p.fileName, 'file')
  assert.equal(p.contentType, 'application/octet-stream')
  const f = filePart(new File(['x'], 'notes.txt', { type: 'text/plain' }), { partId: 'doc' })
  assert.equal(f.fileName, 'notes.txt')
  assert.equal(f.contentType, 'text/plain')
  assert.equal(f.partId, 'doc')
  const file = path.join(tmp, 'report.pdf')
  fs.writeFileSync(file, 'pdf bytes')
  const fp = await filePartFromPath(file)
  assert.equal(fp.fileName, 'report.pdf')
  assert.equal(fp.contentType, 'application/pdf')
  assert.equal(Buffer.from(fp.file).toString(), 'pdf bytes')
  await assert.rejects(filePartFromPath(path.join(tmp, 'missing.bin')), (e) => e instanceof InvalidArgumentError && /missing\.bin/.test(e.message))
  assert.throws(() => filePart('not bytes'), InvalidArgumentError)
  assert.equal(BLOCKS_MAX_UPLOAD_BYTES, 26214400)
  assert.equal(ARTIFACT_INLINE_LIMIT_BYTES, 16384)
})

for (const size of [0, 16384, 16385, 3 * 1024 * 1024]) {
  test(`a ${size}-byte input reaches the agent byte-exact and comes back the same way`, async () => {
    const data = randomBytes(size)
    const inline = size <= 16384
    const session = await client.sendMessage({
      agentName: 'mirror',
      requestParts: [filePart(data, { partId: 'in', fileName: 'in.bin' })],
    })
    const terminal = await session.waitForTerminal(30_000)
    assert.equal(terminal.state, 'completed')
    // from the session's record, not a listener: a task that ended before sendMessage() resolved
    // has its terminal at once and its caught-up progress delivered to listeners a tick later
    const progress = session.listEvents().filter((e) => e.type === 'progress' && e.message).map((e) => e.message)
    assert.ok(progress.some((m) => m === `in ${inline ? 'inline' : 'file'} ${size} ${sha(data)}`), `agent saw: ${progress}`)
    const [artifact] = session.listArtifacts()
    // ART-01: the artifact carries the outputId it was given
    assert.equal(artifact.outputId, 'in')
    assert.equal(artifact.artifactRef.kind, inline ? 'inline' : 'file')
    // ART-05 ART-07: inline and file artifacts download byte-exact, on a session closed by its terminal
    const got = await session.downloadArtifact(artifact)
    assert.equal(got.fileName, 'back-in.bin')
    assert.equal(sha(got.data), sha(data))
  })
}

test('filePartFromPath streams a large file; mixed text, small and large parts are handled in order', async () => {
  const big = path.join(tmp, 'big.dat')
  const bigData = randomBytes(5 * 1024 * 1024 + 3)
  fs.writeFileSync(big, bigData)
  const small = Buffer.from('small file')
  const session = await client.sendMessage({
    agentName: 'mirror',
    requestParts: [textPart('hello'), filePart(small, { partId: 'small', fileName: 's.txt' }), await filePartFromPath(big, { partId: 'big' })],
  })
  const terminal = await session.waitForTerminal(30_000)
  assert.equal(terminal.state, 'completed')
  const arts = session.listArtifacts()
  // ART-01: one artifact per returned entry, in array order
  assert.deepEqual(arts.map((a) => a.outputId), ['small', 'big'])
  assert.equal((await session.downloadArtifact(arts[0])).data.toString(), 'small file')
  assert.equal(sha((await session.downloadArtifact(arts[1])).data), sha(bigData))
})

test('agent outputs: inline at 16384 bytes, uploaded at 16385 and above, byte-exact, before the terminal', async () => {
  for (const n of [16384, 16385, 2 * 1024 * 1024]) {
    const session = await client.sendMessage({ agentName: 'maker', requestParts: [textPart(String(n))] })
    await session.waitForTerminal(30_000)
    const order = (await client.connect(session.taskId)).listEvents().map((e) => e.type).filter((t) => t !== 'progress')
    // ART-09 ART-01: the mid-run publishArtifact and the returned artifact precede the terminal, in order
    assert.deepEqual(order, ['artifact', 'artifact', 'terminal'])
    const [blob, done] = session.listArtifacts()
    assert.equal(blob.outputId, 'blob')
    // ART-04: above the inline limit the artifact is uploaded: a file ref with channel, size and fileName
    assert.equal(blob.artifactRef.kind, n <= 16384 ? 'inline' : 'file')
    assert.equal(blob.artifactRef.size, n)
    if (n > 16384) assert.equal(blob.artifactRef.channel, session.statusChannel)
    // ART-06: decodeInlineArtifact gives the inline bytes back
    assert.equal(decodeInlineArtifact(done.artifactRef).toString(), 'done')
    const got = await downloadArtifact(blob, session)
    assert.equal(sha(got.data), sha(made(n)))
    assert.equal(got.fileName, `made-${n}.bin`)
  }
})

test('a file above the limit is refused before any byte is sent, with the limit in the message', async () => {
  const small = await env.client() // default limit: 25 MiB
  const before = (await small.listTasks()).tasks.length
  const big = new Blob([new Uint8Array(BLOCKS_MAX_UPLOAD_BYTES + 1)])
  await assert.rejects(
    small.sendMessage({ agentName: 'mirror', requestParts: [filePart(big, { partId: 'x', fileName: 'huge.bin' })] }),
    (e) => e instanceof InvalidArgumentError && /26214400/.test(e.message) && /huge\.bin/.test(e.message),
  )
  await assert.rejects(
    client.sendMessage({ agentName: 'mirror', requestParts: [{ file: Buffer.from('x') }] }),
    (e) => e instanceof InvalidArgumentError && /partId is required/.test(e.message),
  )
  // ERR-07: too large a file and a file part without partId are refused before any network call
  assert.equal((await small.listTasks()).tasks.length, before)
})

test('the devnet refuses an upload above its own limit and a body larger than declared', async () => {
  const token = await (await fetch(`${env.net.url}/api/v1/auth/agent/consumer-token`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ apiKey: env.net.apiKey }),
  })).json()
  const post = (p, body) => fetch(`${env.net.url}${p}`, {
    method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${token.accessToken}` }, body: JSON.stringify(body),
  })
  const tooBig = await post('/api/v1/files/request-upload', { role: 'consumer-input', agentName: 'mirror', partId: 'p', fileName: 'a', fileSize: 65 * 1024 * 1024, mimeType: 'x/y' })
  assert.equal(tooBig.status, 413)
  assert.match((await tooBig.json()).error.message, /upload limit/)
  const ok = await (await post('/api/v1/files/request-upload', { role: 'consumer-input', agentName: 'mirror', partId: 'p', fileName: 'a', fileSize: 10, mimeType: 'x/y' })).json()
  const form = new FormData()
  for (const f of ok.formFields) form.append(f.key, f.value)
  form.append('file', new Blob([new Uint8Array(11)]), 'a')
  const r = await fetch(ok.uploadUrl, { method: 'POST', body: form })
  assert.equal(r.status, 400)
  // the refusal is an answer, never a reset connection (the devnet reads the rest of the body
  // first; before that fix about 1 in 40 of these failed with "fetch failed")
  for (let i = 0; i < 100; i++) {
    const u = await (await post('/api/v1/files/request-upload', { role: 'consumer-input', agentName: 'mirror', partId: 'p', fileName: 'a', fileSize: 10, mimeType: 'x/y' })).json()
    const f = new FormData()
    for (const x of u.formFields) f.append(x.key, x.value)
    f.append('file', new Blob([new Uint8Array(i % 2 ? 11 : 300_000)]), 'a')
    assert.equal((await fetch(u.uploadUrl, { method: 'POST', body: f })).status, 400)
  }
  // nothing was registered: confirm says the upload has no file
  const c = await post('/api/v1/files/confirm-upload', { uploadId: ok.uploadId })
  assert.equal(c.status, 409)
  // and a SendMessage naming the session is refused
  const s = client.sendMessage({ agentName: 'mirror', uploadSessionId: ok.uploadSessionId, requestParts: [{ partId: 'p' }] })
  await assert.rejects(s, /not completed and confirmed/)
})

test('an interrupted upload leaves nothing registered', async () => {
  const token = await (await fetch(`${env.net.url}/api/v1/auth/agent/consumer-token`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ apiKey: env.net.apiKey }),
  })).json()
  const auth = { 'content-type': 'application/json', authorization: `Bearer ${token.accessToken}` }
  const ok = await (await fetch(`${env.net.url}/api/v1/files/request-upload`, {
    method: 'POST', headers: auth, body: JSON.stringify({ role: 'consumer-input', agentName: 'mirror', partId: 'p', fileName: 'a', fileSize: 1_000_000, mimeType: 'x/y' }),
  })).json()
  // a raw multipart request that stops half way through the file, then the socket closes
  const { port } = new URL(ok.uploadUrl)
  const net = await import('node:net')
  const boundary = 'XyZ'
  const head = `--${boundary}\r\nContent-Disposition: form-data; name="key"\r\n\r\n${ok.uploadId}\r\n--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="a"\r\nContent-Type: x/y\r\n\r\n`
  await new Promise((resolve) => {
    const sock = net.connect(Number(port), '127.0.0.1', () => {
      sock.write(`POST /storage/upload HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nContent-Type: multipart/form-data; boundary=${boundary}\r\nContent-Length: 1000400\r\n\r\n`)
      sock.write(head)
      sock.write(Buffer.alloc(400_000))
      sock.end()
    })
    sock.on('close', resolve)
    sock.on('error', resolve)
    sock.resume()
  })
  const c = await fetch(`${env.net.url}/api/v1/files/confirm-upload`, { method: 'POST', headers: auth, body: JSON.stringify({ uploadId: ok.uploadId }) })
  assert.equal(c.status, 409)
})

test('file downloads need a token of the task channel', async () => {
  const session = await client.sendMessage({ agentName: 'maker', requestParts: [textPart('20000')] })
  await session.waitForTerminal(30_000)
  const ref = session.listArtifacts()[0].artifactRef
  const url = (auth) => `${env.net.url}/v1/files/sub-c-devnet-free/channels/${ref.channel}/files/${ref.fileId}/${ref.fileName}?uuid=x${auth ? `&auth=${auth}` : ''}`
  assert.equal((await fetch(url(), { redirect: 'manual' })).status, 403)
  const other = await client.sendMessage({ agentName: 'maker', requestParts: [textPart('1')] })
  await other.waitForTerminal(30_000)
  assert.equal((await fetch(url(other.readToken), { redirect: 'manual' })).status, 403)
  const ok = await fetch(url(session.readToken), { redirect: 'manual' })
  assert.equal(ok.status, 307)
  const blob = await fetch(ok.headers.get('location'))
  assert.equal((await blob.arrayBuffer()).byteLength, 20000)
  // ART-05: the ref alone is enough (the SDK finds its session); a ref no session of this process saw is refused with the next step
  assert.equal((await downloadArtifact(ref)).data.length, 20000)
  await assert.rejects(downloadArtifact({ ...ref, fileId: 'f_unknown' }), (e) => e instanceof InvalidArgumentError && /session.downloadArtifact/.test(e.message))
  await assert.rejects(downloadArtifact({ kind: 'weird' }), /Unknown ArtifactRef kind/)
  await assert.rejects(downloadArtifact({ kind: 'inline' }), /missing data/)
  await assert.rejects(downloadArtifact({ kind: 'file', fileId: 'x' }, session), /missing required fields/)
  await assert.rejects(session.downloadArtifact({ ...ref, fileId: 'f_nope' }), (e) => /404/.test(e.message))
})

test('saveArtifacts writes every artifact inside the directory, whatever the names say', async () => {
  const names = ['../escape.txt', '/etc/passwd', 'a\0b.txt', 'CON', '..', '', 'dup.txt', 'dup.txt', 'sub/dir/x.txt', 'C:\\win\\y.txt']
  await env.agent('namer', async () => ({
    artifacts: [...names.map((n, i) => ({ data: `#${i}`, mimeType: 'text/plain', fileName: n })), { data: made(30000), fileName: '../big.bin' }],
  }))
  const session = await client.sendMessage({ agentName: 'namer', requestParts: [textPart('go')] })
  await session.waitForTerminal(30_000)
  const dir = path.join(tmp, 'out')
  const written = await session.saveArtifacts(dir)
  // ART-08: every artifact is written into dir (as its safe fileName or artifact-<i>) and the paths are returned
  assert.equal(written.length, names.length + 1)
  for (const w of written) assert.equal(path.dirname(w), path.resolve(dir), `${w} is outside ${dir}`)
  assert.equal(new Set(written).size, written.length, 'collisions get distinct names')
  assert.deepEqual(written.map((w) => path.basename(w)), [
    'escape.txt', 'passwd', 'ab.txt', '_CON', 'artifact-4', 'artifact-5', 'dup.txt', 'dup-1.txt', 'x.txt', 'y.txt', 'big.bin',
  ])
  written.slice(0, names.length).forEach((w, i) => assert.equal(fs.readFileSync(w, 'utf8'), `#${i}`))
  assert.equal(sha(fs.readFileSync(written.at(-1))), sha(made(30000)))
  assert.ok(!fs.existsSync(path.join(tmp, 'escape.txt')))
})

test('downloads work on a connect() session of a finished task', async () => {
  const session = await client.sendMessage({ agentName: 'maker', requestParts: [textPart('40000')] })
  await session.waitForTerminal(30_000)
  const again = await client.connect(session.taskId)
  assert.equal(again.state, 'completed')
  const art = again.listArtifacts().find((a) => a.outputId === 'blob')
  // ART-07: downloadArtifact works on a connect() session of a finished task
  assert.equal(sha((await again.downloadArtifact(art)).data), sha(made(40000)))
})

test('buildArtifactRef: inline within the limit or without a file descriptor, file ref otherwise', () => {
  assert.deepEqual(buildArtifactRef({ data: 'hello', mimeType: 'text/plain' }), { kind: 'inline', mimeType: 'text/plain', size: 5, data: 'aGVsbG8=' })
  const f = buildArtifactRef({ size: 20000, mimeType: 'a/b', file: { id: 'f1', name: 'n.bin', channel: 'u.o.t' } })
  assert.deepEqual(f, { kind: 'file', mimeType: 'a/b', size: 20000, fileId: 'f1', fileName: 'n.bin', channel: 'u.o.t' })
  // ART-06: a file ref is "not an inline artifact"
  assert.throws(() => decodeInlineArtifact(f), /not an inline artifact/)
})

test('an upload the network refuses fails sendMessage with a FileUploadError carrying the HTTP status; no task is created', async () => {
  // a network that takes files up to 20000 bytes, and a client that allows the default 25 MiB:
  // the client sends the file and the network's request-upload refuses it
  const strict = await startNetwork({ maxUploadBytes: 20_000 })
  try {
    await strict.agent('mirror', () => ({}))
    const c = await strict.client()
    await assert.rejects(
      c.sendMessage({ agentName: 'mirror', requestParts: [filePart(made(30_000), { partId: 'big', fileName: 'big.bin' })] }),
      (e) => {
        assert.ok(e instanceof FileUploadError, `expected a FileUploadError, got ${e?.constructor?.name}: ${e?.message}`)
        assert.ok(e instanceof sdk.BlocksError)
        assert.equal(e.name, 'FileUploadError')
        assert.equal(e.status, 413)
        // FILE-05: a refused request-upload reads "request-upload failed: HTTP <n>"
        assert.match(e.message, /request-upload failed: HTTP 413/)
        assert.match(e.message, /upload limit/)
        return true
      },
    )
    assert.deepEqual((await c.listTasks()).tasks, [], 'no task was created')
    // within the network's limit the same call works
    const ok = await c.sendMessage({ agentName: 'mirror', requestParts: [filePart(made(19_000), { partId: 'fits', fileName: 'fits.bin' })] })
    assert.equal((await ok.waitForTerminal(30_000)).state, 'completed')
  } finally {
    await strict.stop()
  }
})
