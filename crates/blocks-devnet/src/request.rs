//! The request view shared by the PubNub REST handlers, the backend API and the file store
//! ([`Req`]), their JSON answers, URL coding, and the limits of what a request may carry
//! (message size and depth, presence state, channel lists and names).

use std::collections::HashMap;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, Response, StatusCode};
use percent_encoding::percent_decode_str;
use serde_json::{json, Value};

/// Largest message accepted by publish: the message and its meta, as JSON text (PubNub's limit
/// is 32 KiB; the SDK keeps stream frames at 16 KiB and inline artifacts below 22 KiB).
pub const MAX_MESSAGE_BYTES: usize = 32 * 1024;
/// Deepest nesting of a published message, meta or presence state. The devnet hands them back
/// inside envelopes (subscribe adds 3 levels, history 4) and clients built on serde_json refuse
/// documents deeper than 128: a message just under that limit would make every poll of its
/// channel unreadable for them, so one publish could stall every reader of an open channel.
pub const MAX_MESSAGE_DEPTH: usize = 64;
/// Largest presence state accepted (heartbeat, subscribe or set-state), as JSON text.
pub(crate) const MAX_STATE_BYTES: usize = 32 * 1024;
/// Most channels in one subscribe, heartbeat or leave.
pub const MAX_CHANNELS_PER_REQUEST: usize = 100;
/// Longest channel name and uuid accepted (PubNub's own limit is 92 characters; devnet stream
/// channel names are longer).
pub const MAX_NAME_BYTES: usize = 512;
/// Longest presence timeout a client may ask for (PubNub's default); larger ones are clamped.
pub const MAX_PRESENCE_TIMEOUT: Duration = Duration::from_secs(300);

/// JSON response.
pub(crate) fn json_response(status: u16, body: &Value) -> Response<Body> {
    Response::builder()
        .status(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap_or_else(|_| Response::new(Body::empty()))
}

pub(crate) fn pn_error(status: u16, message: &str) -> Response<Body> {
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
    /// The body as JSON. serde_json refuses documents nested deeper than 128 levels (an error,
    /// not a stack overflow), so no deeper value ever reaches a handler.
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

pub(crate) fn decode(s: &str) -> String {
    percent_decode_str(s).decode_utf8_lossy().into_owned()
}

pub(crate) fn parse_query(q: Option<&str>) -> HashMap<String, String> {
    let mut m = HashMap::new();
    for pair in q.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        m.insert(decode(&k.replace('+', " ")), decode(&v.replace('+', " ")));
    }
    m
}

/// How deeply `v` nests (a scalar is 1), computed without recursion.
pub(crate) fn json_depth(v: &Value) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(v, 1usize)];
    while let Some((v, d)) = stack.pop() {
        deepest = deepest.max(d);
        match v {
            Value::Array(a) => stack.extend(a.iter().map(|c| (c, d + 1))),
            Value::Object(o) => stack.extend(o.values().map(|c| (c, d + 1))),
            _ => {}
        }
    }
    deepest
}
