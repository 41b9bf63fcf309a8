'use strict'
// Request-part helpers (caller side) and artifact helpers (both sides).

const fs = require('node:fs')
const path = require('node:path')
const { FileUploadError, InvalidArgumentError } = require('./errors.js')

/** Files up to this size (inclusive) travel inline as base64; larger ones are uploaded. */
const ARTIFACT_INLINE_LIMIT_BYTES = 16384
/** Largest file the SDK uploads by default (25 MiB); `maxUploadBytes` on the client changes it. */
const BLOCKS_MAX_UPLOAD_BYTES = 26214400

// Blobs made by filePartFromPath → their path, so uploads stream from disk.
const pathBlobs = new WeakMap()

const MIME = {
  txt: 'text/plain', md: 'text/markdown', csv: 'text/csv', html: 'text/html', htm: 'text/html', css: 'text/css',
  js: 'text/javascript', mjs: 'text/javascript', ts: 'text/plain', json: 'application/json', xml: 'application/xml',
  yaml: 'application/yaml', yml: 'application/yaml', pdf: 'application/pdf', zip: 'application/zip',
  gz: 'application/gzip', tar: 'application/x-tar', png: 'image/png', jpg: 'image/jpeg', jpeg: 'image/jpeg',
  gif: 'image/gif', webp: 'image/webp', svg: 'image/svg+xml', mp3: 'audio/mpeg', wav: 'audio/wav',
  mp4: 'video/mp4', webm: 'video/webm', bin: 'application/octet-stream',
}

/** MIME type from a file name's extension (`application/octet-stream` when unknown). */
function mimeFromName(name) {
  const ext = path.extname(String(name)).slice(1).toLowerCase()
  return MIME[ext] ?? 'application/octet-stream'
}

function partOptions(options, defaultPartId) {
  if (options === undefined || options === null) return { partId: defaultPartId }
  if (typeof options === 'string') return { partId: options }
  if (typeof options !== 'object') throw new InvalidArgumentError('part options must be an object or a partId string')
  return { ...options, partId: options.partId ?? defaultPartId }
}

/**
 * A text request part: `{ partId, text }` (`partId` defaults to `"text"`).
 * @param {string} text
 * @param {string | { partId?: string, contentType?: string }} [options]
 */
function textPart(text, options) {
  if (typeof text !== 'string') throw new InvalidArgumentError(`textPart(text) needs a string, got ${typeof text}`)
  const { partId, contentType } = partOptions(options, 'text')
  const part = { partId, text }
  if (contentType) part.contentType = contentType
  return part
}

function isBinary(data) {
  return Buffer.isBuffer(data) || data instanceof Uint8Array || data instanceof ArrayBuffer || data instanceof Blob
}

function byteLength(data) {
  if (data instanceof Blob) return data.size
  return data.byteLength
}

async function toBuffer(data) {
  if (Buffer.isBuffer(data)) return data
  if (data instanceof Uint8Array) return Buffer.from(data.buffer, data.byteOffset, data.byteLength)
  if (data instanceof ArrayBuffer) return Buffer.from(data)
  return Buffer.from(await data.arrayBuffer())
}

/**
 * A file request part: `{ partId, file, fileName, contentType }`. `data` is a Buffer, Uint8Array,
 * ArrayBuffer, Blob or File. Called as `filePart(data, fileName, { partId?, contentType? })` or
 * `filePart(data, { partId?, fileName?, contentType? })`. `partId` defaults to `"file"`,
 * `fileName` to the File's name or `"file"`, `contentType` to the Blob's type or
 * `application/octet-stream`. Up to 16384 bytes it is sent inline, above it uploaded before the
 * task is created.
 */
function filePart(data, fileNameOrOptions, options) {
  if (!isBinary(data)) {
    throw new InvalidArgumentError('filePart(data) needs a Buffer, Uint8Array, ArrayBuffer, Blob or File')
  }
  let opts = fileNameOrOptions
  if (typeof fileNameOrOptions === 'string') {
    if (options !== undefined && (options === null || typeof options !== 'object')) throw new InvalidArgumentError('filePart(data, fileName, options): options must be an object ({ partId?, contentType? })')
    opts = { ...options, fileName: fileNameOrOptions }
  } else if (options !== undefined) {
    throw new InvalidArgumentError('filePart(data, fileName, options): the second argument must be the file name when options are given')
  }
  const { partId, fileName, contentType, ...extra } = partOptions(opts, 'file')
  return {
    ...extra,
    partId,
    file: data,
    fileName: fileName ?? (typeof data.name === 'string' && data.name ? data.name : 'file'),
    contentType: contentType ?? (data instanceof Blob && data.type ? data.type : 'application/octet-stream'),
  }
}

