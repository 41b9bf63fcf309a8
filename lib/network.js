'use strict'
// LocalNetwork: an in-process devnet (backend + realtime + dispatcher) on loopback.

const native = require('../native.js')

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
    /** The environment a caller or agent needs to use this network. */
    this.env = { BLOCKS_CDM_URL: n.cdmUrl, BLOCKS_API_KEY: n.apiKey }
  }

  /**
   * Start a devnet. Options: `port` (0 = any free port), `apiKeys` ([[key, userId], ...]),
   * `paidAgents` (names registered as paid), `tokenTtlSec`, `longPollHoldSec`, `dataDir` (where
   * files are stored; default a temporary directory removed on stop), `maxUploadBytes`.
   */
  static async start(options = {}) {
    return new LocalNetwork(await native.NativeLocalNetwork.start(options))
  }

  /** Stop the network. Idempotent. */
  stop() {
    return this.#native.stop()
  }

  async [Symbol.asyncDispose]() {
    await this.stop()
  }
}

module.exports = { LocalNetwork }
