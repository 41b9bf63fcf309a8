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
mod streams;
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

/// Why a task's cancel signal fired.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CancelReason {
    /// CancelTask.
    Canceled,
    /// ExpireTask or the local duration timer.
    Expired,
    /// TerminateTask.
    Terminated,
}

#[derive(Default)]
struct CancelState {
    canceled: bool,
    expired: bool,
    terminated: bool,
}

struct StatusThrottle {
    last_sent: Option<Instant>,
    pending: Option<String>,
    flush_scheduled: bool,
}

/// One queued task event and, if the caller waits, where to report the publish result.
type Outgoing = (Value, Option<tokio::sync::oneshot::Sender<Result<()>>>);

/// Publish queued events of one task in order with its write token; ends when the context drops.
/// How long stop() waits for the terminals of the tasks it abandons (they go on being retried).
const STOP_TERMINAL_WAIT: Duration = Duration::from_secs(5);

/// How long a task's terminal is sent again while the network does not take it (past a devnet
/// or backend restart; the publish transport itself already retries refused connections for 60 s).
const TERMINAL_RETRY_FOR: Duration = Duration::from_secs(120);

fn spawn_publisher(
    publisher: Arc<Realtime>,
    channel: String,
    agent_name: String,
    task_id: String,
) -> tokio::sync::mpsc::UnboundedSender<Outgoing> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Outgoing>();
    tokio::spawn(async move {
        while let Some((mut event, done)) = rx.recv().await {
            if event.is_null() {
                // a flush marker: everything queued before it is out
                if let Some(d) = done {
                    let _ = d.send(Ok(()));
                }
                continue;
            }
            if let Some(o) = event.as_object_mut() {
                o.insert("taskId".into(), json!(task_id));
                o.insert("protocolVersion".into(), json!(blocks_wire::PROTOCOL_VERSION));
            }
            let meta = HashMap::from([
                ("agentName".to_string(), agent_name.clone()),
                ("taskId".to_string(), task_id.clone()),
                ("protocolVersion".to_string(), blocks_wire::PROTOCOL_VERSION.to_string()),
            ]);
            let terminal = event.get("type").and_then(Value::as_str) == Some("terminal");
            let mut r = publisher
                .publish(&channel, event.clone(), Some(meta.clone()), true)
                .await
                .map(|_| ());
            if terminal {
                // a terminal is worth a duplicate (the first one wins for every reader): it is
                // sent again, also after an ambiguous failure, until the network takes it or
                // refuses it, so a task never stays `running` because a network restart ate it
                let started = Instant::now();
                let mut delay = Duration::from_millis(250);
                while let Err(e) = &r {
                    if matches!(e, Error::Http { status: 400..=499, .. }) || started.elapsed() >= TERMINAL_RETRY_FOR {
                        break;
                    }
                    tracing::debug!(target: "blocks::agent", "terminal of {task_id} not published ({e}); retrying in {delay:?}");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                    r = publisher
                        .publish(&channel, event.clone(), Some(meta.clone()), true)
                        .await
                        .map(|_| ());
                }
            }
            match done {
                Some(d) => {
                    let _ = d.send(r);
                }
                None => {
                    if let Err(e) = r {
                        tracing::warn!(target: "blocks::agent", "event of task {task_id} not published: {e}");
                    }
                }
            }
        }
    });
    tx
}

/// Everything a handler can do with its task.
pub struct TaskContext {
    task_id: String,
    org_id: String,
    agent_name: String,
    task_kind: String,
    request_parts: Value,
    has_stream: bool,
    consumer_public_key: Option<String>,
    /// Every task event goes through this queue, so events reach the channel in call order.
    events: tokio::sync::mpsc::UnboundedSender<Outgoing>,
    /// The per-task client (T2): stream setup goes through it.
    publisher: Arc<Realtime>,
    declared: Arc<Vec<DeclaredStream>>,
    duration: Option<i64>,
    stream_count: std::sync::atomic::AtomicU32,
    /// The streams this task holds.
    leases: Mutex<Vec<Arc<StreamLease>>>,
    /// The instance's streams (shared ones are held by several tasks).
    registry: Arc<StreamRegistry>,
    /// The effective `maxRunningTimeSec` (stream token lifetime of request tasks).
    max_running_time_sec: Option<u64>,
    cancel: Mutex<CancelState>,
    cancel_notify: Notify,
    cancel_fired: AtomicBool,
    status: Mutex<StatusThrottle>,
    status_window: Duration,
    terminal_sent: AtomicBool,
    /// The task no longer holds a unit of the instance's capacity (its handler returned, or it
    /// was ended without the handler after a TerminateTask grace period).
    slot_released: AtomicBool,
    uploader: Arc<crate::agent_auth::AgentAuth>,
    http: HttpClient,
}

