//! `NativeLocalNetwork`: an in-process devnet for tests and demos (wrapped by JS `LocalNetwork`).

use std::time::Duration;

use blocks_devnet::{ApiKey, Devnet, DevnetConfig};
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
}

#[napi]
impl NativeLocalNetwork {
    /// Start a devnet on loopback.
    #[napi]
    pub async fn start(opts: Option<NativeNetworkOptions>) -> Result<NativeLocalNetwork> {
        let mut cfg = DevnetConfig::default();
        let mut opts_minute = None;
        if let Some(o) = opts {
            cfg.stream_chaos = o.stream_chaos.unwrap_or(false);
            if let Some(m) = o.minute_ms {
                if !(m.is_finite() && m > 0.0) {
                    return Err(Error::new(
                        Status::InvalidArg,
                        format!("minuteMs must be a positive number, got {m}"),
                    ));
                }
                opts_minute = Some(Duration::from_secs_f64(m / 1000.0));
            }
            if let Some(p) = o.port {
                cfg.port = u16::try_from(p)
                    .map_err(|_| Error::new(Status::InvalidArg, format!("port {p} is out of range (0-65535)")))?;
            }
            if let Some(keys) = o.api_keys {
                let parsed: Vec<ApiKey> = keys
                    .into_iter()
                    .filter_map(|kv| match kv.as_slice() {
                        [k, u] => Some(ApiKey {
                            key: k.clone(),
                            user_id: u.clone(),
                        }),
                        _ => None,
                    })
                    .collect();
                if !parsed.is_empty() {
                    cfg.api_keys = parsed;
                }
            }
            if let Some(p) = o.paid_agents {
                cfg.paid_agents = p;
            }
            if let Some(t) = o.token_ttl_sec {
                if !(t.is_finite() && t > 0.0) {
                    return Err(Error::new(
                        Status::InvalidArg,
                        format!("tokenTtlSec must be a positive number, got {t}"),
                    ));
                }
                cfg.token_ttl = Duration::from_secs_f64(t);
            }
            if let Some(h) = o.long_poll_hold_sec {
                if !(h.is_finite() && h > 0.0) {
                    return Err(Error::new(
                        Status::InvalidArg,
                        format!("longPollHoldSec must be a positive number, got {h}"),
                    ));
                }
                cfg.long_poll_hold = Duration::from_secs_f64(h);
            }
            match (o.data_dir.filter(|d| !d.is_empty()), o.in_memory.unwrap_or(false)) {
                (Some(_), true) => {
                    return Err(Error::new(
                        Status::InvalidArg,
                        "dataDir and inMemory: true exclude each other: choose one".to_string(),
                    ))
                }
                (Some(d), false) => cfg.data_dir = Some(d.into()),
                (None, _) => {}
            }
            if let Some(m) = o.max_upload_bytes {
                if !(m.is_finite() && m >= 0.0) {
                    return Err(Error::new(
                        Status::InvalidArg,
                        format!("maxUploadBytes must be a non-negative number, got {m}"),
                    ));
                }
                cfg.max_upload_bytes = m as u64;
            }
            if let Some(a) = o.ack_timeout_ms {
                if !(a.is_finite() && a > 0.0) {
                    return Err(Error::new(
                        Status::InvalidArg,
                        format!("ackTimeoutMs must be a positive number of milliseconds, got {a}"),
                    ));
                }
                cfg.ack_timeout = Duration::from_secs_f64(a / 1000.0);
            }
            cfg.tls = match (o.tls.unwrap_or(false), o.tls_ca_cert, o.tls_ca_key) {
                (_, Some(cert_pem), Some(key_pem)) => Some(blocks_devnet::TlsCa::Given { cert_pem, key_pem }),
                (true, None, None) => Some(blocks_devnet::TlsCa::Own),
                (false, None, None) => None,
                _ => {
                    return Err(Error::new(
                        Status::InvalidArg,
                        "tls: { caCert, caKey } needs both the CA certificate and its key (PEM)".to_string(),
                    ))
                }
            };
            if let Some(hosts) = o.allowed_hosts {
                if let Some(bad) = hosts
                    .iter()
                    .find(|h| h.trim().trim_start_matches('.').is_empty() || h.contains(['/', ' ', ':']))
                {
                    return Err(Error::new(
                        Status::InvalidArg,
                        format!("allowedHosts entries must be host names (no port, no scheme), got {bad:?}"),
                    ));
                }
                cfg.allowed_hosts = hosts;
            }
        }
        if let Some(m) = opts_minute {
            cfg.minute = m;
        }
        let devnet = Devnet::start(cfg)
            .await
            .map_err(|e| Error::new(Status::GenericFailure, format!("devnet failed to start: {e}")))?;
        Ok(NativeLocalNetwork { devnet })
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
