//! The agent runtime (agent spec §4–§8): registration, the control channel, admission, handlers
//! behind the [`TaskHandler`] trait, task events and terminals.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use futures::StreamExt;
use serde_json::{json, Map, Value};
use tokio::sync::Notify;

use crate::backend::Backend;
use crate::config::{self, BillingMode, Keyset};
use crate::error::{Error, Result};
use crate::http::HttpClient;
use crate::realtime::{Realtime, RealtimeConfig};
mod context;
mod instance;
mod streams;
use context::*;
pub use context::{CancelReason, TaskContext};
use instance::*;
pub use streams::{validate_stream_id, writer_options, StreamKind, StreamLease, StreamRegistry};

/// Options of [`AgentInstance::start`].
#[derive(Clone, Debug, Default)]
pub struct AgentOptions {
    /// Agent name (`^[a-zA-Z0-9_]+$`).
    pub agent_name: String,
    /// API key (else `BLOCKS_API_KEY`).
    pub api_key: Option<String>,
    /// CDM URL (else `BLOCKS_CDM_URL`, else the hosted default).
    pub cdm_url: Option<String>,
    /// Backend root (else the CDM's `api.baseUrl`).
    pub base_url: Option<String>,
    /// Realtime origin (else `BLOCKS_PUBNUB_ORIGIN`, else the CDM's `pubnub.origin`).
    pub realtime_origin: Option<String>,
    /// Tasks run at once (default 1; 0 = unlimited).
    pub concurrency: Option<u32>,
    /// Expected instances (default 1; 0 = no control filter).
    pub expected_instances: Option<u32>,
    /// Forwarded on connect.
    pub max_pending_backlog: Option<u32>,
    /// Forwarded on connect.
    pub max_running_time_sec: Option<u64>,
    /// Forwarded as `listing` when set.
    pub listing: Option<String>,
    /// How long a handler may keep running after TerminateTask before the task is ended without
    /// it (default 2 s).
    pub terminate_grace: Option<Duration>,
    /// Streams declared in the card.
    pub streams: Vec<DeclaredStream>,
    /// Give up on a silent subscribe long-poll after this long (default 310 s).
    pub long_poll_timeout: Option<Duration>,
    /// Allow plain `http://` to hosts that are not loopback (else refused).
    pub allow_insecure_http: bool,
    /// Extra CAs and the proxy (every request of the instance and its task clients).
    pub net: crate::http::NetOptions,
}

/// A stream declared in the agent card (`streams.<name>`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DeclaredStream {
    /// Card key.
    pub name: String,
    /// `outbound`, `inbound` or `bidirectional` (agent's view).
    pub direction: String,
    /// `bytes` or `events`.
    pub format: String,
    /// `dedicated` or `shared`.
    pub affinity: String,
}

/// Options of [`TaskContext::create_stream`].
#[derive(Clone, Debug, Default)]
pub struct CreateStreamOptions {
    /// Card stream key (default: the only declared stream, or `_default`).
    pub declared_stream: Option<String>,
    /// Must equal the card's direction when given.
    pub direction: Option<String>,
    /// Must equal the card's format when given.
    pub format: Option<String>,
    /// Forwarded to the caller in the stream announcement.
    pub metadata: Option<Value>,
    /// Flush threshold in bytes.
    pub bundle_bytes: Option<usize>,
    /// Flush latency.
    pub max_latency: Option<Duration>,
    /// External (two-phase) stream.
    pub external: bool,
    /// Wait this long after setup before returning, so the caller can subscribe before the first
    /// write (outbound and bidirectional streams; default 1 s as in the official SDKs, 0 disables).
    pub subscribe_grace: Option<Duration>,
    /// Split frames above this many bytes into multipart messages (> 512; default 16384, or
    /// `STREAM_MAX_MESSAGE_SIZE`).
    pub max_message_size: Option<usize>,
}

/// One artifact a handler returns or publishes.
#[derive(Clone, Debug, Default)]
pub struct ArtifactOut {
    /// Bytes.
    pub data: Vec<u8>,
    /// MIME type (default `application/octet-stream`).
    pub mime_type: Option<String>,
    /// File name.
    pub file_name: Option<String>,
    /// Card `io.outputs[].id`.
    pub output_id: Option<String>,
}

/// What a handler returns.
#[derive(Clone, Debug, Default)]
pub struct HandlerResult {
    /// Artifacts, published in order before the terminal.
    pub artifacts: Vec<ArtifactOut>,
}

/// A task handler (the binding implements it by calling the user's JS function).
#[async_trait::async_trait]
pub trait TaskHandler: Send + Sync + 'static {
    /// Run one task. `Err(message)` fails the task with that message.
    async fn handle(&self, task: Value, ctx: Arc<TaskContext>) -> std::result::Result<HandlerResult, String>;
}

