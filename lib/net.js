'use strict'
// The `tls` and `proxy` options every entry point takes (TaskClient, ConsumerAuth, AgentAuth,
// agents), in the engine's shape. Only the types are checked here; the engine reads the
// certificates and the proxy URL and says what is wrong with them.
const { InvalidArgumentError } = require('./errors.js')

const isBytes = (v) => typeof v === 'string' || v instanceof Uint8Array

/** `{ tls?: { ca? }, proxy? }` → `{ tlsCa?: Buffer[], proxy?: string }` (or undefined). */
function netOptions(options) {
  const { tls, proxy } = options ?? {}
  if (proxy !== undefined && typeof proxy !== 'string') {
    throw new InvalidArgumentError(`proxy must be a URL string such as http://proxy.internal:3128, got ${typeof proxy}`)
  }
  if (tls !== undefined && (tls === null || typeof tls !== 'object' || Array.isArray(tls))) {
    throw new InvalidArgumentError('tls must be an object such as { ca: fs.readFileSync("ca.pem") }')
  }
  const ca = tls?.ca
  if (ca !== undefined && !isBytes(ca) && !(Array.isArray(ca) && ca.every(isBytes))) {
    throw new InvalidArgumentError('tls.ca must be PEM text: a string, a Buffer, or an array of them')
  }
  if (proxy === undefined && ca === undefined) return undefined
  return {
    tlsCa: ca === undefined ? undefined : [ca].flat().map((c) => Buffer.from(c)),
    proxy,
  }
}

/** Run a synchronous native constructor; its argument errors become InvalidArgumentError. */
function construct(fn) {
  try {
    return fn()
  } catch (err) {
    if (err?.code === 'InvalidArg') throw new InvalidArgumentError(err.message)
    throw err
  }
}

module.exports = { netOptions, construct }