impl TaskContext {
    /// Task id.
    pub fn task_id(&self) -> &str {
        &self.task_id
    }
    /// Request parts as received.
    pub fn request_parts(&self) -> &Value {
        &self.request_parts
    }
    /// Whether streaming was negotiated.
    pub fn has_stream(&self) -> bool {
        self.has_stream
    }
    /// The caller's public key, if sent.
    pub fn consumer_public_key(&self) -> Option<&str> {
        self.consumer_public_key.as_deref()
    }
    /// `request` or `pipe`.
    pub fn task_kind(&self) -> &str {
        &self.task_kind
    }
    /// True once Cancel, Expire or Terminate arrived.
    pub fn is_cancelled(&self) -> bool {
        self.cancel_fired.load(Ordering::SeqCst)
    }
    /// True once the task expired.
    pub fn is_expired(&self) -> bool {
        self.cancel.lock().map(|c| c.expired).unwrap_or(false)
    }
    /// True once TerminateTask arrived.
    pub fn is_terminated(&self) -> bool {
        self.cancel.lock().map(|c| c.terminated).unwrap_or(false)
    }

    /// Resolves when the cancel signal fires (immediately if it already did).
    /// Resolves with `true` when the task is canceled, terminated or expires, or with `false`
    /// once its terminal is out (whatever waits on cancellation must not outlive the task).
    pub async fn cancelled_or_finished(&self) -> bool {
        loop {
            let notified = self.cancel_notify.notified();
            if self.is_cancelled() {
                return true;
            }
            if self.is_finished() {
                return false;
            }
            notified.await;
        }
    }

    /// Resolves when the task is canceled, terminated or expires (never for a task that ends
    /// otherwise; see [`TaskContext::cancelled_or_finished`]).
    pub async fn cancelled(&self) {
        loop {
            let notified = self.cancel_notify.notified();
            if self.is_cancelled() {
                return;
            }
            notified.await;
        }
    }

    /// Fire the cancel signal.
    pub fn signal(&self, reason: CancelReason) {
        if let Ok(mut c) = self.cancel.lock() {
            match reason {
                CancelReason::Canceled => c.canceled = true,
                CancelReason::Expired => c.expired = true,
                CancelReason::Terminated => c.terminated = true,
            }
        }
        self.cancel_fired.store(true, Ordering::SeqCst);
        self.cancel_notify.notify_waiters();
    }

    /// Org id (the task channel namespace).
    pub fn org_id(&self) -> &str {
        &self.org_id
    }

    /// The agent's name.
    pub fn agent_name(&self) -> &str {
        &self.agent_name
    }

    /// Publish the task's terminal, at most once per task whatever path asks for it. Returns
    /// false when a terminal was already published.
    pub async fn publish_terminal(&self, terminal: Value) -> bool {
        if self.terminal_sent.swap(true, Ordering::SeqCst) {
            return false;
        }
        let state = terminal
            .get("state")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if let Err(e) = self.publish_event(terminal).await {
            tracing::warn!(target: "blocks::agent", "could not publish the terminal of {}: {e}", self.task_id);
        }
        tracing::debug!(target: "blocks::agent", "task {} terminal {state}", self.task_id);
        // wake cancellation waiters: the task is over, they must let go of it
        self.cancel_notify.notify_waiters();
        true
    }

    /// True once this task's terminal was published.
    pub fn is_finished(&self) -> bool {
        self.terminal_sent.load(Ordering::SeqCst)
    }