/// A started agent instance.
pub struct AgentInstance {
    inner: Arc<Instance>,
    pump: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl AgentInstance {
    /// Register with the backend, subscribe to the control channel and start taking tasks.
    pub async fn start(opts: AgentOptions, handler: Arc<dyn TaskHandler>) -> Result<AgentInstance> {
        if opts.agent_name.is_empty() {
            return Err(Error::InvalidArgument(
                "agentName is required: provide opts.agentName".into(),
            ));
        }
        if !blocks_wire::is_valid_agent_name(&opts.agent_name) {
            return Err(Error::InvalidArgument(
                "agentName must contain only alphanumeric characters and underscores (no hyphens)".into(),
            ));
        }
        let instance_id = format!("AG-{}-{}", opts.agent_name, uuid::Uuid::new_v4());
        if opts.long_poll_timeout.is_some_and(|t| t < Duration::from_secs(1)) {
            return Err(Error::InvalidArgument(
                "longPollTimeoutMs must be at least 1000 (it bounds a long-poll the server may hold for minutes)"
                    .into(),
            ));
        }
        let insecure = config::insecure_http_allowed(opts.allow_insecure_http);
        if let Some(u) = opts.cdm_url.clone().or_else(|| config::env("BLOCKS_CDM_URL")) {
            config::check_transport_security(&u, "the CDM URL", insecure)?;
        }
        let http = HttpClient::with_net(&opts.net)?.with_long_poll_timeout(opts.long_poll_timeout);
        let cdm = config::fetch_cdm(&http, opts.cdm_url.as_deref()).await?;
        let api_key = opts
            .api_key
            .clone()
            .filter(|k| !k.is_empty())
            .or_else(|| config::env("BLOCKS_API_KEY"))
            .ok_or_else(|| {
                Error::InvalidArgument(
                    "BLOCKS_API_KEY is required: pass apiKey or set BLOCKS_API_KEY (e.g. in the agent folder's .env)"
                        .into(),
                )
            })?;
        let base_url = opts
            .base_url
            .clone()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| cdm.base_url.clone());
        config::check_transport_security(&base_url, "the backend baseUrl", insecure)?;
        let backend = Backend::new(http.clone(), &base_url, None);
        let entry = backend
            .registry_agent(&opts.agent_name, Some(&api_key))
            .await?
            .ok_or_else(|| {
                Error::Config(format!(
                    "agent {} not found in registry: register the agent first",
                    opts.agent_name
                ))
            })?;
        let billing = entry
            .get("billingMode")
            .and_then(Value::as_str)
            .and_then(BillingMode::parse)
            .ok_or_else(|| {
                Error::Config(format!(
                    "registry entry of {} is missing billingMode (free|paid)",
                    opts.agent_name
                ))
            })?;
        let keys = cdm.keyset(billing).clone();
        let origin = match opts.realtime_origin.as_deref().filter(|s| !s.is_empty()) {
            Some(o) => o.trim_end_matches('/').to_string(),
            None => config::realtime_origin(cdm.pubnub_origin.as_deref()),
        };
        config::check_transport_security(&origin, "the realtime origin", insecure)?;
        let concurrency = opts.concurrency.unwrap_or(1);
        let expected = opts.expected_instances.unwrap_or(1);
        let mut body = json!({
            "agentName": opts.agent_name,
            "instanceId": instance_id,
            "billingMode": billing.as_str(),
            "expectedInstances": expected,
            "concurrency": concurrency,
            "deviceOs": std::env::consts::OS,
            "sdkLanguage": "Node",
            "sdkVersion": env!("CARGO_PKG_VERSION"),
            "protocolVersions": blocks_wire::SUPPORTED_PROTOCOL_VERSIONS,
            "preferredProtocolVersion": blocks_wire::PROTOCOL_VERSION,
        });
        let listing = opts
            .listing
            .clone()
            .or_else(|| entry.get("listing").and_then(Value::as_str).map(str::to_string));
        if let Some(o) = body.as_object_mut() {
            if let Some(l) = listing {
                o.insert("listing".into(), json!(l));
            }
            if let Some(b) = opts.max_pending_backlog {
                o.insert("maxPendingBacklog".into(), json!(b));
            }
            if let Some(m) = opts.max_running_time_sec {
                o.insert("maxRunningTimeSec".into(), json!(m));
            }
            if let Some(c) = config::env("BLOCKS_CLI_VERSION") {
                o.insert("cliVersion".into(), json!(c));
            }
        }
        let agent_auth = crate::agent_auth::AgentAuth::new(&api_key, &base_url, http.clone())?;
        let connect = agent_auth.init(body.clone()).await?;
        let control_channel = connect
            .get("controlChannel")
            .and_then(Value::as_str)
            .ok_or_else(|| Error::Protocol("Connect response missing controlChannel — server may be outdated".into()))?
            .to_string();
        let pam_token = connect.get("pamToken").and_then(Value::as_str).map(str::to_string);
        let control = Realtime::new(
            RealtimeConfig {
                origin: origin.clone(),
                subscribe_key: keys.subscribe_key.clone(),
                publish_key: keys.publish_key.clone(),
                user_id: instance_id.clone(),
                token: pam_token,
                filter: (expected != 0).then(|| blocks_wire::instance_filter(&instance_id)),
                presence_timeout: Some(blocks_wire::CONTROL_PRESENCE_TIMEOUT_SEC),
                leave_on_close: true,
                give_up_after: None,
            },
            &http,
        )?;
        let inner = Arc::new(Instance {
            agent_name: opts.agent_name.clone(),
            instance_id,
            concurrency: concurrency as usize,
            control: std::sync::RwLock::new(control.clone()),
            switch: tokio::sync::watch::channel(None).0,
            environment: Mutex::new(
                if billing == BillingMode::Paid {
                    "network"
                } else {
                    "playground"
                }
                .to_string(),
            ),
            keysets: HashMap::from([
                ("playground".to_string(), cdm.keyset(BillingMode::Free).clone()),
                ("network".to_string(), cdm.keyset(BillingMode::Paid).clone()),
            ]),
            control_channel: control_channel.clone(),
            keys,
            origin,
            http,
            handler,
            running: Mutex::new(HashMap::new()),
            parked: Mutex::new(HashMap::new()),
            active: AtomicUsize::new(0),
            finishing: AtomicUsize::new(0),
            started_at: now_ms(),
            stopped: AtomicBool::new(false),
            idle: Notify::new(),
            billing,
            terminate_grace: opts.terminate_grace.unwrap_or(Duration::from_secs(2)),
            declared: Arc::new(opts.streams.clone()),
            registry: Arc::new(StreamRegistry::default()),
            max_running_time_sec: opts.max_running_time_sec,
            cdm: cdm.raw.clone(),
            presence_busy: AtomicBool::new(false),
            presence_dirty: AtomicBool::new(false),
            uploader: agent_auth,
        });
        // from the registration on: a StartTask published before the first long-poll is not lost
        let start = control.time().await.ok();
        let pump = tokio::spawn(control_pump(
            Arc::downgrade(&inner),
            control.clone(),
            control_channel.clone(),
            start,
        ));
        inner.write_presence().await;
        Ok(AgentInstance {
            inner,
            pump: Mutex::new(Some(pump)),
        })
    }

