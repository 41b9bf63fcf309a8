//! The caller side: `TaskClient` (consumer spec §2, §5, §8).

use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::Rng;
use serde_json::{json, Map, Value};

use crate::auth::{AuthErrorCallback, AuthMode, ConsumerAuth, TokenEndpoint, TokenSource};
use crate::backend::Backend;
use crate::config::{self, BillingMode, Keyset};
use crate::error::{Error, Result};
use crate::http::HttpClient;
use crate::realtime::{Realtime, RealtimeConfig};
use crate::session::{SessionInfo, TaskSession};

/// Options of [`TaskClient::create`].
#[derive(Clone, Default)]
pub struct ClientOptions {
    /// `free` or `paid` (required).
    pub billing_mode: Option<String>,
    /// CDM URL (else `BLOCKS_CDM_URL`, else the hosted default).
    pub cdm_url: Option<String>,
    /// Explicit subscribe key.
    pub subscribe_key: Option<String>,
    /// Explicit publish key.
    pub publish_key: Option<String>,
    /// Explicit backend root URL.
    pub base_url: Option<String>,
    /// Explicit realtime origin (else `BLOCKS_PUBNUB_ORIGIN`, else the CDM's `pubnub.origin`).
    pub realtime_origin: Option<String>,
    /// Auth mode 1.
    pub api_key: Option<String>,
    /// Auth mode 2.
    pub token_endpoint: Option<TokenEndpoint>,
    /// Auth mode 3.
    pub token_provider: Option<Arc<dyn TokenSource>>,
    /// Anonymous viewer mode (free only).
    pub anon_fingerprint: Option<String>,
    /// Called once when proactive refresh fails permanently.
    pub on_auth_error: Option<AuthErrorCallback>,
    /// Give up on a silent subscribe long-poll after this long (default 310 s).
    pub long_poll_timeout: Option<Duration>,
    /// `ownerId` sent when `sendMessage` gives none (else `""`: the backend takes the caller).
    pub default_owner_id: Option<String>,
    /// An auth provider from outside (a custom JS provider or an agent's identity); exclusive
    /// with the three modes above.
    pub external_auth: Option<Arc<dyn crate::auth::ExternalAuth>>,
    /// Allow plain `http://` to hosts that are not loopback (else refused).
    pub allow_insecure_http: bool,
    /// Extra CAs and the proxy (every request of the client).
    pub net: crate::http::NetOptions,
    /// Waits (ms) before the second, third, … proactive refresh attempt (default `[5000, 10000]`:
    /// three attempts). Each must be a finite number in 0..=3600000; at most 10 of them.
    pub auth_retry_delays_ms: Option<Vec<f64>>,
}

/// Check `authRetryDelaysMs` and turn it into durations.
fn auth_retry_delays(ms: &[f64]) -> Result<Vec<Duration>> {
    if ms.len() > 10 {
        return Err(Error::InvalidArgument(format!(
            "authRetryDelaysMs may hold at most 10 delays (one per extra refresh attempt), got {}",
            ms.len()
        )));
    }
    ms.iter()
        .map(|&d| {
            if d.is_finite() && (0.0..=3_600_000.0).contains(&d) {
                Ok(Duration::from_secs_f64(d / 1000.0))
            } else {
                Err(Error::InvalidArgument(format!(
                    "authRetryDelaysMs must hold numbers of milliseconds between 0 and 3600000, got {d}"
                )))
            }
        })
        .collect()
}

