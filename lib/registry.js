'use strict'
// The registry, config documents and channel names as module functions. The HTTP calls and the
// rules live in the engine; this file gives them the reference's signatures.

const native = require('../native.js')
const { InvalidArgumentError } = require('./errors.js')
const { netOptions } = require('./net.js')

/** `{ baseUrl, apiKey? }` → what the engine needs; errors name what is missing. */
function where(fn, options = {}) {
  if (options === null || typeof options !== 'object') throw new InvalidArgumentError(`${fn}: options must be an object ({ baseUrl, apiKey? })`)
  const { baseUrl, apiKey } = options
  if (typeof baseUrl !== 'string' || baseUrl === '') throw new InvalidArgumentError(`${fn} needs options.baseUrl (the backend root URL, e.g. the devnet's URL)`)
  if (apiKey !== undefined && typeof apiKey !== 'string') throw new InvalidArgumentError(`${fn}: apiKey must be a string`)
  return { baseUrl, apiKey, net: netOptions(options) }
}

function page(fn, options = {}) {
  const out = where(fn, options)
  const { limit, cursor } = options
  if (limit !== undefined && !(Number.isInteger(limit) && limit > 0)) throw new InvalidArgumentError(`${fn}: limit must be a whole number > 0, got ${limit}`)
  if (cursor !== undefined && typeof cursor !== 'string') throw new InvalidArgumentError(`${fn}: cursor must be a string`)
  return { ...out, limit, cursor }
}

function name(fn, v, what) {
  if (typeof v !== 'string' || v === '') throw new InvalidArgumentError(`${fn} needs ${what} (a non-empty string)`)
  return v
}

/**
 * An agent's registry record (`{ agentName, displayName, description, tags, listing, billingMode,
 * card, skills, scaling, createdAt, … }`), or null when unknown. `apiKey` goes as a bearer token.
 */
function getAgent(agentName, options) {
  return native.registryGetAgent(name('getAgent', agentName, 'an agent name'), where('getAgent', options))
}

/** A page of the registry: `{ agents, totalCount, next? }`. */
function fetchAgentRegistry(options) {
  return native.registryList(page('fetchAgentRegistry', options))
}
/** Registry agents with a skill. */
function fetchAgentsBySkill(skill, options) {
  return native.registryList({ ...page('fetchAgentsBySkill', options), skill: name('fetchAgentsBySkill', skill, 'a skill') })
}
/** Registry agents with a tag. */
function fetchAgentsByTag(tag, options) {
  return native.registryList({ ...page('fetchAgentsByTag', options), tag: name('fetchAgentsByTag', tag, 'a tag') })
}
/** Registry agents by listing (`public` or `private`). */
function fetchAgentsByListing(listing, options) {
  if (listing !== 'public' && listing !== 'private') throw new InvalidArgumentError(`fetchAgentsByListing needs 'public' or 'private', got ${listing}`)
  return native.registryList({ ...page('fetchAgentsByListing', options), listing })
}
/** Remove an agent (its owner's API key): true when removed, false when it was not registered. */
function removeAgent(agentName, options = {}) {
  const { reason } = options ?? {}
  if (reason !== undefined && typeof reason !== 'string') throw new InvalidArgumentError('removeAgent: reason must be a string')
  return native.registryRemove(name('removeAgent', agentName, 'an agent name'), { ...where('removeAgent', options), reason })
}

/** The CDM document: `url`, else `BLOCKS_CDM_URL`, else the hosted default. `options`: `{ tls?, proxy? }`. */
function fetchCdmConfig(url, options) {
  if (url !== undefined && (typeof url !== 'string' || url === '')) throw new InvalidArgumentError('fetchCdmConfig(url?): url must be a non-empty string')
  return native.fetchCdmConfig(url, netOptions(options))
}

/** The legacy Blocks config document: `{ publishKey, subscribeKey, blocksBackendUrl }`. `options`: `{ tls?, proxy? }`. */
function loadBlocksConfig(url, options) {
  return native.loadBlocksConfig(name('loadBlocksConfig', url, 'a URL'), netOptions(options))
}

function channel(kind, a, b) {
  const r = native.channelName(kind, a, b)
  if (r.error) throw new InvalidArgumentError(r.error)
  return r.channel
}

/** Channel names of the network, and the rules about them. */
const channels = Object.freeze({
  /** `u.<orgId>.<taskId>` */
  task: (orgId, taskId) => channel('task', orgId, taskId),
  /** `setup.<orgId>.<taskId>` */
  setup: (orgId, taskId) => channel('setup', orgId, taskId),
  /** `agent.<agentId>.control` */
  control: (agentId) => channel('control', agentId),
  /** `stream.<agentName>.<streamId>` */
  stream: (agentName, streamId) => channel('stream', agentName, streamId),
  /** `registry.skill.<slug>` */
  registrySkill: (skill) => channel('skill', skill),
  registryAll: () => channel('all'),
  registryPublic: () => channel('public'),
  registryPrivate: () => channel('private'),
  registryLog: () => channel('log'),
  /** A skill name as a channel segment (lower-case, `-`/spaces → `_`, dots kept, runs collapsed). */
  skillSlug: (skill) => native.skillSlug(String(skill)),
  /** True for owner ids reserved for system namespaces (`agent`, `obs`, `sys`, `u`, `anonymous`, `system`; any case). */
  isReservedOwnerId: (id) => native.isReservedOwnerId(String(id)),
})

/** Throws InvalidArgumentError unless `id` is a valid stream id (1..92 bytes of `[A-Za-z0-9_-]`). */
function validateStreamId(id) {
  const error = native.streamIdError(typeof id === 'string' ? id : '')
  if (error) throw new InvalidArgumentError(error)
}

module.exports = {
  validateStreamId,
  getAgent, fetchAgentRegistry, fetchAgentsBySkill, fetchAgentsByTag, fetchAgentsByListing, removeAgent,
  fetchCdmConfig, loadBlocksConfig, channels,
  taskChannel: channels.task, controlChannel: channels.control, streamChannel: channels.stream, setupChannel: channels.setup,
}