    /// The instance id (`AG-<agentName>-<uuid>`).
    pub fn instance_id(&self) -> &str {
        &self.inner.instance_id
    }
    /// The agent name.
    pub fn agent_name(&self) -> &str {
        &self.inner.agent_name
    }
    /// The control channel.
    pub fn control_channel(&self) -> &str {
        &self.inner.control_channel
    }
    /// Subscribe key of the instance's environment.
    pub fn subscribe_key(&self) -> &str {
        &self.inner.keys.subscribe_key
    }
    /// The agent's billing mode (from the registry).
    pub fn billing_mode(&self) -> BillingMode {
        self.inner.billing
    }
    /// Publish a terminal for a task of this instance with its cached credentials (a pipe task
    /// whose handler returned, or one still running): `terminal` is `{ state, reason?, error?, … }`.
    /// Errors for a task this instance holds no credentials for.
    pub async fn publish_terminal(&self, task_id: &str, terminal: Value) -> Result<()> {
        let state = terminal.get("state").and_then(Value::as_str).unwrap_or_default();
        if !blocks_wire::is_terminal_state(state) {
            return Err(Error::InvalidArgument(format!(
                "publishTerminal needs a terminal state (completed, failed or canceled), got {state:?}"
            )));
        }
        // read before the task leaves `parked`: a refused terminal must leave the task as it was
        let mut t = terminal;
        if let Some(o) = t.as_object_mut() {
            o.insert("type".into(), json!("terminal"));
        }
        let t = match blocks_wire::TaskEvent::parse(&t) {
            Ok(blocks_wire::TaskEvent::Terminal(t)) => t,
            Ok(_) | Err(_) => {
                // unreachable after the state check (other fields of the wrong type are dropped)
                return Err(Error::InvalidArgument(
                    "publishTerminal needs a terminal state (completed, failed or canceled)".into(),
                ));
            }
        };
        let unknown = || {
            Error::InvalidArgument(format!(
                "No cached credentials for task {task_id}: this instance is not running it (or its terminal was already published)"
            ))
        };
        let parked = self.inner.parked.lock().ok().and_then(|mut p| p.remove(task_id));
        let ctx = parked.or_else(|| self.inner.running.lock().ok().and_then(|r| r.get(task_id).cloned()));
        // a task whose terminal is out holds no credentials any more, whichever map still lists it
        let Some(ctx) = ctx.filter(|c| !c.is_finished()) else {
            return Err(unknown());
        };
        ctx.end_streams().await;
        if !ctx.publish_terminal(t).await {
            return Err(unknown());
        }
        Ok(())
    }

