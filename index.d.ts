/// <reference types="node" />
// Public types of @blocks-network/sdk. The generated native types (native.d.ts) are internal.

// ---------------------------------------------------------------------------------------------
// Errors

/** Base class of every error the SDK raises. `instanceof` works across ESM and CommonJS copies. */
export declare class BlocksError extends Error {}
/** A JSON-RPC call failed. */
export declare class RpcError extends BlocksError {
  /** JSON-RPC error code, or the HTTP status for transport-level failures, or null for network errors. */
  readonly code: number | null
  /** The server's message. */
  readonly rpcMessage: string
  /** The JSON-RPC `error.data` object, if any. */
  readonly data: unknown
}
/** The agent's billing mode differs from the client's. */
export declare class BillingModeMismatchError extends RpcError {
  /** The agent's billing mode. */
  readonly expected: BillingMode
  /** The billing mode the client sent. */
  readonly got: BillingMode
}
/** Token refresh failed permanently; the cause is in the message. */
export declare class AuthRefreshFailedError extends BlocksError {}
/** The agent's API key was refused or the agent was forced offline. */
export declare class AgentAuthFatalError extends BlocksError {}
/** An anonymous viewer was refused a read token (the message contains "403"). */
export declare class AnonTaskAccessDeniedError extends BlocksError {}
/** A stream of a finished task was never opened; stream data is live-only. */
export declare class StreamUnavailableError extends BlocksError {
  readonly taskId: string
  readonly streamId: string
  readonly declaredStream: string | null
  readonly terminalState: TerminalState
}
/** The network or the server failed (connection refused, unexpected HTTP status, bad answer). */
export declare class TransportError extends BlocksError {
  /** HTTP status, when the server answered. */
  readonly status?: number
  /** Response body (shortened), when the server answered. */
  readonly body?: string
  /**
   * When the network failed: a stable code (`ECONNREFUSED`, `ENOTFOUND`, `ETIMEDOUT`, `ECONNRESET`,
   * `CERT_UNTRUSTED`, `CERT_HOSTNAME_MISMATCH`, `CERT_EXPIRED`, …).
   */
  readonly code?: string
  /** The host (and port) that could not be reached. */
  readonly host?: string
}
/** Configuration could not be resolved (CDM document, keys, base URL). */
export declare class ConfigError extends BlocksError {}
/** An option or argument is invalid; nothing was sent. */
export declare class InvalidArgumentError extends BlocksError {}
/** A wait exceeded its deadline. */
export declare class TimeoutError extends BlocksError {}
/** The session or client was closed. */
export declare class ClosedError extends BlocksError {}
/** The upload handshake or a file download failed. */
export declare class FileUploadError extends BlocksError {
  /** HTTP status, when the server answered. */
  readonly status?: number
}

// ---------------------------------------------------------------------------------------------
// Caller side

export type BillingMode = 'free' | 'paid'
export type TerminalState = 'completed' | 'failed' | 'canceled'
export type TaskState = 'pending' | 'running' | TerminalState | (string & {})

export interface TaskClientOptions extends NetworkOptions {
  /** `free` (playground keyset) or `paid` (network keyset). Required. */
  billingMode: BillingMode
  /** Long-lived API key (`bk_…`), exchanged for a short-lived token. */
  apiKey?: string
  /** A token endpoint returning `{ token, expiresIn, userId? }`: a URL, or `{ url, headers, body, credentials }`. */
  tokenEndpoint?: string | TokenEndpointConfig
  /** CDM document URL. Default: `BLOCKS_CDM_URL`, else the hosted network's. */
  cdmUrl?: string
  /** Override the keyset's subscribe key (else `BLOCKS_SUBSCRIBE_KEY`, else the CDM). */
  subscribeKey?: string
  /** Override the keyset's publish key (else `BLOCKS_PUBLISH_KEY`, else the CDM). */
  publishKey?: string
  /** Backend root URL (else `BLOCKS_BACKEND_URL`, else the CDM's `api.baseUrl`). */
  baseUrl?: string
  /** Largest file `sendMessage` uploads (default `BLOCKS_MAX_UPLOAD_BYTES`, 25 MiB); larger ones are refused before any byte is sent. */
  maxUploadBytes?: number
  /** Realtime origin (else `BLOCKS_PUBNUB_ORIGIN`, else the CDM's `pubnub.origin`, else the hosted one). */
  realtimeOrigin?: string
  /** Auth mode 3: called at create and on every refresh. */
  tokenProvider?: () => TokenResult | Promise<TokenResult>
  /**
   * Waits between proactive refresh attempts, in ms (default `[5000, 10000]`: three attempts, the
   * second after 5 s, the third 10 s later). `onAuthError` fires after the last one fails.
   */
  authRetryDelaysMs?: number[]
  /** Called once when proactive refresh has failed three times in a row (see `authRetryDelaysMs`). */
  onAuthError?: (error: AuthRefreshFailedError) => void
  /** Anonymous viewer of public free tasks (no auth; `connect` only). */
  anonFingerprint?: string
  /** Route the SDK's logs (process-wide) into your logger. */
  logger?: Logger
  /**
   * Give up on a subscribe long-poll that has not answered for this long and reconnect from the
   * same cursor (default 310000: the hosted network holds idle polls for 280 s). Lower it to
   * detect a silently dead (blackholed) connection sooner; it must exceed the server's hold time.
   */
  longPollTimeoutMs?: number
  /** Allow plain http:// to hosts that are not loopback (refused otherwise: tokens would travel in clear). Also `BLOCKS_ALLOW_INSECURE_HTTP=1`. */
  allowInsecureHttp?: boolean
  /** `ownerId` sent when `sendMessage` names none (default: none, and the backend takes the caller). */
  defaultOwnerId?: string
}

