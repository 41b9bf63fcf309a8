//! The realtime plane: the `pubnub` crate over our own reqwest + rustls transport (any origin,
//! no OpenSSL), plus the REST calls the crate lacks (time, history, file download).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{Stream, StreamExt};
use pubnub::core::{
    PubNubError, RequestRetryConfiguration, Transport, TransportMethod, TransportRequest, TransportResponse,
};
use pubnub::providers::deserialization_serde::DeserializerSerde;
use pubnub::subscribe::{EventEmitter, EventSubscriber, SubscriptionParams, Update};
use pubnub::{Keyset, PubNubClientBuilder, PubNubGenericClient};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::http::HttpClient;

/// `pubnub::core::Transport` on the engine's reqwest client.
///
/// It also adds the client's filter expression to subscribe requests: pubnub 0.9's event-engine
/// subscribe never sends `filter-expr` (the builder field exists but is not wired), so without
/// this the server-side filters of the spec (control-channel instance targeting, bidirectional
/// self-echo suppression) would silently not apply.
#[derive(Clone)]
pub struct HttpTransport {
    client: reqwest::Client,
    origin: String,
    filter: Option<String>,
    /// Subscribe requests refused with 403/400 are reported here: the crate gives up on them
    /// silently, so the owner (a stream reader) must learn it from us.
    faults: tokio::sync::watch::Sender<Option<u16>>,
    /// The catch-up cursor of this client's subscription. pubnub 0.9 stores the handshake answer's
    /// timetoken as the subscription cursor and then drops every update older than it, so updates
    /// published between the catch-up cursor and the handshake were silently lost; the handshake
    /// answer is rewritten to the catch-up cursor.
    catchup: Arc<Mutex<Option<u64>>>,
}

#[async_trait::async_trait]
impl Transport for HttpTransport {
    async fn send(&self, req: TransportRequest) -> std::result::Result<TransportResponse, PubNubError> {
        let url = format!("{}{}", self.origin, req.path);
        let mut b = match req.method {
            TransportMethod::Get => self.client.get(&url),
            TransportMethod::Post => self.client.post(&url).body(req.body.unwrap_or_default()),
            TransportMethod::Delete => self.client.delete(&url),
        };
        b = b.query(&req.query_parameters);
        if let Some(f) = &self.filter {
            if req.path.starts_with("/v2/subscribe/") && !req.query_parameters.contains_key("filter-expr") {
                b = b.query(&[("filter-expr", f.as_str())]);
            }
        }
        for (k, v) in &req.headers {
            b = b.header(k, v);
        }
        if req.timeout > 0 {
            b = b.timeout(Duration::from_secs(req.timeout));
        }
        // pubnub 0.9 retries only on 429/5xx answers: a dropped connection or a timeout would end
        // a subscription for good. Network failures are reported as 503 so its backoff policy
        // reconnects (the cursor is kept, so nothing published meanwhile is lost).
        let unavailable = |path: &str, e: reqwest::Error| {
            tracing::debug!(target: "blocks::realtime", "{path} failed: {e}");
            let body = serde_json::json!({ "status": 503, "error": true, "message": format!("network error: {e}"), "service": "Network" });
            TransportResponse {
                status: 503,
                headers: HashMap::from([("content-type".to_string(), "application/json".to_string())]),
                body: Some(body.to_string().into_bytes()),
            }
        };
        let resp = match b.send().await {
            Ok(r) => r,
            Err(e) => return Ok(unavailable(&req.path, e)),
        };
        let status = resp.status().as_u16();
        if matches!(status, 400 | 403) && req.path.starts_with("/v2/subscribe/") {
            self.faults.send_replace(Some(status));
        }
        let headers: HashMap<String, String> = resp
            .headers()
            .iter()
            .filter_map(|(k, v)| v.to_str().ok().map(|v| (k.to_string(), v.to_string())))
            .collect();
        let mut body = match resp.bytes().await {
            Ok(b) => b,
            Err(e) => return Ok(unavailable(&req.path, e)),
        };
        let handshake =
            req.path.starts_with("/v2/subscribe/") && req.query_parameters.get("tt").is_none_or(|t| t == "0");
        let catchup = self.catchup.lock().ok().and_then(|c| *c);
        if let (true, 200, Some(c)) = (handshake, status, catchup) {
            if let Ok(mut v) = serde_json::from_slice::<serde_json::Value>(&body) {
                let answered = v
                    .pointer("/t/t")
                    .and_then(|t| t.as_str())
                    .and_then(|t| t.parse::<u64>().ok());
                if answered.is_some_and(|a| a > c) {
                    v["t"]["t"] = serde_json::Value::String(c.to_string());
                    body = bytes::Bytes::from(v.to_string());
                }
            }
        }
        Ok(TransportResponse {
            status,
            headers,
            body: (!body.is_empty()).then(|| body.to_vec()),
        })
    }
}

