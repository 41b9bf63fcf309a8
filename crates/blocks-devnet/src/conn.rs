//! The connection layer (issue 20): the accept loop, a cap on open connections, the timeouts of
//! every phase of a connection, and the Host check against DNS rebinding.
//!
//! What a connection may do, and for how long (defaults of [`crate::DevnetConfig`], chosen after
//! nginx's `client_header_timeout`, `client_body_timeout`, `send_timeout` and
//! `keepalive_timeout`, tightened for a loopback network):
//!
//! | phase | limit | what happens past it |
//! |---|---|---|
//! | waiting for, or reading, a request head (from the accept, or from the first byte after a keep-alive pause) | `header_timeout`, 10 s in all | the connection is closed |
//! | reading a request body | `body_timeout`, 30 s between two chunks | 408 Request Timeout, connection closed |
//! | handling the request | none here: handlers bound themselves (a subscribe long-poll is held up to `long_poll_hold`) | |
//! | writing the response | `body_timeout` between two writes that make progress | the connection is closed |
//! | keep-alive pause between requests | `keep_alive_timeout`, 75 s | the connection is closed |
//!
//! At most `max_connections` (1,024) connections are open at once; a connection beyond that gets
//! `503 Service Unavailable` with `Retry-After: 1` and is closed. Plain connections speak
//! HTTP/1.1 (every client of the PubNub REST protocol and of the backend API does). Over TLS
//! (`--tls`) the handshake must complete within `header_timeout`; then HTTP/2 when the client
//! offers it by ALPN (no per-phase watchdog there: keep-alive pings every 20 s close a dead peer),
//! HTTP/1.1 otherwise, with the timeouts above.

use std::convert::Infallible;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Request, Response, Uri};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::net::Net;

/// Connections beyond the cap that are still answered with a 503 at once (more are closed
/// without an answer).
const MAX_REFUSALS: usize = 64;
/// How long a refused connection may take to send its request head before the 503.
const REFUSAL_READ: Duration = Duration::from_secs(1);

/// The phases of a connection (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Waiting for, or reading, a request head.
    Head,
    /// A request is being handled (its body is read by the handler, with its own timeout).
    Busy,
    /// The response is being written.
    Sending,
    /// Keep-alive: the previous response is written, nothing of the next request has arrived.
    Idle,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Phase {
    kind: Kind,
    /// When the phase began (for `Sending`: the last write that made progress).
    since: Instant,
}

impl Phase {
    fn now(kind: Kind) -> Phase {
        Phase {
            kind,
            since: Instant::now(),
        }
    }
}

/// Timeouts and caps of the connection layer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub header: Duration,
    pub body: Duration,
    pub keep_alive: Duration,
    pub max_connections: usize,
}

impl Limits {
    pub fn of(cfg: &crate::config::DevnetConfig) -> Limits {
        Limits {
            header: cfg.header_timeout,
            body: cfg.body_timeout,
            keep_alive: cfg.keep_alive_timeout,
            max_connections: cfg.max_connections.max(1),
        }
    }

    fn of_phase(&self, kind: Kind) -> Option<Duration> {
        match kind {
            Kind::Head => Some(self.header),
            Kind::Busy => None,
            Kind::Sending => Some(self.body),
            Kind::Idle => Some(self.keep_alive),
        }
    }
}

