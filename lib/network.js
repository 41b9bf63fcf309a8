'use strict'
// LocalNetwork: an in-process devnet (backend + realtime + dispatcher) on loopback.

const native = require('../native.js')
const { InvalidArgumentError } = require('./errors.js')

class LocalNetwork {
  #native

  /** @internal */
  constructor(n) {
    this.#native = n
    this.url = n.url
    this.cdmUrl = n.cdmUrl
    this.apiKey = n.apiKey
    this.port = n.port
    /** A token that passes every access rule of this network (`auth=`), for tests and tools. */
    this.serviceToken = n.serviceToken
    /** A TLS network's CA certificate (PEM; give it as `tls: { ca }`), else null. */
    this.caPem = n.caPem ?? null
    /** Where that CA is written (give it as `NODE_EXTRA_CA_CERTS`), else null. */
    this.caFile = n.caFile ?? null
    /** The environment a caller or agent needs to use this network. */
    this.env = { BLOCKS_CDM_URL: n.cdmUrl, BLOCKS_API_KEY: n.apiKey, ...(this.caFile ? { NODE_EXTRA_CA_CERTS: this.caFile } : {}) }
    /** Agent instances started by `LocalNetwork.start({ agents })`, in order. */
    this.agents = []
  }

  /**
   * Start a devnet. Options: `port` (0 = any free port), `apiKeys` ([[key, userId], ...]),
   * `paidAgents` (names registered as paid), `tokenTtlSec`, `longPollHoldSec`, `dataDir` (database
   * and files; the network survives restarts), `inMemory` (the default: nothing kept),
   * `maxUploadBytes`, `tls` (true: serve HTTPS with the network's own CA, kept in
   * `<dataDir>/tls`; or `{ caCert, caKey }`: sign with that CA), `ackTimeoutMs` (how long an instance has to acknowledge a task before it is
   * sent again; default 30000), `allowedHosts` (host names served besides localhost, 127.0.0.0/8 and
   * [::1]; others get 421), `agents` (agent instances to run on the network until `stop()`).
   */
  static async start(options = {}) {
    if (options === null || typeof options !== 'object') throw new InvalidArgumentError('LocalNetwork.start options must be an object')
    const { agents = [], tls, ...rest } = options
    if (tls === true) rest.tls = true
    else if (tls !== undefined && tls !== false) {
      const pem = (v) => (typeof v === 'string' ? v : v instanceof Uint8Array ? Buffer.from(v).toString('utf8') : undefined)
      if (tls === null || typeof tls !== 'object' || pem(tls.caCert) === undefined || pem(tls.caKey) === undefined) {
        throw new InvalidArgumentError('tls must be true (the network makes its own CA) or { caCert, caKey } (a CA certificate and its PKCS#8 key, PEM)')
      }
      Object.assign(rest, { tls: true, tlsCaCert: pem(tls.caCert), tlsCaKey: pem(tls.caKey) })
    }
    if (!Array.isArray(agents)) throw new InvalidArgumentError('agents must be an array of { card | agentName, handler, instances? }')
    agents.forEach((a, i) => {
      if (!a || typeof a.handler !== 'function') throw new InvalidArgumentError(`agents[${i}].handler must be a function (the task handler)`)
      if (a.instances !== undefined && !(Number.isInteger(a.instances) && a.instances >= 1)) {
        throw new InvalidArgumentError(`agents[${i}].instances must be a whole number >= 1, got ${a.instances}`)
      }
    })
    const net = new LocalNetwork(await native.NativeLocalNetwork.start(rest))
    try {
      const { startAgentInstance } = require('./agent.js')
      for (const { instances = 1, ...a } of agents) {
        for (let n = 0; n < instances; n++) {
          // the network's CA is added to the agent's own CAs, if it has any
          const tls = net.caPem ? { tls: { ...a.tls, ca: [net.caPem, ...[a.tls?.ca ?? []].flat()] } } : {}
          net.agents.push(await startAgentInstance({ ...a, ...tls, apiKey: net.apiKey, cdmUrl: net.cdmUrl }))
        }
      }
    } catch (e) {
      await net.stop()
      throw e
    }
    return net
  }

  /** @internal `npx blocks-devnet`: a network from command-line flags (the engine parses them). */
  static async _startFromArgs(argv) {
    const n = await native.NativeLocalNetwork.startFromArgs(argv)
    const net = new LocalNetwork(n)
    net.dataDir = n.dataDir ?? null
    return net
  }

  /** Stop the agents started with the network, then the network. Idempotent. */
  async stop() {
    const agents = this.agents.splice(0)
    await Promise.all(agents.map((a) => a.stop()))
    return this.#native.stop()
  }

  async [Symbol.asyncDispose]() {
    await this.stop()
  }
}

module.exports = { LocalNetwork }