/** A token endpoint: POSTed `body` (default `{}`) as JSON; `headers` win over the JSON content type. */
export interface TokenEndpointConfig {
  url: string
  headers?: Record<string, string>
  body?: unknown
  /** Accepted for compatibility with browser code; Node sends no cookies, so it has no effect. */
  credentials?: 'omit' | 'same-origin' | 'include'
}

/** What a token source returns. */
export interface TokenResult {
  token: string
  /** Lifetime in seconds; refresh happens at 80% of it. */
  expiresIn: number
  userId?: string
}

/** Any logger with these methods (console, pino, winston…). */
export interface Logger {
  error(message: string, meta?: object): void
  warn(message: string, meta?: object): void
  info(message: string, meta?: object): void
  debug(message: string, meta?: object): void
}

/**
 * How the SDK reaches the network. It trusts the bundled Mozilla roots, the system store
 * (`SSL_CERT_FILE` / `SSL_CERT_DIR` replace it) and `NODE_EXTRA_CA_CERTS`, plus `tls.ca`; it goes
 * through `proxy`, else `HTTPS_PROXY` / `HTTP_PROXY` / `ALL_PROXY` (`NO_PROXY` exempts hosts), as
 * curl does. One setting serves every request: backend, realtime, token endpoint, files.
 */
export interface NetworkOptions {
  /** Extra certificate authorities (PEM text; one bundle or several), e.g. a company proxy's CA. */
  tls?: { ca?: string | Buffer | Array<string | Buffer> }
  /** A proxy for every request (`http://host:port`, credentials in the URL if needed); `NO_PROXY` still applies. */
  proxy?: string
}

/** Options of direct `new TaskClient(...)` construction (no CDM fetch). */
export interface DirectTaskClientOptions extends NetworkOptions {
  billingMode: BillingMode
  subscribeKey: string
  publishKey?: string
  baseUrl?: string
  realtimeOrigin?: string
  /** Any auth provider: a ConsumerAuth, a StaticAuthProvider, or your own object. */
  authProvider?: AuthProvider
  /** Act as an agent (its access token); its backend URL serves when `baseUrl` is not given. */
  agentAuth?: AgentAuth
  /** `ownerId` sent when `sendMessage` names none. */
  defaultOwnerId?: string
  /** Allow plain http:// to hosts that are not loopback. */
  allowInsecureHttp?: boolean
}

/**
 * What a TaskClient needs from an auth provider. The SDK asks for the header before each request
 * and calls `onAuthFailure()` once on an HTTP 401 (true: retry with the new header).
 */
export interface AuthProvider {
  /** The full `Authorization` value (`Bearer …`; a bare token gets the prefix), or null. */
  getAuthHeader(): string | null | Promise<string | null>
  /** Try to get a new token; true when one is available. */
  onAuthFailure(): boolean | Promise<boolean>
  /** Lazy first acquisition (idempotent), called before the first request. */
  ensureReady?(): void | Promise<void>
  getLastAuthError?(): Error | null
}

/**
 * An agent's backend identity: the API key exchanged at `/api/v1/auth/agent/connect` for an access
 * token, refreshed at `/api/v1/auth/agent/refresh` (a used-up refresh token registers again with
 * the same payload; a refused key or a forced-offline agent rejects with AgentAuthFatalError).
 */
export declare class AgentAuth {
  /** Throws "apiKey is required" / "baseUrl is required". */
  constructor(apiKey: string, baseUrl: string, options?: NetworkOptions)
  /** Register; resolves with the connect answer (`accessToken`, `refreshToken`, `expiresIn`, `pamToken`, `controlChannel`, …). */
  init(payload: Record<string, unknown>): Promise<AgentConnectResponse>
  /** A new access token; concurrent calls share one request. */
  refresh(): Promise<void>
  getAccessToken(): string | null
  getAuthHeader(): string | null
  /** `fetch` with the agent's bearer; on HTTP 401 one refresh and one retry. Rejects "AgentAuth not initialized" before `init`. */
  authenticatedFetch(url: string | URL, init?: RequestInit): Promise<Response>
}

export interface AgentConnectResponse {
  accessToken: string
  refreshToken: string
  expiresIn: number
  pamToken?: string
  agentId?: string
  controlChannel?: string
  [extra: string]: unknown
}

/** API-key, token-endpoint or token-provider auth with proactive and single-flight reactive refresh. */
export declare class ConsumerAuth {
  constructor(options: NetworkOptions & {
    apiKey?: string
    tokenEndpoint?: TaskClientOptions['tokenEndpoint']
    tokenProvider?: TaskClientOptions['tokenProvider']
    /** Backend root URL (required with apiKey). */
    baseUrl?: string
    onAuthError?: (error: AuthRefreshFailedError) => void
  })
  /** Acquire the first token (idempotent). */
  init(): Promise<void>
  ensureReady(): Promise<void>
  /** `Bearer <token>`, or null before the first token. */
  getAuthHeader(): string | null
  /** Refresh now; concurrent calls share one refresh. */
  onAuthFailure(): Promise<boolean>
  getUserId(): string | null
  getLastAuthError(): AuthRefreshFailedError | null
  destroy(): void
}

