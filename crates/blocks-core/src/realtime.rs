//! The realtime plane: publish through the `pubnub` crate over our own reqwest + rustls transport
//! (any origin, no OpenSSL); subscribe, heartbeat, leave, time, history and set-state as plain
//! PubNub REST calls.
//!
//! Why subscribe is not the crate's: pubnub 0.9's event-engine subscription lost updates under
//! load (bench/stress.mjs: 3,000 tasks, 64 concurrent callers, one instance — a few StartTask
//! messages present in the server's cache for the subscriber's cursor were never yielded by the
//! crate's stream), it never sends `filter-expr`, gives up for good on a dropped connection, and
//! stores the handshake cursor in a way that drops catch-up messages. The long-poll loop below is
//! the classic PubNub protocol (`tt`/`tr` cursor, `filter-expr`, `heartbeat`), with reconnect
//! (backoff 0.5 s doubling to 5 s; forever for an agent's control client, up to
//! [`SHORT_LIVED_GIVE_UP`] of continuous failure for sessions and stream readers, reported through
//! [`Realtime::gave_up`]), fatal 400/403 reported through [`Realtime::faults`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::Stream;
use pubnub::core::{PubNubError, Transport, TransportMethod, TransportRequest, TransportResponse};
use pubnub::providers::deserialization_serde::DeserializerSerde;
use pubnub::{Keyset, PubNubClientBuilder, PubNubGenericClient};
use serde_json::Value;
use tokio::sync::{mpsc, watch};

use crate::error::{Error, Result};
use crate::http::HttpClient;

/// `pubnub::core::Transport` on the engine's reqwest client (used for publish).
#[derive(Clone)]
pub struct HttpTransport {
    client: reqwest::Client,
    origin: String,
}

/// How long a publish keeps retrying while the network is unreachable or answers 429/5xx.
const PUBLISH_RETRY_FOR: Duration = Duration::from_secs(60);

#[async_trait::async_trait]
impl Transport for HttpTransport {
    /// One request; a publish is retried (backoff 0.1 s doubling to 2 s, for up to 60 s) when the
    /// connection cannot be made or the server answers 429/5xx: an agent's events survive a
    /// network restart. An ambiguous failure (the connection broke after the request was sent)
    /// is not retried, so a publish is never stored twice.
    async fn send(&self, req: TransportRequest) -> std::result::Result<TransportResponse, PubNubError> {
        let retry = req.path.starts_with("/publish/");
        let started = std::time::Instant::now();
        let mut delay = Duration::from_millis(100);
        loop {
            let attempt = self.send_once(&req).await;
            let again = match &attempt {
                Ok(r) => r.status == 429 || r.status >= 500,
                Err((_, connect)) => *connect,
            };
            if !(retry && again && started.elapsed() < PUBLISH_RETRY_FOR) {
                return attempt.map_err(|(e, _)| e);
            }
            tracing::debug!(target: "blocks::realtime", "publish failed, retrying in {delay:?}");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(2));
        }
    }
}

