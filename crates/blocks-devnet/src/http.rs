//! Request plumbing shared by the PubNub REST front (server.rs), the backend API and the file
//! store: the request view ([`Req`]), JSON answers, URL coding, bodies (size, depth, compression
//! and idle limits).

use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, Response, StatusCode};
use futures::StreamExt;
use percent_encoding::percent_decode_str;
use serde_json::{json, Value};

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
pub(crate) const MAX_STATE_BYTES: usize = 32 * 1024;
/// Most channels in one subscribe, heartbeat or leave.
pub const MAX_CHANNELS_PER_REQUEST: usize = 100;
/// Longest channel name and uuid accepted (PubNub's own limit is 92 characters; devnet stream
/// channel names are longer).
pub const MAX_NAME_BYTES: usize = 512;
/// Longest presence timeout a client may ask for (PubNub's default); larger ones are clamped.
pub const MAX_PRESENCE_TIMEOUT: Duration = Duration::from_secs(300);
/// How much of a body is still read (and dropped, never inflated) after it went over the limit,
/// before the 413: answering while the client still sends makes the kernel reset the connection.
pub(crate) const DRAIN_LIMIT: usize = 8 * 1024 * 1024;

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
    pub(crate) fn response(&self) -> Response<Body> {
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
pub(crate) struct Capped {
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
pub(crate) enum Sink {
    Plain(Capped),
    Gzip(flate2::write::GzDecoder<Capped>),
    Zlib(flate2::write::ZlibDecoder<Capped>),
    Deflate(flate2::write::DeflateDecoder<Capped>),
    /// `deflate` whose first two bytes (zlib header or raw deflate) have not arrived yet.
    Undecided(Vec<u8>, usize),
}

/// True when `b` starts with a zlib header (RFC 1950): method 8, window ≤ 32 KiB, check bits.
pub(crate) fn is_zlib_header(b: &[u8]) -> bool {
    b.len() >= 2 && b[0] & 0x0f == 8 && b[0] >> 4 <= 7 && (u16::from(b[0]) << 8 | u16::from(b[1])) % 31 == 0
}

impl Sink {
    pub(crate) fn new(encoding: &str, limit: usize) -> Sink {
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

    pub(crate) fn over(&self) -> bool {
        match self {
            Sink::Plain(c) => c.over,
            Sink::Gzip(d) => d.get_ref().over,
            Sink::Zlib(d) => d.get_ref().over,
            Sink::Deflate(d) => d.get_ref().over,
            Sink::Undecided(..) => false,
        }
    }

    pub(crate) fn push(&mut self, chunk: &[u8]) -> Result<(), BodyError> {
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

    pub(crate) fn limit(&self) -> usize {
        match self {
            Sink::Plain(c) => c.limit,
            Sink::Gzip(d) => d.get_ref().limit,
            Sink::Zlib(d) => d.get_ref().limit,
            Sink::Deflate(d) => d.get_ref().limit,
            Sink::Undecided(_, l) => *l,
        }
    }

    pub(crate) fn name(&self) -> &'static str {
        match self {
            Sink::Plain(_) => "plain",
            Sink::Gzip(_) => "gzip",
            Sink::Zlib(_) | Sink::Deflate(_) | Sink::Undecided(..) => "deflate",
        }
    }

    pub(crate) fn finish(mut self) -> Result<Bytes, BodyError> {
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
