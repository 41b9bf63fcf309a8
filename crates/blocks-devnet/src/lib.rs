//! The local Blocks Network (devnet): one loopback port serving the CDM document, the backend API
//! (auth, registry, JSON-RPC tasks), a PubNub-REST-protocol realtime server and the dispatcher.
//! Embeddable (`Devnet::start`) and runnable (`blocks-devnet`).

mod access;
mod backend;
pub mod cli;
mod conn;
mod files;
mod filter;
mod http;
mod realtime;
mod server;
mod state;
mod store;
mod streams;
mod tls;

pub use tls::TlsCa;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::Notify;

pub use filter::Filter;

/// The limits the devnet holds every request to (issue 20: hostile and careless input).
pub mod limits {
    pub use crate::filter::{MAX_FILTER_BYTES, MAX_FILTER_DEPTH};
    pub use crate::http::{
        MAX_BODY, MAX_CHANNELS_PER_REQUEST, MAX_MESSAGE_BYTES, MAX_MESSAGE_DEPTH, MAX_NAME_BYTES, MAX_PRESENCE_TIMEOUT,
    };
    pub use crate::realtime::RETAINED_BYTES;
}

/// The request-body reader, for the property tests (not a stable API).
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::http::{read_body, BodyError};
}

use realtime::Realtime;
use state::{Effect, Records};

/// One user's API key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    /// The key (`bk_…`).
    pub key: String,
    /// The user it authenticates.
    pub user_id: String,
}

/// Devnet settings.
#[derive(Debug, Clone)]
pub struct DevnetConfig {
    /// Port on 127.0.0.1 (0 = any free port).
    pub port: u16,
    /// Users; the first key is the default one.
    pub api_keys: Vec<ApiKey>,
    /// Agents registered as paid on first sight.
    pub paid_agents: Vec<String>,
    /// Lifetime of access tokens.
    pub token_ttl: Duration,
    /// Longest hold of an idle subscribe long-poll.
    pub long_poll_hold: Duration,
    /// How long a pipe-task "minute" lasts (tests shorten it; default 60 s).
    pub minute: Duration,
    /// Test knob: deliver stream messages out of order and twice (swap neighbours, repeat some).
    pub stream_chaos: bool,
    /// Where files live (`<dir>/files`); `None` = a temporary directory removed on stop.
    pub data_dir: Option<std::path::PathBuf>,
    /// Largest file accepted by the upload handshake (default 25 MiB, `BLOCKS_MAX_UPLOAD_BYTES`).
    pub max_upload_bytes: u64,
    /// After a restart from `data_dir`: how long an agent instance known from before has to
    /// heartbeat again before its running tasks fail with `agent_instance_lost` (default 20 s).
    pub restart_grace: Duration,
    /// Host names served besides the loopback ones (`localhost`, `*.localhost`, 127.0.0.0/8,
    /// `[::1]`): exact names, or `.example.test` for a name and every name under it. Requests
    /// for any other host get 421 (DNS rebinding). CLI `--allow-host`, JS `allowedHosts`.
    pub allowed_hosts: Vec<String>,
    /// Longest time a connection may take to send a complete request head, counted from the
    /// accept or from the first byte after a keep-alive pause (default 10 s; then it is closed).
    pub header_timeout: Duration,
    /// Longest pause between two chunks of a request body (then 408), or between two writes of
    /// a response that make progress (then the connection is closed). Default 30 s.
    pub body_timeout: Duration,
    /// Longest keep-alive pause between two requests on a connection (default 75 s).
    pub keep_alive_timeout: Duration,
    /// Most connections open at once (default 1,024); more are answered 503 and closed.
    pub max_connections: usize,
    /// How long an instance has to acknowledge a StartTask (its first event on the task
    /// channel) before the task is taken back and sent again, to another instance if there is
    /// one (default 30 s; CLI `--ack-timeout`, JS `ackTimeoutMs`). After [`DISPATCH_ATTEMPTS`]
    /// unanswered StartTasks the task fails with `task_not_acknowledged`.
    pub ack_timeout: Duration,
    /// Serve HTTPS (`--tls`): a CA kept in `<data_dir>/tls` (or made in memory), or the given
    /// one, signs a certificate for the loopback names; the URLs in the CDM are `https://`.
    /// `None`: plain HTTP.
    pub tls: Option<TlsCa>,
}