/// What [`TaskClient::send_message`] sends.
#[derive(Clone, Debug, Default)]
pub struct SendMessageRequest {
    /// Target agent.
    pub agent_name: String,
    /// Request parts, already in wire shape.
    pub request_parts: Vec<Value>,
    /// Idempotency key.
    pub idempotency_key: Option<String>,
    /// Owner id (defaults to the authenticated user).
    pub owner_id: Option<String>,
    /// `request` (default) or `pipe`.
    pub task_kind: Option<String>,
    /// Pipe duration in minutes (as given by the caller, validated here).
    pub duration: Option<f64>,
    /// Opt in to live streaming on request tasks.
    pub stream: Option<bool>,
    /// End-to-end encryption key of the caller.
    pub consumer_public_key: Option<String>,
    /// Upload session binding uploaded files.
    pub upload_session_id: Option<String>,
    /// Forwarded verbatim.
    pub retry_policy: Option<Value>,
    /// Forwarded verbatim.
    pub push_notification_config: Option<Value>,
    /// Files to upload before SendMessage: (index of the part in `request_parts`, file). The part
    /// itself is already in wire shape (`{partId, contentType?}`).
    pub uploads: Vec<(usize, crate::files::FileUpload)>,
    /// Largest file accepted (default `BLOCKS_MAX_UPLOAD_BYTES`).
    pub max_upload_bytes: Option<u64>,
}

/// The caller's client.
pub struct TaskClient {
    http: HttpClient,
    billing_mode: BillingMode,
    keys: RwLock<Keyset>,
    origin: String,
    backend: Backend,
    auth: Option<Arc<ConsumerAuth>>,
    anon_fingerprint: Option<String>,
    default_owner_id: RwLock<Option<String>>,
}

/// Validation message of `billingMode` in `TaskClient.create()`.
pub const BILLING_MODE_REQUIRED: &str = "TaskClient.create() requires a billingMode option ('free' or 'paid')";

