'use strict'
// One logging path for the engine and the JS layer.
//
// * LOG_LEVEL (error|warn|info|debug, any case; unset or unknown: info; NODE_ENV plays no part)
//   sets the threshold; setLogLevel() changes it at run time.
// * Without a user logger an entry goes to the console as `(tag, { level, message, ts, ...meta })`:
//   error → console.error, warn → console.warn, info/debug → console.log. The tag is `[Blocks]`,
//   or `[Transport]` for the transport library's own records (BLOCKS_DEBUG_INTERNAL
//   forward_transport). Engine records carry their `target` in meta.
// * setLogger(logger) routes everything into the user's logger instead: logger[level](message, meta)
//   (any object with error/warn/info/debug methods, e.g. pino or console).
// * BLOCKS_DEBUG_INTERNAL (comma list) enables internal subsystems: `diagnostics` (the realtime
//   plane's debug records) and `forward_transport`; src/log.rs documents what each shows. An
//   enabled subsystem is visible at the default level (its records pass while the threshold is
//   info or debug). Unknown tokens are reported once, as a warning.
// * Every entry is redacted first (tokens, JWTs, API keys, subscribe/publish keys): a safety net
//   for whatever a message or an error text might carry.

const LEVELS = { error: 0, warn: 1, info: 2, debug: 3 }
const KNOWN_INTERNAL = ['diagnostics', 'forward_transport']
// crate names of the transport library's records (see src/log.rs)
const TRANSPORT_CRATES = new Set(['pubnub', 'reqwest', 'hyper', 'hyper_util', 'h2'])
const RESERVED = new Set(['level', 'message', 'ts'])

let logger = null
let threshold = levelOf(process.env.LOG_LEVEL)
const internal = parseDebugInternal(process.env.BLOCKS_DEBUG_INTERNAL)

function levelOf(v) {
  const l = typeof v === 'string' ? v.trim().toLowerCase() : ''
  return l in LEVELS ? l : 'info'
}

/** `BLOCKS_DEBUG_INTERNAL` → { enabled: Set of known tokens, unknown: [tokens as written] }. */
function parseDebugInternal(raw) {
  const enabled = new Set()
  const unknown = []
  for (const t of String(raw ?? '').split(',')) {
    const token = t.trim()
    if (!token) continue
    if (KNOWN_INTERNAL.includes(token.toLowerCase())) enabled.add(token.toLowerCase())
    else if (!unknown.includes(token)) unknown.push(token)
  }
  return { enabled, unknown }
}

function crateOf(target) {
  return target.split('::')[0]
}

/** The internal subsystem an engine record belongs to, if any. */
function subsystemOf(level, meta) {
  const target = meta && typeof meta.target === 'string' ? meta.target : null
  if (!target) return null
  if (TRANSPORT_CRATES.has(crateOf(target))) return 'forward_transport'
  if (level === 'debug' && (target === 'blocks::realtime' || target.startsWith('blocks::realtime::'))) return 'diagnostics'
  return null
}

function passes(level, subsystem) {
  const max = LEVELS[threshold]
  if (!subsystem) return LEVELS[level] <= max
  if (!internal.enabled.has(subsystem)) return false
  return LEVELS[level] <= (max >= LEVELS.info ? LEVELS.debug : max)
}

