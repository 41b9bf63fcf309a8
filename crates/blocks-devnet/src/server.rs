//! HTTP front: routes every request by its path segments (the PubNub REST paths carry channel
//! lists and URL-encoded JSON in the path) to the realtime plane or the backend API.

use std::collections::HashMap;
use std::io::Read;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, Response, StatusCode, Uri};
use axum::Router;
use percent_encoding::percent_decode_str;
use serde_json::{json, Value};

use crate::filter::Filter;
use crate::Net;

/// Largest request body accepted.
const MAX_BODY: usize = 64 * 1024 * 1024;

pub(crate) fn router(net: Arc<Net>) -> Router {
    Router::new().fallback(handle).with_state(net)
}

/// JSON response.
pub(crate) fn json_response(status: u16, body: &Value) -> Response<Body> {
    Response::builder()
        .status(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap_or_else(|_| Response::new(Body::empty()))
}

fn pn_error(status: u16, message: &str) -> Response<Body> {
    json_response(
        status,
        &json!({ "status": status, "error": true, "message": message, "service": "Blocks Devnet" }),
    )
}

/// A parsed request.
pub(crate) struct Req {
    pub method: Method,
    pub segments: Vec<String>,
    pub query: HashMap<String, String>,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Req {
    pub fn q(&self, k: &str) -> Option<&str> {
        self.query.get(k).map(String::as_str)
    }
    pub fn bearer(&self) -> Option<String> {
        let h = self.headers.get("authorization")?.to_str().ok()?;
        let t = h
            .strip_prefix("Bearer ")
            .or_else(|| h.strip_prefix("bearer "))
            .unwrap_or(h)
            .trim();
        (!t.is_empty()).then(|| t.to_string())
    }
    pub fn json(&self) -> Result<Value, String> {
        if self.body.is_empty() {
            return Ok(json!({}));
        }
        serde_json::from_slice(&self.body).map_err(|e| format!("request body is not JSON: {e}"))
    }
}

/// Percent-encode one path segment.
pub(crate) fn encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

fn decode(s: &str) -> String {
    percent_decode_str(s).decode_utf8_lossy().into_owned()
}

fn parse_query(q: Option<&str>) -> HashMap<String, String> {
    let mut m = HashMap::new();
    for pair in q.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        m.insert(decode(&k.replace('+', " ")), decode(&v.replace('+', " ")));
    }
    m
}

fn inflate(headers: &HeaderMap, body: Bytes) -> Result<Bytes, String> {
    let enc = headers
        .get("content-encoding")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let mut out = Vec::new();
    match enc.as_str() {
        "deflate" => {
            if flate2::read::ZlibDecoder::new(&body[..]).read_to_end(&mut out).is_err() {
                out.clear();
                flate2::read::DeflateDecoder::new(&body[..])
                    .read_to_end(&mut out)
                    .map_err(|e| format!("bad deflate body: {e}"))?;
            }
            Ok(Bytes::from(out))
        }
        "gzip" => {
            flate2::read::GzDecoder::new(&body[..])
                .read_to_end(&mut out)
                .map_err(|e| format!("bad gzip body: {e}"))?;
            Ok(Bytes::from(out))
        }
        _ => Ok(body),
    }
}

async fn handle(
    State(net): State<Arc<Net>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response<Body> {
    // storage is streamed, never buffered
    match (&method, uri.path()) {
        (&Method::POST, "/storage/upload") => {
            tracing::debug!(target: "blocks::devnet", "POST {uri}");
            return crate::files::storage_upload(&net, &headers, body).await;
        }
        (&Method::GET, p) if p.starts_with("/storage/blob/") => {
            tracing::debug!(target: "blocks::devnet", "GET {uri}");
            let id = p.trim_start_matches("/storage/blob/").split('/').next().unwrap_or("");
            let q = parse_query(uri.query());
            return crate::files::blob(&net, &decode(id), q.get("key").map(String::as_str).unwrap_or("")).await;
        }
        _ => {}
    }
    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(e) => return pn_error(413, &format!("request body too large or unreadable: {e}")),
    };
    let body = match inflate(&headers, body) {
        Ok(b) => b,
        Err(e) => return pn_error(400, &e),
    };
    let segments: Vec<String> = uri.path().split('/').skip(1).map(decode).collect();
    let req = Req {
        method,
        segments,
        query: parse_query(uri.query()),
        headers,
        body,
    };
    tracing::debug!(target: "blocks::devnet", "{} {}", req.method, uri);
    let seg: Vec<&str> = req.segments.iter().map(String::as_str).collect();
    match seg.as_slice() {
        ["publish", pk, sk, _, channel, _, rest @ ..] => publish(&net, &req, pk, sk, channel, rest),
        ["v2", "subscribe", sk, channels, ..] => subscribe(&net, &req, sk, channels).await,
        ["v1", "files", sk, "channels", channel, "files", id, name] if req.method == Method::GET => {
            if !Net::is_known_sub_key(sk) {
                return pn_error(400, &format!("unknown subscribe key {sk:?}"));
            }
            crate::files::file_url(&net, &req, channel, id, name)
        }
        ["v2", "presence", "sub-key" | "sub_key", sk, "channel", channels, rest @ ..] => {
            presence(&net, &req, sk, channels, rest)
        }
        ["time", "0"] => json_response(200, &json!([net.rt.current_tt()])),
        ["v3", "history", "sub-key", sk, "channel", channel] => history(&net, &req, sk, channel),
        _ => crate::backend::handle(&net, &req).await,
    }
}

/// What a request does with a channel.
#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Op {
    Read,
    Write,
}