    /// Publish a task event (stored, with the spec's meta). Best effort: failures are logged.
    pub async fn publish_event(&self, event: Value) -> Result<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.events
            .send((event, Some(tx)))
            .map_err(|_| Error::Closed(format!("task {} is finished", self.task_id)))?;
        rx.await
            .map_err(|_| Error::Closed(format!("task {} is finished", self.task_id)))?
    }

    /// Wait until every event queued so far has been published.
    async fn flush_events(&self) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.events.send((Value::Null, Some(tx))).is_ok() {
            let _ = rx.await;
        }
    }

    /// Queue a task event without waiting for it (order is kept).
    fn queue_event(&self, event: Value) {
        if self.events.send((event, None)).is_err() {
            tracing::debug!(target: "blocks::agent", "event of finished task {} dropped", self.task_id);
        }
    }

    /// Report a status line, throttled to one per second; the latest pending line is flushed at
    /// the end of the window and when the handler returns (never dropped).
    pub fn report_status(self: &Arc<Self>, message: String) {
        let now = Instant::now();
        let send_now = {
            let Ok(mut s) = self.status.lock() else { return };
            match s.last_sent {
                Some(t) if now.duration_since(t) < self.status_window => {
                    s.pending = Some(message.clone());
                    if s.flush_scheduled {
                        return;
                    }
                    s.flush_scheduled = true;
                    let wait = self.status_window - now.duration_since(t);
                    let me = Arc::clone(self);
                    tokio::spawn(async move {
                        tokio::time::sleep(wait).await;
                        me.flush_status().await;
                    });
                    false
                }
                _ => {
                    s.last_sent = Some(now);
                    true
                }
            }
        };
        if send_now {
            self.queue_event(json!({ "type": "progress", "message": message }));
        }
    }

    /// Publish the buffered status line, if any.
    pub async fn flush_status(&self) {
        let pending = {
            let Ok(mut s) = self.status.lock() else { return };
            s.flush_scheduled = false;
            let p = s.pending.take();
            if p.is_some() {
                s.last_sent = Some(Instant::now());
            }
            p
        };
        if let Some(message) = pending {
            if let Err(e) = self
                .publish_event(json!({ "type": "progress", "message": message }))
                .await
            {
                tracing::warn!(target: "blocks::agent", "status publish failed: {e}");
            }
        }
    }

    /// Download an input file (a request part's `artifactRef` of kind `file`) with the task's
    /// token (T2).
    pub async fn download_input(&self, artifact_ref: &Value) -> Result<Vec<u8>> {
        let access = crate::files::FileAccess::from(self.publisher.config());
        crate::files::download(&self.http, &access, artifact_ref).await
    }

    /// Publish one artifact now: inline up to the limit, uploaded above it (the backend then
    /// publishes the `artifact` event).
    pub async fn publish_artifact(&self, artifact: ArtifactOut) -> Result<()> {
        if artifact.data.len() > blocks_wire::INLINE_LIMIT_BYTES {
            if !self.uploader.has_backend() {
                return Err(Error::Config(
                    "a backend base URL is required for artifacts larger than 16 KB".into(),
                ));
            }
            let size = artifact.data.len() as u64;
            let file = crate::files::FileUpload {
                file_name: artifact
                    .file_name
                    .clone()
                    .unwrap_or_else(|| format!("{}-artifact", self.task_id)),
                mime_type: artifact
                    .mime_type
                    .clone()
                    .unwrap_or_else(|| "application/octet-stream".into()),
                size,
                source: crate::files::FileSource::Bytes(bytes::Bytes::from(artifact.data)),
            };
            let mut body = json!({ "role": "provider-output", "taskId": self.task_id });
            if let Some(o) = &artifact.output_id {
                body["outputId"] = json!(o);
            }
            // keep the task's event order: everything queued before this artifact goes out first
            self.flush_events().await;
            crate::files::upload(self.uploader.as_ref(), &self.http, body, &file).await?;
            return Ok(());
        }
        let mut r = Map::new();
        r.insert("kind".into(), json!("inline"));
        r.insert(
            "mimeType".into(),
            json!(artifact.mime_type.as_deref().unwrap_or("application/octet-stream")),
        );
        r.insert("size".into(), json!(artifact.data.len()));
        r.insert(
            "data".into(),
            json!(base64::engine::general_purpose::STANDARD.encode(&artifact.data)),
        );
        if let Some(f) = &artifact.file_name {
            r.insert("fileName".into(), json!(f));
        }
        let mut ev = json!({ "type": "artifact", "artifactRef": Value::Object(r) });
        if let Some(o) = &artifact.output_id {
            ev["outputId"] = json!(o);
        }
        self.publish_event(ev).await
    }
}

/// Shared state of a running instance.
struct Instance {
    agent_name: String,
    instance_id: String,
    concurrency: usize,
    /// The control client (replaced by SwitchEnvironment; read it with [`Instance::control`]).
    control: std::sync::RwLock<Arc<Realtime>>,
    /// A new control client to move to (SwitchEnvironment), picked up by the control pump.
    switch: tokio::sync::watch::Sender<Option<Arc<Realtime>>>,
    /// `playground` or `network`: the keyset the control client uses now.
    environment: Mutex<String>,
    /// The CDM's keysets by environment name.
    keysets: HashMap<String, Keyset>,
    control_channel: String,
    keys: Keyset,
    origin: String,
    http: HttpClient,
    handler: Arc<dyn TaskHandler>,
    running: Mutex<HashMap<String, Arc<TaskContext>>>,
    /// Pipe tasks whose handler returned: their credentials stay for Cancel/Expire/Terminate.
    parked: Mutex<HashMap<String, Arc<TaskContext>>>,
    active: AtomicUsize,
    /// Tasks whose handler ended and whose terminal is being published.
    finishing: AtomicUsize,
    started_at: u64,
    stopped: AtomicBool,
    idle: Notify,
    billing: BillingMode,
    terminate_grace: Duration,
    declared: Arc<Vec<DeclaredStream>>,
    registry: Arc<StreamRegistry>,
    max_running_time_sec: Option<u64>,
    /// The CDM document the instance was configured from.
    cdm: Value,
    uploader: Arc<crate::agent_auth::AgentAuth>,
    presence_busy: AtomicBool,
    presence_dirty: AtomicBool,
}

/// The control channel's reader. A refused subscription (the control token expired or was
/// revoked) is never left silent: the instance registers again and resubscribes from the last
/// message it saw, or, if it cannot, stops taking tasks and says so (AGT-13).
/// One warning when the control link degrades, one info line when it is back (LOG-07).
async fn watch_control_link(mut link: tokio::sync::watch::Receiver<crate::realtime::Link>, agent: String) {
    let mut degraded = false;
    while link.changed().await.is_ok() {
        let now = link.borrow_and_update().clone();
        match now {
            crate::realtime::Link::Degraded { category, .. } if !degraded => {
                degraded = true;
                tracing::warn!(target: "blocks::agent", event = "transport_degraded", category = category.as_str(),
                    "agent {agent}: the connection to the network is degraded ({category}); reconnecting");
            }
            crate::realtime::Link::Connected if degraded => {
                degraded = false;
                tracing::info!(target: "blocks::agent", event = "transport_restored", "agent {agent}: the connection to the network is restored");
            }
            _ => {}
        }
    }
}