/**
 * A file request part read from disk: `fileName` is the path's base name and `contentType` comes
 * from the extension unless given. Large files are streamed from disk when sent, never loaded whole.
 */
async function filePartFromPath(filePath, options) {
  if (typeof filePath !== 'string' || filePath === '') throw new InvalidArgumentError('filePartFromPath(path) needs a path string')
  let st
  try {
    st = await fs.promises.stat(filePath)
  } catch (err) {
    throw new InvalidArgumentError(`filePartFromPath: cannot read ${filePath} (${err.code ?? err.message})`)
  }
  if (!st.isFile()) throw new InvalidArgumentError(`filePartFromPath: ${filePath} is not a regular file`)
  const opts = partOptions(options, 'file')
  const fileName = opts.fileName ?? path.basename(filePath)
  const contentType = opts.contentType ?? mimeFromName(fileName)
  let file
  if (st.size <= ARTIFACT_INLINE_LIMIT_BYTES) {
    file = await fs.promises.readFile(filePath)
  } else {
    file = await fs.openAsBlob(filePath, { type: contentType })
    pathBlobs.set(file, path.resolve(filePath))
  }
  return filePart(file, { ...opts, fileName, contentType })
}

/**
 * Turn request parts into wire parts: small files inline, large ones listed for upload.
 * Validates everything before any byte is sent.
 * @internal
 */
async function prepareParts(parts, maxUploadBytes) {
  const wire = []
  const uploads = []
  const temps = []
  try {
    await collectParts(parts, maxUploadBytes, wire, uploads, temps)
  } catch (err) {
    await removeTemps(temps)
    throw err
  }
  return { wire, uploads, cleanup: () => removeTemps(temps) }
}

async function removeTemps(temps) {
  await Promise.all(temps.map((d) => fs.promises.rm(d, { recursive: true, force: true })))
}

/**
 * A large in-memory Blob (or File) is spooled to a private temporary file chunk by chunk, so the
 * upload streams from disk and the whole file is never copied into one buffer (FILE-04).
 */
async function spool(blob, temps) {
  const os = require('node:os')
  const { Readable } = require('node:stream')
  const { pipeline } = require('node:stream/promises')
  const dir = await fs.promises.mkdtemp(path.join(os.tmpdir(), 'blocks-upload-'))
  temps.push(dir)
  const file = path.join(dir, 'blob')
  await pipeline(Readable.fromWeb(blob.stream()), fs.createWriteStream(file, { mode: 0o600 }))
  return file
}

async function collectParts(parts, maxUploadBytes, wire, uploads, temps) {
  for (const [index, p] of (parts ?? []).entries()) {
    if (p === null || typeof p !== 'object' || p.file === undefined) {
      wire.push(p)
      continue
    }
    if (typeof p.partId !== 'string' || p.partId === '') {
      throw new InvalidArgumentError('partId is required for file-bearing request parts')
    }
    if (!isBinary(p.file)) {
      throw new InvalidArgumentError(`part ${p.partId}: file must be a Buffer, Uint8Array, ArrayBuffer, Blob or File (use filePart())`)
    }
    const { file, fileName, text, ...rest } = p
    const name = fileName ?? (typeof file.name === 'string' && file.name ? file.name : 'unnamed')
    const mimeType = p.contentType ?? (file instanceof Blob && file.type ? file.type : 'application/octet-stream')
    const size = byteLength(file)
    if (size > maxUploadBytes) {
      throw new InvalidArgumentError(
        `file "${name}" is ${size} bytes, above the upload limit of ${maxUploadBytes} bytes (BLOCKS_MAX_UPLOAD_BYTES); ` +
          'send a smaller file, or raise maxUploadBytes on TaskClient.create() if your network accepts more',
      )
    }
    if (size <= ARTIFACT_INLINE_LIMIT_BYTES) {
      const data = (await toBuffer(file)).toString('base64')
      wire.push({ ...rest, artifactRef: { kind: 'inline', mimeType, size, data, fileName: name } })
    } else {
      wire.push(p.contentType ? { partId: p.partId, contentType: p.contentType } : { partId: p.partId })
      const filePathOf = pathBlobs.get(file) ?? (file instanceof Blob ? await spool(file, temps) : undefined)
      uploads.push({
        index,
        path: filePathOf,
        data: filePathOf ? undefined : await toBuffer(file),
        fileName: name,
        mimeType,
        size,
      })
    }
  }
}

