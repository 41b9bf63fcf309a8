//! The HTTP front: routes every request by its path segments (the PubNub REST paths carry channel
//! lists and URL-encoded JSON in the path) to the realtime plane, the file store or the backend
//! API, and reads request bodies within their limits (size, compression and idle time).

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, Request, Response};
use futures::StreamExt;

use crate::net::Net;
use crate::request::{decode, parse_query, pn_error, Req};
use crate::{backend_api, files_api, pubnub_api};

/// Largest request body accepted, after decompression (API bodies are small: files above 16 KiB
/// go through the upload handshake, which is streamed and has its own limit).
pub const MAX_BODY: usize = 8 * 1024 * 1024;
/// How much of a body is still read (and dropped, never inflated) after it went over the limit,
/// before the 413: answering while the client still sends makes the kernel reset the connection.
pub(crate) const DRAIN_LIMIT: usize = 8 * 1024 * 1024;

/// One request, from the connection layer (which has checked its Host).
pub(crate) async fn handle(net: Arc<Net>, request: Request<Body>) -> Response<Body> {
    let (parts, body) = request.into_parts();
    let (method, uri, headers) = (parts.method, parts.uri, parts.headers);
    // storage is streamed, never buffered
    match (&method, uri.path()) {
        (&Method::POST, "/storage/upload") => {
            tracing::debug!(target: "blocks::devnet", "POST {uri}");
            return files_api::storage_upload(&net, &headers, timed_stream(body, net.cfg.body_timeout)).await;
        }
        (&Method::GET, p) if p.starts_with("/storage/blob/") => {
            tracing::debug!(target: "blocks::devnet", "GET {uri}");
            let id = p.trim_start_matches("/storage/blob/").split('/').next().unwrap_or("");
            let q = parse_query(uri.query());
            return files_api::blob(&net, &decode(id), q.get("key").map(String::as_str).unwrap_or("")).await;
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
        ["publish", pk, sk, _, channel, _, rest @ ..] => pubnub_api::publish(net, &req, pk, sk, channel, rest),
        ["v2", "subscribe", sk, channels, ..] => pubnub_api::subscribe(net, &req, sk, channels).await,
        ["v1", "files", sk, "channels", channel, "files", id, name] if req.method == Method::GET => {
            if !Net::is_known_sub_key(sk) {
                return pn_error(400, &format!("unknown subscribe key {sk:?}"));
            }
            files_api::file_url(net, &req, channel, id, name)
        }
        ["v2", "presence", "sub-key" | "sub_key", sk, "channel", channels, rest @ ..] => {
            pubnub_api::presence(net, &req, sk, channels, rest)
        }
        ["time", "0"] => pubnub_api::time(net),
        ["v3", "history", "sub-key", sk, "channel", channel] => pubnub_api::history(net, &req, sk, channel),
        _ => backend_api::handle(net, &req).await,
    }
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
