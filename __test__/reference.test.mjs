// Issue 17: the SDK reference's own code shapes run unchanged. Each test is written the way the
// reference writes the snippet (not through our internal API), against a real devnet.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { startNetwork, sdk } from './helpers.mjs'

const { TaskClient, textPart, filePart, downloadArtifact, buildArtifactRef, BLOCKS_MAX_UPLOAD_BYTES } = sdk

const card = (streams) => ({ identity: { agentName: 'x' }, capabilities: { taskKinds: ['request', 'pipe'] }, runtime: { handler: './h.js' }, streams })

let env
let client
before(async () => {
  env = await startNetwork()
  await env.agent('words', async (task, ctx) => {
    const s = await ctx.createStream()
    for (const w of ['alpha', 'beta', 'gamma']) s.write(w)
    await s.end()
    return { artifacts: [{ data: 'spoken', mimeType: 'text/plain' }] }
  }, { card: card({ words: { direction: 'outbound', format: 'bytes' } }) })
  // returns one small (inline) and one large (file) artifact, and the names of its file inputs
  await env.agent('namer', async (task, ctx) => {
    const names = ctx.requestParts.filter((p) => p.artifactRef).map((p) => `${p.partId}:${p.artifactRef.fileName}`)
    return {
      artifacts: [
        { data: names.join(','), mimeType: 'text/plain' },
        { data: Buffer.alloc(40_000, 7), mimeType: 'application/octet-stream', fileName: 'big.bin' },
      ],
    }
  })
  client = await env.client()
})
after(async () => {
  await env.stop()
})

test('onStream(async (streamRef) => { const client = streamRef.open(); for await (const chunk of client.bytes()) … })', async () => {
  const session = await client.sendMessage({ agentName: 'words', requestParts: [textPart('go')], stream: true })
  const chunks = []
  const read = new Promise((resolve, reject) => {
    session.onStream(async (streamRef) => {
      try {
        const streamClient = streamRef.open()
        assert.equal(typeof streamClient.bytes, 'function', 'open() returns the stream client itself, not a Promise')
        assert.equal(streamRef.open(), streamClient, 'STRM-04: the same client while it is active')
        for await (const chunk of streamClient.bytes()) chunks.push(Buffer.from(chunk).toString())
        resolve()
      } catch (err) {
        reject(err)
      }
    })
  })
  await read
  assert.deepEqual(chunks, ['alpha', 'beta', 'gamma'])
  assert.equal((await session.waitForTerminal(15_000)).state, 'completed')
})

test('onStream(predicate, cb) and waitForStreamWhere(predicate): both receive the StreamRef', async () => {
  const session = await client.sendMessage({ agentName: 'words', requestParts: [textPart('go')], stream: true })
  const seen = []
  const got = new Promise((resolve) => {
    session.onStream(
      (ref) => {
        seen.push(ref instanceof sdk.StreamRef)
        return ref.declaredStream === 'words'
      },
      (ref) => resolve(ref),
    )
  })
  const byPredicate = await session.waitForStreamWhere((ref) => ref instanceof sdk.StreamRef && ref.descriptor.declaredStream === 'words')
  const ref = await got
  assert.equal(byPredicate, ref)
  assert.deepEqual(seen, [true])
  assert.equal(ref.streamId, ref.descriptor.streamId, 'the ref carries the descriptor fields')
  for await (const _ of ref.open().bytes()) {
    // drain
  }
  await session.waitForTerminal(15_000)
})