/** The bytes of an inline artifact ref; throws for anything else. */
function decodeInlineArtifact(ref) {
  if (!ref || ref.kind === 'file' || typeof ref.data !== 'string') {
    throw new InvalidArgumentError('not an inline artifact: decodeInlineArtifact needs { kind: "inline", data: <base64> }')
  }
  return Buffer.from(ref.data, 'base64')
}

/**
 * Build an ArtifactRef: inline (base64 `data`) when the size is within `inlineLimit` or no `file`
 * descriptor is given, otherwise a file ref `{ kind: 'file', channel, fileId, fileName, ... }`.
 * Keys with null/undefined values are left out.
 */
function buildArtifactRef(options = {}) {
  if (options === null || typeof options !== 'object') throw new InvalidArgumentError('buildArtifactRef needs an options object ({ data, mimeType, ... })')
  const { data, mimeType, size, hash, file, fileName, inlineLimit = ARTIFACT_INLINE_LIMIT_BYTES } = options
  const isBytes = typeof data === 'string' || data instanceof Uint8Array || data instanceof ArrayBuffer
  if (data !== undefined && !isBytes) throw new InvalidArgumentError(`buildArtifactRef: data must be a string, Uint8Array or ArrayBuffer, got ${describe(data)}`)
  for (const [k, v] of [['mimeType', mimeType], ['hash', hash], ['fileName', fileName]]) {
    if (v !== undefined && typeof v !== 'string') throw new InvalidArgumentError(`buildArtifactRef: ${k} must be a string, got ${describe(v)}`)
  }
  if (size !== undefined && !(Number.isSafeInteger(size) && size >= 0)) throw new InvalidArgumentError(`buildArtifactRef: size must be a whole number of bytes, got ${describe(size)}`)
  if (file !== undefined && (file === null || typeof file !== 'object')) throw new InvalidArgumentError('buildArtifactRef: file must be { id, name?, channel, expiresAt? }')
  const bytes = typeof data === 'string' ? Buffer.from(data, 'utf8') : data === undefined ? undefined : Buffer.from(data)
  const n = size ?? bytes?.length ?? 0
  const mime = mimeType ?? 'application/octet-stream'
  const ref = n <= inlineLimit || !file
    ? { kind: 'inline', mimeType: mime, size: n, hash, data: bytes?.toString('base64'), fileName }
    : { kind: 'file', mimeType: mime, size: n, hash, fileId: file.id, fileName: file.name ?? fileName, channel: file.channel, expiresAt: file.expiresAt }
  for (const k of Object.keys(ref)) if (ref[k] === undefined || ref[k] === null) delete ref[k]
  return ref
}

/** A short description of a bad value for error messages. */
function describe(v) {
  if (v === null) return 'null'
  if (typeof v === 'symbol' || typeof v === 'function' || typeof v === 'bigint') return typeof v
  if (typeof v === 'object') return Array.isArray(v) ? 'an array' : 'an object'
  return `${typeof v} ${String(v).slice(0, 40)}`
}

// Refs handed out by sessions → their session, so `downloadArtifact(ref)` finds what a file
// download needs (the read token); by object, and by fileId for copies of a ref.
const refSessions = new WeakMap()
const fileSessions = new Map()
const forget = new FinalizationRegistry((fileId) => {
  const w = fileSessions.get(fileId)
  if (w && w.deref() === undefined) fileSessions.delete(fileId)
})