type PubNub = PubNubGenericClient<HttpTransport, DeserializerSerde>;

/// How to build one realtime client.
#[derive(Clone, Debug, Default)]
pub struct RealtimeConfig {
    /// Origin with scheme, e.g. `https://ps.pndsn.com` or `http://127.0.0.1:4700`.
    pub origin: String,
    /// Subscribe key.
    pub subscribe_key: String,
    /// Publish key.
    pub publish_key: String,
    /// The client's uuid.
    pub user_id: String,
    /// Access token applied as `auth=`.
    pub token: Option<String>,
    /// Server-side filter expression on publish meta.
    pub filter: Option<String>,
    /// Presence timeout (seconds); enables heartbeats every `timeout/2 - 1` seconds.
    pub presence_timeout: Option<u64>,
}

/// A message received on a subscription.
#[derive(Debug, Clone)]
pub struct ChannelMessage {
    /// Channel it arrived on.
    pub channel: String,
    /// Publish timetoken.
    pub timetoken: u64,
    /// Publisher uuid.
    pub publisher: Option<String>,
    /// JSON payload (`Value::Null` when it was not JSON).
    pub payload: Value,
    /// Publish meta.
    pub meta: Option<Value>,
}

/// One stored message from history.
#[derive(Debug, Clone)]
pub struct HistoryEntry {
    /// Timetoken.
    pub timetoken: u64,
    /// Payload.
    pub message: Value,
}

/// One realtime client (one uuid, one token).
pub struct Realtime {
    faults: tokio::sync::watch::Sender<Option<u16>>,
    catchup: Arc<Mutex<Option<u64>>>,
    pubnub: PubNub,
    http: HttpClient,
    cfg: RealtimeConfig,
    token: Mutex<Option<String>>,
}

impl Realtime {
    /// Build a client. Must be called inside a tokio runtime (the crate spawns its event engine).
    pub fn new(cfg: RealtimeConfig, http: &HttpClient) -> Result<Arc<Self>> {
        if cfg.subscribe_key.is_empty() {
            return Err(Error::Config(
                "realtime keys not configured: subscribeKey is empty".into(),
            ));
        }
        let (faults, _) = tokio::sync::watch::channel(None);
        let catchup = Arc::new(Mutex::new(None));
        let transport = HttpTransport {
            client: http.inner().clone(),
            origin: cfg.origin.trim_end_matches('/').to_string(),
            filter: cfg.filter.clone(),
            faults: faults.clone(),
            catchup: catchup.clone(),
        };
        let mut builder = PubNubClientBuilder::with_transport(transport)
            .with_keyset(Keyset {
                subscribe_key: cfg.subscribe_key.clone(),
                publish_key: Some(cfg.publish_key.clone()).filter(|p| !p.is_empty()),
                secret_key: None,
            })
            .with_user_id(cfg.user_id.clone())
            // Linear, not Exponential: pubnub 0.9's exponential delay computes `attempt - 1` with
            // attempt 0 and panics (debug) or overflows (release) on the first retry.
            .with_retry_configuration(RequestRetryConfiguration::Linear {
                delay: 1,
                max_retry: 250,
                excluded_endpoints: None,
            });
        if let Some(t) = cfg.presence_timeout {
            builder = builder.with_heartbeat_value(t);
        }
        let pubnub = builder
            .build()
            .map_err(|e| Error::Realtime(format!("building the realtime client: {e}")))?;
        if let Some(t) = &cfg.token {
            pubnub.set_token(t);
        }
        let token = Mutex::new(cfg.token.clone());
        Ok(Arc::new(Realtime {
            faults,
            catchup,
            pubnub,
            http: http.clone(),
            cfg,
            token,
        }))
    }