/** A fixed bearer token that cannot be refreshed. */
export declare class StaticAuthProvider implements AuthProvider {
  constructor(token: string)
  getAuthHeader(): string
  onAuthFailure(): Promise<false>
}

/** A part of a task request. */
export interface RequestPart {
  partId?: string
  text?: string
  contentType?: string
  /** File parts (see `filePart`): up to 16384 bytes sent inline, larger ones uploaded first. */
  file?: Uint8Array | ArrayBuffer | Blob
  fileName?: string
  /** What an agent receives for file inputs (use `ctx.downloadInputArtifact(part)`). */
  artifactRef?: ArtifactRef
  [extra: string]: unknown
}

/** A file request part as built by `filePart` / `filePartFromPath`. */
export interface FilePart extends RequestPart {
  partId: string
  file: Uint8Array | ArrayBuffer | Blob
  fileName: string
  contentType: string
}

/** Options of `filePart` / `filePartFromPath`. */
export interface FilePartOptions {
  /** Default `"file"`; should match an `io.inputs[].id` of the agent's card. */
  partId?: string
  /** Default: the File's name (filePart) or the path's base name (filePartFromPath). */
  fileName?: string
  /** Default: the Blob's type, the extension's type (filePartFromPath), else `application/octet-stream`. */
  contentType?: string
}

/** A downloaded artifact. */
export interface DownloadedArtifact {
  data: Buffer
  mimeType: string
  fileName?: string
}

export interface SendMessageOptions {
  /** Target agent (letters, digits, underscores). */
  agentName: string
  /** Request parts, e.g. `[textPart('hello')]`. */
  requestParts?: RequestPart[]
  /** `request` (default) or `pipe`. */
  taskKind?: 'request' | 'pipe'
  /** Pipe tasks only: integer minutes, 1–43200. */
  duration?: number
  /** Opt in to live streams on a request task. */
  stream?: boolean
  /** Same key + same caller returns the existing task instead of a new one. */
  idempotencyKey?: string
  /** Owner of the task; defaults to the authenticated user. */
  ownerId?: string
  /** Caller public key for end-to-end encrypted agents. */
  consumerPublicKey?: string
  /** Forwarded to the backend unchanged. */
  retryPolicy?: { maxRetries?: number; expiresAfterSec?: number }
  /** Forwarded to the backend unchanged. */
  pushNotificationConfig?: { url: string; filter?: unknown; authStrategy?: unknown }
  /** After the terminal, wait for opened streams to end before closing (default true). */
  autoDrain?: boolean
  /** How long that wait lasts at most (default 30000 ms). */
  drainWindowMs?: number
}

export interface InlineArtifactRef {
  kind: 'inline'
  mimeType: string
  size: number
  /** Standard base64 of the bytes. */
  data: string
  fileName?: string
  hash?: string
}
export interface FileArtifactRef {
  kind: 'file'
  mimeType: string
  size: number
  channel: string
  fileId: string
  fileName: string
  hash?: string
  expiresAt?: string
}
export type ArtifactRef = InlineArtifactRef | FileArtifactRef

export interface ProgressEvent {
  type: 'progress'
  taskId: string
  progress?: number
  state?: TaskState
  message?: string
  streamEvent?: string
  [extra: string]: unknown
}
export interface ArtifactEvent {
  type: 'artifact'
  taskId: string
  artifactRef: ArtifactRef
  outputId?: string
  [extra: string]: unknown
}
export interface TerminalEvent {
  type: 'terminal'
  taskId: string
  state: TerminalState
  error?: string
  reason?: string
  completionReason?: string
  [extra: string]: unknown
}
export interface CancelRequestedEvent {
  type: 'cancel_requested'
  taskId: string
  ts?: number
  [extra: string]: unknown
}
export interface TaskEvent {
  type: string
  taskId?: string
  [extra: string]: unknown
}
export interface CallbackErrorContext {
  entryPoint: 'taskSession'
  callbackType: string
  event: TaskEvent
}

/** What the caller learns about a stream the agent opened. */
export interface StreamDescriptor {
  taskId: string
  streamId: string
  agentName?: string
  channel: string
  token: string | null
  /** Direction from the agent's point of view. */
  agentDirection: 'outbound' | 'inbound' | 'bidirectional'
  /** Direction from the caller's point of view (`inbound` = the caller reads). */
  localDirection: 'outbound' | 'inbound' | 'bidirectional'
  format: 'bytes' | 'events'
  affinity: 'dedicated' | 'shared'
  metadata: unknown
  declaredStream: string | null
}

/** A problem on a stream; fatal ones end it. */
export interface StreamError {
  category: 'malformed_response' | 'access_denied' | 'bad_request' | 'network_issues' | 'timeout' | (string & {})
  fatal: boolean
  error: string
  channel: string
  timestamp: number
}

/** One raw inbound item, in sequence order. */
export interface InboundItem {
  format: 'bytes' | 'events' | 'raw'
  /** Buffer for bytes frames, an array of events for events frames, the message for raw ones. */
  data: unknown
  seq: number
  encoding?: string
}

/**
 * An open stream (agent or caller side). Its items can be consumed once: through `inbound`,
 * `bytes()`, `events()`, `readable()` or `onInbound()`. Leaving a `for await` loop ends it.
 */