impl TaskClient {
    /// Resolve configuration (explicit > env > CDM), acquire the first token, and build the client.
    pub async fn create(opts: ClientOptions) -> Result<Arc<TaskClient>> {
        let billing_mode = opts
            .billing_mode
            .as_deref()
            .and_then(BillingMode::parse)
            .ok_or_else(|| Error::InvalidArgument(BILLING_MODE_REQUIRED.into()))?;
        let modes = [
            opts.api_key.is_some(),
            opts.token_endpoint.is_some(),
            opts.token_provider.is_some(),
            opts.anon_fingerprint.is_some(),
            opts.external_auth.is_some(),
        ];
        if modes.iter().filter(|m| **m).count() > 1 {
            return Err(Error::InvalidArgument(
                "Only one token provider mode may be specified".into(),
            ));
        }
        if opts.anon_fingerprint.is_some() && billing_mode != BillingMode::Free {
            return Err(Error::InvalidArgument(
                "anonFingerprint is only supported with billingMode 'free'".into(),
            ));
        }
        if let Some(te) = &opts.token_endpoint {
            if te.url.is_empty() {
                return Err(Error::InvalidArgument(
                    "TokenEndpointConfig.url is required and must be a non-empty string".into(),
                ));
            }
        }
        if opts.api_key.as_deref() == Some("") {
            return Err(Error::InvalidArgument("apiKey must be a non-empty string".into()));
        }
        if opts.long_poll_timeout.is_some_and(|t| t < Duration::from_secs(1)) {
            return Err(Error::InvalidArgument(
                "longPollTimeoutMs must be at least 1000 (it bounds a long-poll the server may hold for minutes)"
                    .into(),
            ));
        }
        let retry_delays = opts
            .auth_retry_delays_ms
            .as_deref()
            .map(auth_retry_delays)
            .transpose()?;
        let insecure = config::insecure_http_allowed(opts.allow_insecure_http);
        if let Some(u) = opts.cdm_url.clone().or_else(|| config::env("BLOCKS_CDM_URL")) {
            config::check_transport_security(&u, "the CDM URL", insecure)?;
        }
        if let Some(te) = &opts.token_endpoint {
            config::check_transport_security(&te.url, "the token endpoint", insecure)?;
        }
        let http = HttpClient::with_net(&opts.net)?.with_long_poll_timeout(opts.long_poll_timeout);
        let cdm = config::fetch_cdm(&http, opts.cdm_url.as_deref()).await?;
        let keyset = cdm.keyset(billing_mode);
        let subscribe_key = config::pick(
            opts.subscribe_key.as_deref(),
            "BLOCKS_SUBSCRIBE_KEY",
            Some(&keyset.subscribe_key),
        )
        .ok_or_else(|| Error::Config("could not resolve subscribeKey".into()))?;
        let publish_key = config::pick(
            opts.publish_key.as_deref(),
            "BLOCKS_PUBLISH_KEY",
            Some(&keyset.publish_key),
        )
        .unwrap_or_default();
        let base_url = config::pick(opts.base_url.as_deref(), "BLOCKS_BACKEND_URL", Some(&cdm.base_url)).ok_or_else(|| {
            Error::Config("could not resolve the backend baseUrl: pass baseUrl, set BLOCKS_BACKEND_URL, or serve api.baseUrl in the CDM".into())
        })?;
        if let Some(e) = &opts.external_auth {
            // the provider's first token before the client is returned, as the built-in modes do
            e.ensure_ready().await?;
        }
        let origin = match opts.realtime_origin.as_deref().filter(|s| !s.is_empty()) {
            Some(o) => o.trim_end_matches('/').to_string(),
            None => config::realtime_origin(cdm.pubnub_origin.as_deref()),
        };
        config::check_transport_security(&base_url, "the backend baseUrl", insecure)?;
        config::check_transport_security(&origin, "the realtime origin", insecure)?;
        let mode = if let Some(k) = opts.api_key {
            Some(AuthMode::ApiKey(k))
        } else if let Some(TokenEndpoint { url, headers, body }) = opts.token_endpoint {
            Some(AuthMode::TokenEndpoint { url, headers, body })
        } else if let Some(p) = opts.token_provider {
            Some(AuthMode::Provider(p))
        } else {
            opts.external_auth.map(AuthMode::External)
        };
        let auth = match mode {
            Some(mode) => {
                let auth = match retry_delays {
                    Some(d) => ConsumerAuth::with_retry_delays(mode, &base_url, http.clone(), d),
                    None => ConsumerAuth::new(mode, &base_url, http.clone()),
                };
                auth.set_on_auth_error(opts.on_auth_error);
                auth.init().await?;
                Some(auth)
            }
            None => None,
        };
        let client = Self::assemble(
            http,
            billing_mode,
            Keyset {
                subscribe_key,
                publish_key,
            },
            origin,
            &base_url,
            auth,
            opts.anon_fingerprint,
        );
        client.set_default_owner_id(opts.default_owner_id);
        Ok(Arc::new(client))
    }

    /// Direct construction without a CDM fetch (advanced path).
    pub fn new_direct(
        billing_mode: &str,
        keys: Keyset,
        origin: &str,
        base_url: &str,
        auth: Option<Arc<ConsumerAuth>>,
        http: HttpClient,
    ) -> Result<TaskClient> {
        let mode = BillingMode::parse(billing_mode).ok_or_else(|| {
            Error::InvalidArgument("TaskClient requires a billingMode option ('free' or 'paid')".into())
        })?;
        if keys.subscribe_key.is_empty() {
            return Err(Error::InvalidArgument("TaskClient requires a subscribeKey".into()));
        }
        Ok(Self::assemble(
            http,
            mode,
            keys,
            origin.trim_end_matches('/').to_string(),
            base_url,
            auth,
            None,
        ))
    }

    fn assemble(
        http: HttpClient,
        billing_mode: BillingMode,
        keys: Keyset,
        origin: String,
        base_url: &str,
        auth: Option<Arc<ConsumerAuth>>,
        anon_fingerprint: Option<String>,
    ) -> TaskClient {
        let backend = Backend::new(http.clone(), base_url, auth.clone());
        backend.set_rpc_fallback(&origin, &keys.subscribe_key);
        TaskClient {
            http,
            billing_mode,
            keys: RwLock::new(keys),
            origin,
            backend,
            auth,
            anon_fingerprint,
            default_owner_id: RwLock::new(None),
        }
    }