/// Serve `listener` until `shutdown` completes, then let open connections finish (held long-polls
/// were woken by the stop) and return once every one has closed.
pub(crate) async fn serve(
    listener: TcpListener,
    net: Arc<Net>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: impl Future<Output = ()>,
) {
    let limits = Limits::of(&net.cfg);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let refusals = Arc::new(Semaphore::new(MAX_REFUSALS));
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // out of file descriptors, or a connection reset before it was accepted:
                    // wait a moment rather than spin
                    tracing::warn!(target: "blocks::devnet", "accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        match slots.clone().try_acquire_owned() {
            Ok(slot) => {
                tokio::spawn(connection(
                    stream,
                    net.clone(),
                    limits,
                    slot,
                    stop_rx.clone(),
                    tls.clone(),
                ));
            }
            Err(_) => match refusals.clone().try_acquire_owned() {
                Ok(permit) => {
                    tracing::warn!(target: "blocks::devnet", "{} connections are open: refusing one with 503", limits.max_connections);
                    tokio::spawn(refuse(stream, limits.max_connections, permit));
                }
                Err(_) => drop(stream),
            },
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let _ = slots.acquire_many(all).await;
}

/// One accepted connection, served until it closes, times out or the network stops.
async fn connection(
    stream: TcpStream,
    net: Arc<Net>,
    limits: Limits,
    _slot: OwnedSemaphorePermit,
    stop: watch::Receiver<bool>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    let _ = stream.set_nodelay(true);
    net.open_connections.fetch_add(1, Ordering::SeqCst);
    let _open = OpenGuard(net.clone());
    let (phase, watch_phase) = watch::channel(Phase::now(Kind::Head));
    let phase = Arc::new(phase);
    let watched = Watched {
        inner: stream,
        phase: phase.clone(),
    };
    let Some(acceptor) = tls else {
        return serve_http1(TokioIo::new(watched), net, phase, watch_phase, limits, stop).await;
    };
    let tls = match tokio::time::timeout(limits.header, acceptor.accept(watched)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(target: "blocks::devnet", "TLS handshake failed: {e}");
            return;
        }
        Err(_) => {
            tracing::debug!(target: "blocks::devnet", "no TLS handshake within {:?}: closing", limits.header);
            return;
        }
    };
    if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
        serve_http2(TokioIo::new(tls), net, phase, stop).await
    } else {
        phase.send_replace(Phase::now(Kind::Head));
        serve_http1(TokioIo::new(tls), net, phase, watch_phase, limits, stop).await
    }
}

/// The request handler of a connection: it tells the watchdog what phase the connection is in.
fn service(
    net: Arc<Net>,
    phase: Arc<watch::Sender<Phase>>,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = Response<Body>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<Body>, Infallible>> + Send,
> + Clone {
    hyper::service::service_fn(move |req: Request<Incoming>| {
        let (net, phase) = (net.clone(), phase.clone());
        async move {
            phase.send_replace(Phase::now(Kind::Busy));
            // DNS rebinding: a request for a host name the devnet does not serve gets 421 before
            // any handler sees it
            let resp = match misdirected(&net, req.uri(), req.headers()) {
                Some(refused) => refused,
                None => crate::http::handle(net, req.map(Body::new)).await,
            };
            phase.send_replace(Phase::now(Kind::Sending));
            Ok::<_, Infallible>(resp.map(|body| Body::new(Tracked { inner: body, phase })))
        }
    })
}

/// An HTTP/2 connection (TLS with ALPN h2): many requests at once, so no per-phase watchdog;
/// keep-alive pings close a peer that went away.
async fn serve_http2<I>(io: I, net: Arc<Net>, phase: Arc<watch::Sender<Phase>>, mut stop: watch::Receiver<bool>)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let conn = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
        .timer(hyper_util::rt::TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(20)))
        .keep_alive_timeout(Duration::from_secs(20))
        .serve_connection(io, service(net, phase));
    tokio::pin!(conn);
    let mut stopping = false;
    loop {
        tokio::select! {
            done = conn.as_mut() => {
                if let Err(e) = done {
                    tracing::debug!(target: "blocks::devnet", "connection ended: {e}");
                }
                return;
            }
            _ = stop.wait_for(|s| *s), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// An HTTP/1.1 connection, with the watchdog of its phases.
async fn serve_http1<I>(
    io: I,
    net: Arc<Net>,
    phase: Arc<watch::Sender<Phase>>,
    watch_phase: watch::Receiver<Phase>,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(io, service(net, phase));
    tokio::pin!(conn);
    let dog = watchdog(watch_phase, limits);
    tokio::pin!(dog);
    let mut stopping = false;
    loop {
        tokio::select! {
            done = conn.as_mut() => {
                if let Err(e) = done {
                    tracing::debug!(target: "blocks::devnet", "connection ended: {e}");
                }
                return;
            }
            why = &mut dog => {
                // dropping the connection closes the socket
                tracing::debug!(target: "blocks::devnet", "closing a connection: {why}");
                return;
            }
            _ = stop.wait_for(|s| *s), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// Counts the connection as open while it lives.
struct OpenGuard(Arc<Net>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open_connections.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Completes when the connection stayed in one phase longer than that phase may last.
async fn watchdog(mut phase: watch::Receiver<Phase>, limits: Limits) -> String {
    loop {
        let p = *phase.borrow_and_update();
        match limits.of_phase(p.kind) {
            None => {
                if phase.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
            Some(limit) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(p.since + limit) => {
                        // a write that made progress moves `since` without a notification
                        if *phase.borrow() == p {
                            return match p.kind {
                                Kind::Head => format!("no complete request head within {limit:?}"),
                                Kind::Sending => format!("the client read nothing of the response for {limit:?}"),
                                _ => format!("idle for {limit:?}"),
                            };
                        }
                    }
                    changed = phase.changed() => {
                        if changed.is_err() {
                            std::future::pending::<()>().await;
                        }
                    }
                }
            }
        }
    }
}

/// The socket, reporting progress to the watchdog: the first byte after a keep-alive pause
/// starts the head timer; each write that makes progress while a response is written restarts
/// the send timer.
struct Watched {
    inner: TcpStream,
    phase: Arc<watch::Sender<Phase>>,
}

impl AsyncRead for Watched {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.phase.send_if_modified(|p| {
                if p.kind == Kind::Idle {
                    *p = Phase::now(Kind::Head);
                    true
                } else {
                    false
                }
            });
        }
        r
    }
}

impl AsyncWrite for Watched {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.phase.send_if_modified(|p| {
                if p.kind == Kind::Sending {
                    p.since = Instant::now();
                }
                false
            });
        }
        r
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.phase.send_if_modified(|p| {
                if p.kind == Kind::Sending {
                    p.since = Instant::now();
                }
                false
            });
        }
        r
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// A response body that tells the watchdog when it is done (dropped): the keep-alive pause begins.
struct Tracked {
    inner: Body,
    phase: Arc<watch::Sender<Phase>>,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.phase.send_replace(Phase::now(Kind::Idle));
    }
}

impl hyper::body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;
    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }
    fn is_end_stream(&self) -> bool {
        hyper::body::Body::is_end_stream(&self.inner)
    }
    fn size_hint(&self) -> SizeHint {
        hyper::body::Body::size_hint(&self.inner)
    }
}