impl HttpTransport {
    /// One attempt; an error says whether the connection could not be made at all.
    async fn send_once(&self, req: &TransportRequest) -> std::result::Result<TransportResponse, (PubNubError, bool)> {
        let url = format!("{}{}", self.origin, req.path);
        let mut b = match req.method {
            TransportMethod::Get => self.client.get(&url),
            TransportMethod::Post => self.client.post(&url).body(req.body.clone().unwrap_or_default()),
            TransportMethod::Delete => self.client.delete(&url),
        };
        b = b.query(&req.query_parameters);
        for (k, v) in &req.headers {
            b = b.header(k, v);
        }
        if req.timeout > 0 {
            b = b.timeout(Duration::from_secs(req.timeout));
        }
        let transport = |e: reqwest::Error| {
            let connect = e.is_connect();
            (
                PubNubError::Transport {
                    details: format!("{}: {e}", req.path),
                    response: None,
                },
                connect,
            )
        };
        let resp = b.send().await.map_err(transport)?;
        let status = resp.status().as_u16();
        let headers: HashMap<String, String> = resp
            .headers()
            .iter()
            .filter_map(|(k, v)| v.to_str().ok().map(|v| (k.to_string(), v.to_string())))
            .collect();
        let body = resp.bytes().await.map_err(transport)?;
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
    /// Send a presence `leave` for the subscribed channels when the subscription ends (the spec's
    /// control client and stream readers do; task-status sessions do not).
    pub leave_on_close: bool,
    /// Stop reconnecting once the subscription has failed without a break for this long
    /// (short-lived clients: task sessions, stream readers). `None`: never give up (an agent's
    /// control client).
    pub give_up_after: Option<Duration>,
}

/// How long a task session or stream reader keeps reconnecting through an outage: the realtime
/// plane's replay window (what it missed beyond that is gone from the live path anyway).
pub const SHORT_LIVED_GIVE_UP: Duration = Duration::from_secs(600);

/// The state of a client's subscriptions.
#[derive(Debug, Clone, PartialEq)]
pub enum Link {
    /// Long-polls are answered.
    Connected,
    /// Long-polls fail and are being retried: `category` is `network_down`, `network_issues`,
    /// `timeout` or `malformed_response`.
    Degraded {
        /// The kind of failure.
        category: String,
        /// What failed, without the URL (it carries the token).
        error: String,
    },
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
    shared: Arc<Shared>,
    pubnub: std::sync::OnceLock<PubNub>,
    /// Subscription loops, awaited by [`Realtime::shutdown`].
    loops: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

/// What the subscription and heartbeat loops share with their client.
struct Shared {
    http: HttpClient,
    cfg: RealtimeConfig,
    token: Mutex<Option<String>>,
    faults: watch::Sender<Option<u16>>,
    /// Why a subscription stopped reconnecting (its `give_up_after` passed).
    gave_up: watch::Sender<Option<String>>,
    /// Whether the subscription is getting through.
    link: watch::Sender<Link>,
    closed: watch::Sender<bool>,
    /// Presence state per channel, echoed in every heartbeat.
    state: Mutex<serde_json::Map<String, Value>>,
}

impl Realtime {
    /// Build a client. Must be called inside a tokio runtime.
    pub fn new(cfg: RealtimeConfig, http: &HttpClient) -> Result<Arc<Self>> {
        if cfg.subscribe_key.is_empty() {
            return Err(Error::Config(
                "realtime keys not configured: subscribeKey is empty".into(),
            ));
        }
        let shared = Arc::new(Shared {
            http: http.clone(),
            token: Mutex::new(cfg.token.clone()),
            cfg,
            faults: watch::channel(None).0,
            gave_up: watch::channel(None).0,
            link: watch::channel(Link::Connected).0,
            closed: watch::channel(false).0,
            state: Mutex::new(serde_json::Map::new()),
        });
        Ok(Arc::new(Realtime {
            shared,
            pubnub: std::sync::OnceLock::new(),
            loops: Mutex::new(Vec::new()),
        }))
    }

    /// The pubnub client (publish), built on first use: most clients (task sessions, stream
    /// readers) never publish, and building one per task was measurable under load.
    fn pubnub(&self) -> Result<&PubNub> {
        if let Some(p) = self.pubnub.get() {
            return Ok(p);
        }
        let cfg = &self.shared.cfg;
        let transport = HttpTransport {
            client: self.shared.http.inner().clone(),
            origin: cfg.origin.trim_end_matches('/').to_string(),
        };
        let pubnub = PubNubClientBuilder::with_transport(transport)
            .with_keyset(Keyset {
                subscribe_key: cfg.subscribe_key.clone(),
                publish_key: Some(cfg.publish_key.clone()).filter(|p| !p.is_empty()),
                secret_key: None,
            })
            .with_user_id(cfg.user_id.clone())
            .build()
            .map_err(|e| Error::Realtime(format!("building the realtime client: {e}")))?;
        let client = self.pubnub.get_or_init(|| pubnub);
        if let Some(t) = self.shared.token() {
            client.set_token(&t);
        }
        Ok(client)
    }