impl Default for DevnetConfig {
    fn default() -> Self {
        DevnetConfig {
            port: 0,
            api_keys: vec![ApiKey {
                key: "bk_devnet_default".into(),
                user_id: "user_default".into(),
            }],
            paid_agents: Vec::new(),
            token_ttl: Duration::from_secs(3600),
            long_poll_hold: Duration::from_secs(60),
            minute: Duration::from_secs(60),
            stream_chaos: false,
            data_dir: None,
            max_upload_bytes: blocks_wire::MAX_UPLOAD_BYTES,
            restart_grace: Duration::from_secs(20),
            allowed_hosts: Vec::new(),
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            keep_alive_timeout: Duration::from_secs(75),
            max_connections: 1024,
            ack_timeout: Duration::from_secs(30),
            tls: None,
        }
    }
}

/// StartTasks sent for one task before it fails with `task_not_acknowledged`.
pub const DISPATCH_ATTEMPTS: usize = 3;

/// Errors of the devnet.
#[derive(Debug, thiserror::Error)]
pub enum DevnetError {
    /// The port could not be bound.
    #[error("cannot listen on 127.0.0.1:{port}: {source}")]
    Bind {
        /// Port.
        port: u16,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Bad configuration.
    #[error("{0}")]
    Config(String),
}

/// How long an instance that left its control channel may still finish its tasks.
const LEAVE_GRACE: Duration = Duration::from_secs(30);

/// Keys of the two keysets.
pub const FREE_KEYS: (&str, &str) = ("pub-c-devnet-free", "sub-c-devnet-free");
/// Keys of the two keysets.
pub const PAID_KEYS: (&str, &str) = ("pub-c-devnet-paid", "sub-c-devnet-paid");

/// Shared state of a running devnet.
pub(crate) struct Net {
    pub cfg: DevnetConfig,
    /// Per stream channel: a message held back by the chaos knob, and a counter.
    /// A weak handle to itself, for background work started from request handlers.
    pub me: std::sync::Weak<Net>,
    pub chaos: Mutex<std::collections::HashMap<String, streams::ChaosSlot>>,
    pub url: String,
    pub rt: Realtime,
    pub records: Mutex<Records>,
    pub stopped: AtomicBool,
    pub stop_notify: Notify,
    pub files: files::Files,
    pub service_token: String,
    /// The database (None: an in-memory network).
    pub store: Option<Arc<store::Store>>,
    /// Connections open now.
    pub open_connections: std::sync::atomic::AtomicUsize,
}

/// The records, locked; changes made through it are written to the database when it is dropped
/// (before the request that made them is answered).
pub(crate) struct RecordsGuard<'a> {
    guard: std::sync::MutexGuard<'a, Records>,
    store: Option<&'a store::Store>,
}

impl std::ops::Deref for RecordsGuard<'_> {
    type Target = Records;
    fn deref(&self) -> &Records {
        &self.guard
    }
}

impl std::ops::DerefMut for RecordsGuard<'_> {
    fn deref_mut(&mut self) -> &mut Records {
        &mut self.guard
    }
}

impl Drop for RecordsGuard<'_> {
    fn drop(&mut self) {
        if self.guard.dirty.is_empty() {
            return;
        }
        let dirty = std::mem::take(&mut self.guard.dirty);
        if let Some(store) = self.store {
            if let Err(e) = store.flush(&self.guard, &dirty) {
                tracing::error!(target: "blocks::devnet", "{e}");
            }
        }
    }
}

