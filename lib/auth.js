'use strict'
// Consumer auth providers for direct `new TaskClient({ ..., authProvider })` construction.
// `TaskClient.create({ apiKey | tokenEndpoint | tokenProvider })` builds one itself.

const native = require('../native.js')
const { InvalidArgumentError, makeError } = require('./errors.js')
const { log } = require('./log.js')

/** Normalise the auth options shared by TaskClient.create and ConsumerAuth. */
function authOptions(options) {
  const { apiKey, tokenEndpoint, tokenProvider, onAuthError } = options
  const out = { apiKey }
  if (tokenEndpoint !== undefined && tokenEndpoint !== null) {
    if (typeof tokenEndpoint === 'string') out.tokenEndpointUrl = tokenEndpoint
    else if (typeof tokenEndpoint === 'object' && typeof tokenEndpoint.url === 'string' && tokenEndpoint.url !== '') {
      out.tokenEndpointUrl = tokenEndpoint.url
      if (tokenEndpoint.headers) out.tokenEndpointHeaders = Object.entries(tokenEndpoint.headers).map(([k, v]) => [k, String(v)])
      out.tokenEndpointBody = tokenEndpoint.body
    } else throw new InvalidArgumentError('TokenEndpointConfig.url is required and must be a non-empty string')
  }
  if (tokenProvider !== undefined) {
    if (typeof tokenProvider !== 'function') throw new InvalidArgumentError('tokenProvider must be an async function returning { token, expiresIn, userId? }')
    out.tokenProvider = async () => await tokenProvider()
  }
  if (onAuthError !== undefined) {
    if (typeof onAuthError !== 'function') throw new InvalidArgumentError('onAuthError must be a function')
    out.onAuthError = (kind, message, props) => {
      try {
        onAuthError(makeError('AuthRefreshFailedError', `Consumer auth refresh permanently failed: ${message}`, props))
      } catch (err) {
        log('warn', `onAuthError callback threw: ${err && err.message}`)
      }
    }
  }
  return out
}

/**
 * API-key, token-endpoint or token-provider auth with proactive refresh (at 80% of `expiresIn`)
 * and single-flight reactive refresh.
 */
class ConsumerAuth {
  /** @internal */
  _native

  /** @param {{ apiKey?: string, tokenEndpoint?: string | { url: string, headers?: object, body?: unknown }, tokenProvider?: Function, baseUrl?: string, onAuthError?: Function }} options */
  constructor(options = {}) {
    const a = authOptions(options)
    const modes = [a.apiKey, a.tokenEndpointUrl, a.tokenProvider].filter((x) => x !== undefined).length
    if (modes === 0) throw new InvalidArgumentError('ConsumerAuth requires one of: apiKey, tokenEndpoint, or tokenProvider')
    if (modes > 1) throw new InvalidArgumentError('Only one token provider mode may be specified')
    if (a.apiKey !== undefined && !options.baseUrl) throw new InvalidArgumentError('ConsumerAuth with apiKey needs baseUrl (the backend root URL)')
    this._native = native.NativeAuth.consumer({ baseUrl: options.baseUrl, ...a })
  }
  /** Acquire the first token (idempotent). */
  init() {
    return this._native.init()
  }
  ensureReady() {
    return this._native.init()
  }
  /** `Bearer <token>`, or null before the first token. */
  getAuthHeader() {
    return this._native.header ?? null
  }
  /** Refresh now; true when a new token is available. Concurrent calls share one refresh. */
  onAuthFailure() {
    return this._native.onAuthFailure()
  }
  getUserId() {
    return this._native.userId ?? null
  }
  /** The recorded permanent refresh failure, or null. */
  getLastAuthError() {
    const m = this._native.lastError
    return m ? makeError('AuthRefreshFailedError', `Consumer auth refresh permanently failed: ${m}`, '{}') : null
  }
  /** Stop refreshing. The current token stays readable. Idempotent. */
  destroy() {
    this._native.destroy()
  }
}

/** A fixed bearer token that cannot be refreshed. */
class StaticAuthProvider {
  /** @internal */
  _native
  #token
  constructor(token) {
    if (typeof token !== 'string' || token === '') throw new InvalidArgumentError('StaticAuthProvider needs a non-empty token string')
    this.#token = token
    this._native = native.NativeAuth.staticToken(token)
  }
  getAuthHeader() {
    return this.#token.startsWith('Bearer ') ? this.#token : `Bearer ${this.#token}`
  }
  async onAuthFailure() {
    return false
  }
}

module.exports = { ConsumerAuth, StaticAuthProvider, authOptions }