    /// The client's uuid.
    pub fn user_id(&self) -> &str {
        &self.shared.cfg.user_id
    }

    /// Subscribe key.
    pub fn subscribe_key(&self) -> &str {
        &self.shared.cfg.subscribe_key
    }

    /// The configuration this client was built with.
    pub fn config(&self) -> &RealtimeConfig {
        &self.shared.cfg
    }

    /// The HTTP client.
    pub fn http(&self) -> &HttpClient {
        &self.shared.http
    }

    /// Publish (POST) over plain REST and return the raw answer (status, body). Used where the
    /// error body matters (the stream-setup handshake answers with a 403 carrying its result).
    pub async fn publish_raw(&self, channel: &str, message: &Value, store: bool) -> Result<(u16, Value)> {
        let path = format!(
            "/publish/{}/{}/0/{}/0",
            self.shared.cfg.publish_key,
            self.shared.cfg.subscribe_key,
            encode_path(channel)
        );
        let mut q = self.shared.common_query();
        q.push(("store", if store { "1" } else { "0" }.to_string()));
        let resp = self
            .shared
            .http
            .inner()
            .post(self.shared.url(&path))
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

    /// Watch for a subscription that stopped reconnecting (`give_up_after` of continuous failure).
    pub fn gave_up(&self) -> tokio::sync::watch::Receiver<Option<String>> {
        self.shared.gave_up.subscribe()
    }

    /// Watch the subscriptions' link: `Degraded` from the first failed long-poll of an outage,
    /// `Connected` again once one gets through (LOG-07, STRM-16).
    pub fn link(&self) -> tokio::sync::watch::Receiver<Link> {
        self.shared.link.subscribe()
    }

    /// Forget a reported fault (after new credentials were applied).
    pub fn clear_faults(&self) {
        self.shared.faults.send_replace(None);
    }

    /// Watch for fatal subscribe answers (HTTP 403 access denied, 400 bad request).
    pub fn faults(&self) -> tokio::sync::watch::Receiver<Option<u16>> {
        self.shared.faults.subscribe()
    }

    /// Replace the access token.
    pub fn set_token(&self, token: &str) {
        if let Ok(mut t) = self.shared.token.lock() {
            *t = Some(token.to_string());
        }
        if let Some(p) = self.pubnub.get() {
            p.set_token(token);
        }
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
            .pubnub()?
            .publish_message(message)
            .channel(channel.to_string())
            .store(store)
            .use_post(true);
        if let Some(m) = meta {
            b = b.meta(m);
        }
        let r = b.execute().await.map_err(|e| match e {
            // a refusal (bad token, no grant, bad request) is an HTTP answer: callers decide by
            // its status whether trying again can help
            pubnub::core::PubNubError::API { status, message, .. } if (400..500).contains(&status) => Error::Http {
                context: format!("publish to {channel} refused"),
                status,
                body: message,
            },
            other => Error::Realtime(format!("publish to {channel} failed: {other}")),
        })?;
        r.timetoken
            .parse::<u64>()
            .map_err(|_| Error::Protocol(format!("publish answered a bad timetoken {:?}", r.timetoken)))
    }

    /// Subscribe to channels from `cursor` (a 17-digit timetoken; `None` = from now). The
    /// subscription lives as long as the returned stream (or until [`Realtime::close`]).
    ///
    /// Messages are yielded in the server's order; a network failure or a 5xx/429 answer is
    /// retried from the same cursor, so nothing published meanwhile is lost while the server still
    /// holds it. A 400/403 answer ends the stream and is reported through [`Realtime::faults`].
    pub fn subscribe(
        &self,
        channels: &[String],
        cursor: Option<u64>,
    ) -> impl Stream<Item = ChannelMessage> + Send + 'static {
        self.subscribe_until(channels, cursor, |_| false)
    }

