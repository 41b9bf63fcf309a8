'use strict'
// Consumer auth providers for direct `new TaskClient({ ..., authProvider })` construction.
// `TaskClient.create({ apiKey | tokenEndpoint | tokenProvider })` builds one itself.

const native = require('../native.js')
const { InvalidArgumentError, makeError } = require('./errors.js')
const { netOptions, construct } = require('./net.js')
const { log } = require('./log.js')

/** Normalise the auth options shared by TaskClient.create and ConsumerAuth. */
function authOptions(options) {
  const { apiKey, tokenEndpoint, tokenProvider, onAuthError } = options
  const out = { apiKey }
  if (tokenEndpoint !== undefined && tokenEndpoint !== null) {
    if (typeof tokenEndpoint === 'string') out.tokenEndpointUrl = tokenEndpoint
    else if (typeof tokenEndpoint === 'object' && typeof tokenEndpoint.url === 'string' && tokenEndpoint.url !== '') {
      const { credentials } = tokenEndpoint
      // fetch's `credentials` is about browser cookies; the engine sends none, so every value is
      // accepted and has no effect (documented in COMPAT.md)
      if (credentials !== undefined && !['omit', 'same-origin', 'include'].includes(credentials)) {
        throw new InvalidArgumentError(`TokenEndpointConfig.credentials must be 'omit', 'same-origin' or 'include', got ${credentials}`)
      }
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

/** The refresh in flight of each provider: calls made meanwhile get the same promise. */
const inflight = new WeakMap()
function shared(owner, start) {
  let p = inflight.get(owner)
  if (!p) {
    p = start().finally(() => inflight.delete(owner))
    inflight.set(owner, p)
  }
  return p
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
    // no mode at all: the binding refuses it (InvalidArgumentError, same call)
    if (modes > 1) throw new InvalidArgumentError('Only one token provider mode may be specified')
    if (a.apiKey !== undefined && !options.baseUrl) throw new InvalidArgumentError('ConsumerAuth with apiKey needs baseUrl (the backend root URL)')
    const net = netOptions(options)
    this._native = construct(() => native.NativeAuth.consumer({ baseUrl: options.baseUrl, ...a, net }))
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
    // calls made while a refresh is in flight share it (the engine's single flight only joins
    // calls that reach it before the refresh ends, which a busy event loop can delay)
    return shared(this, () => this._native.onAuthFailure())
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

/**
 * An agent's backend identity: the API key exchanged at `/api/v1/auth/agent/connect` for an access
 * token, refreshed at `/api/v1/auth/agent/refresh` (a refused refresh token registers again with
 * the same payload; a refused key or a forced-offline agent throws `AgentAuthFatalError`). Give it
 * to `new TaskClient({ agentAuth })` to call other agents as this agent.
 */
class AgentAuth {
  /** @internal */
  _native

  /**
   * @param {string} apiKey @param {string} baseUrl the backend root URL
   * @param {{ tls?: { ca?: string | Buffer | Array<string | Buffer> }, proxy?: string }} [options]
   */
  constructor(apiKey, baseUrl, options) {
    const net = netOptions(options)
    try {
      this._native = new native.NativeAgentAuth(typeof apiKey === 'string' ? apiKey : '', typeof baseUrl === 'string' ? baseUrl : '', net)
    } catch (err) {
      throw new InvalidArgumentError(err.message)
    }
  }

  /** @internal An AgentAuth over the engine's identity of a running instance. */
  static fromNative(n) {
    const a = Object.create(AgentAuth.prototype)
    a._native = n
    return a
  }

  /** Register with `payload` (agentName, instanceId, …); resolves with the connect answer. */
  init(payload) {
    if (payload === null || typeof payload !== 'object' || Array.isArray(payload)) {
      return Promise.reject(new InvalidArgumentError('AgentAuth.init(payload) needs the registration payload object (agentName, instanceId, ...)'))
    }
    return this._native.init(payload)
  }

  /** Get a new access token; concurrent calls share one request. */
  refresh() {
    // calls made while a refresh is in flight share it (see ConsumerAuth.onAuthFailure)
    return shared(this, () => this._native.refresh())
  }

  /** The current access token, or null before `init`. */
  getAccessToken() {
    return this._native.accessToken ?? null
  }

  /** `Bearer <access token>`, or null before `init`. */
  getAuthHeader() {
    const t = this.getAccessToken()
    return t ? `Bearer ${t}` : null
  }

  /**
   * `fetch(url, init)` with `Authorization: Bearer <access token>` added (the caller's headers and
   * body kept); on HTTP 401 the token is refreshed and the request sent once more.
   */
  async authenticatedFetch(url, init = {}) {
    if (!this.getAccessToken()) throw new InvalidArgumentError('AgentAuth not initialized: call init(payload) first')
    const send = () => {
      const headers = new Headers(init.headers)
      headers.set('authorization', this.getAuthHeader())
      return fetch(url, { ...init, headers })
    }
    const res = await send()
    if (res.status !== 401) return res
    await this.refresh()
    return send()
  }
}

/** The engine-side auth of an AuthProvider: ours directly, anyone else's through its methods. */
function nativeAuthOf(provider) {
  if (provider instanceof ConsumerAuth || provider instanceof StaticAuthProvider) return provider._native
  if (provider instanceof AgentAuth) return native.NativeAuth.agent(provider._native)
  if (provider === null || typeof provider !== 'object' || typeof provider.getAuthHeader !== 'function' || typeof provider.onAuthFailure !== 'function') {
    throw new InvalidArgumentError('authProvider must implement getAuthHeader() and onAuthFailure() (and optionally ensureReady()), e.g. a ConsumerAuth or a StaticAuthProvider')
  }
  return native.NativeAuth.external({
    getHeader: async () => (await provider.getAuthHeader()) ?? null,
    refresh: async () => Boolean(await provider.onAuthFailure()),
    ensureReady: typeof provider.ensureReady === 'function' ? async () => void (await provider.ensureReady()) : undefined,
  })
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

module.exports = { AgentAuth, ConsumerAuth, StaticAuthProvider, authOptions, nativeAuthOf }