export declare class StreamHandle {
  private constructor()
  readonly streamId: string
  readonly channel: string
  /** This side's client id (the `sender` of its frames). */
  readonly uuid: string
  readonly format: 'bytes' | 'events'
  /** Direction from this side's point of view (`outbound` = this side writes). */
  readonly direction: 'outbound' | 'inbound' | 'bidirectional'
  readonly external: false
  /** `dedicated`, or `shared` (one writer for every pipe task that holds the stream). */
  readonly affinity: 'dedicated' | 'shared'
  /** True until this side ended it (a shared stream: until this task released it). */
  readonly isActive: boolean
  /** Bytes/text on bytes streams; JSON values (or bytes, as `{$binary}`) on events streams. */
  write(data: string | Uint8Array | ArrayBuffer | object | number | boolean | null): void
  /** Publish what is buffered now (writes are batched by size and latency). */
  flush(): Promise<void>
  /** Flush, publish the end marker where due, stop. Idempotent. Agent side: task-scoped (a shared stream ends with its last holder). */
  end(): Promise<void>
  /** `cb()` once this side ended the stream. */
  onEnd(cb: () => void): Unsubscribe
  onError(cb: (error: StreamError) => void): Unsubscribe
  onInboundDone(cb: () => void): Unsubscribe
  onInbound(cb: (item: InboundItem) => void): Unsubscribe
  readonly inbound: AsyncIterableIterator<InboundItem>
  bytes(): AsyncIterableIterator<Buffer>
  events<T = unknown>(): AsyncIterableIterator<T>
  readable(): import('node:stream').Readable
}

/**
 * An external stream (agent side, `createStream({ external: true })`): the SDK did the setup
 * handshake; another process writes to `channel` with `token`. Its read and write members throw.
 */
export declare class ExternalStreamHandle {
  private constructor()
  readonly streamId: string
  readonly channel: string
  /** The writer's stream token. */
  readonly token: string
  readonly external: true
  readonly isActive: boolean
  /** Complete the handshake: the network announces the stream to the caller. */
  activate(options?: { metadata?: unknown }): Promise<void>
  end(): Promise<void>
  onEnd(cb: () => void): Unsubscribe
}

/** Throws InvalidArgumentError unless `id` is 1..92 bytes of `[A-Za-z0-9_-]`. */
export declare function validateStreamId(id: string): void

/**
 * A stream announced for a task; open it to read (or write, for inbound/bidirectional ones). The
 * descriptor's fields are readable on the ref itself too (`ref.streamId`, `ref.declaredStream`…).
 */
export declare class StreamRef {
  private constructor()
  readonly descriptor: Readonly<StreamDescriptor>
  readonly isOpen: boolean
  readonly taskId: string
  readonly streamId: string
  readonly agentName?: string
  readonly channel: string
  readonly token?: string | null
  readonly agentDirection: StreamDescriptor['agentDirection']
  readonly localDirection: StreamDescriptor['localDirection']
  readonly format: StreamDescriptor['format']
  readonly affinity?: string
  readonly metadata?: unknown
  readonly declaredStream?: string
  /**
   * The stream client, at once (the same one while it is active); it connects in the background
   * and errors surface from its iterators and writes. `reorderTimeoutMs`: how long a gap is waited
   * for (default 750; 0 = arrival order). Throws StreamUnavailableError on a finished task's
   * never-opened stream, and an error for a stream that has already ended.
   */
  open(options?: StreamOpenOptions): StreamHandle
}

/** Options of `StreamRef.open()`. The writer options apply to what the caller writes (inbound and bidirectional streams). */
export interface StreamOpenOptions {
  /** How long a gap in the sequence is waited for, in ms (default 750; 0 = arrival order). */
  reorderTimeoutMs?: number
  /** Bytes bundled into one frame before it is sent (default: `STREAM_BUNDLE_SIZE`, else built in). */
  bundleSizeBytes?: number
  /** How long a partial bundle waits, in ms (default: `STREAM_MAX_LATENCY_MS`, else built in). */
  maxLatencyMs?: number
  /** Largest message in bytes, above 512; a larger frame is sent in parts (default: `STREAM_MAX_MESSAGE_SIZE`, else built in). */
  maxMessageSize?: number
}

/** Removes a listener. Calling it again does nothing. */
export type Unsubscribe = () => boolean