/// Channel access rules (the devnet mints its own tokens; SDKs treat them as opaque):
///
/// | channel | read (subscribe, history, files) | write (publish) |
/// |---|---|---|
/// | `u.{org}.{task}` | the task's read token (T4) or write token (T2) | T2; the control token of an instance of the task's agent (admission failures) |
/// | `setup.{org}.{task}` | T2 of the task | T2 of the task |
/// | `agent.{id}.control` | that channel's control token | that channel's control token |
/// | `stream.{agent}.{id}` | that stream's token | that stream's token |
/// | anything else | open | open |
///
/// The devnet's service token (`Devnet::service_token`, the backend's secret-key stand-in) passes
/// every rule. Expired or unknown tokens pass none.
pub(crate) fn allowed(net: &Net, auth: &str, channel: &str, op: Op) -> bool {
    use crate::state::TokenKind as K;
    let r = net.records();
    let kind = r.token(auth).map(|t| &t.kind);
    if matches!(kind, Some(K::Service)) {
        return true;
    }
    if let Some(rest) = channel.strip_prefix("u.") {
        return match kind {
            Some(K::Read(c)) => c == channel && op == Op::Read,
            Some(K::Write(c)) => c == channel,
            Some(K::Control(cc)) if op == Op::Write => {
                let task = rest.split('.').nth(1).and_then(|id| r.tasks.get(id));
                match task {
                    // an instance of the task's agent (a StartTask the network never sent has no task)
                    Some(t) => r
                        .instances
                        .values()
                        .any(|i| i.control_channel == *cc && i.agent == t.agent),
                    None => r.instances.values().any(|i| i.control_channel == *cc),
                }
            }
            _ => false,
        };
    }
    if let Some(rest) = channel.strip_prefix("setup.") {
        let task_channel = format!("u.{rest}");
        return matches!(kind, Some(K::Write(c)) if *c == task_channel);
    }
    if channel.starts_with("agent.") && channel.ends_with(".control") {
        return matches!(kind, Some(K::Control(c)) if c == channel);
    }
    if channel.starts_with("stream.") {
        return matches!(kind, Some(K::Stream(c)) if c == channel);
    }
    true
}

/// The spec's 403 answer unless `auth` may `op` every channel.
fn check_access(net: &Net, req: &Req, channels: &[String], op: Op) -> Option<Response<Body>> {
    let auth = req.q("auth").unwrap_or("");
    let denied = channels.iter().find(|c| !allowed(net, auth, c, op))?;
    tracing::debug!(target: "blocks::devnet", "403: {} on {denied}", if op == Op::Read { "read" } else { "write" });
    Some(json_response(
        403,
        &json!({ "status": 403, "error": true, "message": "Forbidden", "service": "Access Manager", "payload": { "channels": [denied] } }),
    ))
}

fn split_channels(s: &str) -> Vec<String> {
    s.split(',').filter(|c| !c.is_empty()).map(str::to_string).collect()
}

