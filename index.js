'use strict'
// Public entry of @blocks-network/sdk. `exports.X =` lines (not `module.exports = {}`) so Node's
// CommonJS lexer sees every name and `import { X } from '@blocks-network/sdk'` works from ESM.

const native = require('./native.js')
const errors = require('./lib/errors.js')

const logging = require('./lib/log.js')

native.registerErrorFactory(errors.makeError)
native.registerSyncErrorFactory(errors.makeError)
native.registerLogSink((level, target, message) => logging.log(level, message, { target }), logging.currentLevel())

exports.TaskClient = require('./lib/client.js').TaskClient
exports.TaskSession = require('./lib/session.js').TaskSession
exports.StreamRef = require('./lib/stream.js').StreamRef
exports.StreamHandle = require('./lib/stream.js').StreamHandle
exports.TaskContext = require('./lib/agent.js').TaskContext
exports.startAgentInstance = require('./lib/agent.js').startAgentInstance
exports.loadCard = require('./lib/agent.js').loadCard
exports.LocalNetwork = require('./lib/network.js').LocalNetwork
const parts = require('./lib/parts.js')
exports.textPart = parts.textPart
exports.filePart = parts.filePart
exports.filePartFromPath = parts.filePartFromPath
exports.downloadArtifact = parts.downloadArtifact
exports.decodeInlineArtifact = parts.decodeInlineArtifact
exports.buildArtifactRef = parts.buildArtifactRef
exports.ConsumerAuth = require('./lib/auth.js').ConsumerAuth
exports.AgentAuth = require('./lib/auth.js').AgentAuth
const registry = require('./lib/registry.js')
exports.getAgent = registry.getAgent
exports.fetchAgentRegistry = registry.fetchAgentRegistry
exports.fetchAgentsBySkill = registry.fetchAgentsBySkill
exports.fetchAgentsByTag = registry.fetchAgentsByTag
exports.fetchAgentsByListing = registry.fetchAgentsByListing
exports.removeAgent = registry.removeAgent
exports.fetchCdmConfig = registry.fetchCdmConfig
exports.loadBlocksConfig = registry.loadBlocksConfig
exports.channels = registry.channels
exports.taskChannel = registry.taskChannel
exports.controlChannel = registry.controlChannel
exports.streamChannel = registry.streamChannel
exports.setupChannel = registry.setupChannel
exports.validateStreamId = registry.validateStreamId
exports.ExternalStreamHandle = require('./lib/stream.js').ExternalStreamHandle
exports.StaticAuthProvider = require('./lib/auth.js').StaticAuthProvider

exports.BlocksError = errors.BlocksError
exports.RpcError = errors.RpcError
exports.BillingModeMismatchError = errors.BillingModeMismatchError
exports.AuthRefreshFailedError = errors.AuthRefreshFailedError
exports.AgentAuthFatalError = errors.AgentAuthFatalError
exports.AnonTaskAccessDeniedError = errors.AnonTaskAccessDeniedError
exports.StreamUnavailableError = errors.StreamUnavailableError
exports.TransportError = errors.TransportError
exports.ConfigError = errors.ConfigError
exports.InvalidArgumentError = errors.InvalidArgumentError
exports.TimeoutError = errors.TimeoutError
exports.ClosedError = errors.ClosedError
exports.FileUploadError = errors.FileUploadError

exports.setLogger = logging.setLogger
exports.setLogLevel = (level) => logging.setLogLevel(level, native.setLogLevel)

exports.PROTOCOL_VERSION = '2026-05-01'
/** The wire protocol version this SDK sends (`Blocks-Protocol-Version`). */
exports.CURRENT_PROTOCOL_VERSION = exports.PROTOCOL_VERSION
exports.PROTOCOL_VERSION_HEADER = 'Blocks-Protocol-Version'
exports.SUPPORTED_PROTOCOL_VERSIONS = Object.freeze(native.supportedProtocolVersions())
/** True when `version` is a protocol version this SDK speaks. */
exports.isProtocolVersionSupported = (version) => typeof version === 'string' && native.isProtocolVersionSupported(version)
exports.DEFAULT_CDM_URL = 'https://config.blocks.ai/config.json'
exports.ARTIFACT_INLINE_LIMIT_BYTES = parts.ARTIFACT_INLINE_LIMIT_BYTES
exports.BLOCKS_MAX_UPLOAD_BYTES = parts.BLOCKS_MAX_UPLOAD_BYTES