/** @internal Remember which session a ref came from. */
function rememberArtifact(ref, session) {
  refSessions.set(ref, session)
  if (ref.kind === 'file' && typeof ref.fileId === 'string') {
    fileSessions.set(ref.fileId, new WeakRef(session))
    forget.register(session, ref.fileId)
  }
}

function sessionOf(ref) {
  return refSessions.get(ref) ?? (typeof ref.fileId === 'string' ? fileSessions.get(ref.fileId)?.deref() : undefined)
}

/**
 * @internal An artifact event's ref as listArtifacts() returns it: a copy of the ref with the
 * event's `outputId` and `artifactRef` (itself) as non-enumerable fields.
 */
function refWithEvent(event) {
  const ref = { ...refOf(event) }
  Object.defineProperty(ref, 'artifactRef', { value: ref, enumerable: false })
  if (event && event.outputId !== undefined) Object.defineProperty(ref, 'outputId', { value: event.outputId, enumerable: false })
  const session = sessionOf(refOf(event))
  if (session) rememberArtifact(ref, session)
  return ref
}

/** Accept an artifact event or its ref. */
function refOf(refOrEvent) {
  const ref = refOrEvent && typeof refOrEvent === 'object' && refOrEvent.artifactRef ? refOrEvent.artifactRef : refOrEvent
  if (!ref || typeof ref !== 'object') throw new InvalidArgumentError('downloadArtifact needs an ArtifactRef (or an artifact event)')
  return ref
}

/**
 * Download an artifact: `{ data: Buffer, mimeType, fileName }`. Inline refs are decoded locally.
 * File refs are downloaded with the read token of the session they came from (found from the ref
 * itself); the second argument is optional: a TaskSession, or a fetch-compatible function used for
 * the download request.
 */
async function downloadArtifact(refOrEvent, source) {
  const ref = refOf(refOrEvent)
  const mimeType = ref.mimeType ?? 'application/octet-stream'
  if (ref.kind === 'inline' || ref.kind === undefined) {
    if (typeof ref.data !== 'string') throw new InvalidArgumentError('inline ArtifactRef is missing data')
    return { data: Buffer.from(ref.data, 'base64'), mimeType, fileName: ref.fileName }
  }
  if (ref.kind !== 'file') throw new InvalidArgumentError(`Unknown ArtifactRef kind: ${describe(ref.kind)}`)
  if (!ref.channel || !ref.fileId || !ref.fileName) {
    throw new InvalidArgumentError('file ArtifactRef is missing required fields (channel, fileId, fileName)')
  }
  const session = source && typeof source._downloadFile === 'function' ? source : sessionOf(ref)
  if (!session) {
    throw new InvalidArgumentError(
      `file artifact ${ref.fileName} (${ref.fileId}) did not come from a session of this process, so no read token is known for it: ` +
        'download it with session.downloadArtifact(ref) on a session of its task (client.connect(taskId) gives one)',
    )
  }
  if (typeof source === 'function') {
    const url = session._fileUrl(ref)
    let res
    try {
      res = await source(url)
    } catch (err) {
      throw new FileUploadError(`download of ${ref.fileName} failed: ${err && err.message}`, { cause: err })
    }
    if (!res || typeof res.arrayBuffer !== 'function') throw new FileUploadError(`download of ${ref.fileName}: the fetch function did not return a Response`)
    if (!res.ok) throw new FileUploadError(`download of ${ref.fileName} failed: HTTP ${res.status}`, { status: res.status })
    return { data: Buffer.from(await res.arrayBuffer()), mimeType, fileName: ref.fileName }
  }
  return { data: await session._downloadFile(ref), mimeType, fileName: ref.fileName }
}

/** The parts of `dir` that do not exist yet (mkdir creates them). */
async function missingDirs(dir) {
  const out = []
  for (let d = dir; ; d = path.dirname(d)) {
    try {
      await fs.promises.lstat(d)
      return out
    } catch {
      out.push(d)
    }
    if (path.dirname(d) === d) return out
  }
}

const NOFOLLOW_EXCL = fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | (fs.constants.O_NOFOLLOW ?? 0)

/**
 * Write artifacts into `dir` safely (see TaskSession.saveArtifacts): each one is written to a
 * private temporary name first (O_EXCL: never through a symlink), then linked to a free name
 * (never replacing anything) or, with `overwrite`, renamed over a regular file of that name.
 * @internal
 */