    /// The client's uuid.
    pub fn user_id(&self) -> &str {
        &self.cfg.user_id
    }

    /// Subscribe key.
    pub fn subscribe_key(&self) -> &str {
        &self.cfg.subscribe_key
    }

    /// The configuration this client was built with.
    pub fn config(&self) -> &RealtimeConfig {
        &self.cfg
    }

    /// The HTTP client.
    pub fn http(&self) -> &HttpClient {
        &self.http
    }

    /// Publish (POST) over plain REST and return the raw answer (status, body). Used where the
    /// error body matters (the stream-setup handshake answers with a 403 carrying its result).
    pub async fn publish_raw(&self, channel: &str, message: &Value, store: bool) -> Result<(u16, Value)> {
        let path = format!(
            "/publish/{}/{}/0/{}/0",
            self.cfg.publish_key,
            self.cfg.subscribe_key,
            encode_path(channel)
        );
        let mut q = self.common_query();
        q.push(("store", if store { "1" } else { "0" }.to_string()));
        let resp = self
            .http
            .inner()
            .post(self.url(&path))
            .query(&q)
            .header("content-type", "application/json")
            .body(message.to_string())
            .timeout(Duration::from_secs(15))
            .send()
            .await
            .map_err(|e| Error::transport(format!("publish to {channel}"), e))?;
        let status = resp.status().as_u16();
        let body = resp.json::<Value>().await.unwrap_or(Value::Null);
        Ok((status, body))
    }

    /// Watch for fatal subscribe answers (HTTP 403 access denied, 400 bad request).
    pub fn faults(&self) -> tokio::sync::watch::Receiver<Option<u16>> {
        self.faults.subscribe()
    }

    /// Replace the access token.
    pub fn set_token(&self, token: &str) {
        self.pubnub.set_token(token);
        if let Ok(mut t) = self.token.lock() {
            *t = Some(token.to_string());
        }
    }

    fn token(&self) -> Option<String> {
        self.token.lock().ok().and_then(|t| t.clone())
    }

    /// Publish (POST) a JSON message; returns its timetoken.
    pub async fn publish(
        &self,
        channel: &str,
        message: Value,
        meta: Option<HashMap<String, String>>,
        store: bool,
    ) -> Result<u64> {
        let mut b = self
            .pubnub
            .publish_message(message)
            .channel(channel.to_string())
            .store(store)
            .use_post(true);
        if let Some(m) = meta {
            b = b.meta(m);
        }
        let r = b
            .execute()
            .await
            .map_err(|e| Error::Realtime(format!("publish to {channel} failed: {e}")))?;
        r.timetoken
            .parse::<u64>()
            .map_err(|_| Error::Protocol(format!("publish answered a bad timetoken {:?}", r.timetoken)))
    }

