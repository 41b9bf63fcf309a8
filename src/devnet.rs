//! `NativeLocalNetwork`: an in-process devnet for tests and demos (wrapped by JS `LocalNetwork`).

use crate::errors::OrJs;
use blocks_core::Error as EngineError;
use blocks_devnet::{Devnet, DevnetConfig};
use napi::bindgen_prelude::*;
use napi_derive::napi;

/// Options of `NativeLocalNetwork.start`.
#[napi(object)]
pub struct NativeNetworkOptions {
    pub port: Option<u32>,
    pub api_keys: Option<Vec<Vec<String>>>,
    pub paid_agents: Option<Vec<String>>,
    pub token_ttl_sec: Option<f64>,
    pub long_poll_hold_sec: Option<f64>,
    /// Test knob: how many milliseconds a pipe-task minute lasts.
    pub minute_ms: Option<f64>,
    /// Test knob: deliver stream messages out of order and duplicated.
    pub stream_chaos: Option<bool>,
    /// Directory for the devnet's database and files; the network survives restarts (default:
    /// in memory, nothing kept).
    pub data_dir: Option<String>,
    /// Keep nothing (the default); conflicts with `data_dir`.
    pub in_memory: Option<bool>,
    /// Largest accepted upload in bytes (default 26214400).
    pub max_upload_bytes: Option<f64>,
    /// Host names served besides the loopback ones (`localhost`, 127.0.0.0/8, `[::1]`); a leading
    /// dot allows a name and every name under it. Requests for other hosts get 421.
    pub allowed_hosts: Option<Vec<String>>,
    /// How long an instance has to acknowledge a task before it is sent again (default 30000).
    pub ack_timeout_ms: Option<f64>,
    /// Most connections open at once (default 1024; more get 503).
    pub max_connections: Option<u32>,
    /// Serve HTTPS with the devnet's own CA.
    pub tls: Option<bool>,
    /// Sign with this CA instead (PEM certificate and PKCS#8 key; implies `tls`).
    pub tls_ca_cert: Option<String>,
    pub tls_ca_key: Option<String>,
}

/// Internal devnet handle.
#[napi]
pub struct NativeLocalNetwork {
    devnet: Devnet,
    data_dir: Option<String>,
}

/// Check the devnet's flags without starting anything: the `--log` level they ask for (or null).
/// Bad flags are `InvalidArgumentError`s naming the flag.
#[napi]
pub fn devnet_check_args(args: Vec<String>) -> Result<Option<String>> {
    blocks_devnet::config::parse(&args)
        .map(|s| s.log)
        .map_err(|e| crate::errors::thrown(EngineError::InvalidArgument(e)))
}

/// The usage text of the devnet's flags (the binary's `--help`).
#[napi]
pub fn devnet_usage() -> String {
    blocks_devnet::config::USAGE.to_string()
}

