//! A running devnet ([`Devnet`]): start (bind, open the data directory, load the records, serve,
//! tick), the addresses and environment it hands out, stop.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use crate::config::DevnetConfig;
use crate::net::Net;
use crate::realtime::Realtime;
use crate::state::Records;
use crate::{conn, files, store, tls};

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
        let (listener, port) = bind(config.port).await?;
        let db = open_data_dir(config.data_dir.as_deref())?;
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
        let (records, rt, service_token) = load(&config, db.as_ref(), &files)?;
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
        let server = serve(listener, net.clone(), tls.as_ref().map(|t| t.acceptor.clone()));
        let ticker = tick(Arc::downgrade(&net));
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
    /// [`crate::limits::RETAINED_BYTES`]).
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

/// The listener on 127.0.0.1:`port`, and the port it got.
async fn bind(port: u16) -> Result<(tokio::net::TcpListener, u16), DevnetError> {
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port)))
        .await
        .map_err(|source| DevnetError::Bind { port, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| DevnetError::Bind { port, source })?
        .port();
    Ok((listener, bound))
}

/// The database in the data directory (made, and kept out of git), or `None` in memory.
fn open_data_dir(dir: Option<&std::path::Path>) -> Result<Option<Arc<store::Store>>, DevnetError> {
    let Some(dir) = dir else { return Ok(None) };
    std::fs::create_dir_all(dir)
        .map_err(|e| DevnetError::Config(format!("cannot create the data directory {}: {e}", dir.display())))?;
    // tokens, tasks and the TLS CA key live here: keep the directory out of git
    let ignore = dir.join(".gitignore");
    if !ignore.exists() {
        let _ = std::fs::write(
            &ignore,
            "# made by blocks-devnet: its database, files and TLS CA key\n*\n",
        );
    }
    Ok(Some(Arc::new(
        store::Store::open(dir).map_err(|e| DevnetError::Config(e.to_string()))?,
    )))
}

/// The records and the realtime plane, as the database left them (or new), with the configured
/// API keys, and the network's service token.
fn load(
    config: &DevnetConfig,
    db: Option<&Arc<store::Store>>,
    files: &files::Files,
) -> Result<(Records, Realtime, String), DevnetError> {
    let (mut records, rt) = match db {
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
    let service_token = records.mint(crate::access::TokenKind::Service, "blocks-devnet", None, None);
    // the service token lives as long as this process: never written to the database
    records.dirty.tokens.remove(&service_token);
    if let Some(db) = db {
        let dirty = std::mem::take(&mut records.dirty);
        db.flush(&records.changes(&dirty))
            .map_err(|e| DevnetError::Config(e.to_string()))?;
    }
    Ok((records, rt, service_token))
}

/// Serve `listener` until the network stops.
fn serve(
    listener: tokio::net::TcpListener,
    net: Arc<Net>,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
) -> tokio::task::JoinHandle<()> {
    let stop_net = net.clone();
    tokio::spawn(async move {
        let shutdown = async move {
            loop {
                let n = stop_net.stop_notify.notified();
                if stop_net.stopped.load(Ordering::SeqCst) {
                    return;
                }
                n.await;
            }
        };
        conn::serve(listener, net, acceptor, shutdown).await;
    })
}

/// The periodic work, every 500 ms until the network stops: liveness, expiry and
/// acknowledgements every tick, presence every 5 s, housekeeping every minute.
fn tick(net: std::sync::Weak<Net>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_millis(500));
        let mut ticks = 0u64;
        loop {
            every.tick().await;
            let Some(net) = net.upgrade() else { return };
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
    })
}