async fn control_pump(weak: std::sync::Weak<Instance>, control: Arc<Realtime>, channel: String, start: Option<u64>) {
    let agent = weak.upgrade().map(|i| i.agent_name.clone()).unwrap_or_default();
    let mut switch = match weak.upgrade() {
        Some(i) => i.switch.subscribe(),
        None => return,
    };
    let mut fatal = match weak.upgrade() {
        Some(i) => i.uploader.fatal(),
        None => return,
    };
    let mut control = control;
    let mut _watch = AbortOnDrop(tokio::spawn(watch_control_link(control.link(), agent.clone())));
    let mut cursor = start;
    loop {
        let mut stream = Box::pin(control.subscribe(std::slice::from_ref(&channel), cursor));
        loop {
            let msg = tokio::select! {
                m = stream.next() => m,
                changed = fatal.changed() => {
                    let reason = if changed.is_ok() { fatal.borrow_and_update().clone() } else { None };
                    let Some(reason) = reason else { continue };
                    if let Some(inst) = weak.upgrade() {
                        inst.shut_down_fatal(&reason).await;
                    }
                    return;
                }
                changed = switch.changed() => {
                    let next = if changed.is_ok() { switch.borrow_and_update().clone() } else { None };
                    let Some(next) = next else { continue };
                    let Some(inst) = weak.upgrade() else { return };
                    // the new client subscribes (from now: the other keyset has its own
                    // timetokens), then the old one leaves and stops
                    drop(stream);
                    let old = std::mem::replace(&mut control, next.clone());
                    if let Ok(mut c) = inst.control.write() {
                        *c = next;
                    }
                    _watch = AbortOnDrop(tokio::spawn(watch_control_link(control.link(), agent.clone())));
                    cursor = control.time().await.ok();
                    stream = Box::pin(control.subscribe(std::slice::from_ref(&channel), cursor));
                    old.shutdown().await;
                    inst.write_presence().await;
                    continue;
                }
            };
            let Some(msg) = msg else { break };
            let Some(inst) = weak.upgrade() else { return };
            if inst.stopped.load(Ordering::SeqCst) {
                return;
            }
            cursor = Some(msg.timetoken);
            let broadcast = msg
                .meta
                .as_ref()
                .and_then(|m| m.get("broadcast"))
                .is_some_and(|b| b == "true" || b == true);
            let (kind, id) = (
                msg.payload["type"].as_str().unwrap_or("?").to_string(),
                msg.payload["taskId"].as_str().unwrap_or("?").to_string(),
            );
            tracing::debug!(target: "blocks::agent", "control {kind} {id} tt={}", msg.timetoken);
            inst.on_control(msg.payload, broadcast);
        }
        let Some(inst) = weak.upgrade() else { return };
        if inst.stopped.load(Ordering::SeqCst) {
            return;
        }
        let fault = *control.faults().borrow();
        let Some(status) = fault else { return };
        if !inst.recover_control(status).await {
            return;
        }
    }
}

impl Instance {
    /// The agent's identity was refused for good (its key, or the agent forced offline): stop
    /// taking tasks, end the running ones with a failed terminal and leave the control channel.
    async fn shut_down_fatal(&self, reason: &str) {
        if self.stopped.swap(true, Ordering::SeqCst) {
            return;
        }
        tracing::error!(target: "blocks::agent", event = "agent_auth_fatal",
            "agent {} ({}) shuts down: {reason}; it takes no more tasks", self.agent_name, self.instance_id);
        self.control().shutdown().await;
        let tasks: Vec<Arc<TaskContext>> = {
            let running: Vec<Arc<TaskContext>> = self
                .running
                .lock()
                .map(|r| r.values().cloned().collect())
                .unwrap_or_default();
            let parked: Vec<Arc<TaskContext>> = self
                .parked
                .lock()
                .map(|mut p| p.drain().map(|(_, c)| c).collect())
                .unwrap_or_default();
            running.into_iter().chain(parked).collect()
        };
        let ends = tasks.into_iter().map(|ctx| async move {
            ctx.signal(CancelReason::Terminated);
            ctx.end_streams().await;
            let terminal =
                ctx.publish_terminal(json!({ "type": "terminal", "state": "failed", "error": "agent_auth_fatal" }));
            let _ = tokio::time::timeout(STOP_TERMINAL_WAIT, terminal).await;
        });
        futures::future::join_all(ends).await;
    }

