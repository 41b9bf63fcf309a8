//! A running instance: its shared state, the control channel reader, admission of StartTasks,
//! control messages, stop and presence.

use super::*;
use blocks_wire::control::{StartTask, SwitchEnvironment};
use blocks_wire::{ControlMessage, TaskEvent, Terminal};

/// Shared state of a running instance.
pub(super) struct Instance {
    pub(super) agent_name: String,
    pub(super) instance_id: String,
    pub(super) concurrency: usize,
    /// The control client (replaced by SwitchEnvironment; read it with [`Instance::control`]).
    pub(super) control: std::sync::RwLock<Arc<Realtime>>,
    /// A new control client to move to (SwitchEnvironment), picked up by the control pump.
    pub(super) switch: tokio::sync::watch::Sender<Option<Arc<Realtime>>>,
    /// `playground` or `network`: the keyset the control client uses now.
    pub(super) environment: Mutex<String>,
    /// The CDM's keysets by environment name.
    pub(super) keysets: HashMap<String, Keyset>,
    pub(super) control_channel: String,
    pub(super) keys: Keyset,
    pub(super) origin: String,
    pub(super) http: HttpClient,
    pub(super) handler: Arc<dyn TaskHandler>,
    pub(super) running: Mutex<HashMap<String, Arc<TaskContext>>>,
    /// Pipe tasks whose handler returned: their credentials stay for Cancel/Expire/Terminate.
    pub(super) parked: Mutex<HashMap<String, Arc<TaskContext>>>,
    pub(super) active: AtomicUsize,
    /// Tasks whose handler ended and whose terminal is being published.
    pub(super) finishing: AtomicUsize,
    pub(super) started_at: u64,
    pub(super) stopped: AtomicBool,
    pub(super) idle: Notify,
    pub(super) billing: BillingMode,
    pub(super) terminate_grace: Duration,
    pub(super) declared: Arc<Vec<DeclaredStream>>,
    pub(super) registry: Arc<StreamRegistry>,
    pub(super) max_running_time_sec: Option<u64>,
    /// The CDM document the instance was configured from.
    pub(super) cdm: Value,
    pub(super) uploader: Arc<crate::agent_auth::AgentAuth>,
    pub(super) presence_busy: AtomicBool,
    pub(super) presence_dirty: AtomicBool,
}

