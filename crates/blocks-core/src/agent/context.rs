//! A task as its handler sees it: the context (status, artifacts, streams, cancellation), its
//! ordered event publisher and the terminal decision.

use super::*;
use blocks_wire::event::{Artifact, ArtifactRef, Progress, SystemStatus};
use blocks_wire::{TaskEvent, Terminal, TerminalState};

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
pub(super) struct CancelState {
    pub(super) canceled: bool,
    pub(super) expired: bool,
    pub(super) terminated: bool,
}

pub(super) struct StatusThrottle {
    pub(super) last_sent: Option<Instant>,
    pub(super) pending: Option<String>,
    pub(super) flush_scheduled: bool,
}

/// What a task's publisher queue carries.
pub(super) enum Outgoing {
    /// A task event and, if the caller waits, where to report the publish result.
    Event(TaskEvent, Option<tokio::sync::oneshot::Sender<Result<()>>>),
    /// Answered once everything queued before it is out.
    Flush(tokio::sync::oneshot::Sender<Result<()>>),
}

/// Publish queued events of one task in order with its write token; ends when the context drops.
/// How long stop() waits for the terminals of the tasks it abandons (they go on being retried).
pub(super) const STOP_TERMINAL_WAIT: Duration = Duration::from_secs(5);

/// How long a task's terminal is sent again while the network does not take it (past a devnet
/// or backend restart; the publish transport itself already retries refused connections for 60 s).
pub(super) const TERMINAL_RETRY_FOR: Duration = Duration::from_secs(120);

pub(super) fn spawn_publisher(
    publisher: Arc<Realtime>,
    channel: String,
    agent_name: String,
    task_id: String,
) -> tokio::sync::mpsc::UnboundedSender<Outgoing> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Outgoing>();
    tokio::spawn(async move {
        while let Some(next) = rx.recv().await {
            let (event, done) = match next {
                Outgoing::Event(event, done) => (event, done),
                Outgoing::Flush(done) => {
                    let _ = done.send(Ok(()));
                    continue;
                }
            };
            let terminal = matches!(event, TaskEvent::Terminal(_));
            let mut event = event.stamped(&task_id).to_value();
            // the publishing agent speaks this version, whatever the event was built with
            event["protocolVersion"] = Value::String(blocks_wire::PROTOCOL_VERSION.into());
            let meta = HashMap::from([
                ("agentName".to_string(), agent_name.clone()),
                ("taskId".to_string(), task_id.clone()),
                ("protocolVersion".to_string(), blocks_wire::PROTOCOL_VERSION.to_string()),
            ]);
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
    pub(super) task_id: String,
    pub(super) org_id: String,
    pub(super) agent_name: String,
    pub(super) task_kind: String,
    pub(super) request_parts: Value,
    pub(super) has_stream: bool,
    pub(super) consumer_public_key: Option<String>,
    /// Every task event goes through this queue, so events reach the channel in call order.
    pub(super) events: tokio::sync::mpsc::UnboundedSender<Outgoing>,
    /// The per-task client (T2): stream setup goes through it.
    pub(super) publisher: Arc<Realtime>,
    pub(super) declared: Arc<Vec<DeclaredStream>>,
    pub(super) duration: Option<i64>,
    pub(super) stream_count: std::sync::atomic::AtomicU32,
    /// The streams this task holds.
    pub(super) leases: Mutex<Vec<Arc<StreamLease>>>,
    /// The instance's streams (shared ones are held by several tasks).
    pub(super) registry: Arc<StreamRegistry>,
    /// The effective `maxRunningTimeSec` (stream token lifetime of request tasks).
    pub(super) max_running_time_sec: Option<u64>,
    pub(super) cancel: Mutex<CancelState>,
    pub(super) cancel_notify: Notify,
    pub(super) cancel_fired: AtomicBool,
    pub(super) status: Mutex<StatusThrottle>,
    pub(super) status_window: Duration,
    pub(super) terminal_sent: AtomicBool,
    /// The task no longer holds a unit of the instance's capacity (its handler returned, or it
    /// was ended without the handler after a TerminateTask grace period).
    pub(super) slot_released: AtomicBool,
    pub(super) uploader: Arc<crate::agent_auth::AgentAuth>,
    pub(super) http: HttpClient,
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
    pub async fn publish_terminal(&self, terminal: Terminal) -> bool {
        if self.terminal_sent.swap(true, Ordering::SeqCst) {
            return false;
        }
        let state = terminal.state;
        if let Err(e) = self.publish_event(terminal.into()).await {
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
    pub async fn publish_event(&self, event: TaskEvent) -> Result<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.events
            .send(Outgoing::Event(event, Some(tx)))
            .map_err(|_| Error::Closed(format!("task {} is finished", self.task_id)))?;
        rx.await
            .map_err(|_| Error::Closed(format!("task {} is finished", self.task_id)))?
    }

    /// Wait until every event queued so far has been published.
    pub(super) async fn flush_events(&self) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.events.send(Outgoing::Flush(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    /// Queue a task event without waiting for it (order is kept).
    pub(super) fn queue_event(&self, event: TaskEvent) {
        if self.events.send(Outgoing::Event(event, None)).is_err() {
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
            self.queue_event(status_line(message));
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
            if let Err(e) = self.publish_event(status_line(message)).await {
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
        let mut fields = Map::new();
        fields.insert(
            "mimeType".into(),
            json!(artifact.mime_type.as_deref().unwrap_or("application/octet-stream")),
        );
        fields.insert("size".into(), json!(artifact.data.len()));
        fields.insert(
            "data".into(),
            json!(base64::engine::general_purpose::STANDARD.encode(&artifact.data)),
        );
        if let Some(f) = &artifact.file_name {
            fields.insert("fileName".into(), json!(f));
        }
        let ev = TaskEvent::Artifact(Artifact {
            task_id: None,
            artifact_ref: ArtifactRef {
                kind: "inline".into(),
                fields,
            },
            output_id: artifact.output_id.clone(),
            extra: Map::new(),
        });
        self.publish_event(ev).await
    }
}

/// A `progress` event with a status line.
fn status_line(message: String) -> TaskEvent {
    TaskEvent::Progress(Progress {
        message: Some(message),
        ..Progress::default()
    })
}

/// The first event of an accepted task: `progress` 0, `running`.
pub(super) fn accepted() -> TaskEvent {
    TaskEvent::Progress(Progress {
        progress: Some(0.into()),
        state: Some("running".into()),
        ..Progress::default()
    })
}

/// A `system` event (`paused` / `resumed`).
pub(super) fn system_status(status: &str) -> TaskEvent {
    TaskEvent::System(SystemStatus {
        status: Some(status.into()),
        ..SystemStatus::default()
    })
}

/// Terminal decision matrix (agent spec §6.3) for a handler that returned normally.
pub(super) fn terminal_for(ctx: &TaskContext) -> Option<Terminal> {
    let (canceled, expired, terminated) = ctx
        .cancel
        .lock()
        .map(|c| (c.canceled, c.expired, c.terminated))
        .unwrap_or_default();
    let pipe = ctx.task_kind == "pipe";
    let mut t = if pipe && expired && !canceled {
        Terminal::duration_expired()
    } else if canceled || expired || terminated {
        Terminal::new(TerminalState::Canceled)
    } else if pipe {
        return None;
    } else {
        Terminal::new(TerminalState::Completed)
    };
    if terminated {
        t.reason = Some("terminated".into());
    }
    Some(t)
}