    /// After a refused control subscription: register again for a new control token (403), or
    /// give up and say so. True when the subscription can start again.
    async fn recover_control(&self, status: u16) -> bool {
        let (agent, id) = (&self.agent_name, &self.instance_id);
        if status != 403 {
            tracing::error!(target: "blocks::agent", event = "control_refused", operation = "subscribe",
                "agent {agent} ({id}) stopped taking tasks: its control subscription was refused (HTTP {status}); restart it");
            return false;
        }
        tracing::error!(target: "blocks::agent", event = "access_denied_destroy", operation = "subscribe",
            "access denied — destroying control client of agent {agent} ({id}): the access token expired or was revoked; registering again");
        match self.uploader.reconnect().await {
            Ok(answer) => {
                let Some(token) = answer.get("pamToken").and_then(Value::as_str) else {
                    tracing::error!(target: "blocks::agent", event = "access_denied_user_message",
                        "agent {agent} ({id}) stopped taking tasks: registering again gave no control token; restart it");
                    return false;
                };
                let control = self.control();
                control.set_token(token);
                control.clear_faults();
                tracing::warn!(target: "blocks::agent", event = "control_reauthenticated",
                    "agent {agent} ({id}) registered again after its control access was refused; taking tasks again");
                true
            }
            Err(e) => {
                tracing::error!(target: "blocks::agent", event = "access_denied_user_message",
                    "agent {agent} ({id}) stopped taking tasks: it could not register again ({e}); restart it");
                false
            }
        }
    }
}

/// Aborts a spawned task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
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
        let mut t = terminal;
        if let Some(o) = t.as_object_mut() {
            o.insert("type".into(), json!("terminal"));
        }
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
            task.publish_terminal(json!({ "type": "terminal", "state": "failed", "error": reason }))
                .await;
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
            let terminal = ctx.publish_terminal(json!({ "type": "terminal", "state": "failed", "error": "agent_stopped" }));
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

impl Instance {
    fn on_control(self: &Arc<Self>, msg: Value, broadcast: bool) {
        let Some(kind) = msg.get("type").and_then(Value::as_str) else {
            return;
        };
        let task_id = msg
            .get("taskId")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        match kind {
            "StartTask" => self.admit(msg, broadcast),
            "CancelTask" => self.signal(&task_id, CancelReason::Canceled),
            "ExpireTask" => self.signal(&task_id, CancelReason::Expired),
            "TerminateTask" => self.signal(&task_id, CancelReason::Terminated),
            "PauseTask" | "ResumeTask" => {
                let ctx = self.running.lock().ok().and_then(|r| r.get(&task_id).cloned());
                if let Some(ctx) = ctx {
                    let status = if kind == "PauseTask" { "paused" } else { "resumed" };
                    // queued here, in the order the control messages came (a spawned publish per
                    // message let a Resume overtake its Pause under load)
                    ctx.queue_event(json!({ "type": "system", "status": status }));
                }
            }
            "SwitchEnvironment" => self.switch_environment(&msg),
            other => tracing::debug!(target: "blocks::agent", "ignoring control message {other}"),
        }
    }