async function saveArtifacts(refs, dir, options, downloadFileTo) {
  if (typeof dir !== 'string' || dir === '') throw new InvalidArgumentError('saveArtifacts(dir) needs a directory path')
  if (options === null || typeof options !== 'object') throw new InvalidArgumentError('saveArtifacts(dir, options): options must be an object ({ overwrite? })')
  const overwrite = options.overwrite ?? false
  if (typeof overwrite !== 'boolean') throw new InvalidArgumentError('saveArtifacts: overwrite must be true or false')
  const root = path.resolve(dir)
  const created = await missingDirs(root)
  await fs.promises.mkdir(root, { recursive: true })
  for (const d of created) {
    // a directory this call created must be a directory, not a symlink planted meanwhile
    if (!(await fs.promises.lstat(d)).isDirectory()) throw new InvalidArgumentError(`${d} is not a directory (a symlink?): nothing was written`)
  }
  const used = new Set()
  const written = []
  for (const [i, ref] of refs.entries()) {
    let name = safeFileName(ref.fileName, i)
    const ext = path.extname(name)
    const stem = name.slice(0, name.length - ext.length)
    for (let n = 1; used.has(name.toLowerCase()); n++) name = `${stem}-${n}${ext}`
    const tmp = path.join(root, `.blocks-save-${process.pid}-${Date.now().toString(36)}-${i}.part`)
    try {
      if (ref.kind === 'file') {
        if (!ref.channel || !ref.fileId || !ref.fileName) throw new InvalidArgumentError('file ArtifactRef is missing required fields (channel, fileId, fileName)')
        await downloadFileTo(ref, tmp)
      } else {
        const { data } = await downloadArtifact(ref)
        const fh = await fs.promises.open(tmp, NOFOLLOW_EXCL, 0o644)
        try {
          await fh.writeFile(data)
        } finally {
          await fh.close()
        }
      }
      let target = path.join(root, name)
      if (path.dirname(target) !== root) throw new InvalidArgumentError(`artifact name ${JSON.stringify(ref.fileName)} resolves outside ${root}`)
      if (overwrite) {
        const existing = await fs.promises.lstat(target).catch(() => null)
        if (existing && !existing.isFile()) throw new InvalidArgumentError(`${target} exists and is not a regular file (a symlink or a directory): it is not replaced`)
        await fs.promises.rename(tmp, target)
      } else {
        for (let n = 1; ; n++) {
          try {
            await fs.promises.link(tmp, target)
            break
          } catch (err) {
            if (err.code !== 'EEXIST') throw err
            name = `${stem}-${n}${ext}`
            target = path.join(root, name)
          }
        }
        await fs.promises.unlink(tmp)
      }
      used.add(name.toLowerCase())
      written.push(target)
    } finally {
      await fs.promises.rm(tmp, { force: true })
    }
  }
  return written
}

const RESERVED = /^(con|prn|aux|nul|com[0-9]|lpt[0-9])(\..*)?$/i

/** A file name that is safe to create inside a directory (never a path). */
function safeFileName(name, index) {
  let n = typeof name === 'string' ? name : ''
  n = n.split('\0').join('')
  n = n.split(/[\\/]/).pop() ?? ''
  n = n.replace(/[\x00-\x1f<>:"|?*]/g, '_').trim()
  n = n.replace(/[. ]+$/, '')
  if (n === '' || n === '.' || n === '..') n = `artifact-${index}`
  if (RESERVED.test(n)) n = `_${n}`
  while (Buffer.byteLength(n) > 200) {
    const ext = path.extname(n)
    const stem = n.slice(0, n.length - ext.length)
    n = stem.slice(0, Math.max(1, stem.length - 10)) + (ext.length < 20 ? ext : '')
  }
  return n
}

module.exports = {
  ARTIFACT_INLINE_LIMIT_BYTES,
  BLOCKS_MAX_UPLOAD_BYTES,
  textPart,
  filePart,
  filePartFromPath,
  prepareParts,
  decodeInlineArtifact,
  buildArtifactRef,
  downloadArtifact,
  refOf,
  refWithEvent,
  rememberArtifact,
  safeFileName,
  saveArtifacts,
  mimeFromName,
}
