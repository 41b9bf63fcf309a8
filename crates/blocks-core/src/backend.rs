//! The Blocks backend over HTTP: JSON-RPC 2.0 task API and the registry.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rand::Rng;
use serde_json::{json, Value};

use crate::auth::ConsumerAuth;
use crate::error::{Error, Result};
use crate::http::{capture_write_affinity, error_body, HttpClient};

use blocks_wire::auth::AuthCode;

/// Client of the backend HTTP API.
#[derive(Clone)]
pub struct Backend {
    http: HttpClient,
    base_url: String,
    auth: Option<Arc<ConsumerAuth>>,
    /// Where RPCs go when no base URL is configured: the realtime plane's RPC endpoint of the
    /// subscribe key (`<origin>/v1/blocks/sub-key/<key>/rpc`, CFG-08).
    rpc_fallback: Arc<std::sync::RwLock<Option<String>>>,
}

/// Attempts of an RPC whose request failed on the network in a way worth repeating (ERR-09).
const RPC_ATTEMPTS: u32 = 3;

/// A network failure worth one more try: a reset or aborted connection, a timeout, a name that
/// did not resolve. A refused connection is not (nothing listens there; waiting will not help).
fn transient(e: &reqwest::Error) -> bool {
    use std::error::Error as _;
    let mut source = e.source();
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            match io.kind() {
                ConnectionRefused => return false,
                ConnectionReset | ConnectionAborted | TimedOut | UnexpectedEof | BrokenPipe => return true,
                _ => {}
            }
        }
        source = s.source();
    }
    e.is_timeout() || e.is_connect()
}

impl Backend {
    /// `base_url` is the backend root (no `/api/v1`); trailing slashes are stripped.
    pub fn new(http: HttpClient, base_url: &str, auth: Option<Arc<ConsumerAuth>>) -> Self {
        Backend {
            http,
            base_url: base_url.trim_end_matches('/').to_string(),
            auth,
            rpc_fallback: Arc::new(std::sync::RwLock::new(None)),
        }
    }

    /// Set the RPC endpoint used when there is no base URL (from the realtime origin and key).
    pub fn set_rpc_fallback(&self, origin: &str, subscribe_key: &str) {
        if let Ok(mut f) = self.rpc_fallback.write() {
            *f = (!subscribe_key.is_empty()).then(|| {
                format!(
                    "{}/v1/blocks/sub-key/{}/rpc",
                    origin.trim_end_matches('/'),
                    crate::realtime::encode_path(subscribe_key)
                )
            });
        }
    }

    fn rpc_url(&self) -> Result<String> {
        if self.base_url.is_empty() {
            if let Some(f) = self.rpc_fallback.read().ok().and_then(|f| f.clone()) {
                return Ok(f);
            }
        }
        self.url("/api/v1/rpc")
    }

    /// Backend root URL.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The auth provider, if any.
    pub fn auth(&self) -> Option<&Arc<ConsumerAuth>> {
        self.auth.as_ref()
    }

    /// The HTTP client.
    pub fn http(&self) -> &HttpClient {
        &self.http
    }

    /// The `Authorization` value to send now, if the client has credentials.
    pub async fn header(&self) -> Result<Option<String>> {
        match &self.auth {
            Some(a) => a.current_header().await,
            None => Ok(None),
        }
    }

    fn url(&self, path: &str) -> Result<String> {
        if self.base_url.is_empty() {
            return Err(Error::Config(
                "no backend baseUrl configured (set baseUrl, BLOCKS_BACKEND_URL or api.baseUrl in the CDM)".into(),
            ));
        }
        Ok(format!("{}{path}", self.base_url))
    }

    /// Call a JSON-RPC method. HTTP 401 and the embedded-JWT error codes trigger one refresh and one retry.
    pub async fn rpc(&self, method: &str, params: Value) -> Result<Value> {
        if let Some(auth) = &self.auth {
            auth.ensure_ready().await?;
            auth.preflight().await?;
        }
        match self.rpc_once(method, &params).await {
            Err(e) if self.should_refresh(&e) => {
                let refreshed = match &self.auth {
                    Some(a) => a.refresh_for_retry().await?,
                    None => false,
                };
                if refreshed {
                    self.rpc_once(method, &params).await
                } else {
                    Err(e)
                }
            }
            other => other,
        }
    }