impl Net {
    pub fn records(&self) -> RecordsGuard<'_> {
        RecordsGuard {
            guard: self.records.lock().unwrap_or_else(|e| e.into_inner()),
            store: self.store.as_deref(),
        }
    }

    /// Keys (publish, subscribe) of a billing mode.
    pub fn keys(billing: &str) -> (&'static str, &'static str) {
        if billing == "paid" {
            PAID_KEYS
        } else {
            FREE_KEYS
        }
    }

    pub fn is_known_sub_key(sub: &str) -> bool {
        sub == FREE_KEYS.1 || sub == PAID_KEYS.1
    }

    /// Publish into the realtime plane and run the hooks (task state, dispatch).
    pub fn publish(
        &self,
        sub_key: &str,
        channel: &str,
        payload: Value,
        meta: Option<Value>,
        publisher: &str,
        store: bool,
    ) -> u64 {
        // the task's state changes before anyone can see the event: a caller that reacts to a
        // terminal with an RPC (retry, GetTask) must find the backend agreeing with it
        let agent = channel
            .strip_prefix("u.")
            .and_then(|rest| rest.split('.').nth(1))
            .and_then(|task_id| self.records().on_task_event(task_id, &payload, publisher));
        let msg = self.rt.publish(sub_key, channel, payload, meta, publisher, store);
        if let Some(agent) = agent {
            self.dispatch(&agent);
        }
        msg.tt
    }

    pub fn run(&self, effects: Vec<Effect>) {
        for e in effects {
            self.publish(&e.sub_key, &e.channel, e.payload, e.meta, "blocks-devnet", e.store);
        }
    }

    pub fn dispatch(&self, agent: &str) {
        let effects = self.records().dispatch(agent, self.cfg.token_ttl, self.cfg.minute);
        self.run(effects);
    }

    /// Housekeeping: messages that left the replay window or were dropped by the memory limits
    /// (in memory and in the database), expired tokens in the database.
    pub fn prune(&self) {
        self.rt.prune_store();
        if let Some(db) = &self.store {
            if let Err(e) = db.prune_tokens(state::now_ms()) {
                tracing::warn!(target: "blocks::devnet", "{e}");
            }
        }
    }

    /// Periodic work: instance liveness, pipe expiry.
    pub fn tick(&self) {
        self.files.sweep();
        let (dead, expire): (Vec<String>, Vec<Effect>) = {
            let r = self.records();
            // live instances that stopped heartbeating, and instances that left but still hold
            // tasks after the grace period, lose their tasks
            let dead = r
                .instances
                .values()
                .filter(|i| match i.left_at {
                    Some(at) => !i.running.is_empty() && at.elapsed() > LEAVE_GRACE,
                    None => {
                        i.live
                            && match self.rt.presence_of(&i.id, &i.control_channel) {
                                Some(p) => p.last_seen.elapsed() > p.timeout + Duration::from_secs(5),
                                None => true,
                            }
                    }
                })
                .map(|i| i.id.clone())
                .collect();
            let now = state::now_ms();
            let expire = r
                .tasks
                .values()
                .filter(|t| !t.is_terminal() && !t.expire_sent && t.expires_at_ms.is_some_and(|e| e <= now))
                .filter_map(|t| {
                    r.control_for(&t.id, json!({ "type": "ExpireTask", "taskId": t.id, "agentName": t.agent, "protocolVersion": blocks_wire::PROTOCOL_VERSION }))
                })
                .collect();
            (dead, expire)
        };
        {
            let mut r = self.records();
            for e in &expire {
                if let Some(id) = e.payload.get("taskId").and_then(Value::as_str) {
                    if let Some(t) = r.tasks.get_mut(id) {
                        t.expire_sent = true;
                    }
                    r.touch_task(id);
                }
            }
        }
        self.run(expire);
        for id in dead {
            tracing::info!(target: "blocks::devnet", "instance {id} stopped heartbeating; its tasks fail");
            let (effects, agent) = {
                let mut r = self.records();
                let agent = r.instances.get(&id).map(|i| i.agent.clone());
                (r.drop_instance(&id), agent)
            };
            self.run(effects);
            if let Some(a) = agent {
                self.dispatch(&a);
            }
        }
        // after the dead instances are gone: what is taken back goes to a live one
        let (failed, moved) = self.records().unacknowledged(self.cfg.ack_timeout, DISPATCH_ATTEMPTS);
        self.run(failed);
        for a in moved {
            self.dispatch(&a);
        }
    }
}

/// A running devnet.
pub struct Devnet {
    net: Arc<Net>,
    port: u16,
    server: Mutex<Option<tokio::task::JoinHandle<()>>>,
    ticker: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// The TLS devnet's CA: PEM and the file it is written to.
    ca: Option<(String, std::path::PathBuf)>,
}