/** One task, as seen by its caller. */
export declare class TaskSession {
  readonly taskId: string
  readonly ownerId: string
  readonly orgId: string
  readonly agentName?: string
  readonly readToken: string | null
  readonly statusChannel: string
  readonly idempotent: boolean
  readonly queued: boolean
  readonly pushConfigId?: string
  /** Undefined until known; set to the terminal state before `onTerminal` listeners run. */
  readonly state: TaskState | undefined
  /** True once closed (after the terminal, or by `close()`). */
  readonly isClosed: boolean
  /**
   * Progress events. Those the task published before `sendMessage()` resolved are delivered too
   * (on the next tick, before live ones), so a listener added right after the call misses nothing.
   */
  onProgress(cb: (event: ProgressEvent) => void): Unsubscribe
  /** Artifacts received so far are replayed at once. */
  onArtifact(cb: (event: ArtifactEvent) => void): Unsubscribe
  /** Fires once, with the first terminal; replayed at once if the task already ended. */
  onTerminal(cb: (event: TerminalEvent) => void): Unsubscribe
  onCancelRequested(cb: (event: CancelRequestedEvent) => void): Unsubscribe
  /** Every event with a `type`, before the typed listeners. */
  onEvent(cb: (event: TaskEvent) => void): Unsubscribe
  /** Errors thrown by listeners. Without one, a warning is printed. */
  onError(cb: (error: unknown, context: CallbackErrorContext) => void): Unsubscribe
  /** Streams announced by the agent (known ones replayed at once). */
  onStream(cb: (ref: StreamRef) => void): Unsubscribe
  onStream(predicate: (ref: StreamRef) => boolean, cb: (ref: StreamRef) => void): Unsubscribe
  listStreams(): StreamRef[]
  /** By runtime stream id or declared name. */
  getStream(id: string): StreamRef | undefined
  /** The stream with this id or declared name, or (no id) the only one; waits for its announcement. */
  waitForStream(id?: string): Promise<StreamRef>
  /** The first stream ref for which `predicate(ref)` is true, now or when announced. */
  waitForStreamWhere(predicate: (ref: StreamRef) => boolean): Promise<StreamRef>
  /** Open every stream this side can read. */
  openAllStreams(options?: StreamOpenOptions): Promise<StreamHandle[]>
  /** The artifacts so far, in order (a fresh array each call). */
  listArtifacts(): ArtifactRef[]
  /** Download an artifact (ref or artifact event); works on closed and pre-closed sessions too. */
  downloadArtifact(ref: ArtifactRef | ArtifactEvent): Promise<DownloadedArtifact>
  /**
   * Write every artifact into `dir` (created if needed); resolves with the absolute paths in
   * `listArtifacts()` order. Names are sanitised base names (never outside `dir`), `artifact-<i>`
   * when empty, with `-1`, `-2`… suffixes on collisions. File artifacts are streamed to disk.
   */
  saveArtifacts(dir: string, options?: { overwrite?: boolean }): Promise<string[]>
  listEvents(): TaskEvent[]
  /** Resolves with the terminal event; rejects with TimeoutError after `timeoutMs` and with ClosedError on `close()`. */
  waitForTerminal(timeoutMs?: number): Promise<TerminalEvent>
  cancel(): Promise<void>
  terminate(): Promise<void>
  /** Stop listening and end opened streams; resolves once they have ended. Idempotent (same promise). */
  close(): Promise<void>
  asyncClose(): Promise<void>
  [Symbol.asyncDispose](): Promise<void>
}

export interface TaskInfo {
  taskId: string
  agentName?: string
  owner?: string
  state?: TaskState
  createdTime?: string
  updatedTime?: string
  [extra: string]: unknown
}
export interface ListTasksParams {
  ownerId?: string
  agentName?: string
  state?: TaskState
  limit?: number
  cursor?: string
}
export interface ListTasksResult {
  tasks: TaskInfo[]
  next?: string
  totalCount?: number
}

/** The caller's client. */
export declare class TaskClient {
  /** Direct construction without a CDM fetch (advanced); most callers want `TaskClient.create()`. */
  constructor(options: DirectTaskClientOptions)
  /** Resolve configuration (option > BLOCKS_* env > CDM), acquire the first token, return the client. */
  static create(options: TaskClientOptions): Promise<TaskClient>
  readonly billingMode: BillingMode
  /** The authenticated user's id, or null. */
  getUserId(): string | null
  /** Create a task and return its session (caught up with history). */
  sendMessage(options: SendMessageOptions): Promise<TaskSession>
  /** Attach to an existing task: rebuilt from history, live if the task is still active. */
  connect(target: string | { taskId: string; role?: 'consumer' | 'provider'; autoDrain?: boolean; drainWindowMs?: number }): Promise<TaskSession>
  /** The registry card of an agent, or null when the agent is unknown. */
  getAgentCard(agentName: string): Promise<Record<string, unknown> | null>
  getTask(taskId: string): Promise<TaskInfo>
  listTasks(params?: ListTasksParams): Promise<ListTasksResult>
  cancelTask(taskId: string): Promise<void>
  pauseTask(taskId: string): Promise<void>
  resumeTask(taskId: string): Promise<void>
  /** Run a failed or canceled task again; resolves with the new attempt's id. */
  retryTask(taskId: string): Promise<{ taskId: string; retryOf?: string }>
  terminateTask(taskId: string): Promise<void>
  /** Swap the keys used by sessions created afterwards (and the key-based RPC URL without baseUrl). */
  updateKeys(subscribeKey: string, publishKey?: string): void
  /**
   * Low-level: plain callbacks for one task's events; returns at once, the subscription is set up
   * in the background (failures go to `onError`).
   */
  subscribeToTask(taskId: string, ownerId: string | undefined, callbacks: TaskEventCallbacks): TaskSubscription
  /** Stop background token refresh; live sessions keep working. Idempotent. */
  destroy(): void
  [Symbol.dispose](): void
}

/** Callbacks of `subscribeToTask`. */
export interface TaskEventCallbacks {
  onProgress?: (event: ProgressEvent) => void
  onArtifact?: (event: ArtifactEvent) => void
  onTerminal?: (event: TerminalEvent) => void
  onCancelRequested?: (event: CancelRequestedEvent) => void
  onSystem?: (event: TaskEvent) => void
  /** Every event, before the typed callback. */
  onEvent?: (event: TaskEvent) => void
  onError?: (error: unknown, context: { entryPoint: 'subscribeToTask'; callbackType: string }) => void
}
export interface TaskSubscription {
  unsubscribe(): void
}

// ---------------------------------------------------------------------------------------------
// Registry, config documents, channels