    /// End a stream for good (ASTR-06): it leaves the registry, its client ends, and every task
    /// that held it gets terminal `failed` with `error: reason`. An unknown id does nothing.
    pub async fn fail_stream(&self, stream_id: &str, reason: &str) {
        let holders = self.inner.registry.remove(stream_id).await;
        for task in holders.into_iter().filter_map(|w| w.upgrade()) {
            if let Ok(mut p) = self.inner.parked.lock() {
                p.remove(task.task_id());
            }
            task.end_streams().await;
            task.publish_terminal(blocks_wire::Terminal::failed(reason)).await;
        }
    }

    /// The CDM document the instance was configured from.
    pub fn cdm_config(&self) -> &Value {
        &self.inner.cdm
    }

    /// The instance's backend identity (its access token from connect).
    pub fn agent_auth(&self) -> Arc<crate::agent_auth::AgentAuth> {
        self.inner.uploader.clone()
    }
    /// A caller client that acts as this agent (its access token, its keyset and network): what
    /// handlers get as `ctx.taskClient` for agent-to-agent calls.
    pub fn task_client(&self) -> Result<crate::client::TaskClient> {
        let auth = crate::auth::ConsumerAuth::new(
            crate::auth::AuthMode::External(self.inner.uploader.clone()),
            self.inner.uploader.base_url(),
            self.inner.http.clone(),
        );
        crate::client::TaskClient::new_direct(
            self.inner.billing.as_str(),
            self.inner.keys.clone(),
            &self.inner.origin,
            self.inner.uploader.base_url(),
            Some(auth),
            self.inner.http.clone(),
        )
    }
    /// Handlers running now.
    pub fn active_tasks(&self) -> usize {
        self.inner.active.load(Ordering::SeqCst)
    }

    /// Stop taking tasks, let running handlers finish within `grace`, then cancel what is left and
    /// leave the control channel. Idempotent.
    pub async fn stop(&self, grace: Duration) {
        if self.inner.stopped.swap(true, Ordering::SeqCst) {
            return;
        }
        if let Ok(mut p) = self.pump.lock() {
            if let Some(h) = p.take() {
                h.abort();
            }
        }
        self.inner.control().shutdown().await;
        let deadline = tokio::time::Instant::now() + grace;
        let busy = |i: &Instance| i.active.load(Ordering::SeqCst) + i.finishing.load(Ordering::SeqCst) > 0;
        while busy(&self.inner) {
            let idle = self.inner.idle.notified();
            if !busy(&self.inner) {
                break;
            }
            if tokio::time::timeout_at(deadline, idle).await.is_err() {
                break;
            }
        }
        let left: Vec<Arc<TaskContext>> = self
            .inner
            .running
            .lock()
            .map(|r| r.values().cloned().collect())
            .unwrap_or_default();
        let parked: Vec<Arc<TaskContext>> = self
            .inner
            .parked
            .lock()
            .map(|mut p| p.drain().map(|(_, c)| c).collect())
            .unwrap_or_default();
        // concurrently, and without waiting out a network that is down: a terminal the network
        // does not take goes on being retried in the background, but stop() returns
        let ends = left.into_iter().chain(parked).map(|ctx| async move {
            ctx.signal(CancelReason::Terminated);
            let terminal = ctx.publish_terminal(blocks_wire::Terminal::failed("agent_stopped"));
            if tokio::time::timeout(STOP_TERMINAL_WAIT, terminal).await.is_err() {
                tracing::warn!(target: "blocks::agent", "the terminal of task {} is not out yet; still retrying", ctx.task_id);
            }
        });
        futures::future::join_all(ends).await;
    }
}

impl Drop for AgentInstance {
    fn drop(&mut self) {
        self.inner.stopped.store(true, Ordering::SeqCst);
        if let Ok(mut p) = self.pump.lock() {
            if let Some(h) = p.take() {
                h.abort();
            }
        }
        self.inner.control().close();
    }
}