test('listArtifacts() returns ArtifactRef[]; downloadArtifact(artifactRef, fetch) works for inline and file artifacts', async () => {
  const session = await client.sendMessage({ agentName: 'namer', requestParts: [textPart('x')] })
  const downloads = []
  session.onArtifact(async ({ artifactRef }) => {
    downloads.push(downloadArtifact(artifactRef, fetch))
  })
  await session.waitForTerminal(15_000)
  const refs = session.listArtifacts()
  assert.deepEqual(refs.map((r) => r.kind), ['inline', 'file'])
  assert.equal(refs[1].fileName, 'big.bin')
  assert.equal(refs[1].size, 40_000)
  assert.ok(!('artifactRef' in JSON.parse(JSON.stringify(refs[0]))), 'a plain ArtifactRef when serialised')
  const [inline, file] = await Promise.all(downloads)
  assert.equal(inline.mimeType, 'text/plain')
  assert.equal(file.data.length, 40_000)
  assert.ok(file.data.every((b) => b === 7))
  // the user's fetch is the one that is called
  const urls = []
  const spy = (url, init) => {
    urls.push(String(url))
    return fetch(url, init)
  }
  const again = await downloadArtifact(refs[1], spy)
  assert.equal(again.data.length, 40_000)
  assert.equal(urls.length, 1)
  assert.match(urls[0], new RegExp(`/v1/files/.+/files/${refs[1].fileId}/big\\.bin`))
  // a ref copied through JSON still downloads (found by its fileId)
  const copy = JSON.parse(JSON.stringify(refs[1]))
  assert.equal((await downloadArtifact(copy)).data.length, 40_000)
})

test('filePart(data, fileName, options?): the second argument is the file name the agent sees', async () => {
  const session = await client.sendMessage({
    agentName: 'namer',
    requestParts: [filePart(Buffer.from('hello'), 'notes.txt'), filePart(Buffer.from('x'), 'b.csv', { partId: 'sheet', contentType: 'text/csv' })],
  })
  await session.waitForTerminal(15_000)
  const { data } = await downloadArtifact(session.listArtifacts()[0])
  assert.equal(data.toString(), 'file:notes.txt,sheet:b.csv')
  // the object form keeps working
  assert.deepEqual(
    { ...filePart(Buffer.from('a'), { partId: 'p', fileName: 'a.txt' }), file: undefined },
    { partId: 'p', fileName: 'a.txt', contentType: 'application/octet-stream', file: undefined },
  )
  assert.throws(() => filePart(Buffer.from('a'), { partId: 'p' }, {}), /second argument must be the file name/)
})

test('session.close() returns Promise<void>', async () => {
  const session = await client.sendMessage({ agentName: 'namer', requestParts: [textPart('x')] })
  const p = session.close()
  assert.ok(p instanceof Promise)
  assert.equal(await p, undefined)
  assert.equal(session.isClosed, true)
  // SESS-09: close() is idempotent
  assert.equal(session.close(), p, 'idempotent: the same promise')
})

test('buildArtifactRef(options) and BLOCKS_MAX_UPLOAD_BYTES as the reference lists them; StreamRef and AgentAuth at the root', async () => {
  assert.equal(BLOCKS_MAX_UPLOAD_BYTES, 26214400)
  assert.deepEqual(buildArtifactRef({ data: 'hello', mimeType: 'text/plain' }), { kind: 'inline', mimeType: 'text/plain', size: 5, data: 'aGVsbG8=' })
  assert.deepEqual(buildArtifactRef({ size: 20_000, mimeType: 'image/png', file: { id: 'f1', name: 'a.png', channel: 'u.o.t' } }), {
    kind: 'file', mimeType: 'image/png', size: 20_000, fileId: 'f1', fileName: 'a.png', channel: 'u.o.t',
  })
  assert.equal(typeof sdk.StreamRef, 'function')
  assert.equal(typeof sdk.AgentAuth, 'function')
  for (const m of ['init', 'refresh', 'authenticatedFetch']) assert.equal(typeof sdk.AgentAuth.prototype[m], 'function', `AgentAuth.prototype.${m}`)
  const esm = await import('../index.mjs')
  assert.equal(esm.AgentAuth, sdk.AgentAuth, 'the ESM entry exports the same AgentAuth')
  assert.equal(esm.StreamRef, sdk.StreamRef)
})