    /// [`Realtime::subscribe`] that ends by itself after delivering a message for which `last`
    /// is true (a task's terminal): no further long-poll is started, so no request is abandoned
    /// mid-flight and its connection goes back to the pool.
    pub fn subscribe_until(
        &self,
        channels: &[String],
        cursor: Option<u64>,
        last: impl Fn(&ChannelMessage) -> bool + Send + 'static,
    ) -> impl Stream<Item = ChannelMessage> + Send + 'static {
        let (tx, rx) = mpsc::channel::<ChannelMessage>(1024);
        let task = tokio::spawn(subscribe_loop(self.shared.clone(), channels.to_vec(), cursor, tx, last));
        if let Ok(mut l) = self.loops.lock() {
            l.retain(|h| !h.is_finished());
            l.push(task);
        }
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) })
    }

    /// Write presence state on a channel (plain REST: the crate's set-state future is not `Send`).
    pub async fn set_state(&self, channel: &str, state: Value) -> Result<()> {
        let path = format!(
            "/v2/presence/sub-key/{}/channel/{}/uuid/{}/data",
            self.shared.cfg.subscribe_key,
            encode_path(channel),
            encode_path(&self.shared.cfg.user_id)
        );
        if let Ok(mut s) = self.shared.state.lock() {
            s.insert(channel.to_string(), state.clone());
        }
        let mut q = self.shared.common_query();
        q.push(("state", state.to_string()));
        let resp = self
            .shared
            .http
            .inner()
            .get(self.shared.url(&path))
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

    /// Stop every subscription and its heartbeats; where configured, `leave` is sent in the
    /// background. Idempotent.
    pub fn close(&self) {
        self.shared.closed.send_replace(true);
    }

    /// [`Realtime::close`], then wait (at most 5 s) until the subscriptions have ended and their
    /// `leave` has been answered.
    pub async fn shutdown(&self) {
        self.close();
        let loops: Vec<_> = self.loops.lock().map(|mut l| l.drain(..).collect()).unwrap_or_default();
        let _ = tokio::time::timeout(Duration::from_secs(5), futures::future::join_all(loops)).await;
    }

    /// `GET /time/0`.
    pub async fn time(&self) -> Result<u64> {
        let resp = self
            .shared
            .http
            .inner()
            .get(self.shared.url("/time/0"))
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
            self.shared.cfg.subscribe_key,
            encode_path(channel)
        );
        loop {
            let mut q = self.shared.common_query();
            q.push(("max", "100".into()));
            if let Some(s) = start {
                q.push(("start", s.to_string()));
            }
            let resp = self
                .shared
                .http
                .inner()
                .get(self.shared.url(&path))
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

impl Shared {
    fn token(&self) -> Option<String> {
        self.token.lock().ok().and_then(|t| t.clone())
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
}

impl Drop for Realtime {
    fn drop(&mut self) {
        self.close();
    }
}

/// Aborts a spawned task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One subscription: the classic PubNub long-poll loop.
async fn subscribe_loop(
    s: Arc<Shared>,
    channels: Vec<String>,
    cursor: Option<u64>,
    tx: mpsc::Sender<ChannelMessage>,
    last: impl Fn(&ChannelMessage) -> bool + Send + 'static,
) {
    let list = channels.iter().map(|c| encode_path(c)).collect::<Vec<_>>().join(",");
    let url = s.url(&format!("/v2/subscribe/{}/{list}/0", s.cfg.subscribe_key));
    let mut closed = s.closed.subscribe();
    let _heartbeats = s
        .cfg
        .presence_timeout
        .map(|t| AbortOnDrop(tokio::spawn(heartbeat_loop(s.clone(), list.clone(), t))));
    let (mut tt, mut tr): (u64, Option<String>) = (cursor.unwrap_or(0), None);
    let mut failures: u32 = 0;
    let mut failing_since: Option<std::time::Instant> = None;
    'poll: while !*closed.borrow() {
        if failures > 0 && *s.link.borrow() != Link::Connected {
            // a long-poll that gets through may be held for minutes: probe the link with a time
            // request so the recovery is known (and reported) as soon as the network is back
            let probe = s
                .http
                .inner()
                .get(s.url("/time/0"))
                .query(&s.common_query())
                .timeout(Duration::from_secs(10))
                .send();
            let ok = tokio::select! {
                r = probe => r.is_ok_and(|r| r.status().is_success()),
                _ = tx.closed() => break,
                _ = closed.changed() => break,
            };
            if ok {
                tracing::info!(target: "blocks::realtime", "subscription to {list} reconnected after {failures} failed attempt(s)");
                s.link.send_replace(Link::Connected);
            }
        }
        let mut q = s.common_query();
        q.push(("tt", tt.to_string()));
        if let Some(r) = &tr {
            q.push(("tr", r.clone()));
        }
        if let Some(f) = &s.cfg.filter {
            q.push(("filter-expr", f.clone()));
        }
        if let Some(t) = s.cfg.presence_timeout {
            q.push(("heartbeat", t.to_string()));
        }
        let req = s.http.inner().get(&url).query(&q).timeout(s.http.long_poll_timeout());
        let answer = async {
            let resp = req.send().await?;
            let status = resp.status().as_u16();
            resp.bytes().await.map(|b| (status, b))
        };
        let answer = tokio::select! {
            a = answer => a,
            _ = tx.closed() => break,
            _ = closed.changed() => break,
        };
        let mut category = "malformed_response";
        let problem = match answer {
            Ok((200, body)) => match parse_subscribe(&body) {
                Ok((next, region, messages)) => {
                    if failures > 0 {
                        if *s.link.borrow() != Link::Connected {
                            tracing::info!(target: "blocks::realtime", "subscription to {list} reconnected after {failures} failed attempt(s)");
                            s.link.send_replace(Link::Connected);
                        }
                        failures = 0;
                        failing_since = None;
                    }
                    // A handshake (tt=0) only yields the cursor; a cursor of 0 would restart it.
                    if next != 0 {
                        tt = next;
                    }
                    tr = region;
                    for m in messages {
                        let done = last(&m);
                        if tx.send(m).await.is_err() || done {
                            break 'poll;
                        }
                    }
                    continue;
                }
                Err(e) => e,
            },
            Ok((status @ (400 | 403), _body)) => {
                // the server's body names the provider and its services: log a neutral line
                let why = if status == 403 { "access denied" } else { "bad request" };
                tracing::warn!(target: "blocks::realtime", "subscription to {list} refused by the realtime service (HTTP {status}: {why})");
                s.faults.send_replace(Some(status));
                break;
            }
            Ok((status, body)) => {
                category = "network_issues";
                format!("HTTP {status}: {}", String::from_utf8_lossy(&body))
            }
            Err(e) => {
                category = if e.is_timeout() {
                    "timeout"
                } else if e.is_connect() {
                    "network_down"
                } else {
                    "network_issues"
                };
                format!("network error: {}", e.without_url())
            }
        };
        failures = failures.saturating_add(1);
        if *s.link.borrow() == Link::Connected {
            s.link.send_replace(Link::Degraded {
                category: category.to_string(),
                error: problem.clone(),
            });
        }
        let since = *failing_since.get_or_insert_with(std::time::Instant::now);
        if s.cfg.give_up_after.is_some_and(|limit| since.elapsed() >= limit) {
            tracing::warn!(target: "blocks::realtime", "subscription to {list} gave up after {failures} failed attempt(s) over {:?} ({problem})", since.elapsed());
            s.gave_up.send_replace(Some(format!(
                "{failures} attempts over {}s failed; last: {problem}",
                since.elapsed().as_secs()
            )));
            break;
        }
        let delay = Duration::from_millis(500u64.saturating_mul(1 << failures.min(4)).min(5_000));
        if failures == 1 {
            tracing::warn!(target: "blocks::realtime", "subscription to {list} lost ({problem}); reconnecting");
        } else {
            tracing::debug!(target: "blocks::realtime", "subscription to {list}: attempt {failures} failed ({problem}); next in {delay:?}");
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = tx.closed() => break,
            _ = closed.changed() => break,
        }
    }
    if s.cfg.leave_on_close {
        let url = s.url(&format!(
            "/v2/presence/sub-key/{}/channel/{list}/leave",
            s.cfg.subscribe_key
        ));
        let sent = s
            .http
            .inner()
            .get(&url)
            .query(&s.common_query())
            .timeout(Duration::from_secs(5))
            .send()
            .await;
        if let Err(e) = sent {
            tracing::debug!(target: "blocks::realtime", "leave {list} failed: {}", e.without_url());
        }
    }
}

/// Presence heartbeats every `timeout/2 - 1` seconds (at least 1 s), echoing the presence state.
async fn heartbeat_loop(s: Arc<Shared>, list: String, timeout: u64) {
    let url = s.url(&format!(
        "/v2/presence/sub-key/{}/channel/{list}/heartbeat",
        s.cfg.subscribe_key
    ));
    let every = Duration::from_secs((timeout / 2).saturating_sub(1).max(1));
    loop {
        tokio::time::sleep(every).await;
        let mut q = s.common_query();
        q.push(("heartbeat", timeout.to_string()));
        let state = s.state.lock().map(|m| m.clone()).unwrap_or_default();
        if !state.is_empty() {
            q.push(("state", Value::Object(state).to_string()));
        }
        match s
            .http
            .inner()
            .get(&url)
            .query(&q)
            .timeout(Duration::from_secs(15))
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => {}
            Ok(r) => tracing::debug!(target: "blocks::realtime", "heartbeat on {list}: HTTP {}", r.status()),
            Err(e) => tracing::debug!(target: "blocks::realtime", "heartbeat on {list} failed: {}", e.without_url()),
        }
    }
}

/// Parse a subscribe answer: next cursor, region, messages (signals included; presence and
/// object events skipped).
fn parse_subscribe(body: &[u8]) -> std::result::Result<(u64, Option<String>, Vec<ChannelMessage>), String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("subscribe answer is not JSON: {e}"))?;
    let t = v.get("t").ok_or("subscribe answer without a cursor (t)")?;
    let next = match t.get("t") {
        Some(Value::String(s)) => s.parse::<u64>().map_err(|_| format!("bad cursor {s:?}"))?,
        Some(Value::Number(n)) => n.as_u64().ok_or("bad cursor")?,
        _ => return Err("subscribe answer without t.t".into()),
    };
    let region = t.get("r").and_then(|r| match r {
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) => Some(s.clone()),
        _ => None,
    });
    let envelopes = v
        .get("m")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let mut out = Vec::with_capacity(envelopes.len());
    for e in envelopes {
        // e: 0/absent message, 1 signal, 2 objects, 3 message action, 4 file
        if !matches!(e.get("e").and_then(Value::as_u64), None | Some(0) | Some(1)) {
            continue;
        }
        let Some(channel) = e.get("c").and_then(Value::as_str) else {
            continue;
        };
        if channel.ends_with("-pnpres") {
            continue;
        }
        let timetoken = e
            .pointer("/p/t")
            .and_then(|t| t.as_str().and_then(|s| s.parse().ok()).or_else(|| t.as_u64()))
            .unwrap_or(0);
        out.push(ChannelMessage {
            channel: channel.to_string(),
            timetoken,
            publisher: e.get("i").and_then(Value::as_str).map(str::to_string),
            payload: e.get("d").cloned().unwrap_or(Value::Null),
            meta: e.get("u").cloned().filter(|m| !m.is_null()),
        });
    }
    Ok((next, region, out))
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