fn publish(net: &Net, req: &Req, pk: &str, sk: &str, channel: &str, rest: &[&str]) -> Response<Body> {
    if !Net::is_known_sub_key(sk) {
        return pn_error(
            400,
            &format!("unknown subscribe key {sk:?} (use the keys of this devnet's CDM document)"),
        );
    }
    if pk.is_empty() {
        return pn_error(400, "missing publish key");
    }
    let raw = if req.method == Method::POST {
        String::from_utf8_lossy(&req.body).into_owned()
    } else {
        rest.join("/")
    };
    let payload: Value = match serde_json::from_str(&raw) {
        Ok(v) => v,
        Err(e) => return pn_error(400, &format!("Invalid JSON message: {e}")),
    };
    let meta = match req.q("meta") {
        Some(m) if !m.is_empty() => match serde_json::from_str::<Value>(m) {
            Ok(v) => Some(v),
            Err(e) => return pn_error(400, &format!("Invalid JSON meta: {e}")),
        },
        _ => None,
    };
    let store = !matches!(req.q("store"), Some("0") | Some("false"));
    let publisher = req.q("uuid").unwrap_or("").to_string();
    if let Some(denied) = check_access(net, req, &[channel.to_string()], Op::Write) {
        return denied;
    }
    if channel.starts_with("setup.") {
        // the stream-setup "Function": aborts the publish with a 403 carrying the answer
        let (status, body) = crate::streams::setup(net, sk, channel, &payload);
        return json_response(status, &body);
    }
    if channel.starts_with("stream.") && net.cfg.stream_chaos {
        crate::streams::chaotic_publish(net, sk, channel, payload, meta, &publisher);
        return json_response(200, &json!([1, "Sent", net.rt.current_tt().to_string()]));
    }
    let tt = net.publish(sk, channel, payload, meta, &publisher, store);
    json_response(200, &json!([1, "Sent", tt.to_string()]))
}

async fn subscribe(net: &Net, req: &Req, sk: &str, channels: &str) -> Response<Body> {
    if !Net::is_known_sub_key(sk) {
        return pn_error(400, &format!("unknown subscribe key {sk:?}"));
    }
    let channels = split_channels(channels);
    if let Some(denied) = check_access(net, req, &channels, Op::Read) {
        return denied;
    }
    let filter = match req.q("filter-expr").filter(|f| !f.trim().is_empty()) {
        Some(f) => match Filter::parse(f) {
            Ok(f) => Some(f),
            Err(e) => return pn_error(400, &format!("Invalid filter expression: {e}")),
        },
        None => None,
    };
    let uuid = req.q("uuid").unwrap_or("").to_string();
    let heartbeat = req
        .q("heartbeat")
        .and_then(|h| h.parse::<u64>().ok())
        .map(Duration::from_secs);
    let state: Option<Value> = req.q("state").and_then(|s| serde_json::from_str(s).ok());
    net.rt.seen(&uuid, &channels, heartbeat, state.as_ref());
    let tt = req.q("tt").and_then(|t| t.parse::<u64>().ok()).unwrap_or(0);
    if tt == 0 {
        let cursor = net.rt.current_tt();
        let resp = json_response(200, &json!({ "t": { "t": cursor.to_string(), "r": 1 }, "m": [] }));
        instance_went_live(net, &uuid, &channels);
        return resp;
    }
    // a client may start from a cursor (a reconnect, or a first subscribe from the time it
    // registered): it is live from its first long-poll as well
    instance_went_live(net, &uuid, &channels);
    let deadline = tokio::time::Instant::now() + net.cfg.long_poll_hold;
    loop {
        let wake = net.rt.notified();
        tokio::pin!(wake);
        wake.as_mut().enable();
        // a token revoked while the poll was held ends it with 403
        if let Some(denied) = check_access(net, req, &channels, Op::Read) {
            return denied;
        }
        let (msgs, cursor) = net.rt.poll(sk, &channels, tt, filter.as_ref());
        let stopping = net.stopped.load(Ordering::SeqCst);
        if !msgs.is_empty() || stopping {
            net.rt.seen(&uuid, &channels, heartbeat, None);
            let m: Vec<Value> = msgs
                .iter()
                .map(|m| {
                    let mut env = json!({
                        "a": "1", "f": 0, "i": m.publisher, "p": { "t": m.tt.to_string(), "r": 1 },
                        "k": sk, "c": m.channel, "d": m.payload, "b": m.channel,
                    });
                    if let Some(meta) = &m.meta {
                        env["u"] = meta.clone();
                    }
                    env
                })
                .collect();
            return json_response(200, &json!({ "t": { "t": cursor.to_string(), "r": 1 }, "m": m }));
        }
        net.rt.held.fetch_add(1, Ordering::SeqCst);
        let woke = tokio::time::timeout_at(deadline, wake).await;
        net.rt.held.fetch_sub(1, Ordering::SeqCst);
        if woke.is_err() {
            net.rt.seen(&uuid, &channels, heartbeat, None);
            let (_, cursor) = net.rt.poll(sk, &channels, tt, filter.as_ref());
            return json_response(200, &json!({ "t": { "t": cursor.to_string(), "r": 1 }, "m": [] }));
        }
    }
}

