'use strict'
// The SDK's error classes. Rust never builds JS errors itself: it calls makeError() (registered by
// index.js) on the JS thread and rejects with the returned instance, so every async path yields a
// real instance of these classes.
//
// `instanceof` is brand-based (Symbol.for), so it also holds when two copies of the package are
// loaded (e.g. one through ESM and one through CommonJS in a bundled app).

const BRANDS = Symbol.for('@blocks-network/sdk.errorBrands')

function brand(cls) {
  Object.defineProperty(cls, Symbol.hasInstance, {
    value(instance) {
      return Boolean(instance && instance[BRANDS] && instance[BRANDS].includes(cls.name))
    },
  })
  return cls
}

/** Base class of every error the SDK raises. */
class BlocksError extends Error {
  constructor(message, props) {
    super(message, props && props.cause !== undefined ? { cause: props.cause } : undefined)
    this.name = new.target.name
    const chain = []
    for (let c = new.target; c && c !== Error; c = Object.getPrototypeOf(c)) chain.push(c.name)
    Object.defineProperty(this, BRANDS, { value: chain, enumerable: false })
    if (props) {
      for (const [k, v] of Object.entries(props)) if (k !== 'cause' && v !== undefined) this[k] = v
    }
  }
}
brand(BlocksError)

/** A JSON-RPC call failed. `code` is the JSON-RPC code (or the HTTP status), `rpcMessage` the server's text. */
class RpcError extends BlocksError {}
brand(RpcError)
/** The agent's billing mode differs from the client's: `expected` (the agent's) and `got` (what was sent). */
class BillingModeMismatchError extends RpcError {}
brand(BillingModeMismatchError)
/** Token refresh has failed permanently (three proactive attempts). */
class AuthRefreshFailedError extends BlocksError {}
brand(AuthRefreshFailedError)
/** The agent's API key was refused, or the agent was forced offline. */
class AgentAuthFatalError extends BlocksError {}
brand(AgentAuthFatalError)
/** An anonymous viewer was refused a read token (HTTP 403). */
class AnonTaskAccessDeniedError extends BlocksError {}
brand(AnonTaskAccessDeniedError)
/** A stream of a finished task was never opened (stream data is live-only). */
class StreamUnavailableError extends BlocksError {}
brand(StreamUnavailableError)
/** The network or the server failed (connection refused, unexpected HTTP status, bad answer). */
class TransportError extends BlocksError {}
brand(TransportError)
/** Configuration could not be resolved (CDM document, keys, base URL). */
class ConfigError extends BlocksError {}
brand(ConfigError)
/** An option or argument is invalid; nothing was sent. */
class InvalidArgumentError extends BlocksError {}
brand(InvalidArgumentError)
/** The upload handshake or a file download failed; `status` is the HTTP status when there was one. */
class FileUploadError extends BlocksError {}
brand(FileUploadError)
/** A wait exceeded its deadline. */
class TimeoutError extends BlocksError {}
brand(TimeoutError)
/** The session or client was closed. */
class ClosedError extends BlocksError {}
brand(ClosedError)

const classes = {
  BlocksError, RpcError, BillingModeMismatchError, AuthRefreshFailedError, AgentAuthFatalError,
  AnonTaskAccessDeniedError, StreamUnavailableError, TransportError, ConfigError,
  InvalidArgumentError, TimeoutError, ClosedError, FileUploadError,
}

function makeError(kind, message, propsJson) {
  const C = classes[kind] || BlocksError
  let props
  try {
    props = JSON.parse(propsJson)
  } catch {
    props = undefined
  }
  return new C(message, props || undefined)
}

module.exports = { ...classes, makeError }
