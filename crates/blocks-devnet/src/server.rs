//! HTTP front: routes every request by its path segments (the PubNub REST paths carry channel
//! lists and URL-encoded JSON in the path) to the realtime plane or the backend API.

use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, Request, Response, StatusCode};
use futures::StreamExt;
use percent_encoding::percent_decode_str;
use serde_json::{json, Value};

use crate::filter::Filter;
use crate::Net;

/// Largest request body accepted, after decompression (API bodies are small: files above 16 KiB
/// go through the upload handshake, which is streamed and has its own limit).
pub const MAX_BODY: usize = 8 * 1024 * 1024;
/// Largest message accepted by publish: the message and its meta, as JSON text (PubNub's limit
/// is 32 KiB; the SDK keeps stream frames at 16 KiB and inline artifacts below 22 KiB).
pub const MAX_MESSAGE_BYTES: usize = 32 * 1024;
/// Deepest nesting of a published message, meta or presence state. The devnet hands them back
/// inside envelopes (subscribe adds 3 levels, history 4) and clients built on serde_json refuse
/// documents deeper than 128: a message just under that limit would make every poll of its
/// channel unreadable for them, so one publish could stall every reader of an open channel.
pub const MAX_MESSAGE_DEPTH: usize = 64;
/// Largest presence state accepted (heartbeat, subscribe or set-state), as JSON text.
const MAX_STATE_BYTES: usize = 32 * 1024;
/// Most channels in one subscribe, heartbeat or leave.
pub const MAX_CHANNELS_PER_REQUEST: usize = 100;
/// Longest channel name and uuid accepted (PubNub's own limit is 92 characters; devnet stream
/// channel names are longer).
pub const MAX_NAME_BYTES: usize = 512;
/// Longest presence timeout a client may ask for (PubNub's default); larger ones are clamped.
pub const MAX_PRESENCE_TIMEOUT: Duration = Duration::from_secs(300);
/// How much of a body is still read (and dropped, never inflated) after it went over the limit,
/// before the 413: answering while the client still sends makes the kernel reset the connection.
const DRAIN_LIMIT: usize = 8 * 1024 * 1024;

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

/// Why a body could not be read.
#[derive(Debug, PartialEq)]
pub enum BodyError {
    /// Over the limit (after decompression): 413.
    TooLarge(usize),
    /// A pause longer than the body timeout: 408.
    Timeout(Duration),
    /// Not valid for its `Content-Encoding`, or the connection failed: 400.
    Bad(String),
}

impl BodyError {
    fn response(&self) -> Response<Body> {
        let mut r = match self {
            BodyError::TooLarge(limit) => pn_error(
                413,
                &format!("Request Entity Too Large: the body is larger than {limit} bytes (after decompression)"),
            ),
            BodyError::Timeout(t) => pn_error(
                408,
                &format!("Request Timeout: nothing of the body arrived for {} s", t.as_secs_f64()),
            ),
            BodyError::Bad(e) => pn_error(400, e),
        };
        // the rest of the body is not read: the connection cannot carry another request
        r.headers_mut()
            .insert("connection", axum::http::HeaderValue::from_static("close"));
        r
    }
}

/// A `Write` that holds at most `limit` bytes and refuses the write that would go over.
struct Capped {
    buf: Vec<u8>,
    limit: usize,
    over: bool,
}

impl Write for Capped {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        if self.buf.len() + b.len() > self.limit {
            self.over = true;
            return Err(std::io::Error::other("body over the limit"));
        }
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Where the chunks of a body go: kept as they are, or inflated as they arrive.
enum Sink {
    Plain(Capped),
    Gzip(flate2::write::GzDecoder<Capped>),
    Zlib(flate2::write::ZlibDecoder<Capped>),
    Deflate(flate2::write::DeflateDecoder<Capped>),
    /// `deflate` whose first two bytes (zlib header or raw deflate) have not arrived yet.
    Undecided(Vec<u8>, usize),
}

/// True when `b` starts with a zlib header (RFC 1950): method 8, window ≤ 32 KiB, check bits.
fn is_zlib_header(b: &[u8]) -> bool {
    b.len() >= 2 && b[0] & 0x0f == 8 && b[0] >> 4 <= 7 && (u16::from(b[0]) << 8 | u16::from(b[1])) % 31 == 0
}

impl Sink {
    fn new(encoding: &str, limit: usize) -> Sink {
        let capped = || Capped {
            buf: Vec::new(),
            limit,
            over: false,
        };
        match encoding {
            "gzip" | "x-gzip" => Sink::Gzip(flate2::write::GzDecoder::new(capped())),
            "deflate" => Sink::Undecided(Vec::new(), limit),
            // identity, and codings the devnet does not know: taken as they are (a body that is
            // not what its handler expects is refused there)
            _ => Sink::Plain(capped()),
        }
    }