/// The control channel's reader. A refused subscription (the control token expired or was
/// revoked) is never left silent: the instance registers again and resubscribes from the last
/// message it saw, or, if it cannot, stops taking tasks and says so (AGT-13).
/// One warning when the control link degrades, one info line when it is back (LOG-07).
pub(super) async fn watch_control_link(mut link: tokio::sync::watch::Receiver<crate::realtime::Link>, agent: String) {
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

pub(super) async fn control_pump(
    weak: std::sync::Weak<Instance>,
    control: Arc<Realtime>,
    channel: String,
    start: Option<u64>,
) {
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
    let mut refusals = 0u32;
    loop {
        let subscribed = std::time::Instant::now();
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
        if subscribed.elapsed() > CONTROL_REFUSAL_WINDOW {
            refusals = 0;
        }
        refusals += 1;
        if !inst.recover_control(status, refusals).await {
            return;
        }
    }
}

impl Instance {
    /// The agent's identity was refused for good (its key, or the agent forced offline): stop
    /// taking tasks, end the running ones with a failed terminal and leave the control channel.
    pub(super) async fn shut_down_fatal(&self, reason: &str) {
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
            let terminal = ctx.publish_terminal(Terminal::failed("agent_auth_fatal"));
            let _ = tokio::time::timeout(STOP_TERMINAL_WAIT, terminal).await;
        });
        futures::future::join_all(ends).await;
    }

    /// After a refused control subscription (`refusals` in a row, counting this one): register
    /// again for a new control token (403) and resubscribe, or stop and say so. True when the
    /// subscription can start again. The agent never sits deaf: every path that does not
    /// resubscribe shuts the instance down (no more tasks, running ones failed, control left).
    pub(super) async fn recover_control(&self, status: u16, refusals: u32) -> bool {
        let (agent, id) = (self.agent_name.clone(), self.instance_id.clone());
        if status != 403 {
            self.shut_down_fatal(&format!(
                "its control subscription was refused (HTTP {status}); restart it"
            ))
            .await;
            return false;
        }
        if refusals > MAX_CONTROL_REFUSALS {
            self.shut_down_fatal(&format!(
                "its control access was refused {MAX_CONTROL_REFUSALS} times in a row, each time right after it registered again; check the agent's API key and its access on the network, then restart it"
            ))
            .await;
            return false;
        }
        tracing::error!(target: "blocks::agent", event = "access_denied_destroy", operation = "subscribe",
            "access denied — destroying control client of agent {agent} ({id}): the access token expired or was revoked; registering again");
        if refusals > 1 {
            // refused again right after registering: back off (0.5, 1, 2, 4 s) instead of spinning
            tokio::time::sleep(CONTROL_RETRY_BASE * 2u32.pow(refusals - 2)).await;
        }
        let mut wait = CONTROL_RETRY_BASE;
        let answer = loop {
            if self.stopped.load(Ordering::SeqCst) {
                return false;
            }
            match self.uploader.reconnect().await {
                Ok(answer) => break answer,
                // the network could not be reached: keep trying, as the control client does
                Err(e @ (Error::Transport { .. } | Error::Timeout(_))) => {
                    tracing::warn!(target: "blocks::agent", event = "control_reregister_retry",
                        "agent {agent} ({id}) could not register again yet ({e}); retrying in {} ms", wait.as_millis());
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(CONTROL_RETRY_MAX);
                }
                Err(e) => {
                    self.shut_down_fatal(&format!(
                        "it could not register again after its control access was refused ({e})"
                    ))
                    .await;
                    return false;
                }
            }
        };
        let Some(token) = answer.get("pamToken").and_then(Value::as_str) else {
            self.shut_down_fatal("registering again gave no control token; restart it")
                .await;
            return false;
        };
        let control = self.control();
        control.set_token(token);
        control.clear_faults();
        tracing::warn!(target: "blocks::agent", event = "control_reauthenticated",
            "agent {agent} ({id}) registered again after its control access was refused; taking tasks again");
        true
    }
}

/// Control refusals in a row (each right after registering again) before the agent stops.
const MAX_CONTROL_REFUSALS: u32 = 5;
/// First wait between attempts to recover control access; it doubles up to [`CONTROL_RETRY_MAX`].
const CONTROL_RETRY_BASE: Duration = Duration::from_millis(500);
const CONTROL_RETRY_MAX: Duration = Duration::from_secs(30);
/// A control subscription that lasted this long before a refusal starts the count again.
const CONTROL_REFUSAL_WINDOW: Duration = Duration::from_secs(60);