/// Answer a connection beyond the cap with 503: read its request head first (bounded in time and
/// size) so the client reads the answer rather than a reset connection.
async fn refuse(mut stream: TcpStream, cap: usize, _permit: OwnedSemaphorePermit) {
    let mut buf = vec![0u8; 16 * 1024];
    let mut n = 0;
    let deadline = Instant::now() + REFUSAL_READ;
    while n < buf.len() && !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf[n..])).await {
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(k)) => n += k,
            Err(_) => break,
        }
    }
    let body = json!({
        "status": 503, "error": true, "service": "Blocks Devnet",
        "message": format!("Service Unavailable: this devnet already has {cap} open connections (its limit); retry shortly"),
    })
    .to_string();
    let head = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(body.as_bytes()).await;
    let _ = stream.shutdown().await;
    // read (and drop) a bounded rest, so closing does not reset the connection under the answer
    let _ = tokio::time::timeout(REFUSAL_READ, async {
        let mut left = 64 * 1024usize;
        while left > 0 {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(k) => left = left.saturating_sub(k),
            }
        }
    })
    .await;
}

/// The host a request was sent to: the authority of an absolute-form target (which overrides
/// `Host`, RFC 9112 §3.2.2), else the `Host` header; without its port, lowercase, without a
/// trailing dot. `None` when the request names no host (HTTP/1.0 tools; browsers always send one).
fn request_host(uri: &Uri, headers: &HeaderMap) -> Option<Result<String, ()>> {
    let raw = match uri.authority() {
        Some(a) => a.as_str().to_string(),
        None => match headers.get("host") {
            Some(h) => match h.to_str() {
                Ok(s) => s.to_string(),
                Err(_) => return Some(Err(())),
            },
            None => return None,
        },
    };
    let raw = raw.rsplit_once('@').map(|(_, h)| h).unwrap_or(&raw).trim();
    let host = if let Some(rest) = raw.strip_prefix('[') {
        match rest.split_once(']') {
            Some((h, tail)) if tail.is_empty() || tail.strip_prefix(':').is_some_and(is_port) => format!("[{h}]"),
            _ => return Some(Err(())),
        }
    } else {
        match raw.rsplit_once(':') {
            Some((h, port)) if is_port(port) => h.to_string(),
            Some(_) => return Some(Err(())),
            None => raw.to_string(),
        }
    };
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    if host.is_empty() {
        return Some(Err(()));
    }
    Some(Ok(host))
}