    /// Set the `ownerId` sent when `sendMessage` names none.
    pub fn set_default_owner_id(&self, owner: Option<String>) {
        if let Ok(mut d) = self.default_owner_id.write() {
            *d = owner.filter(|o| !o.is_empty());
        }
    }

    fn default_owner(&self) -> Option<String> {
        self.default_owner_id.read().ok().and_then(|d| d.clone())
    }

    /// Billing mode the client was created with.
    pub fn billing_mode(&self) -> BillingMode {
        self.billing_mode
    }

    /// Current keyset.
    pub fn keys(&self) -> Keyset {
        self.keys
            .read()
            .map(|k| k.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// Swap the keys used for sessions created afterwards.
    pub fn update_keys(&self, subscribe_key: &str, publish_key: Option<&str>) {
        if let Ok(mut k) = self.keys.write() {
            k.subscribe_key = subscribe_key.to_string();
            k.publish_key = publish_key.unwrap_or_default().to_string();
        }
        self.backend.set_rpc_fallback(&self.origin, subscribe_key);
    }

    /// Realtime origin.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Backend client.
    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// The auth provider, if any.
    pub fn auth(&self) -> Option<&Arc<ConsumerAuth>> {
        self.auth.as_ref()
    }

    /// User id of the latest token acquisition.
    pub fn user_id(&self) -> Option<String> {
        self.auth.as_ref().and_then(|a| a.user_id())
    }

    /// Stop background refresh. Live sessions keep working. Idempotent.
    pub fn destroy(&self) {
        if let Some(a) = &self.auth {
            a.destroy();
        }
    }

    /// Create a task and return its session, caught up with history.
    pub async fn send_message(&self, req: SendMessageRequest) -> Result<TaskSession> {
        if self.anon_fingerprint.is_some() {
            return Err(Error::InvalidArgument(
                "anon-mode TaskClient does not support sendMessage()".into(),
            ));
        }
        let mut params = self.send_params(&req)?;
        if !req.uploads.is_empty() {
            let max = req.max_upload_bytes.unwrap_or(blocks_wire::MAX_UPLOAD_BYTES);
            for (index, f) in &req.uploads {
                let part_id = req
                    .request_parts
                    .get(*index)
                    .and_then(|p| p.get("partId"))
                    .and_then(Value::as_str);
                if part_id.is_none_or(str::is_empty) {
                    return Err(Error::InvalidArgument(
                        "partId is required for file-bearing request parts".into(),
                    ));
                }
                f.check_size(max)?;
            }
            if self.backend.base_url().is_empty() {
                return Err(Error::InvalidArgument(
                    "File upload requires a backend baseUrl (files above 16384 bytes are uploaded)".into(),
                ));
            }
            let mut session: Option<String> = req.upload_session_id.clone();
            for (index, f) in &req.uploads {
                let part_id = req.request_parts[*index]["partId"].clone();
                let mut body = json!({ "role": "consumer-input", "partId": part_id, "agentName": req.agent_name });
                if let Some(s) = &session {
                    body["uploadSessionId"] = json!(s);
                }
                let (answer, _) = crate::files::upload(&self.backend, &self.http, body, f).await?;
                if session.is_none() {
                    session = answer
                        .get("uploadSessionId")
                        .and_then(Value::as_str)
                        .map(str::to_string);
                }
            }
            if let Some(s) = session {
                params.insert("uploadSessionId".into(), json!(s));
            }
        }
        let result = self.backend.rpc("SendMessage", Value::Object(params)).await?;
        let task_id = result
            .get("taskId")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| Error::Protocol("SendMessage result has no taskId".into()))?
            .to_string();
        let owner_id = req
            .owner_id
            .clone()
            .filter(|s| !s.is_empty())
            .or_else(|| self.default_owner())
            .or_else(|| result.get("orgId").and_then(Value::as_str).map(str::to_string))
            .or_else(|| self.user_id())
            .unwrap_or_default();
        let org_id = result
            .get("orgId")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| owner_id.clone());
        let blocks = result.pointer("/extensions/blocks");
        let read_token = blocks
            .and_then(|b| b.get("readToken"))
            .and_then(Value::as_str)
            .map(str::to_string);
        let status_channel = blocks
            .and_then(|b| b.pointer("/streamChannels/status"))
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| blocks_wire::task_channel(&org_id, &task_id));
        let keys = self.keys();
        let subscribe_key = blocks
            .and_then(|b| b.get("subscribeKey"))
            .and_then(Value::as_str)
            .unwrap_or(&keys.subscribe_key)
            .to_string();
        let publish_key = blocks
            .and_then(|b| b.get("publishKey"))
            .and_then(Value::as_str)
            .unwrap_or(&keys.publish_key)
            .to_string();
        let info = SessionInfo {
            task_id: task_id.clone(),
            owner_id,
            org_id,
            agent_name: Some(req.agent_name.clone()),
            read_token: read_token.clone(),
            status_channel,
            idempotent: result.get("idempotent").and_then(Value::as_bool).unwrap_or(false),
            queued: result.get("queued").and_then(Value::as_bool).unwrap_or(false),
            push_config_id: result.get("pushConfigId").and_then(Value::as_str).map(str::to_string),
        };
        let state = result.get("state").and_then(Value::as_str);
        if info.idempotent {
            if let Some(s) = state.filter(|s| blocks_wire::is_terminal_state(s)) {
                let access = crate::files::FileAccess {
                    origin: self.origin.clone(),
                    subscribe_key,
                    user_id: session_user_id(),
                    token: read_token,
                };
                return Ok(TaskSession::pre_closed(info, s).with_files(self.http.clone(), access));
            }
        }
        let realtime = Realtime::new(
            RealtimeConfig {
                origin: self.origin.clone(),
                subscribe_key,
                publish_key,
                user_id: session_user_id(),
                token: read_token,
                filter: None,
                presence_timeout: None,
                leave_on_close: false,
                give_up_after: Some(crate::realtime::SHORT_LIVED_GIVE_UP),
            },
            &self.http,
        )?;
        TaskSession::open(info, realtime, None, true, false)
            .await
            .map_err(|e| match e {
                Error::Realtime(m) => Error::Realtime(format!(
                    "task {task_id} was created but its events could not be read: {m}"
                )),
                other => other,
            })
    }

    /// Build and validate SendMessage params (no network).
    pub fn send_params(&self, req: &SendMessageRequest) -> Result<Map<String, Value>> {
        if req.agent_name.is_empty() {
            return Err(Error::InvalidArgument("sendMessage requires agentName".into()));
        }
        if !blocks_wire::is_valid_agent_name(&req.agent_name) {
            return Err(Error::InvalidArgument(format!(
                "agentName {:?} is invalid: use only letters, digits and underscores (no hyphens or dots)",
                req.agent_name
            )));
        }
        let kind = req.task_kind.as_deref();
        let mut blocks = Map::new();
        match kind {
            Some("pipe") => {
                let d = req
                    .duration
                    .and_then(blocks_wire::PipeDuration::from_f64)
                    .ok_or_else(|| {
                        let got = match req.duration {
                            Some(d) if d.fract() != 0.0 => format!(" (whole minutes; got {d})"),
                            _ => String::new(),
                        };
                        Error::InvalidArgument(format!("Pipe tasks require {}{got}", blocks_wire::PipeDuration::RULE))
                    })?;
                blocks.insert("taskKind".into(), json!("pipe"));
                blocks.insert("duration".into(), json!(d.minutes()));
            }
            Some("request") | None => {
                if req.duration.is_some() {
                    return Err(Error::InvalidArgument(
                        "Request tasks must not include a duration (set taskKind: 'pipe' for a task with a duration)"
                            .into(),
                    ));
                }
                if kind.is_some() {
                    blocks.insert("taskKind".into(), json!("request"));
                }
            }
            Some(other) => {
                return Err(Error::InvalidArgument(format!(
                    "taskKind must be 'request' or 'pipe', got {other:?}"
                )))
            }
        }
        if let Some(s) = req.stream {
            blocks.insert("stream".into(), json!(s));
        }
        if let Some(k) = &req.consumer_public_key {
            blocks.insert("consumerPublicKey".into(), json!(k));
        }
        // explicit > defaultOwnerId > "" (the backend then takes the authenticated caller)
        let owner_id = req
            .owner_id
            .clone()
            .filter(|s| !s.is_empty())
            .or_else(|| self.default_owner())
            .unwrap_or_default();
        let mut params = Map::new();
        params.insert("agentName".into(), json!(req.agent_name));
        params.insert("billingMode".into(), json!(self.billing_mode.as_str()));
        params.insert("requestParts".into(), Value::Array(req.request_parts.clone()));
        params.insert("ownerId".into(), json!(owner_id));
        if let Some(k) = req.idempotency_key.as_ref().filter(|k| !k.is_empty()) {
            params.insert("idempotencyKey".into(), json!(k));
        }
        if let Some(u) = &req.upload_session_id {
            params.insert("uploadSessionId".into(), json!(u));
        }
        if !blocks.is_empty() {
            params.insert("extensions".into(), json!({ "blocks": blocks }));
        }
        if let Some(p) = &req.retry_policy {
            params.insert("retryPolicy".into(), p.clone());
        }
        if let Some(p) = &req.push_notification_config {
            params.insert("pushNotificationConfig".into(), p.clone());
        }
        Ok(params)
    }

    /// Attach to an existing task: GetTask, a read token, then history (events, artifacts, state);
    /// live if the task is active, finished (no subscription) if it is terminal.
    pub async fn connect(&self, task_id: &str, role: Option<&str>) -> Result<TaskSession> {
        if task_id.is_empty() {
            return Err(Error::InvalidArgument("connect() needs a taskId".into()));
        }
        let (task, grant) = if let Some(fp) = &self.anon_fingerprint {
            // Anonymous viewer: the read token decides access (403 → AnonTaskAccessDenied); the
            // task record may be withheld from anonymous callers.
            let body = json!({ "taskId": task_id, "fingerprint": fp });
            let grant = match self
                .backend
                .post_json(
                    "/api/v1/auth/anon-task-read-token",
                    &body,
                    None,
                    "anon-task-read-token failed",
                )
                .await
            {
                Err(Error::Http { status: 403, body, .. }) => return Err(Error::AnonTaskAccessDenied(body)),
                other => other?,
            };
            let task = self
                .get_task(task_id)
                .await
                .unwrap_or_else(|_| json!({ "taskId": task_id }));
            (task, grant)
        } else {
            let auth = self.auth.as_ref().ok_or_else(|| {
                Error::InvalidArgument(
                    "connect() requires an authenticated TaskClient (create it with apiKey, tokenEndpoint or tokenProvider)"
                        .into(),
                )
            })?;
            auth.ensure_ready().await?;
            auth.preflight().await?;
            let task = self.get_task(task_id).await?;
            let body = json!({ "taskId": task_id, "role": role.unwrap_or("consumer") });
            let grant = self
                .backend
                .post_authed("/api/v1/auth/task-read-token", &body, "task-read-token failed")
                .await?;
            (task, grant)
        };
        let token = grant.get("pamToken").and_then(Value::as_str).map(str::to_string);
        let channel = grant
            .get("channel")
            .and_then(Value::as_str)
            .filter(|c| !c.is_empty())
            .ok_or_else(|| Error::Protocol("task-read-token answer has no channel".into()))?
            .to_string();
        let owner_id = task
            .get("owner")
            .and_then(Value::as_str)
            .map(str::to_string)
            .or_else(|| self.user_id())
            .unwrap_or_default();
        let org_id = channel
            .split('.')
            .nth(1)
            .map(str::to_string)
            .unwrap_or_else(|| owner_id.clone());
        let info = SessionInfo {
            task_id: task_id.to_string(),
            owner_id,
            org_id,
            agent_name: task.get("agentName").and_then(Value::as_str).map(str::to_string),
            read_token: token.clone(),
            status_channel: channel,
            ..SessionInfo::default()
        };
        let keys = self.keys();
        let realtime = Realtime::new(
            RealtimeConfig {
                origin: self.origin.clone(),
                subscribe_key: keys.subscribe_key,
                publish_key: keys.publish_key,
                user_id: session_user_id(),
                token,
                filter: None,
                presence_timeout: None,
                leave_on_close: false,
                give_up_after: Some(crate::realtime::SHORT_LIVED_GIVE_UP),
            },
            &self.http,
        )?;
        let state = task.get("state").and_then(Value::as_str).map(str::to_string);
        TaskSession::open(info, realtime, state, true, true).await
    }

    /// The registry card of an agent, or `None` when the agent is unknown. The client's
    /// credential is sent (read fresh each call); "not found" or 401 with a refreshable credential
    /// is retried once after a refresh (a private agent may be hidden from an expired token).
    pub async fn get_agent_card(&self, agent_name: &str) -> Result<Option<Value>> {
        let card = |a: Option<Value>| a.map(|a| a.get("card").cloned().unwrap_or(Value::Null));
        let Some(auth) = &self.auth else {
            return Ok(card(self.backend.registry_agent(agent_name, None).await?));
        };
        let no_credential =
            |e: Error| Error::AuthRefreshFailed(format!("no credential could be produced for the registry read: {e}"));
        auth.ensure_ready().await.map_err(no_credential)?;
        auth.preflight().await?;
        let header = auth.current_header().await.map_err(no_credential)?;
        if header.is_none() {
            return Err(Error::AuthRefreshFailed(
                "the auth provider gave no credential for the registry read".into(),
            ));
        }
        match self.backend.registry_agent(agent_name, header.as_deref()).await {
            Ok(Some(a)) => Ok(card(Some(a))),
            Ok(None) => {
                if !auth.refresh_for_retry().await? {
                    return Ok(None);
                }
                let header = auth.current_header().await.map_err(no_credential)?;
                Ok(card(self.backend.registry_agent(agent_name, header.as_deref()).await?))
            }
            Err(e) if e.is_unauthorized() => {
                if !auth.refresh_for_retry().await? {
                    return Err(e);
                }
                let header = auth.current_header().await.map_err(no_credential)?;
                Ok(card(self.backend.registry_agent(agent_name, header.as_deref()).await?))
            }
            Err(e) => Err(e),
        }
    }

    /// `GetTask` → the unwrapped TaskInfo.
    pub async fn get_task(&self, task_id: &str) -> Result<Value> {
        let r = self.backend.rpc("GetTask", json!({ "taskId": task_id })).await?;
        r.get("task")
            .cloned()
            .filter(|t| !t.is_null())
            .ok_or_else(|| Error::Protocol(format!("Task not found: {task_id}")))
    }
}

/// Session client uuid: `blocks-task-<ms base36>-<4 base36>`.
fn session_user_id() -> String {
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let mut b36 = Vec::new();
    while ms > 0 {
        b36.push(ALPHABET[(ms % 36) as usize]);
        ms /= 36;
    }
    b36.reverse();
    let mut rng = rand::rng();
    let suffix: String = (0..4).map(|_| ALPHABET[rng.random_range(0..36)] as char).collect();
    format!("blocks-task-{}-{suffix}", String::from_utf8_lossy(&b36))
}