/// Aborts a spawned task when dropped.
pub(super) struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Instance {
    pub(super) fn on_control(self: &Arc<Self>, msg: Value, broadcast: bool) {
        let Some(msg) = ControlMessage::parse(msg) else {
            return;
        };
        let pause = |task_id: &str, status: &str| {
            let ctx = self.running.lock().ok().and_then(|r| r.get(task_id).cloned());
            if let Some(ctx) = ctx {
                // queued here, in the order the control messages came (a spawned publish per
                // message let a Resume overtake its Pause under load)
                ctx.queue_event(system_status(status));
            }
        };
        match msg {
            ControlMessage::StartTask(task) => self.admit(*task, broadcast),
            ControlMessage::CancelTask(m) => self.signal(&m.task_id, CancelReason::Canceled),
            ControlMessage::ExpireTask(m) => self.signal(&m.task_id, CancelReason::Expired),
            ControlMessage::TerminateTask(m) => self.signal(&m.task_id, CancelReason::Terminated),
            ControlMessage::PauseTask(m) => pause(&m.task_id, "paused"),
            ControlMessage::ResumeTask(m) => pause(&m.task_id, "resumed"),
            ControlMessage::SwitchEnvironment(m) => self.switch_environment(&m),
            other => tracing::debug!(target: "blocks::agent", "ignoring control message {}", other.kind()),
        }
    }

    /// The control client in use.
    pub(super) fn control(&self) -> Arc<Realtime> {
        self.control.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// `SwitchEnvironment {environment, pamToken}` (agent spec §5.7): a new control client on the
    /// target keyset, with the new token, replaces the old one (AGT-14). Running tasks keep their
    /// keyset. Token values are never logged.
    pub(super) fn switch_environment(&self, msg: &SwitchEnvironment) {
        let env = msg.environment.as_deref().unwrap_or_default();
        let Some(keys) = self.keysets.get(env) else {
            tracing::debug!(target: "blocks::agent", "SwitchEnvironment to unknown environment {env:?} ignored");
            return;
        };
        let current = self.environment.lock().map(|e| e.clone()).unwrap_or_default();
        if current == env {
            tracing::debug!(target: "blocks::agent", "SwitchEnvironment to the current environment {env} ignored");
            return;
        }
        let Some(token) = msg.pam_token.as_deref().filter(|t| !t.is_empty()) else {
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

    pub(super) fn signal(self: &Arc<Self>, task_id: &str, reason: CancelReason) {
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
                        ctx.publish_terminal(Terminal::terminated()).await;
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
    pub(super) fn admit(self: &Arc<Self>, task: StartTask, broadcast: bool) {
        let received = dispatch_timing::now();
        if task.task_id.is_empty() {
            return;
        }
        let task_id = task.task_id.clone();
        let owner = task
            .owner_id
            .as_deref()
            .filter(|s| !s.is_empty())
            .or_else(|| {
                task.extra
                    .get("callerClaims")
                    .and_then(|c| c.get("sub"))
                    .and_then(Value::as_str)
            })
            .unwrap_or("anonymous")
            .to_string();
        let org = task
            .org_id
            .as_deref()
            .filter(|s| !s.is_empty())
            .unwrap_or(&owner)
            .to_string();
        let version = task.protocol_version.as_deref();
        let failure = if version.is_some_and(|v| !blocks_wire::is_protocol_version_supported(v)) {
            Some("unsupported_protocol_version")
        } else if task.task_kind.as_deref() == Some("pipe") && !task.has_valid_pipe_terms() {
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
                // the task's own version, in the payload and the meta (agent spec §5.4)
                let mut t = Terminal::failed(error);
                t.extra.insert("protocolVersion".into(), Value::String(version.clone()));
                let ev = TaskEvent::from(t).stamped(&task_id).to_value();
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
                token: task.write_token.clone(),
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
        // the handler sees the task without its tokens
        let handler_task = ControlMessage::StartTask(Box::new(StartTask {
            write_token: None,
            control_token: None,
            ..task.clone()
        }))
        .to_value();
        let ctx = Arc::new(TaskContext {
            task_id: task_id.clone(),
            org_id: org.clone(),
            agent_name: self.agent_name.clone(),
            task_kind: task.task_kind.clone().unwrap_or_else(|| "request".into()),
            request_parts: task
                .extra
                .get("requestParts")
                .cloned()
                .filter(Value::is_array)
                .unwrap_or_else(|| Value::Array(Vec::new())),
            has_stream: task.has_stream.unwrap_or(false),
            consumer_public_key: task.consumer_public_key.clone(),
            publisher: publisher.clone(),
            declared: self.declared.clone(),
            duration: task.duration.as_ref().and_then(Value::as_i64),
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
            .duration_expires_at_ms
            .as_ref()
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
                let state = t.state;
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
    pub(super) async fn run(&self, task: Value, ctx: Arc<TaskContext>) -> Option<Terminal> {
        if let Err(e) = ctx.publish_event(accepted()).await {
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
                    Some(error) => Some(Terminal::failed(error)),
                    None => terminal_for(&ctx),
                }
            }
            Err(message) => Some(Terminal::failed(message)),
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
    pub(super) fn presence_changed(self: &Arc<Self>) {
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

    pub(super) async fn write_presence(&self) {
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

/// `BLOCKS_PROFILE` with the token `timing` (comma list, any case): one info line per dispatched
/// task (target `blocks::profile`) with the deltas StartTask received → handler start → handler
/// end → terminal published, in ms (`-` for a stage that did not happen, e.g. a parked pipe task's
/// terminal). Off: no clock reads, no bookkeeping.
pub(super) mod dispatch_timing {
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

    pub(super) fn enabled() -> bool {
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