    fn over(&self) -> bool {
        match self {
            Sink::Plain(c) => c.over,
            Sink::Gzip(d) => d.get_ref().over,
            Sink::Zlib(d) => d.get_ref().over,
            Sink::Deflate(d) => d.get_ref().over,
            Sink::Undecided(..) => false,
        }
    }

    fn push(&mut self, chunk: &[u8]) -> Result<(), BodyError> {
        if let Sink::Undecided(head, limit) = self {
            head.extend_from_slice(chunk);
            if head.len() < 2 {
                return Ok(());
            }
            let head = std::mem::take(head);
            let capped = Capped {
                buf: Vec::new(),
                limit: *limit,
                over: false,
            };
            *self = if is_zlib_header(&head) {
                Sink::Zlib(flate2::write::ZlibDecoder::new(capped))
            } else {
                Sink::Deflate(flate2::write::DeflateDecoder::new(capped))
            };
            return self.push(&head);
        }
        let r = match self {
            Sink::Plain(c) => c.write_all(chunk),
            Sink::Gzip(d) => d.write_all(chunk),
            Sink::Zlib(d) => d.write_all(chunk),
            Sink::Deflate(d) => d.write_all(chunk),
            Sink::Undecided(..) => Ok(()),
        };
        match r {
            Ok(()) => Ok(()),
            Err(_) if self.over() => Err(BodyError::TooLarge(self.limit())),
            Err(e) => Err(BodyError::Bad(format!("bad {} body: {e}", self.name()))),
        }
    }

    fn limit(&self) -> usize {
        match self {
            Sink::Plain(c) => c.limit,
            Sink::Gzip(d) => d.get_ref().limit,
            Sink::Zlib(d) => d.get_ref().limit,
            Sink::Deflate(d) => d.get_ref().limit,
            Sink::Undecided(_, l) => *l,
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Sink::Plain(_) => "plain",
            Sink::Gzip(_) => "gzip",
            Sink::Zlib(_) | Sink::Deflate(_) | Sink::Undecided(..) => "deflate",
        }
    }

    fn finish(mut self) -> Result<Bytes, BodyError> {
        let flushed = match &mut self {
            Sink::Plain(_) => Ok(()),
            Sink::Gzip(d) => d.try_finish(),
            Sink::Zlib(d) => d.try_finish(),
            Sink::Deflate(d) => d.try_finish(),
            Sink::Undecided(head, _) if head.is_empty() => return Ok(Bytes::new()),
            Sink::Undecided(..) => return Err(BodyError::Bad("bad deflate body: too short".into())),
        };
        if let Err(e) = flushed {
            return Err(if self.over() {
                BodyError::TooLarge(self.limit())
            } else {
                BodyError::Bad(format!("bad {} body: {e}", self.name()))
            });
        }
        let capped = match self {
            Sink::Plain(c) => c,
            Sink::Gzip(d) => d.finish().map_err(|e| BodyError::Bad(format!("bad gzip body: {e}")))?,
            Sink::Zlib(d) => d
                .finish()
                .map_err(|e| BodyError::Bad(format!("bad deflate body: {e}")))?,
            Sink::Deflate(d) => d
                .finish()
                .map_err(|e| BodyError::Bad(format!("bad deflate body: {e}")))?,
            Sink::Undecided(..) => return Ok(Bytes::new()),
        };
        Ok(Bytes::from(capped.buf))
    }
}

/// Read a request body as it arrives, inflating `gzip` and `deflate` (zlib or raw) bodies
/// chunk by chunk: at most `limit` bytes are ever held (after decompression), and at most
/// `idle` may pass between two chunks. A body over the limit is not inflated any further: a
/// bounded rest is read and dropped, then the 413 goes out.
pub async fn read_body(headers: &HeaderMap, body: Body, limit: usize, idle: Duration) -> Result<Bytes, BodyError> {
    let encoding = headers
        .get("content-encoding")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let mut sink = Sink::new(&encoding, limit);
    let mut stream = body.into_data_stream();
    loop {
        let chunk = match tokio::time::timeout(idle, stream.next()).await {
            Err(_) => return Err(BodyError::Timeout(idle)),
            Ok(None) => break,
            Ok(Some(Err(e))) => return Err(BodyError::Bad(format!("the request body could not be read: {e}"))),
            Ok(Some(Ok(c))) => c,
        };
        if let Err(e) = sink.push(&chunk) {
            drop(sink);
            if matches!(e, BodyError::TooLarge(_)) {
                let mut left = DRAIN_LIMIT;
                while left > 0 {
                    match tokio::time::timeout(idle, stream.next()).await {
                        Ok(Some(Ok(c))) => left = left.saturating_sub(c.len()),
                        _ => break,
                    }
                }
            }
            return Err(e);
        }
    }
    sink.finish()
}

/// A body stream whose every chunk must arrive within `idle` of the previous one (the upload
/// path, which streams its body to disk instead of reading it whole).
pub(crate) fn timed_stream(
    body: Body,
    idle: Duration,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    futures::stream::unfold(Some(body.into_data_stream()), move |state| async move {
        let mut stream = state?;
        match tokio::time::timeout(idle, stream.next()).await {
            Err(_) => Some((
                Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("nothing of the body arrived for {} s", idle.as_secs_f64()),
                )),
                None,
            )),
            Ok(None) => None,
            Ok(Some(r)) => Some((r.map_err(std::io::Error::other), Some(stream))),
        }
    })
}