impl Devnet {
    /// Bind 127.0.0.1:`port` and serve on the current tokio runtime.
    pub async fn start(config: DevnetConfig) -> Result<Devnet, DevnetError> {
        if config.api_keys.is_empty() {
            return Err(DevnetError::Config("at least one API key is required".into()));
        }
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], config.port)))
            .await
            .map_err(|source| DevnetError::Bind {
                port: config.port,
                source,
            })?;
        let port = listener
            .local_addr()
            .map_err(|source| DevnetError::Bind {
                port: config.port,
                source,
            })?
            .port();
        let db = match &config.data_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir).map_err(|e| {
                    DevnetError::Config(format!("cannot create the data directory {}: {e}", dir.display()))
                })?;
                // tokens, tasks and the TLS CA key live here: keep the directory out of git
                let ignore = dir.join(".gitignore");
                if !ignore.exists() {
                    let _ = std::fs::write(
                        &ignore,
                        "# made by blocks-devnet: its database, files and TLS CA key\n*\n",
                    );
                }
                Some(Arc::new(
                    store::Store::open(dir).map_err(|e| DevnetError::Config(e.to_string()))?,
                ))
            }
            None => None,
        };
        let files = files::Files::open(config.data_dir.as_deref(), db.clone())
            .map_err(|e| DevnetError::Config(format!("cannot open the file store: {e}")))?;
        let tls = match &config.tls {
            Some(ca) => Some(
                tls::setup(
                    ca,
                    config.data_dir.as_ref().map(|d| d.join("tls")).as_deref(),
                    files.dir(),
                    &config.allowed_hosts,
                )
                .map_err(DevnetError::Config)?,
            ),
            None => None,
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        let (mut records, rt) = match &db {
            Some(db) => {
                let loaded = db.load().map_err(|e| DevnetError::Config(e.to_string()))?;
                let last_tt = db.last_tt().map_err(|e| DevnetError::Config(e.to_string()))?;
                let rt = Realtime::restore(db.clone(), Realtime::replay_window_start(), last_tt)
                    .map_err(|e| DevnetError::Config(e.to_string()))?;
                files.restore(loaded.blobs.clone());
                (Records::from_loaded(loaded), rt)
            }
            None => (Records::default(), Realtime::default()),
        };
        // instances known from before a restart get a grace period to reconnect and heartbeat
        for i in records.instances.values().filter(|i| i.live) {
            rt.seen(
                &i.id,
                std::slice::from_ref(&i.control_channel),
                Some(config.restart_grace),
                None,
            );
        }
        for k in &config.api_keys {
            if records.api_keys.get(&k.key) != Some(&k.user_id) {
                records.api_keys.insert(k.key.clone(), k.user_id.clone());
                records.dirty.api_keys.insert(k.key.clone());
            }
        }
        let service_token = records.mint(crate::state::TokenKind::Service, "blocks-devnet", None, None);
        // the service token lives as long as this process: never written to the database
        records.dirty.tokens.remove(&service_token);
        if let Some(db) = &db {
            let dirty = std::mem::take(&mut records.dirty);
            db.flush(&records, &dirty)
                .map_err(|e| DevnetError::Config(e.to_string()))?;
        }
        let net = Arc::new_cyclic(|me| Net {
            me: me.clone(),
            cfg: config,
            url: format!("{scheme}://127.0.0.1:{port}"),
            rt,
            records: Mutex::new(records),
            stopped: AtomicBool::new(false),
            stop_notify: Notify::new(),
            chaos: Mutex::new(Default::default()),
            files,
            service_token,
            store: db,
            open_connections: Default::default(),
        });
        let serve_net = net.clone();
        let stop_net = net.clone();
        let acceptor = tls.as_ref().map(|t| t.acceptor.clone());
        let server = tokio::spawn(async move {
            let shutdown = async move {
                loop {
                    let n = stop_net.stop_notify.notified();
                    if stop_net.stopped.load(Ordering::SeqCst) {
                        return;
                    }
                    n.await;
                }
            };
            conn::serve(listener, serve_net, acceptor, shutdown).await;
        });
        let tick_net = Arc::downgrade(&net);
        let ticker = tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_millis(500));
            let mut ticks = 0u64;
            loop {
                every.tick().await;
                let Some(net) = tick_net.upgrade() else { return };
                if net.stopped.load(Ordering::SeqCst) {
                    return;
                }
                net.tick();
                ticks += 1;
                if ticks.is_multiple_of(10) {
                    net.rt.expire_presence();
                }
                if ticks.is_multiple_of(120) {
                    net.prune();
                }
            }
        });
        tracing::debug!(target: "blocks::devnet", "listening on {scheme}://127.0.0.1:{port}");
        Ok(Devnet {
            net,
            port,
            ca: tls.map(|t| (t.ca_pem, t.ca_file)),
            server: Mutex::new(Some(server)),
            ticker: Mutex::new(Some(ticker)),
        })
    }

    /// Bound port.
    pub fn port(&self) -> u16 {
        self.port
    }
    /// `http://127.0.0.1:{port}` (`https://` for a TLS devnet).
    pub fn url(&self) -> String {
        self.net.url.clone()
    }
    /// The CA a client must trust to reach a TLS devnet (PEM), or `None` for plain HTTP.
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca.as_ref().map(|(pem, _)| pem.as_str())
    }
    /// Where that CA is written: give it as `NODE_EXTRA_CA_CERTS` (kept in `<data dir>/tls/ca.pem`
    /// across restarts; in the temporary directory of an in-memory devnet).
    pub fn ca_file(&self) -> Option<&std::path::Path> {
        self.ca.as_ref().map(|(_, f)| f.as_path())
    }
    /// The CDM document URL.
    pub fn cdm_url(&self) -> String {
        format!("{}/config.json", self.net.url)
    }
    /// A token that passes every access rule (the backend's secret-key stand-in): for tests and
    /// tools that publish or read as the network itself.
    pub fn service_token(&self) -> String {
        self.net.service_token.clone()
    }
    /// The default API key.
    pub fn api_key(&self) -> String {
        self.net.cfg.api_keys.first().map(|k| k.key.clone()).unwrap_or_default()
    }
    /// Subscribe long-polls held open right now (waiting for a message).
    pub fn held_long_polls(&self) -> usize {
        self.net.rt.held.load(Ordering::SeqCst)
    }
    /// Connections open right now (at most `max_connections`).
    pub fn open_connections(&self) -> usize {
        self.net.open_connections.load(Ordering::SeqCst)
    }
    /// Estimated memory of the messages the realtime plane keeps (at most
    /// [`limits::RETAINED_BYTES`]).
    pub fn retained_message_bytes(&self) -> usize {
        self.net.rt.retained_bytes()
    }
    /// Presence entries held right now (each expires after its timeout).
    pub fn presence_entries(&self) -> usize {
        self.net.rt.presence_entries()
    }

    /// The environment a caller or agent needs.
    pub fn env(&self) -> Vec<(String, String)> {
        let mut env = vec![
            ("BLOCKS_CDM_URL".into(), self.cdm_url()),
            ("BLOCKS_API_KEY".into(), self.api_key()),
        ];
        if let Some(f) = self.ca_file() {
            env.push(("NODE_EXTRA_CA_CERTS".into(), f.display().to_string()));
        }
        env
    }

    /// Stop serving (idempotent): held long-polls end, the port is released.
    pub async fn stop(&self) {
        if self.net.stopped.swap(true, Ordering::SeqCst) {
            return;
        }
        self.net.stop_notify.notify_waiters();
        self.net.rt.wake_all();
        let ticker = self.ticker.lock().ok().and_then(|mut t| t.take());
        if let Some(t) = ticker {
            t.abort();
        }
        let server = self.server.lock().ok().and_then(|mut s| s.take());
        if let Some(s) = server {
            if tokio::time::timeout(Duration::from_secs(5), s).await.is_err() {
                tracing::warn!(target: "blocks::devnet", "server did not stop within 5 s");
            }
        }
    }
}

impl Drop for Devnet {
    fn drop(&mut self) {
        self.net.stopped.store(true, Ordering::SeqCst);
        self.net.stop_notify.notify_waiters();
        self.net.rt.wake_all();
        if let Ok(mut t) = self.ticker.lock() {
            if let Some(t) = t.take() {
                t.abort();
            }
        }
    }
}