/// `LocalNetwork.start` options → the devnet's configuration, with the command line's rules.
fn config_of(opts: Option<NativeNetworkOptions>) -> std::result::Result<DevnetConfig, String> {
    use blocks_devnet::config;
    let mut cfg = DevnetConfig::default();
    let Some(o) = opts else { return Ok(cfg) };
    cfg.stream_chaos = o.stream_chaos.unwrap_or(false);
    if let Some(m) = o.minute_ms {
        cfg.minute = config::positive_ms("minuteMs", m)?;
    }
    if let Some(p) = o.port {
        cfg.port = u16::try_from(p).map_err(|_| format!("port {p} is out of range (0-65535)"))?;
    }
    if let Some(keys) = o.api_keys {
        let mut parsed = Vec::new();
        for (n, kv) in keys.iter().enumerate() {
            match kv.as_slice() {
                [k, u] => parsed.push(config::api_key("apiKeys", k, u, n)?),
                [k] => parsed.push(config::api_key("apiKeys", k, "", n)?),
                _ => return Err(format!("apiKeys[{n}] must be [apiKey, userId]")),
            }
        }
        if !parsed.is_empty() {
            cfg.api_keys = parsed;
        }
    }
    if let Some(p) = o.paid_agents {
        cfg.paid_agents = p;
    }
    if let Some(t) = o.token_ttl_sec {
        cfg.token_ttl = config::positive_secs("tokenTtlSec", t)?;
    }
    if let Some(h) = o.long_poll_hold_sec {
        cfg.long_poll_hold = config::positive_secs("longPollHoldSec", h)?;
    }
    match (o.data_dir.filter(|d| !d.is_empty()), o.in_memory.unwrap_or(false)) {
        (Some(_), true) => return Err("dataDir and inMemory: true exclude each other: choose one".into()),
        (Some(d), false) => cfg.data_dir = Some(d.into()),
        (None, _) => {}
    }
    if let Some(m) = o.max_upload_bytes {
        if !(m.is_finite() && m >= 0.0 && m.fract() == 0.0 && m <= 9_007_199_254_740_991.0) {
            return Err(format!(
                "maxUploadBytes must be a whole, non-negative number of bytes, got {m}"
            ));
        }
        cfg.max_upload_bytes = m as u64;
    }
    if let Some(a) = o.ack_timeout_ms {
        cfg.ack_timeout = config::positive_ms("ackTimeoutMs", a)?;
    }
    if let Some(n) = o.max_connections {
        cfg.max_connections = config::max_connections("maxConnections", f64::from(n))?;
    }
    cfg.tls = config::tls_ca_of(
        o.tls.unwrap_or(false),
        o.tls_ca_cert,
        o.tls_ca_key,
        "tls: { caCert, caKey }",
    )?;
    for h in o.allowed_hosts.unwrap_or_default() {
        cfg.allowed_hosts.push(config::host_name("allowedHosts entries", h)?);
    }
    Ok(cfg)
}

impl NativeLocalNetwork {
    async fn serve(cfg: DevnetConfig) -> Result<NativeLocalNetwork> {
        let data_dir = cfg.data_dir.as_ref().map(|d| d.display().to_string());
        let devnet = Devnet::start(cfg)
            .await
            .map_err(|e| EngineError::Config(format!("devnet failed to start: {e}")))
            .or_js()
            .await?;
        Ok(NativeLocalNetwork { devnet, data_dir })
    }
}

#[napi]
impl NativeLocalNetwork {
    /// Start a devnet on loopback.
    #[napi]
    pub async fn start(opts: Option<NativeNetworkOptions>) -> Result<NativeLocalNetwork> {
        let cfg = config_of(opts).map_err(EngineError::InvalidArgument).or_js().await?;
        Self::serve(cfg).await
    }

    /// Start a devnet from command-line flags (`npx blocks-devnet`): the same parser and rules
    /// as the `blocks-devnet` binary. Flag errors are `InvalidArg` errors naming the flag.
    #[napi]
    pub async fn start_from_args(args: Vec<String>) -> Result<NativeLocalNetwork> {
        let serve = blocks_devnet::config::parse(&args)
            .map_err(EngineError::InvalidArgument)
            .or_js()
            .await?;
        Self::serve(serve.config).await
    }

    /// The data directory, or null for an in-memory network.
    #[napi(getter)]
    pub fn data_dir(&self) -> Option<String> {
        self.data_dir.clone()
    }

    #[napi(getter)]
    pub fn url(&self) -> String {
        self.devnet.url()
    }

    /// A token that passes every access rule (for tests and tools acting as the network).
    #[napi(getter)]
    pub fn service_token(&self) -> String {
        self.devnet.service_token()
    }

    #[napi(getter)]
    pub fn cdm_url(&self) -> String {
        self.devnet.cdm_url()
    }

    /// The CA of a TLS devnet (PEM), or null for plain HTTP.
    #[napi(getter)]
    pub fn ca_pem(&self) -> Option<String> {
        self.devnet.ca_pem().map(str::to_string)
    }

    /// Where that CA is written (for `NODE_EXTRA_CA_CERTS`), or null.
    #[napi(getter)]
    pub fn ca_file(&self) -> Option<String> {
        self.devnet.ca_file().map(|f| f.display().to_string())
    }

    #[napi(getter)]
    pub fn api_key(&self) -> String {
        self.devnet.api_key()
    }

    #[napi(getter)]
    pub fn port(&self) -> u32 {
        u32::from(self.devnet.port())
    }

    /// Stop the devnet. Idempotent.
    #[napi]
    pub async fn stop(&self) -> Result<()> {
        self.devnet.stop().await;
        Ok(())
    }
}