    /// The control client in use.
    fn control(&self) -> Arc<Realtime> {
        self.control.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// `SwitchEnvironment {environment, pamToken}` (agent spec §5.7): a new control client on the
    /// target keyset, with the new token, replaces the old one (AGT-14). Running tasks keep their
    /// keyset. Token values are never logged.
    fn switch_environment(&self, msg: &Value) {
        let env = msg.get("environment").and_then(Value::as_str).unwrap_or_default();
        let Some(keys) = self.keysets.get(env) else {
            tracing::debug!(target: "blocks::agent", "SwitchEnvironment to unknown environment {env:?} ignored");
            return;
        };
        let current = self.environment.lock().map(|e| e.clone()).unwrap_or_default();
        if current == env {
            tracing::debug!(target: "blocks::agent", "SwitchEnvironment to the current environment {env} ignored");
            return;
        }
        let Some(token) = msg.get("pamToken").and_then(Value::as_str).filter(|t| !t.is_empty()) else {
            tracing::error!(target: "blocks::agent", event = "switch_environment_rejected",
                "SwitchEnvironment to {env} rejected: pamToken is required (token: absent); the agent stays on {current}");
            return;
        };
        let old = self.control();
        let next = Realtime::new(
            RealtimeConfig {
                subscribe_key: keys.subscribe_key.clone(),
                publish_key: keys.publish_key.clone(),
                token: Some(token.to_string()),
                ..old.config().clone()
            },
            old.http(),
        );
        match next {
            Ok(next) => {
                tracing::info!(target: "blocks::agent", event = "switch_environment",
                    "agent {} switches its control client from {current} to {env} (token: present)", self.agent_name);
                if let Ok(mut e) = self.environment.lock() {
                    *e = env.to_string();
                }
                self.switch.send_replace(Some(next));
            }
            Err(e) => tracing::error!(target: "blocks::agent", "SwitchEnvironment to {env} failed: {e}"),
        }
    }

    fn signal(self: &Arc<Self>, task_id: &str, reason: CancelReason) {
        if let Some(ctx) = self.running.lock().ok().and_then(|r| r.get(task_id).cloned()) {
            ctx.signal(reason);
            if reason == CancelReason::Terminated {
                // a handler that ignores cancellation is ended without it after a grace period
                let grace = self.terminate_grace;
                let ctx = ctx.clone();
                let inst = Arc::clone(self);
                tokio::spawn(async move {
                    tokio::time::sleep(grace).await;
                    if !ctx.is_finished() {
                        tracing::warn!(target: "blocks::agent", "task {} ignored TerminateTask; ending it", ctx.task_id);
                        // the task is over for the network, which frees its capacity when it sees
                        // the terminal: free it here first (the runaway handler runs on, uncounted)
                        if !ctx.slot_released.swap(true, Ordering::SeqCst) {
                            inst.active.fetch_sub(1, Ordering::SeqCst);
                        }
                        ctx.end_streams().await;
                        ctx.publish_terminal(
                            json!({ "type": "terminal", "state": "canceled", "reason": "terminated" }),
                        )
                        .await;
                    }
                });
            }
        }
        // a pipe task whose handler already returned: end it with its cached credentials. (The
        // flag is set first and `run` parks under the same lock after checking it, so a signal
        // racing with the handler's return is never lost.)
        let parked = self.parked.lock().ok().and_then(|mut p| p.remove(task_id));
        if let Some(ctx) = parked {
            ctx.signal(reason);
            tokio::spawn(async move {
                if let Some(t) = terminal_for(&ctx) {
                    ctx.end_streams().await;
                    ctx.publish_terminal(t).await;
                }
            });
        }
    }

    /// Admission (agent spec §5.4): version, pipe duration, duplicate, capacity.
    fn admit(self: &Arc<Self>, task: Value, broadcast: bool) {
        let received = dispatch_timing::now();
        let task_id = match task.get("taskId").and_then(Value::as_str) {
            Some(t) if !t.is_empty() => t.to_string(),
            _ => return,
        };
        let owner = task
            .get("ownerId")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .or_else(|| task.pointer("/callerClaims/sub").and_then(Value::as_str))
            .unwrap_or("anonymous")
            .to_string();
        let org = task
            .get("orgId")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .unwrap_or(&owner)
            .to_string();
        let version = task.get("protocolVersion").and_then(Value::as_str);
        let failure = if version.is_some_and(|v| !blocks_wire::is_protocol_version_supported(v)) {
            Some("unsupported_protocol_version")
        } else if task.get("taskKind").and_then(Value::as_str) == Some("pipe") && !valid_pipe(&task) {
            Some("invalid_start_task")
        } else {
            None
        };
        let duplicate = self.running.lock().map(|r| r.contains_key(&task_id)).unwrap_or(false);
        if duplicate {
            tracing::warn!(target: "blocks::agent", "duplicate StartTask for {task_id} ignored");
            return;
        }
        let failure = failure.or_else(|| {
            (self.concurrency > 0 && self.active.load(Ordering::SeqCst) >= self.concurrency)
                .then_some("agent_at_capacity")
        });
        if let Some(error) = failure {
            if broadcast {
                return;
            }
            let control = self.control();
            let channel = blocks_wire::task_channel(&org, &task_id);
            let version = version.unwrap_or(blocks_wire::PROTOCOL_VERSION).to_string();
            let agent = self.agent_name.clone();
            tokio::spawn(async move {
                let ev = json!({ "type": "terminal", "taskId": task_id, "state": "failed", "error": error, "protocolVersion": version });
                let meta = HashMap::from([
                    ("agentName".to_string(), agent),
                    ("taskId".to_string(), task_id.clone()),
                    ("protocolVersion".to_string(), version.clone()),
                ]);
                if let Err(e) = control.publish(&channel, ev, Some(meta), true).await {
                    tracing::warn!(target: "blocks::agent", "could not publish admission failure for {task_id}: {e}");
                }
            });
            return;
        }
        let publisher = match Realtime::new(
            RealtimeConfig {
                origin: self.origin.clone(),
                subscribe_key: self.keys.subscribe_key.clone(),
                publish_key: self.keys.publish_key.clone(),
                user_id: self.instance_id.clone(),
                token: task.get("writeToken").and_then(Value::as_str).map(str::to_string),
                filter: None,
                presence_timeout: None,
                leave_on_close: false,
                give_up_after: Some(crate::realtime::SHORT_LIVED_GIVE_UP),
            },
            &self.http,
        ) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(target: "blocks::agent", "could not create the task client for {task_id}: {e}");
                return;
            }
        };
        let mut handler_task = task.clone();
        if let Some(o) = handler_task.as_object_mut() {
            o.remove("writeToken");
            o.remove("controlToken");
        }
        let ctx = Arc::new(TaskContext {
            task_id: task_id.clone(),
            org_id: org.clone(),
            agent_name: self.agent_name.clone(),
            task_kind: task
                .get("taskKind")
                .and_then(Value::as_str)
                .unwrap_or("request")
                .to_string(),
            request_parts: task
                .get("requestParts")
                .cloned()
                .filter(Value::is_array)
                .unwrap_or_else(|| json!([])),
            has_stream: task.get("hasStream").and_then(Value::as_bool).unwrap_or(false),
            consumer_public_key: task
                .get("consumerPublicKey")
                .and_then(Value::as_str)
                .map(str::to_string),
            publisher: publisher.clone(),
            declared: self.declared.clone(),
            duration: task.get("duration").and_then(Value::as_i64),
            stream_count: std::sync::atomic::AtomicU32::new(0),
            leases: Mutex::new(Vec::new()),
            registry: self.registry.clone(),
            max_running_time_sec: self.max_running_time_sec,
            events: spawn_publisher(
                publisher,
                blocks_wire::task_channel(&org, &task_id),
                self.agent_name.clone(),
                task_id.clone(),
            ),
            cancel: Mutex::new(CancelState::default()),
            cancel_notify: Notify::new(),
            cancel_fired: AtomicBool::new(false),
            status: Mutex::new(StatusThrottle {
                last_sent: None,
                pending: None,
                flush_scheduled: false,
            }),
            status_window: Duration::from_secs(1),
            terminal_sent: AtomicBool::new(false),
            slot_released: AtomicBool::new(false),
            uploader: self.uploader.clone(),
            http: self.http.clone(),
        });
        if let Ok(mut r) = self.running.lock() {
            r.insert(task_id.clone(), ctx.clone());
        }
        self.active.fetch_add(1, Ordering::SeqCst);
        if let Some(deadline) = task
            .get("durationExpiresAtMs")
            .and_then(Value::as_u64)
            .filter(|_| ctx.task_kind == "pipe")
        {
            // local expiry timer: fires only while the handler runs (the backend expires parked tasks)
            let weak = Arc::downgrade(self);
            let id = task_id.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(deadline.saturating_sub(now_ms()))).await;
                if let Some(inst) = weak.upgrade() {
                    if let Some(ctx) = inst.running.lock().ok().and_then(|r| r.get(&id).cloned()) {
                        ctx.signal(CancelReason::Expired);
                    }
                }
            });
        }
        let me = Arc::clone(self);
        me.presence_changed();
        tokio::spawn(async move {
            let started = Instant::now();
            let terminal = me.run(handler_task, ctx.clone()).await;
            // free the capacity before the terminal goes out: the backend dispatches the next
            // task as soon as it sees the terminal
            me.finishing.fetch_add(1, Ordering::SeqCst);
            if let Ok(mut r) = me.running.lock() {
                r.remove(&task_id);
            }
            if !ctx.slot_released.swap(true, Ordering::SeqCst) {
                me.active.fetch_sub(1, Ordering::SeqCst);
            }
            if let Some(t) = terminal {
                ctx.end_streams().await;
                let state = t["state"].as_str().unwrap_or_default().to_string();
                if ctx.publish_terminal(t).await {
                    dispatch_timing::mark(&task_id, dispatch_timing::Stage::TerminalPublished);
                    tracing::info!(target: "blocks::agent", "task {task_id} {state} in {} ms", started.elapsed().as_millis());
                }
            }
            dispatch_timing::report(&task_id, received);
            me.finishing.fetch_sub(1, Ordering::SeqCst);
            me.idle.notify_waiters();
            me.presence_changed();
        });
    }

    /// Run the handler; returns the terminal to publish (None for a pipe handler that returned on
    /// its own: the task is parked until Cancel/Expire/Terminate).
    async fn run(&self, task: Value, ctx: Arc<TaskContext>) -> Option<Value> {
        if let Err(e) = ctx
            .publish_event(json!({ "type": "progress", "progress": 0, "state": "running" }))
            .await
        {
            tracing::warn!(target: "blocks::agent", "could not publish running for {}: {e}", ctx.task_id);
        }
        tracing::info!(target: "blocks::agent", "task {} accepted", ctx.task_id);
        dispatch_timing::mark(&ctx.task_id, dispatch_timing::Stage::HandlerStart);
        let outcome = self.handler.handle(task, ctx.clone()).await;
        dispatch_timing::mark(&ctx.task_id, dispatch_timing::Stage::HandlerEnd);
        ctx.flush_status().await;
        let terminal = match outcome {
            Ok(result) => {
                let mut failed = None;
                for a in result.artifacts {
                    if let Err(e) = ctx.publish_artifact(a).await {
                        failed = Some(e.to_string());
                        break;
                    }
                }
                match failed {
                    Some(error) => Some(json!({ "type": "terminal", "state": "failed", "error": error })),
                    None => terminal_for(&ctx),
                }
            }
            Err(message) => Some(json!({ "type": "terminal", "state": "failed", "error": message })),
        };
        if terminal.is_none() {
            if let Ok(mut p) = self.parked.lock() {
                if ctx.is_cancelled() {
                    // Cancel/Expire/Terminate arrived while the handler was returning
                    return terminal_for(&ctx);
                }
                p.insert(ctx.task_id.clone(), ctx.clone());
            }
            tracing::info!(target: "blocks::agent", "pipe task {} handler returned; the task stays open", ctx.task_id);
        }
        terminal
    }

    /// The load changed: write the presence state soon. Writes are coalesced: while one is in
    /// flight, later changes mark the state dirty and one more write (of the then-current state)
    /// follows, so a burst of tasks costs a few writes instead of two per task, and the latest
    /// state always lands.
    fn presence_changed(self: &Arc<Self>) {
        self.presence_dirty.store(true, Ordering::SeqCst);
        if self.presence_busy.swap(true, Ordering::SeqCst) {
            return;
        }
        let me = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                while me.presence_dirty.swap(false, Ordering::SeqCst) {
                    me.write_presence().await;
                }
                me.presence_busy.store(false, Ordering::SeqCst);
                // a change that raced with the release above gets its own write
                if !me.presence_dirty.load(Ordering::SeqCst) || me.presence_busy.swap(true, Ordering::SeqCst) {
                    return;
                }
            }
        });
    }

    async fn write_presence(&self) {
        let state = json!({
            "instanceId": self.instance_id,
            "activeTasks": self.active.load(Ordering::SeqCst),
            "concurrency": self.concurrency,
            "startedAt": self.started_at,
            "activeStreams": 0,
            "preferredProtocolVersion": blocks_wire::PROTOCOL_VERSION,
            "protocolVersions": blocks_wire::SUPPORTED_PROTOCOL_VERSIONS,
        });
        if let Err(e) = self.control().set_state(&self.control_channel, state).await {
            tracing::debug!(target: "blocks::agent", "presence state not written: {e}");
        }
    }
}