/// One request, from the connection layer.
pub(crate) async fn handle(net: Arc<Net>, request: Request<Body>) -> Response<Body> {
    let (parts, body) = request.into_parts();
    let (method, uri, headers) = (parts.method, parts.uri, parts.headers);
    if let Some(resp) = crate::conn::misdirected(&net, &uri, &headers) {
        return resp;
    }
    // storage is streamed, never buffered
    match (&method, uri.path()) {
        (&Method::POST, "/storage/upload") => {
            tracing::debug!(target: "blocks::devnet", "POST {uri}");
            return crate::files::storage_upload(&net, &headers, timed_stream(body, net.cfg.body_timeout)).await;
        }
        (&Method::GET, p) if p.starts_with("/storage/blob/") => {
            tracing::debug!(target: "blocks::devnet", "GET {uri}");
            let id = p.trim_start_matches("/storage/blob/").split('/').next().unwrap_or("");
            let q = parse_query(uri.query());
            return crate::files::blob(&net, &decode(id), q.get("key").map(String::as_str).unwrap_or("")).await;
        }
        _ => {}
    }
    let body = match read_body(&headers, body, MAX_BODY, net.cfg.body_timeout).await {
        Ok(b) => b,
        Err(e) => {
            tracing::debug!(target: "blocks::devnet", "{method} {}: {e:?}", uri.path());
            return e.response();
        }
    };
    let segments: Vec<String> = uri.path().split('/').skip(1).map(decode).collect();
    let req = Req {
        method,
        segments,
        query: parse_query(uri.query()),
        headers,
        body,
    };
    let net = &*net;
    tracing::debug!(target: "blocks::devnet", "{} {}", req.method, uri);
    let seg: Vec<&str> = req.segments.iter().map(String::as_str).collect();
    match seg.as_slice() {
        ["publish", pk, sk, _, channel, _, rest @ ..] => publish(net, &req, pk, sk, channel, rest),
        ["v2", "subscribe", sk, channels, ..] => subscribe(net, &req, sk, channels).await,
        ["v1", "files", sk, "channels", channel, "files", id, name] if req.method == Method::GET => {
            if !Net::is_known_sub_key(sk) {
                return pn_error(400, &format!("unknown subscribe key {sk:?}"));
            }
            crate::files::file_url(net, &req, channel, id, name)
        }
        ["v2", "presence", "sub-key" | "sub_key", sk, "channel", channels, rest @ ..] => {
            presence(net, &req, sk, channels, rest)
        }
        ["time", "0"] => json_response(200, &json!([net.rt.current_tt()])),
        ["v3", "history", "sub-key", sk, "channel", channel] => history(net, &req, sk, channel),
        _ => crate::backend::handle(net, &req).await,
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

/// The 400 answer when `v` (what: "message", "meta", "state") nests too deeply.
fn check_depth(what: &str, v: &Value) -> Option<Response<Body>> {
    let d = json_depth(v);
    (d > MAX_MESSAGE_DEPTH).then(|| {
        pn_error(
            400,
            &format!("Invalid JSON {what}: nested {d} levels deep; the limit is {MAX_MESSAGE_DEPTH}"),
        )
    })
}

/// The 400 answer when a request names too many channels, or a channel or uuid that is too long.
fn check_names(channels: &[String], uuid: &str) -> Option<Response<Body>> {
    if channels.len() > MAX_CHANNELS_PER_REQUEST {
        return Some(pn_error(
            400,
            &format!(
                "{} channels in one request; the limit is {MAX_CHANNELS_PER_REQUEST}",
                channels.len()
            ),
        ));
    }
    if let Some(c) = channels.iter().find(|c| c.len() > MAX_NAME_BYTES) {
        return Some(pn_error(
            400,
            &format!("a channel name of {} bytes; the limit is {MAX_NAME_BYTES}", c.len()),
        ));
    }
    if uuid.len() > MAX_NAME_BYTES {
        return Some(pn_error(
            400,
            &format!("a uuid of {} bytes; the limit is {MAX_NAME_BYTES}", uuid.len()),
        ));
    }
    None
}

/// The presence timeout a request asks for (`heartbeat=`), clamped to [`MAX_PRESENCE_TIMEOUT`].
fn presence_timeout(req: &Req) -> Option<Duration> {
    req.q("heartbeat")
        .and_then(|h| h.parse::<u64>().ok())
        .map(|h| Duration::from_secs(h).min(MAX_PRESENCE_TIMEOUT))
}

/// The presence state a request sets (`state=`): JSON of at most [`MAX_STATE_BYTES`].
fn presence_state(req: &Req) -> Result<Option<Value>, Box<Response<Body>>> {
    match req.q("state") {
        None => Ok(None),
        Some(s) if s.len() > MAX_STATE_BYTES => Err(Box::new(pn_error(
            413,
            &format!("State Too Large: {} bytes; the limit is {MAX_STATE_BYTES}", s.len()),
        ))),
        Some(s) => {
            let state: Option<Value> = serde_json::from_str(s).ok();
            match state.as_ref().and_then(|v| check_depth("state", v)) {
                Some(bad) => Err(Box::new(bad)),
                None => Ok(state),
            }
        }
    }
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
    if channel.len() > MAX_NAME_BYTES {
        return pn_error(
            400,
            &format!(
                "a channel name of {} bytes; the limit is {MAX_NAME_BYTES}",
                channel.len()
            ),
        );
    }
    let raw = if req.method == Method::POST {
        String::from_utf8_lossy(&req.body).into_owned()
    } else {
        rest.join("/")
    };
    // PubNub's "Message Too Large", checked before anything is parsed
    let size = raw.len() + req.q("meta").map_or(0, str::len);
    if size > MAX_MESSAGE_BYTES {
        return json_response(
            413,
            &json!({
                "status": 413, "error": true, "service": "Blocks Devnet",
                "message": format!("Message Too Large: the message and its meta are {size} bytes; the limit is {MAX_MESSAGE_BYTES}"),
            }),
        );
    }
    let payload: Value = match serde_json::from_str(&raw) {
        Ok(v) => v,
        Err(e) => return pn_error(400, &format!("Invalid JSON message: {e}")),
    };
    if let Some(bad) = check_depth("message", &payload) {
        return bad;
    }
    let meta = match req.q("meta") {
        Some(m) if !m.is_empty() => match serde_json::from_str::<Value>(m) {
            Ok(v) => Some(v),
            Err(e) => return pn_error(400, &format!("Invalid JSON meta: {e}")),
        },
        _ => None,
    };
    if let Some(bad) = meta.as_ref().and_then(|m| check_depth("meta", m)) {
        return bad;
    }
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
    let uuid = req.q("uuid").unwrap_or("").to_string();
    if let Some(bad) = check_names(&channels, &uuid) {
        return bad;
    }
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
    let heartbeat = presence_timeout(req);
    let state = match presence_state(req) {
        Ok(s) => s,
        Err(resp) => return *resp,
    };
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
    let uuid = req.q("uuid").unwrap_or("").to_string();
    let who = match rest {
        ["uuid", who, "data"] => *who,
        _ => "",
    };
    if let Some(bad) = check_names(&channels, &uuid).or_else(|| check_names(&[], who)) {
        return bad;
    }
    // presence on a channel (heartbeat, leave, state) needs the right to read it: nobody can keep
    // another user's instance alive, make it leave, or read its state
    if let Some(denied) = check_access(net, req, &channels, Op::Read) {
        return denied;
    }
    match rest {
        ["heartbeat"] => {
            let hb = presence_timeout(req);
            let state = match presence_state(req) {
                Ok(s) => s,
                Err(resp) => return *resp,
            };
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
            if req.q("state").is_some_and(|s| s.len() > MAX_STATE_BYTES) {
                return pn_error(413, &format!("State Too Large: the limit is {MAX_STATE_BYTES} bytes"));
            }
            let state: Value = match req.q("state").map(serde_json::from_str::<Value>) {
                Some(Ok(v)) => v,
                Some(Err(e)) => return pn_error(400, &format!("Invalid JSON state: {e}")),
                None => json!({}),
            };
            if let Some(bad) = check_depth("state", &state) {
                return bad;
            }
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
                if let Some(meta) = &m.meta {
                    e["meta"] = meta.clone();
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
