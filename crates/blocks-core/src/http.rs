//! The shared HTTP client (reqwest + rustls) and the Blocks header conventions.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::RequestBuilder;

use crate::error::{Error, Result};

/// One reqwest client shared by everything the engine does (connection pooling across calls).
#[derive(Clone, Debug)]
pub struct HttpClient {
    client: reqwest::Client,
    long_poll_timeout: Duration,
}

/// How long a subscribe long-poll may go without an answer before the client gives up on the
/// connection and reconnects (the hosted network answers an idle poll after 280 s, so the
/// default leaves room for that; a silent, blackholed connection is detected after this long).
pub const DEFAULT_LONG_POLL_TIMEOUT: Duration = Duration::from_secs(310);

/// How the engine reaches the network: whom it trusts and which proxy it goes through. One
/// value configures every request of a client (backend, realtime, token endpoints, uploads,
/// downloads), so none of them can differ.
#[derive(Clone, Debug, Default)]
pub struct NetOptions {
    /// Extra certificate authorities to trust (PEM; a bundle may hold several), besides the
    /// bundled Mozilla roots, the system store and `NODE_EXTRA_CA_CERTS` (JS `tls.ca`).
    pub ca: Vec<Vec<u8>>,
    /// Send every request through this proxy (`http://host:port`, credentials in the URL if
    /// needed); hosts in `NO_PROXY` still go direct. Without it the `HTTPS_PROXY`, `HTTP_PROXY`,
    /// `ALL_PROXY` and `NO_PROXY` variables apply, as in curl.
    pub proxy: Option<String>,
}

/// A URL without the password of its userinfo (`http://user:***@host`), for messages.
fn redact_userinfo(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s + 3 => {
            let user = url[s + 3..at].split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..s + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}

/// A certificate as rustls takes it.
type Der = rustls::pki_types::CertificateDer<'static>;

/// The system's trust store, loaded once per process (it is read from disk and parsed). It
/// honours `SSL_CERT_FILE` / `SSL_CERT_DIR` (then those replace the platform store).
fn system_roots() -> &'static [Der] {
    static ROOTS: OnceLock<Vec<Der>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let loaded = rustls_native_certs::load_native_certs();
        for e in loaded.errors.iter().take(3) {
            tracing::debug!(target: "blocks::http", "system trust store: {e}");
        }
        loaded.certs
    })
}

/// The certificates of a PEM bundle (`what` names it in the error).
fn pem_certificates(pem: &[u8], what: &str) -> Result<Vec<Der>> {
    use rustls::pki_types::pem::PemObject;
    let certs = Der::pem_slice_iter(pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::InvalidArgument(format!("{what} is not a PEM certificate bundle: {e}")))?;
    if certs.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "{what} holds no certificate: give PEM text with -----BEGIN CERTIFICATE----- blocks"
        )));
    }
    Ok(certs)
}

/// The CAs of `NODE_EXTRA_CA_CERTS` (a PEM file), as Node adds them: a file that cannot be read
/// is warned about and skipped (Node does the same).
fn node_extra_ca_certs(path: &std::ffi::OsStr) -> Vec<Der> {
    if path.is_empty() {
        return Vec::new();
    }
    let shown = std::path::Path::new(path).display().to_string();
    let loaded = std::fs::read(path)
        .map_err(|e| format!("cannot read it: {e}"))
        .and_then(|pem| pem_certificates(&pem, "the file").map_err(|e| e.to_string()));
    match loaded {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(target: "blocks::http", "ignoring extra certificates from NODE_EXTRA_CA_CERTS={shown}: {e}");
            Vec::new()
        }
    }
}

/// What a TLS configuration depends on: `NODE_EXTRA_CA_CERTS` and the client's own CAs.
type TlsKey = (std::ffi::OsString, Vec<Vec<u8>>);