/// Terminal decision matrix (agent spec §6.3) for a handler that returned normally.
fn terminal_for(ctx: &TaskContext) -> Option<Value> {
    let (canceled, expired, terminated) = ctx
        .cancel
        .lock()
        .map(|c| (c.canceled, c.expired, c.terminated))
        .unwrap_or_default();
    let pipe = ctx.task_kind == "pipe";
    let mut t = if pipe && expired && !canceled {
        json!({ "type": "terminal", "state": "completed", "completionReason": "duration_expired" })
    } else if canceled || expired || terminated {
        json!({ "type": "terminal", "state": "canceled" })
    } else if pipe {
        return None;
    } else {
        json!({ "type": "terminal", "state": "completed" })
    };
    if terminated {
        t["reason"] = json!("terminated");
    }
    Some(t)
}

fn valid_pipe(task: &Value) -> bool {
    let d = task.get("duration").and_then(Value::as_f64);
    let exp = task.get("durationExpiresAtMs").and_then(Value::as_f64);
    d.and_then(blocks_wire::PipeDuration::from_f64).is_some() && matches!(exp, Some(e) if e > 0.0)
}

/// `BLOCKS_PROFILE` with the token `timing` (comma list, any case): one info line per dispatched
/// task (target `blocks::profile`) with the deltas StartTask received → handler start → handler
/// end → terminal published, in ms (`-` for a stage that did not happen, e.g. a parked pipe task's
/// terminal). Off: no clock reads, no bookkeeping.
mod dispatch_timing {
    use std::collections::HashMap;
    use std::sync::{LazyLock, Mutex, OnceLock};
    use std::time::Instant;