// Secrets: each pattern keeps its label and replaces the value.
const SECRET_PATTERNS = [
  // query parameters and key=value pairs: auth=…, token=…, access_token=…, pamToken=…
  [/\b(auth|[A-Za-z_]*token)=[^&\s"',;)]+/gi, '$1=[redacted]'],
  // JSON / object fields: "token": "…", apiKey: '…', "authKey":"…"
  [/(["']?\b(?:auth|authKey|[A-Za-z_]*token|[A-Za-z_]*secret|password|api_?key)\b["']?\s*:\s*)(["'])(?:(?!\2).)*\2/gi, '$1$2[redacted]$2'],
  // Authorization headers
  [/\b(Bearer|Basic)\s+[A-Za-z0-9._~+/=-]+/g, '$1 [redacted]'],
  // JWTs anywhere
  [/\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*/g, '[redacted-jwt]'],
  // Blocks API keys
  [/\bbk_[A-Za-z0-9_-]+/g, 'bk_[redacted]'],
  // realtime keys: sub-c-…, pub-c-…, sec-c-…, and key fields (subscribe_key: …, publishKey=Some("…"))
  [/\b(pub|sub|sec)-c-[A-Za-z0-9-]+/g, '$1-c-[redacted]'],
  [/\b((?:publish|subscribe|secret|pub|sub)[_-]?key)(["']?\s*[:=/]\s*(?:Some\()?["']?)(?!\[redacted\]|Some\()[^\s"'(),&/]+/gi, '$1$2[redacted]'],
]

// Vendor words of the realtime provider stay out of the SDK's own entries.
const VENDOR_WORDS = [
  [/\bPubNub\b/gi, 'realtime'],
  [/\bAccess Manager\b/gi, 'access control'],
  [/\bPAM\b/g, 'access'],
]

/** Mask secrets in a log text (idempotent). */
function redact(text) {
  let s = String(text)
  for (const [re, to] of SECRET_PATTERNS) s = s.replace(re, to)
  return s
}

function cleanText(text, transport) {
  let s = redact(text)
  if (!transport) for (const [re, to] of VENDOR_WORDS) s = s.replace(re, to)
  return s
}

function cleanMeta(meta, transport) {
  if (meta === null || typeof meta !== 'object') return meta
  const out = {}
  for (const [k, v] of Object.entries(meta)) {
    if (typeof v === 'string') out[k] = k === 'target' ? v : cleanText(v, transport)
    else if (Array.isArray(v)) out[k] = v.map((x) => (typeof x === 'string' ? cleanText(x, transport) : x))
    else out[k] = v
  }
  return out
}

/** Log one line through the SDK's logging path. */
function log(level, message, meta) {
  if (!(level in LEVELS)) level = 'info'
  const subsystem = subsystemOf(level, meta)
  if (!passes(level, subsystem)) return
  const transport = subsystem === 'forward_transport'
  const text = cleanText(message, transport)
  const safeMeta = cleanMeta(meta, transport)
  if (logger && typeof logger[level] === 'function') {
    try {
      logger[level](text, safeMeta)
    } catch {
      // a broken user logger must not break the SDK
    }
    return
  }
  const entry = { level, message: text, ts: new Date().toISOString() }
  if (safeMeta && typeof safeMeta === 'object') for (const [k, v] of Object.entries(safeMeta)) if (!RESERVED.has(k)) entry[k] = v
  const tag = transport ? '[Transport]' : '[Blocks]'
  if (level === 'error') console.error(tag, entry)
  else if (level === 'warn') console.warn(tag, entry)
  else console.log(tag, entry)
}

/** Route SDK logs into `next` (null restores the console). */
function setLogger(next) {
  if (next !== null && next !== undefined && typeof next !== 'object' && typeof next !== 'function') {
    throw new TypeError('logger must be an object with error/warn/info/debug methods')
  }
  logger = next ?? null
}

/** Change the threshold at run time. */
function setLogLevel(level, nativeSet) {
  threshold = levelOf(level)
  if (nativeSet) nativeSet(threshold)
}

function currentLevel() {
  return threshold
}

// Unknown BLOCKS_DEBUG_INTERNAL tokens: one warning per process (after the importing module's
// own code has run, so a logger set right after the import receives it).
const WARNED = Symbol.for('@blocks-network/sdk.debugInternalWarned')
if (internal.unknown.length > 0 && !globalThis[WARNED]) {
  globalThis[WARNED] = true
  queueMicrotask(() =>
    log('warn', `BLOCKS_DEBUG_INTERNAL: unknown token(s) ${internal.unknown.join(', ')} ignored; known tokens: ${KNOWN_INTERNAL.join(', ')}`, {
      event: 'debug_internal_unknown_token',
      tokens: internal.unknown,
    }),
  )
}

module.exports = { log, setLogger, setLogLevel, currentLevel, redact }