fn is_port(s: &str) -> bool {
    !s.is_empty() && s.len() <= 5 && s.bytes().all(|b| b.is_ascii_digit())
}

/// True for the loopback names: `localhost` and `*.localhost` (RFC 6761), 127.0.0.0/8, `[::1]`.
fn is_loopback_host(host: &str) -> bool {
    if host == "localhost" || host.ends_with(".localhost") {
        return true;
    }
    let ip = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    ip.parse::<IpAddr>().is_ok_and(|ip| match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
    })
}

/// True when `host` is one of the extra names (`allowed`: exact names, or `.example.test` for
/// that name and every name under it).
fn is_allowed_host(host: &str, allowed: &[String]) -> bool {
    allowed.iter().any(|a| {
        let a = a.trim().trim_end_matches('.').to_ascii_lowercase();
        match a.strip_prefix('.') {
            Some(suffix) => host == suffix || host.ends_with(&format!(".{suffix}")),
            None => host == a,
        }
    })
}

/// DNS rebinding: a web page whose name was re-pointed at 127.0.0.1 reaches this port with its
/// own name in `Host`. Only loopback names (and the names given by `allowed_hosts`) are served;
/// anything else gets `421 Misdirected Request`.
pub(crate) fn misdirected(net: &Net, uri: &Uri, headers: &HeaderMap) -> Option<Response<Body>> {
    let host = match request_host(uri, headers) {
        None => return None,
        Some(Ok(h)) if is_loopback_host(&h) || is_allowed_host(&h, &net.cfg.allowed_hosts) => return None,
        Some(Ok(h)) => h,
        Some(Err(())) => "(malformed)".to_string(),
    };
    tracing::warn!(target: "blocks::devnet", "421: request for host {host:?}");
    Some(crate::request::json_response(
        421,
        &json!({
            "status": 421, "error": true, "service": "Blocks Devnet",
            "message": format!(
                "Misdirected Request: this devnet serves loopback host names only (localhost, 127.0.0.0/8, [::1]), not {host:?}; start it with --allow-host {host} (allowedHosts) to serve that name"
            ),
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(h: &str) -> Option<Result<String, ()>> {
        let mut headers = HeaderMap::new();
        headers.insert("host", h.parse().expect("header"));
        request_host(&Uri::from_static("/time/0"), &headers)
    }

    #[test]
    fn host_names() {
        assert_eq!(host("127.0.0.1:8080"), Some(Ok("127.0.0.1".into())));
        assert_eq!(host("LocalHost."), Some(Ok("localhost".into())));
        assert_eq!(host("[::1]:9"), Some(Ok("[::1]".into())));
        assert_eq!(host("evil.example:80"), Some(Ok("evil.example".into())));
        assert_eq!(host("a:b:c"), Some(Err(())));
        assert_eq!(host("[::1"), Some(Err(())));
        assert_eq!(request_host(&Uri::from_static("/x"), &HeaderMap::new()), None);
        let absolute = Uri::from_static("http://evil.example/time/0");
        let mut headers = HeaderMap::new();
        headers.insert("host", "127.0.0.1".parse().expect("header"));
        assert_eq!(request_host(&absolute, &headers), Some(Ok("evil.example".into())));
        for ok in [
            "localhost",
            "app.localhost",
            "127.0.0.1",
            "127.255.0.9",
            "[::1]",
            "[::ffff:127.0.0.1]",
        ] {
            assert!(is_loopback_host(ok), "{ok}");
        }
        for bad in [
            "localhost.evil.example",
            "128.0.0.1",
            "0.0.0.0",
            "[::2]",
            "evil.example",
            "127.0.0.1.nip.io",
        ] {
            assert!(!is_loopback_host(bad), "{bad}");
        }
        let allowed = vec!["devnet.test".to_string(), ".lan.test".to_string()];
        assert!(is_allowed_host("devnet.test", &allowed));
        assert!(is_allowed_host("lan.test", &allowed) && is_allowed_host("a.b.lan.test", &allowed));
        assert!(!is_allowed_host("xdevnet.test", &allowed) && !is_allowed_host("evillan.test", &allowed));
    }
}