/** An agent's registry record. */
export interface AgentEntry {
  agentName: string
  displayName?: string
  description?: string
  tags?: unknown[]
  listing: 'public' | 'private'
  billingMode: BillingMode
  card?: Record<string, unknown>
  skills?: unknown
  scaling?: unknown
  createdAt?: string
  [extra: string]: unknown
}
export interface AgentRegistryPage {
  agents: AgentEntry[]
  totalCount: number
  next?: string
}
/** Where a registry call goes; `apiKey` is sent as a bearer token when given. */
export interface RegistryOptions extends NetworkOptions {
  baseUrl: string
  apiKey?: string
}
export interface RegistryPageOptions extends RegistryOptions {
  limit?: number
  cursor?: string
}
/** One agent's record, or null when the registry does not know it. */
export declare function getAgent(agentName: string, options: RegistryOptions): Promise<AgentEntry | null>
export declare function fetchAgentRegistry(options: RegistryPageOptions): Promise<AgentRegistryPage>
export declare function fetchAgentsBySkill(skill: string, options: RegistryPageOptions): Promise<AgentRegistryPage>
export declare function fetchAgentsByTag(tag: string, options: RegistryPageOptions): Promise<AgentRegistryPage>
export declare function fetchAgentsByListing(listing: 'public' | 'private', options: RegistryPageOptions): Promise<AgentRegistryPage>
/** Remove an agent (its owner's API key): true when removed, false when it was not registered. */
export declare function removeAgent(agentName: string, options: RegistryOptions & { reason?: string }): Promise<boolean>

/** The CDM document. */
export interface CdmConfig {
  playground: { publishKey: string; subscribeKey: string }
  network: { publishKey: string; subscribeKey: string }
  api?: { baseUrl?: string; [extra: string]: unknown }
  pubnub?: { origin?: string }
  [extra: string]: unknown
}
/** The CDM document: `url`, else `BLOCKS_CDM_URL`, else the hosted default. */
export declare function fetchCdmConfig(url?: string, options?: NetworkOptions): Promise<CdmConfig>
/** The legacy Blocks config document (missing optional fields as `''`). */
export declare function loadBlocksConfig(url: string, options?: NetworkOptions): Promise<{ publishKey: string; subscribeKey: string; blocksBackendUrl: string }>

/** Channel names of the network, and the rules about them. */
export declare const channels: {
  task(orgId: string, taskId: string): string
  setup(orgId: string, taskId: string): string
  control(agentId: string): string
  stream(agentName: string, streamId: string): string
  registrySkill(skill: string): string
  registryAll(): string
  registryPublic(): string
  registryPrivate(): string
  registryLog(): string
  skillSlug(skill: string): string
  isReservedOwnerId(id: string): boolean
}
/** `u.<orgId>.<taskId>`; throws "orgId required" / "taskId required". */
export declare function taskChannel(orgId: string, taskId: string): string
export declare function controlChannel(agentId: string): string
export declare function streamChannel(agentName: string, streamId: string): string
export declare function setupChannel(orgId: string, taskId: string): string

/** A text request part `{ partId, text }`; `partId` defaults to `"text"`. */
export declare function textPart(text: string, options?: string | { partId?: string; contentType?: string }): RequestPart
/** A file request part from bytes, a Blob or a File: `filePart(data, fileName, { partId?, contentType? })`. */
export declare function filePart(data: Uint8Array | ArrayBuffer | Blob, fileName: string, options?: Omit<FilePartOptions, 'fileName'>): FilePart
/** A file request part from bytes, a Blob or a File, with its options as one object. */
export declare function filePart(data: Uint8Array | ArrayBuffer | Blob, options?: FilePartOptions): FilePart
/** A file request part read from disk; large files are streamed from disk when sent. */
export declare function filePartFromPath(path: string, options?: string | FilePartOptions): Promise<FilePart>
/** A fetch-compatible function (Node's global `fetch`, undici's, a proxy-aware one...). */
export type FetchLike = (url: string, init?: RequestInit) => Promise<Response>
/**
 * Download an artifact: inline refs are decoded locally; file refs are downloaded with the read
 * token of the session they came from (the SDK finds it from the ref). The optional second argument
 * is a TaskSession, or a fetch-compatible function that makes the download request.
 */
export declare function downloadArtifact(ref: ArtifactRef | ArtifactEvent, fetchOrSession?: FetchLike | TaskSession): Promise<DownloadedArtifact>
/** The bytes of an inline artifact ref; throws "not an inline artifact" for anything else. */
export declare function decodeInlineArtifact(ref: ArtifactRef): Buffer
/** Build an ArtifactRef: inline when `size <= inlineLimit` or no `file` descriptor is given, else a file ref. */
export declare function buildArtifactRef(options: {
  data?: string | Uint8Array
  mimeType?: string
  size?: number
  hash?: string
  file?: { id: string; name: string; channel: string; expiresAt?: string }
  fileName?: string
  inlineLimit?: number
}): ArtifactRef

// ---------------------------------------------------------------------------------------------
// Agent side

/** The StartTask message as a handler sees it (tokens removed). */
export interface StartTask {
  type: 'StartTask'
  taskId: string
  protocolVersion?: string
  agentName?: string
  ownerId?: string
  orgId?: string
  requestParts: RequestPart[]
  taskKind?: 'request' | 'pipe'
  duration?: number
  durationExpiresAtMs?: number
  hasStream?: boolean
  consumerPublicKey?: string
  [extra: string]: unknown
}

export interface ArtifactOptions {
  mimeType?: string
  fileName?: string
  /** The card's `io.outputs[].id`. */
  outputId?: string
}
export interface HandlerArtifact extends ArtifactOptions {
  data: string | Uint8Array | ArrayBuffer | object
}
export interface HandlerResult {
  artifacts?: HandlerArtifact[]
}