    fn should_refresh(&self, e: &Error) -> bool {
        if self.auth.is_none() {
            return false;
        }
        match e {
            Error::Rpc { code: Some(401), .. } => true,
            Error::Rpc { data: Some(d), .. } => d
                .get("code")
                .and_then(Value::as_str)
                .is_some_and(|c| matches!(AuthCode::parse(c), AuthCode::RefreshAndRetry(_))),
            _ => false,
        }
    }

    async fn rpc_once(&self, method: &str, params: &Value) -> Result<Value> {
        let url = self.rpc_url()?;
        let body = json!({ "jsonrpc": "2.0", "id": rpc_id(), "method": method, "params": params });
        let header = self.header().await?;
        let mut attempt = 0;
        let resp = loop {
            let mut req = self.http.backend(reqwest::Method::POST, &url).json(&body);
            if let Some(h) = &header {
                req = req.header("authorization", h);
            }
            match req.send().await {
                Ok(r) => break r,
                Err(e) if transient(&e) && attempt + 1 < RPC_ATTEMPTS => {
                    // 0.5 s × 2^attempt + up to 0.1 s of jitter (consumer spec §3.4)
                    let jitter = rand::rng().random_range(0..100);
                    let delay = std::time::Duration::from_millis(500 * (1 << attempt) + jitter);
                    tracing::debug!(target: "blocks::rpc", "{method}: network error ({}), retrying in {delay:?}", e.without_url());
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                Err(e) => {
                    // the causes, the code and the next step, as for every network failure
                    return Err(Error::Rpc {
                        code: None,
                        message: Error::transport(method, e).to_string(),
                        data: None,
                    });
                }
            }
        };
        capture_write_affinity(resp.headers());
        let status = resp.status();
        if !status.is_success() {
            let hint = if status.as_u16() == 401 && self.auth.is_none() {
                ": this client has no credentials; pass apiKey, tokenEndpoint or tokenProvider to TaskClient.create()"
            } else {
                ""
            };
            return Err(Error::Rpc {
                code: Some(i64::from(status.as_u16())),
                message: format!("HTTP {}{hint}", status.as_u16()),
                data: None,
            });
        }
        let text = resp.text().await.map_err(|e| Error::Rpc {
            code: None,
            message: format!("{method}: {e}"),
            data: None,
        })?;
        let v: Value = if text.trim().is_empty() {
            json!({})
        } else {
            serde_json::from_str(&text).map_err(|e| Error::Protocol(format!("{method}: response is not JSON: {e}")))?
        };
        match v.get("error") {
            Some(err) if !err.is_null() && err != &Value::Bool(false) => Err(rpc_error(err)),
            _ => Ok(v.get("result").cloned().unwrap_or(Value::Null)),
        }
    }

    /// `GET /api/v1/registry/agents?agentName=` → the `agent` object, or `None` on 404.
    pub async fn registry_agent(&self, agent_name: &str, bearer: Option<&str>) -> Result<Option<Value>> {
        self.url("/api/v1/registry/agents")?;
        crate::registry::agent_record(&self.http, &self.base_url, agent_name, bearer).await
    }

    /// POST a JSON body to a backend path with an explicit bearer; non-2xx becomes [`Error::Http`].
    pub async fn post_json(&self, path: &str, body: &Value, bearer: Option<&str>, context: &str) -> Result<Value> {
        let url = self.url(path)?;
        let mut req = self.http.backend(reqwest::Method::POST, &url).json(body);
        if let Some(b) = bearer {
            req = req.header(
                "authorization",
                if b.starts_with("Bearer ") {
                    b.to_string()
                } else {
                    format!("Bearer {b}")
                },
            );
        }
        let resp = req.send().await.map_err(|e| Error::transport(context, e))?;
        capture_write_affinity(resp.headers());
        let status = resp.status();
        if !status.is_success() {
            let body = error_body(resp).await;
            return Err(Error::Http {
                context: context.into(),
                status: status.as_u16(),
                body,
            });
        }
        resp.json().await.map_err(|e| Error::transport(context, e))
    }

    /// [`Backend::post_json`] with the consumer token, refreshing and retrying once on 401.
    pub async fn post_authed(&self, path: &str, body: &Value, context: &str) -> Result<Value> {
        if let Some(auth) = &self.auth {
            auth.ensure_ready().await?;
            auth.preflight().await?;
        }
        let header = self.header().await?;
        match self.post_json(path, body, header.as_deref(), context).await {
            Err(e) if e.is_unauthorized() && self.auth.is_some() => {
                let refreshed = match &self.auth {
                    Some(a) => a.refresh_for_retry().await?,
                    None => false,
                };
                if !refreshed {
                    return Err(e);
                }
                let header = self.header().await?;
                self.post_json(path, body, header.as_deref(), context).await
            }
            other => other,
        }
    }
}

/// Build the error of a JSON-RPC `error` object (consumer spec §5.1).
pub fn rpc_error(err: &Value) -> Error {
    let data = err.get("data").cloned().filter(|d| !d.is_null());
    let message = data
        .as_ref()
        .and_then(|d| d.get("message"))
        .and_then(Value::as_str)
        .or_else(|| err.get("message").and_then(Value::as_str))
        .unwrap_or("Unknown RPC error")
        .to_string();
    let code = err.get("code").and_then(Value::as_i64);
    if let Some(d) = &data {
        if d.get("code").and_then(Value::as_str) == Some("BillingModeMismatch") {
            let expected = d.pointer("/details/expected").and_then(Value::as_str);
            let got = d.pointer("/details/got").and_then(Value::as_str);
            if let (Some(e), Some(g)) = (expected, got) {
                if matches!(e, "free" | "paid") && matches!(g, "free" | "paid") {
                    return Error::BillingModeMismatch {
                        message,
                        expected: e.into(),
                        got: g.into(),
                        code,
                        data,
                    };
                }
            }
        }
    }
    Error::Rpc { code, message, data }
}

fn rpc_id() -> String {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut rng = rand::rng();
    let suffix: String = (0..6)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect();
    format!("rpc-{ms}-{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    // ERR-01: JSON-RPC errors prefer data.message; ERR-02: BillingModeMismatch with valid details, malformed details a plain RpcError
    #[test]
    fn rpc_errors_prefer_data_message_and_promote_billing_mismatch() {
        let e = rpc_error(&json!({"code": -32000, "message": "outer", "data": {"message": "inner"}}));
        assert_eq!(e.to_string(), "[RPC] inner");
        let e = rpc_error(&json!({"code": -32000, "message": "Billing mode mismatch",
            "data": {"code": "BillingModeMismatch", "details": {"expected": "paid", "got": "free"}}}));
        match e {
            Error::BillingModeMismatch { expected, got, .. } => {
                assert_eq!((expected.as_str(), got.as_str()), ("paid", "free"))
            }
            other => panic!("unexpected {other:?}"),
        }
        let e = rpc_error(
            &json!({"code": -32000, "message": "x", "data": {"code": "BillingModeMismatch", "details": {"expected": "gold"}}}),
        );
        assert_eq!(e.code(), crate::ErrorCode::Rpc);
        let e = rpc_error(&json!({}));
        assert_eq!(e.to_string(), "[RPC] Unknown RPC error");
    }

    // AUTH-12: HTTP 401 and the EMBEDDED_JWT_* / AGENT_OUT_OF_SCOPE codes trigger a refresh, other codes do not
    #[test]
    fn refresh_triggers_are_401_and_the_embedded_jwt_codes() {
        let http = HttpClient::new().unwrap();
        let auth = ConsumerAuth::new(crate::auth::AuthMode::Static("t".into()), "", http.clone());
        let with_auth = Backend::new(http.clone(), "http://x", Some(auth));
        let without = Backend::new(http, "http://x", None);
        let code = |c: &str| Error::Rpc {
            code: Some(-32000),
            message: "m".into(),
            data: Some(json!({ "code": c })),
        };
        assert!(with_auth.should_refresh(&Error::Rpc {
            code: Some(401),
            message: "HTTP 401".into(),
            data: None
        }));
        for c in [
            "EMBEDDED_JWT_REVOKED",
            "EMBEDDED_JWT_LOGOUT",
            "EMBEDDED_JWT_KILLED",
            "EMBEDDED_JWT_SCOPE_DRIFT",
            "AGENT_OUT_OF_SCOPE",
        ] {
            assert!(with_auth.should_refresh(&code(c)), "{c}");
        }
        assert!(!with_auth.should_refresh(&code("BillingModeMismatch")));
        assert!(!without.should_refresh(&Error::Rpc {
            code: Some(401),
            message: "HTTP 401".into(),
            data: None
        }));
    }

    #[test]
    fn rpc_ids_have_the_spec_shape() {
        let id = rpc_id();
        assert!(id.starts_with("rpc-"));
        assert_eq!(id.rsplit('-').next().map(str::len), Some(6));
    }
}