/// A control-channel handshake from an instance: it can now receive StartTask.
fn instance_went_live(net: &Net, uuid: &str, channels: &[String]) {
    let agent = {
        let mut r = net.records();
        match r.instances.get_mut(uuid) {
            Some(i) if channels.contains(&i.control_channel) && !i.live => {
                i.live = true;
                let (id, agent) = (i.id.clone(), i.agent.clone());
                r.touch_instance(&id);
                Some(agent)
            }
            _ => None,
        }
    };
    if let Some(a) = agent {
        net.dispatch(&a);
    }
}

fn presence(net: &Net, req: &Req, sk: &str, channels: &str, rest: &[&str]) -> Response<Body> {
    if !Net::is_known_sub_key(sk) {
        return pn_error(400, &format!("unknown subscribe key {sk:?}"));
    }
    let channels = split_channels(channels);
    // presence on a channel (heartbeat, leave, state) needs the right to read it: nobody can keep
    // another user's instance alive, make it leave, or read its state
    if let Some(denied) = check_access(net, req, &channels, Op::Read) {
        return denied;
    }
    let uuid = req.q("uuid").unwrap_or("").to_string();
    match rest {
        ["heartbeat"] => {
            let hb = req
                .q("heartbeat")
                .and_then(|h| h.parse::<u64>().ok())
                .map(Duration::from_secs);
            let state: Option<Value> = req.q("state").and_then(|s| serde_json::from_str(s).ok());
            net.rt.seen(&uuid, &channels, hb, state.as_ref());
            json_response(200, &json!({ "status": 200, "message": "OK", "service": "Presence" }))
        }
        ["leave"] => {
            net.rt.leave(&uuid, &channels);
            // a graceful stop: no new tasks; running ones may still finish (see Net::tick)
            let mut r = net.records();
            if let Some(i) = r
                .instances
                .get_mut(&uuid)
                .filter(|i| i.live && channels.contains(&i.control_channel))
            {
                i.live = false;
                i.left_at = Some(std::time::Instant::now());
                r.touch_instance(&uuid);
            }
            drop(r);
            json_response(
                200,
                &json!({ "status": 200, "message": "OK", "action": "leave", "service": "Presence" }),
            )
        }
        ["uuid", who, "data"] => {
            let state: Value = match req.q("state").map(serde_json::from_str::<Value>) {
                Some(Ok(v)) => v,
                Some(Err(e)) => return pn_error(400, &format!("Invalid JSON state: {e}")),
                None => json!({}),
            };
            for c in &channels {
                net.rt.set_state(who, c, state.clone());
            }
            json_response(
                200,
                &json!({ "status": 200, "message": "OK", "payload": state, "service": "Presence" }),
            )
        }
        _ => pn_error(404, "unknown presence endpoint"),
    }
}

fn history(net: &Net, req: &Req, sk: &str, channel: &str) -> Response<Body> {
    if !Net::is_known_sub_key(sk) {
        return pn_error(400, &format!("unknown subscribe key {sk:?}"));
    }
    if let Some(denied) = check_access(net, req, &[channel.to_string()], Op::Read) {
        return denied;
    }
    let max = req
        .q("max")
        .and_then(|m| m.parse::<usize>().ok())
        .unwrap_or(100)
        .clamp(1, 100);
    let start = req.q("start").and_then(|s| s.parse::<u64>().ok());
    let end = req.q("end").and_then(|s| s.parse::<u64>().ok());
    let with_meta = req.q("include_meta") == Some("true");
    let msgs: Vec<Value> = net
        .rt
        .history(sk, channel, max, start, end)
        .into_iter()
        .map(|m| {
            let mut e = json!({ "message": m.payload, "timetoken": m.tt.to_string() });
            if with_meta {
                if let Some(meta) = m.meta {
                    e["meta"] = meta;
                }
            }
            e
        })
        .collect();
    json_response(
        200,
        &json!({ "status": 200, "error": false, "error_message": "", "channels": { channel: msgs } }),
    )
}