    /// Subscribe to channels from `cursor` (a 17-digit timetoken; `None` = from now). The
    /// subscription lives as long as the returned stream.
    pub fn subscribe(
        &self,
        channels: &[String],
        cursor: Option<u64>,
    ) -> impl Stream<Item = ChannelMessage> + Send + 'static {
        let sub = self.pubnub.subscription(SubscriptionParams {
            channels: Some(channels),
            channel_groups: None,
            options: None,
        });
        if let Ok(mut c) = self.catchup.lock() {
            *c = cursor;
        }
        match cursor {
            Some(tt) => sub.subscribe_with_timetoken(tt.to_string()),
            None => sub.subscribe(),
        }
        let stream = sub.stream();
        futures::stream::unfold((sub, stream), |(sub, mut stream)| async move {
            loop {
                match stream.next().await? {
                    Update::Message(m) | Update::Signal(m) => {
                        let payload = serde_json::from_slice(&m.data).unwrap_or(Value::Null);
                        let msg = ChannelMessage {
                            channel: m.channel.clone(),
                            timetoken: m.timestamp as u64,
                            publisher: m.sender.clone(),
                            payload,
                            meta: m.user_metadata.clone(),
                        };
                        return Some((msg, (sub, stream)));
                    }
                    _ => continue,
                }
            }
        })
    }

    /// Write presence state on a channel (plain REST: the crate's set-state future is not `Send`).
    pub async fn set_state(&self, channel: &str, state: Value) -> Result<()> {
        let path = format!(
            "/v2/presence/sub-key/{}/channel/{}/uuid/{}/data",
            self.cfg.subscribe_key,
            encode_path(channel),
            encode_path(&self.cfg.user_id)
        );
        let mut q = self.common_query();
        q.push(("state", state.to_string()));
        let resp = self
            .http
            .inner()
            .get(self.url(&path))
            .query(&q)
            .timeout(Duration::from_secs(15))
            .send()
            .await
            .map_err(|e| Error::transport(format!("set-state on {channel}"), e))?;
        let status = resp.status().as_u16();
        if status != 200 {
            let body = crate::http::error_body(resp).await;
            return Err(Error::Http {
                context: format!("set-state on {channel}"),
                status,
                body,
            });
        }
        Ok(())
    }

    /// Stop every subscription (sends `leave`) and the heartbeat loop.
    pub fn close(&self) {
        self.pubnub.unsubscribe_all();
        self.pubnub.terminate();
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.cfg.origin.trim_end_matches('/'))
    }

    fn common_query(&self) -> Vec<(&'static str, String)> {
        let mut q = vec![
            ("uuid", self.cfg.user_id.clone()),
            ("pnsdk", concat!("Blocks-Rust/", env!("CARGO_PKG_VERSION")).to_string()),
        ];
        if let Some(t) = self.token() {
            q.push(("auth", t));
        }
        q
    }

    /// `GET /time/0`.
    pub async fn time(&self) -> Result<u64> {
        let resp = self
            .http
            .inner()
            .get(self.url("/time/0"))
            .timeout(Duration::from_secs(15))
            .send()
            .await
            .map_err(|e| Error::transport("time", e))?;
        let v: Value = resp.json().await.map_err(|e| Error::transport("time", e))?;
        v.get(0)
            .and_then(|t| t.as_u64().or_else(|| t.as_str().and_then(|s| s.parse().ok())))
            .ok_or_else(|| Error::Protocol(format!("time: unexpected answer {v}")))
    }

    /// The whole stored history of a channel, oldest first (pages of 100, newest page first).
    pub async fn history(&self, channel: &str) -> Result<Vec<HistoryEntry>> {
        let mut all: Vec<HistoryEntry> = Vec::new();
        let mut start: Option<u64> = None;
        let path = format!(
            "/v3/history/sub-key/{}/channel/{}",
            self.cfg.subscribe_key,
            encode_path(channel)
        );
        loop {
            let mut q = self.common_query();
            q.push(("max", "100".into()));
            if let Some(s) = start {
                q.push(("start", s.to_string()));
            }
            let resp = self
                .http
                .inner()
                .get(self.url(&path))
                .query(&q)
                .timeout(Duration::from_secs(15))
                .send()
                .await
                .map_err(|e| Error::transport("history", e))?;
            let status = resp.status().as_u16();
            if status != 200 {
                let body = crate::http::error_body(resp).await;
                return Err(Error::Http {
                    context: format!("history of {channel}"),
                    status,
                    body,
                });
            }
            let v: Value = resp.json().await.map_err(|e| Error::transport("history", e))?;
            let page: Vec<HistoryEntry> = v
                .pointer("/channels")
                .and_then(|c| c.get(channel))
                .and_then(Value::as_array)
                .map(|arr| {
                    arr.iter()
                        .filter_map(|e| {
                            let tt = e
                                .get("timetoken")
                                .and_then(|t| t.as_str().and_then(|s| s.parse().ok()).or_else(|| t.as_u64()))?;
                            Some(HistoryEntry {
                                timetoken: tt,
                                message: e.get("message").cloned().unwrap_or(Value::Null),
                            })
                        })
                        .collect()
                })
                .unwrap_or_default();
            let n = page.len();
            start = page.iter().map(|e| e.timetoken).min();
            all.extend(page);
            if n < 100 || start.is_none() {
                break;
            }
        }
        all.sort_by_key(|e| e.timetoken);
        all.dedup_by_key(|e| e.timetoken);
        Ok(all)
    }
}

impl Drop for Realtime {
    fn drop(&mut self) {
        self.close();
    }
}

/// Percent-encode one path segment.
pub fn encode_path(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
