//! The shared HTTP client (reqwest + rustls) and the Blocks header conventions.

use std::sync::Mutex;
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

impl HttpClient {
    /// Build the client.
    pub fn new() -> Result<Self> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(30))
            .tcp_nodelay(true)
            .user_agent(concat!("blocks-sdk-node/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::transport("building the HTTP client", e))?;
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

/// The machine-readable `code` of a backend error body (`{"code": …}` or `{"error": {"code": …}}`).
pub fn error_code(body: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    v.get("code")
        .or_else(|| v.get("error").and_then(|e| e.get("code")))
        .and_then(serde_json::Value::as_str)
        .map(str::to_string)
}