/** What a handler gets besides the task. */
export declare class TaskContext {
  private constructor()
  readonly taskId: string
  readonly requestParts: RequestPart[]
  readonly hasStream: boolean
  readonly consumerPublicKey?: string
  readonly taskKind: 'request' | 'pipe'
  /** Aborts on cancel, terminate or expiry. */
  readonly cancelSignal: AbortSignal
  readonly isCancelled: boolean
  readonly isExpired: boolean
  /** Publish a status line (throttled to one per second; the latest is never dropped). */
  reportStatus(message: string): void
  /** The bytes of a file input (a request part with an `artifactRef`). */
  downloadInputArtifact(part: RequestPart): Promise<Buffer>
  /** Publish an artifact now: inline up to 16384 bytes, uploaded above (the network then publishes a file artifact). */
  publishArtifact(data: string | Uint8Array | ArrayBuffer | object, options?: ArtifactOptions): Promise<void>
  /** A ready TaskClient authenticated as the agent's owner, for calling other agents. */
  readonly taskClient: TaskClient
  /** Open a stream to the caller (needs `hasStream`); resolves the card's `streams` declaration. */
  createStream(options?: CreateStreamOptions & { external?: false }): Promise<StreamHandle>
  createStream(options: CreateStreamOptions & { external: true }): Promise<ExternalStreamHandle>
}

export interface CreateStreamOptions {
  /** Card stream key (default: the only declared stream, or `_default`). */
  declaredStream?: string
  /** Must match the card when given. */
  direction?: 'outbound' | 'inbound' | 'bidirectional'
  /** Must match the card when given. */
  format?: 'bytes' | 'events'
  /** Sent to the caller with the stream announcement. */
  metadata?: unknown
  /** Flush threshold (default 4096 bytes). */
  bundleSizeBytes?: number
  /** Flush latency (default 2 ms; the official SDKs use 250 ms). */
  maxLatencyMs?: number
  /** Wait after setup so the caller can subscribe before the first write (default 1000; 0 disables). */
  subscribeGraceMs?: number
  /** Split frames above this many bytes into multipart messages (> 512; default 16384 or `STREAM_MAX_MESSAGE_SIZE`). */
  maxMessageSize?: number
  /** External stream (pipe tasks): the SDK only does the handshake; see ExternalStreamHandle. */
  external?: boolean
  /** Runs once the stream is active, off the handler; a throw fails the stream (`stream_crashed`). */
  onActivate?: (stream: StreamHandle | ExternalStreamHandle) => void | Promise<void>
}

export type TaskHandler = (task: StartTask, ctx: TaskContext) => HandlerResult | void | Promise<HandlerResult | void>

export interface AgentCard {
  identity: { agentName: string; displayName?: string; description?: string; [k: string]: unknown }
  runtime?: { handler?: string; handlerExport?: string; concurrency?: number; expectedInstances?: number; maxPendingBacklog?: number; maxRunningTimeSec?: number }
  streams?: Record<string, { direction: 'outbound' | 'inbound' | 'bidirectional'; format: 'bytes' | 'events'; affinity?: 'dedicated' | 'shared'; [k: string]: unknown }>
  [k: string]: unknown
}

export interface AgentInstanceOptions extends NetworkOptions {
  handler: TaskHandler
  /** Route the SDK's logs (process-wide) into your logger. */
  logger?: Logger
  /** The agent card; `identity.agentName` and `runtime.*` are used. */
  card?: AgentCard
  /** Overrides the card's agent name. */
  agentName?: string
  /** Default `BLOCKS_API_KEY`. */
  apiKey?: string
  cdmUrl?: string
  baseUrl?: string
  realtimeOrigin?: string
  /** Tasks at once (default 1; 0 = unlimited). */
  concurrency?: number
  expectedInstances?: number
  maxPendingBacklog?: number
  maxRunningTimeSec?: number
  listing?: 'private' | 'public'
  /** How long a handler may run on after TerminateTask before the task is ended without it (default 2000). */
  terminateGraceMs?: number
  /**
   * Give up on a subscribe long-poll that has not answered for this long and reconnect
   * (default 310000: the hosted network holds idle polls for 280 s). Lower it to detect a
   * silently dead (blackholed) connection sooner; it must exceed the server's hold time.
   */
  longPollTimeoutMs?: number
  /** Allow plain http:// to hosts that are not loopback (refused otherwise: tokens would travel in clear). Also `BLOCKS_ALLOW_INSECURE_HTTP=1`. */
  allowInsecureHttp?: boolean
}

export interface AgentInstanceHandle {
  readonly instanceId: string
  readonly agentName: string
  readonly controlChannel: string
  readonly subscribeKey: string
  /** Tasks holding capacity now (a handler that ignored TerminateTask stops counting once the runtime ends its task). */
  readonly activeTasks: number
  readonly billingMode: BillingMode
  /** The agent-to-agent client (also `ctx.taskClient`); it acts as this agent. */
  readonly taskClient: TaskClient
  /** The instance's backend identity. */
  readonly agentAuth: AgentAuth
  /** The CDM document the instance was configured from. */
  readonly cdmConfig: CdmConfig
  /** Fail a stream: every task holding it gets terminal `failed` with `error: reason`; an unknown id does nothing. */
  failStream(streamId: string, reason: string): Promise<void>
  /** Publish a terminal for one of this instance's tasks with its cached credentials (e.g. a pipe task whose handler returned). */
  publishTerminal(taskId: string, terminal: { state: TerminalState; reason?: string; error?: string; [extra: string]: unknown }): Promise<void>
  /** Stop taking tasks; running handlers get `graceMs` (default 10000) to finish. Idempotent. */
  stop(graceMs?: number): Promise<void>
}