/// The TLS configuration for these CAs, built once and shared by every client that trusts the
/// same set: turning a few hundred system roots into trust anchors costs milliseconds, which
/// each `TaskClient.create` would otherwise pay (each client keeps its own connection pool).
fn tls_config(ca: &[Vec<u8>]) -> Result<Arc<rustls::ClientConfig>> {
    /// Distinct CA sets kept; a process that makes more starts the cache again.
    const KEPT: usize = 16;
    static CONFIGS: Mutex<Vec<(TlsKey, Arc<rustls::ClientConfig>)>> = Mutex::new(Vec::new());
    let key: TlsKey = (std::env::var_os("NODE_EXTRA_CA_CERTS").unwrap_or_default(), ca.to_vec());
    if let Ok(kept) = CONFIGS.lock() {
        if let Some((_, c)) = kept.iter().find(|(k, _)| *k == key) {
            return Ok(c.clone());
        }
    }
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    // the system store may hold certificates rustls cannot use as anchors: skipped, as reqwest does
    let _ = roots.add_parsable_certificates(system_roots().iter().cloned());
    let (_, unusable) = roots.add_parsable_certificates(node_extra_ca_certs(&key.0));
    if unusable > 0 {
        tracing::warn!(target: "blocks::http",
            "ignoring {unusable} certificate(s) from NODE_EXTRA_CA_CERTS that cannot be trust anchors");
    }
    for (i, pem) in ca.iter().enumerate() {
        for c in pem_certificates(pem, &format!("tls.ca[{i}]"))? {
            roots.add(c).map_err(|e| {
                Error::InvalidArgument(format!(
                    "tls.ca[{i}] holds a certificate that cannot be a trust anchor: {e}"
                ))
            })?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(format!("building the TLS configuration: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    // what reqwest offers by itself: HTTP/2 when the server takes it, else HTTP/1.1
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let config = Arc::new(config);
    if let Ok(mut kept) = CONFIGS.lock() {
        if kept.len() >= KEPT {
            kept.clear();
        }
        kept.push((key, config.clone()));
    }
    Ok(config)
}

impl HttpClient {
    /// Build the client with the default network options (the environment decides).
    pub fn new() -> Result<Self> {
        Self::with_net(&NetOptions::default())
    }

    /// Build the client: trust the bundled Mozilla roots, the system store,
    /// `NODE_EXTRA_CA_CERTS` and `net.ca`; go through `net.proxy` or the proxy variables.
    pub fn with_net(net: &NetOptions) -> Result<Self> {
        let mut b = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(30))
            .tcp_nodelay(true)
            .user_agent(concat!("blocks-sdk-node/", env!("CARGO_PKG_VERSION")))
            // a clone shares the verifier and its trust anchors (they sit behind an Arc)
            .use_preconfigured_tls(rustls::ClientConfig::clone(&*tls_config(&net.ca)?));
        if let Some(p) = net.proxy.as_deref().filter(|p| !p.is_empty()) {
            let proxy = reqwest::Proxy::all(p)
                .map_err(|e| {
                    Error::InvalidArgument(format!(
                        "proxy {:?} is not a proxy URL ({e}): give http://host:port",
                        redact_userinfo(p)
                    ))
                })?
                .no_proxy(reqwest::NoProxy::from_env());
            b = b.proxy(proxy);
        }
        let client = b.build().map_err(|e| Error::transport("building the HTTP client", e))?;
        Ok(HttpClient {
            client,
            long_poll_timeout: DEFAULT_LONG_POLL_TIMEOUT,
        })
    }

    /// The same client with another long-poll timeout (`None` keeps the current one).
    pub fn with_long_poll_timeout(mut self, timeout: Option<Duration>) -> Self {
        if let Some(t) = timeout {
            self.long_poll_timeout = t;
        }
        self
    }

    /// See [`DEFAULT_LONG_POLL_TIMEOUT`].
    pub fn long_poll_timeout(&self) -> Duration {
        self.long_poll_timeout
    }

    /// The underlying reqwest client.
    pub fn inner(&self) -> &reqwest::Client {
        &self.client
    }

    /// A backend request: protocol header and, while valid, the write-affinity header.
    pub fn backend(&self, method: reqwest::Method, url: &str) -> RequestBuilder {
        let mut b = self
            .client
            .request(method, url)
            .header(blocks_wire::PROTOCOL_HEADER, blocks_wire::PROTOCOL_VERSION)
            .timeout(Duration::from_secs(30));
        if let Some(v) = write_affinity() {
            b = b.header(blocks_wire::WRITE_AFFINITY_HEADER, v);
        }
        b
    }
}

/// Process-wide write-affinity slot (consumer spec §3.2): the largest unexpired value seen.
static WRITE_AFFINITY: Mutex<Option<(f64, String)>> = Mutex::new(None);

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Remember an `X-Write-Affinity` answer (only finite values greater than the stored one).
pub fn capture_write_affinity(headers: &reqwest::header::HeaderMap) {
    let Some(raw) = headers
        .get(blocks_wire::WRITE_AFFINITY_HEADER)
        .and_then(|v| v.to_str().ok())
    else {
        return;
    };
    let Ok(value) = raw.trim().parse::<f64>() else { return };
    if !value.is_finite() {
        return;
    }
    if let Ok(mut slot) = WRITE_AFFINITY.lock() {
        if slot.as_ref().is_none_or(|(v, _)| value > *v) {
            *slot = Some((value, raw.trim().to_string()));
        }
    }
}

/// The header value to send, if one is stored and not yet expired.
pub fn write_affinity() -> Option<String> {
    let mut slot = WRITE_AFFINITY.lock().ok()?;
    match slot.as_ref() {
        Some((v, s)) if *v > now_secs() => Some(s.clone()),
        Some(_) => {
            *slot = None;
            None
        }
        None => None,
    }
}

/// Read a response body as text, bounded for error messages.
pub async fn error_body(resp: reqwest::Response) -> String {
    let text = resp.text().await.unwrap_or_default();
    let mut text = text.trim().to_string();
    if text.len() > 500 {
        let mut cut = 500;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    text
}