    #[derive(Clone, Copy)]
    pub(super) enum Stage {
        HandlerStart = 0,
        HandlerEnd = 1,
        TerminalPublished = 2,
    }

    type Marks = [Option<Instant>; 3];
    static MARKS: LazyLock<Mutex<HashMap<String, Marks>>> = LazyLock::new(Default::default);

    fn enabled() -> bool {
        static ON: OnceLock<bool> = OnceLock::new();
        *ON.get_or_init(|| {
            std::env::var("BLOCKS_PROFILE").is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("timing")))
        })
    }

    /// The StartTask's arrival (None when profiling is off).
    pub(super) fn now() -> Option<Instant> {
        enabled().then(Instant::now)
    }

    pub(super) fn mark(task_id: &str, stage: Stage) {
        if enabled() {
            if let Ok(mut m) = MARKS.lock() {
                m.entry(task_id.to_string()).or_default()[stage as usize] = Some(Instant::now());
            }
        }
    }

    /// Log the task's line and forget its marks.
    pub(super) fn report(task_id: &str, received: Option<Instant>) {
        let Some(received) = received else { return };
        let m: Marks = MARKS
            .lock()
            .ok()
            .and_then(|mut m| m.remove(task_id))
            .unwrap_or_default();
        let ms = |from: Option<Instant>, to: Option<Instant>| match (from, to) {
            (Some(a), Some(b)) => format!("{:.1}", b.saturating_duration_since(a).as_secs_f64() * 1000.0),
            _ => "-".to_string(),
        };
        let (start, end, terminal) = (m[0], m[1], m[2]);
        tracing::info!(
            target: "blocks::profile",
            "dispatch timing task {task_id}: received->handler_start {} ms, handler {} ms, handler_end->terminal_published {} ms, total {} ms",
            ms(Some(received), start),
            ms(start, end),
            ms(end, terminal),
            ms(Some(received), Some(terminal.unwrap_or_else(Instant::now))),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipe_validation() {
        assert!(valid_pipe(&json!({"duration": 1, "durationExpiresAtMs": 5})));
        assert!(!valid_pipe(&json!({"duration": 0, "durationExpiresAtMs": 5})));
        assert!(!valid_pipe(&json!({"duration": 43201, "durationExpiresAtMs": 5})));
        assert!(!valid_pipe(&json!({"duration": 1.5, "durationExpiresAtMs": 5})));
        assert!(!valid_pipe(&json!({"duration": 1})));
    }
}