/** Register an agent instance and run `handler` for every task it receives. */
export declare function startAgentInstance(options: AgentInstanceOptions): Promise<AgentInstanceHandle>

// ---------------------------------------------------------------------------------------------
// Local network

export interface LocalNetworkOptions {
  /** 0 (default) picks a free port. */
  port?: number
  /** Host names served besides loopback ones (others get 421); a leading dot allows a whole domain. */
  allowedHosts?: string[]
  /** Extra users: `[[apiKey, userId], ...]`; the first is the default key. */
  apiKeys?: Array<[string, string] | [string]>
  /** Agents registered as paid on first sight. */
  paidAgents?: string[]
  /** Lifetime of access tokens, seconds. */
  tokenTtlSec?: number
  /** Longest hold of an idle subscribe long-poll, seconds. */
  longPollHoldSec?: number
  /** Test knob: how many milliseconds a pipe-task "minute" lasts. */
  minuteMs?: number
  /**
   * Serve HTTPS. `true`: the network makes a CA (kept in `<dataDir>/tls/ca.pem` across restarts,
   * or in a temporary directory) that signs a certificate for localhost, 127.0.0.1 and ::1 (HTTP/2
   * by ALPN, else HTTP/1.1); `{ caCert, caKey }`: sign with that CA (PEM; PKCS#8 key). Clients
   * trust it with `NODE_EXTRA_CA_CERTS=<net.caFile>` or `tls: { ca: net.caPem }`.
   */
  tls?: boolean | { caCert: string | Buffer; caKey: string | Buffer }
  /**
   * How long an agent instance has to acknowledge a task it was sent (its first progress,
   * artifact or terminal) before the task is sent again, to another instance if there is one
   * (default 30000). After three unanswered sends the task fails with `task_not_acknowledged`.
   */
  ackTimeoutMs?: number
  /** Most connections open at once (default 1024; more are answered 503). */
  maxConnections?: number
  /** Test knob: reorder and duplicate stream messages on the wire. */
  streamChaos?: boolean
  /**
   * Where the network keeps its SQLite database (`devnet.db`) and files. With a data directory the
   * network survives restarts (also after SIGKILL): registrations, tokens, tasks, task history
   * and files are kept. Default: in memory, nothing kept.
   */
  dataDir?: string
  /** Keep nothing (the default); cannot be combined with `dataDir`. */
  inMemory?: boolean
  /** Largest upload accepted, bytes (default 26214400). */
  maxUploadBytes?: number
  /**
   * Agent instances to run on the network (started after it, stopped by `stop()` before it);
   * `apiKey` and `cdmUrl` are the network's.
   */
  agents?: LocalNetworkAgent[]
}

/** An agent run by `LocalNetwork.start({ agents })`. */
export interface LocalNetworkAgent extends Omit<AgentInstanceOptions, 'apiKey' | 'cdmUrl' | 'baseUrl' | 'realtimeOrigin'> {
  /** Instances of this agent to start (default 1). */
  instances?: number
}

/** An in-process Blocks Network on loopback (backend, realtime, dispatcher). */
export declare class LocalNetwork {
  private constructor()
  static start(options?: LocalNetworkOptions): Promise<LocalNetwork>
  readonly url: string
  readonly cdmUrl: string
  readonly apiKey: string
  readonly port: number
  /** A token that passes every access rule of this network (PubNub `auth=`): for tests and tools acting as the network itself. */
  readonly serviceToken: string
  /** A TLS network's CA certificate (PEM), else null. */
  readonly caPem: string | null
  /** Where that CA is written (for `NODE_EXTRA_CA_CERTS`), else null. */
  readonly caFile: string | null
  /** `{ BLOCKS_CDM_URL, BLOCKS_API_KEY }`, plus `NODE_EXTRA_CA_CERTS` for a TLS network. */
  readonly env: { BLOCKS_CDM_URL: string; BLOCKS_API_KEY: string; NODE_EXTRA_CA_CERTS?: string }
  /** The agent instances started with `agents`, in order. */
  readonly agents: AgentInstanceHandle[]
  /** Stop the agents started with the network, then the network. Idempotent. */
  stop(): Promise<void>
  [Symbol.asyncDispose](): Promise<void>
}

/** Read and validate an agent card (a path to agent-card.json, or the object); errors name the field and the fix. */
export declare function loadCard(source: string | object): AgentCard

/** Route the SDK's logs (engine and JS) into `logger`; null restores the console. */
export declare function setLogger(logger: Logger | null): void
/** Change the log threshold at run time (default: `LOG_LEVEL`, else `info`). */
export declare function setLogLevel(level: 'error' | 'warn' | 'info' | 'debug'): void

export declare const PROTOCOL_VERSION: '2026-05-01'
/** The wire protocol version this SDK sends. */
export declare const CURRENT_PROTOCOL_VERSION: '2026-05-01'
export declare const SUPPORTED_PROTOCOL_VERSIONS: readonly string[]
export declare const PROTOCOL_VERSION_HEADER: 'Blocks-Protocol-Version'
export declare function isProtocolVersionSupported(version: unknown): boolean
export declare const DEFAULT_CDM_URL: string
export declare const ARTIFACT_INLINE_LIMIT_BYTES: 16384
/** Largest file the SDK uploads by default (25 MiB); see `maxUploadBytes`. */
export declare const BLOCKS_MAX_UPLOAD_BYTES: 26214400
