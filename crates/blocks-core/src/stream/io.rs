//! Stream I/O over the realtime plane: an ordered, batching writer and a reader that reassembles
//! multipart frames and reorders by sequence number. Shared by agents and callers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use super::bundle::{Bundler, Write};
use super::frames::{normalise, split_multipart, Format, Inbound, Item, Offer, Reassembler, DEFAULT_MAX_MESSAGE_SIZE};
use super::reorder::Reorder;
use crate::error::{Error, Result};
use crate::realtime::Realtime;

static STREAM_CLIENTS: AtomicU32 = AtomicU32::new(0);

/// Send the reader a non-fatal error when the link just degraded; false when nobody reads.
async fn report_link(
    link: &mut tokio::sync::watch::Receiver<crate::realtime::Link>,
    tx: &mpsc::Sender<ReaderEvent>,
) -> bool {
    let ev = link_error(&link.borrow_and_update());
    match ev {
        Some(ev) => tx.send(ev).await.is_ok(),
        None => true,
    }
}

/// A non-fatal stream error for a degraded link (STRM-16): the reader keeps going.
fn link_error(link: &crate::realtime::Link) -> Option<ReaderEvent> {
    match link {
        crate::realtime::Link::Degraded { category, error } => Some(ReaderEvent::Error {
            category: category.clone(),
            message: format!("stream subscription interrupted ({error}); reconnecting"),
            fatal: false,
        }),
        crate::realtime::Link::Connected => None,
    }
}

/// A stream client uuid: `<prefix>-stream-NNNN` (process-wide counter).
pub fn stream_uuid(prefix: &str) -> String {
    let n = STREAM_CLIENTS.fetch_add(1, Ordering::Relaxed) % 10_000;
    format!("{prefix}-stream-{n:04}")
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Writer tuning.
#[derive(Clone, Copy, Debug)]
pub struct WriterOptions {
    /// Flush when this many bytes are buffered.
    pub bundle_bytes: usize,
    /// Flush this long after the first unflushed write.
    pub max_latency: Duration,
    /// Split frames above this size into multipart messages.
    pub max_message_size: usize,
    /// Publish `stream_end` on end (dedicated, non-bidirectional writers).
    pub end_marker: bool,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            bundle_bytes: super::bundle::DEFAULT_BUNDLE_BYTES,
            max_latency: super::bundle::DEFAULT_MAX_LATENCY,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            end_marker: true,
        }
    }
}

enum Cmd {
    Write(Write),
    Flush(oneshot::Sender<()>),
    End(oneshot::Sender<()>),
}

/// The writing side of a stream: writes are batched and published in order.
pub struct StreamWriter {
    tx: mpsc::UnboundedSender<Cmd>,
    format: Format,
}

async fn publish_frame(rt: &Realtime, channel: &str, frame: &Value, meta: &HashMap<String, String>, max: usize) {
    for part in split_multipart(frame, max, now_ms()) {
        let mut delay = Duration::from_millis(100);
        for attempt in 0..3 {
            match rt.publish(channel, part.clone(), Some(meta.clone()), false).await {
                Ok(_) => break,
                Err(e) if attempt == 2 => {
                    tracing::error!(target: "blocks::stream", "stream frame dropped on {channel}: {e}")
                }
                Err(_) => {
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
            }
        }
    }
}

/// Frames published concurrently by one writer. Readers put frames back in sequence order, so a
/// small window hides the publish round trip without reordering what the caller sees.
const PUBLISH_WINDOW: usize = 4;

/// Frames in flight: at most [`PUBLISH_WINDOW`], each publishing its multipart parts in order.
struct InFlight {
    set: tokio::task::JoinSet<()>,
}

impl InFlight {
    async fn publish(
        &mut self,
        rt: &Arc<Realtime>,
        channel: &str,
        frame: Value,
        meta: &HashMap<String, String>,
        max: usize,
    ) {
        while self.set.try_join_next().is_some() {}
        if self.set.len() >= PUBLISH_WINDOW {
            let _ = self.set.join_next().await;
        }
        let (rt, channel, meta) = (rt.clone(), channel.to_string(), meta.clone());
        self.set
            .spawn(async move { publish_frame(&rt, &channel, &frame, &meta, max).await });
    }

    /// Wait until everything published so far is out.
    async fn drain(&mut self) {
        while self.set.join_next().await.is_some() {}
    }
}

impl StreamWriter {
    /// Start a writer publishing on `channel` with `rt` (its uuid is the frames' `sender`).
    pub fn start(rt: Arc<Realtime>, channel: String, stream_id: &str, format: Format, opts: WriterOptions) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<Cmd>();
        let mut bundler = Bundler::new(stream_id, format, opts.bundle_bytes, opts.max_latency);
        let meta = HashMap::from([
            ("sender".to_string(), rt.user_id().to_string()),
            ("protocolVersion".to_string(), blocks_wire::PROTOCOL_VERSION.to_string()),
        ]);
        tokio::spawn(async move {
            let max = opts.max_message_size;
            let mut inflight = InFlight {
                set: tokio::task::JoinSet::new(),
            };
            loop {
                let deadline = bundler.deadline();
                let cmd = match deadline {
                    Some(d) => tokio::select! {
                        c = rx.recv() => c,
                        _ = tokio::time::sleep_until(d.into()) => {
                            if let Some(f) = bundler.flush(now_ms()) {
                                inflight.publish(&rt, &channel, f, &meta, max).await;
                            }
                            continue;
                        }
                    },
                    None => rx.recv().await,
                };
                match cmd {
                    Some(Cmd::Write(w)) => match bundler.write(w, Instant::now(), now_ms()) {
                        Ok(Some(f)) => inflight.publish(&rt, &channel, f, &meta, max).await,
                        Ok(None) => {}
                        Err(e) => tracing::warn!(target: "blocks::stream", "{e}"),
                    },
                    Some(Cmd::Flush(done)) => {
                        if let Some(f) = bundler.flush(now_ms()) {
                            inflight.publish(&rt, &channel, f, &meta, max).await;
                        }
                        inflight.drain().await;
                        let _ = done.send(());
                    }
                    Some(Cmd::End(done)) => {
                        if let Some(f) = bundler.flush(now_ms()) {
                            inflight.publish(&rt, &channel, f, &meta, max).await;
                        }
                        inflight.drain().await;
                        if opts.end_marker {
                            let end = bundler.end_marker(now_ms());
                            if let Err(e) = rt.publish(&channel, end, Some(meta.clone()), false).await {
                                tracing::debug!(target: "blocks::stream", "end marker on {channel} not published: {e}");
                            }
                        }
                        let _ = done.send(());
                        return;
                    }
                    None => return,
                }
            }
        });
        StreamWriter { tx, format }
    }

    /// Queue a write. Raw strings are refused on events streams.
    pub fn write(&self, w: Write) -> Result<()> {
        if self.format == Format::Events && matches!(w, Write::Text(_)) {
            return Err(Error::InvalidArgument(
                "write() does not accept raw strings in format: \"events\" (pass an object, or use a bytes stream)"
                    .into(),
            ));
        }
        self.tx
            .send(Cmd::Write(w))
            .map_err(|_| Error::Closed("Cannot write to an ended stream".into()))
    }

    /// Publish what is buffered now.
    pub async fn flush(&self) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Cmd::Flush(tx))
            .map_err(|_| Error::Closed("Cannot write to an ended stream".into()))?;
        rx.await.map_err(|_| Error::Closed("stream writer stopped".into()))
    }

    /// Flush, publish the end marker (if any) and stop. Idempotent.
    pub async fn end(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Cmd::End(tx)).is_ok() {
            let _ = rx.await;
        }
    }
}

/// What a reader yields.
#[derive(Debug, Clone)]
pub enum ReaderEvent {
    /// A data item, in sequence order.
    Item(Item),
    /// A problem; `fatal` ends the stream.
    Error {
        /// Neutral category (`malformed_response`, `access_denied`, …).
        category: String,
        /// Description.
        message: String,
        /// Whether the stream ended because of it.
        fatal: bool,
    },
}

/// A non-fatal error for a message that is not a valid stream frame (it is skipped).
fn malformed(why: String) -> ReaderEvent {
    ReaderEvent::Error {
        category: "malformed_response".into(),
        message: why,
        fatal: false,
    }
}

/// The reading side of a stream: frames are reassembled, normalised and reordered.
pub struct StreamReader {
    rx: tokio::sync::Mutex<mpsc::Receiver<ReaderEvent>>,
    task: tokio::task::JoinHandle<()>,
}

impl StreamReader {
    /// Subscribe to `channel` from `cursor` (a timetoken; None = now) and deliver in order.
    pub fn start(
        rt: Arc<Realtime>,
        channel: String,
        format: Format,
        reorder_timeout: Duration,
        cursor: Option<u64>,
    ) -> Self {
        let (tx, rx) = mpsc::channel::<ReaderEvent>(256);
        let task = tokio::spawn(async move {
            let mut faults = rt.faults();
            let mut link = rt.link();
            let mut sub = Box::pin(rt.subscribe(std::slice::from_ref(&channel), cursor));
            let mut reassembler = Reassembler::default();
            let mut reorder = Reorder::new(format.first_seq(), reorder_timeout);
            loop {
                let deadline = reorder.deadline();
                let refused = *faults.borrow_and_update();
                let msg = match deadline {
                    _ if refused.is_some() => {
                        let status = refused.unwrap_or(0);
                        let (category, what) = if status == 403 {
                            ("access_denied", "access denied")
                        } else {
                            ("bad_request", "bad request")
                        };
                        let ev = ReaderEvent::Error {
                            category: category.into(),
                            message: format!("stream subscription refused ({what}, HTTP {status}): the stream token was revoked or is invalid"),
                            fatal: true,
                        };
                        let _ = tx.send(ev).await;
                        return;
                    }
                    Some(d) => tokio::select! {
                        _ = faults.changed() => continue,
                        changed = link.changed() => {
                            if changed.is_ok() && !report_link(&mut link, &tx).await { return; }
                            continue;
                        }
                        m = sub.next() => m,
                        _ = tokio::time::sleep_until(d.into()) => {
                            for item in reorder.on_timeout(Instant::now()) {
                                if tx.send(ReaderEvent::Item(item)).await.is_err() { return; }
                            }
                            if reorder.is_done() { return; }
                            continue;
                        }
                    },
                    None => tokio::select! {
                        _ = faults.changed() => continue,
                        changed = link.changed() => {
                            if changed.is_ok() && !report_link(&mut link, &tx).await { return; }
                            continue;
                        }
                        m = sub.next() => m,
                    },
                };
                let Some(msg) = msg else {
                    let reason = rt.gave_up().borrow().clone();
                    if let Some(reason) = reason {
                        let ev = ReaderEvent::Error {
                            category: "network_down".into(),
                            message: format!("stream subscription on {channel} stopped reconnecting: {reason}"),
                            fatal: true,
                        };
                        let _ = tx.send(ev).await;
                    }
                    return;
                };
                if msg.channel != channel {
                    continue;
                }
                let frame = match reassembler.offer(msg.payload, Instant::now()) {
                    Offer::Whole(v) | Offer::Complete(v) => v,
                    Offer::Pending => continue,
                    Offer::Invalid(why) => {
                        if tx.send(malformed(why)).await.is_err() {
                            return;
                        }
                        continue;
                    }
                };
                let out = match normalise(&frame) {
                    Inbound::Item(item) => reorder.push(item, Instant::now()),
                    Inbound::End(seq) => {
                        if seq.is_none() {
                            tracing::warn!(target: "blocks::stream", "stream_end missing numeric seq on {channel}");
                        }
                        reorder.end(seq, Instant::now())
                    }
                    Inbound::Invalid(why) => {
                        if tx.send(malformed(why)).await.is_err() {
                            return;
                        }
                        continue;
                    }
                };
                for item in out {
                    if tx.send(ReaderEvent::Item(item)).await.is_err() {
                        return;
                    }
                }
                if reorder.is_done() {
                    return;
                }
            }
        });
        StreamReader {
            rx: tokio::sync::Mutex::new(rx),
            task,
        }
    }

    /// The next event; `None` once the stream has ended.
    pub async fn next(&self) -> Option<ReaderEvent> {
        self.rx.lock().await.recv().await
    }

    /// Stop reading (the iterator ends).
    pub fn close(&self) {
        self.task.abort();
    }
}

impl Drop for StreamReader {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One open stream as its holder sees it (agent or caller): it may write, read, or both.
pub struct Stream {
    /// Stream id.
    pub stream_id: String,
    /// Stream channel.
    pub channel: String,
    /// This client's uuid (the `sender` of its frames).
    pub uuid: String,
    /// Payload format.
    pub format: Format,
    /// Direction from this holder's point of view.
    pub direction: String,
    realtime: Arc<Realtime>,
    writer: Option<StreamWriter>,
    reader: Option<StreamReader>,
    ended: std::sync::atomic::AtomicBool,
}

/// How to open a [`Stream`].
pub struct StreamSpec {
    /// Stream id.
    pub stream_id: String,
    /// Stream channel.
    pub channel: String,
    /// Format.
    pub format: Format,
    /// Direction from the holder's point of view (`outbound` = holder writes).
    pub direction: String,
    /// Reorder wait for gaps (zero = arrival order).
    pub reorder_timeout: Duration,
    /// Writer tuning.
    pub writer: WriterOptions,
    /// Read from this timetoken (None = from now).
    pub cursor: Option<u64>,
}

impl Stream {
    /// Open a stream with its own realtime client `rt` (token and uuid already set).
    pub fn open(rt: Arc<Realtime>, spec: StreamSpec) -> Arc<Stream> {
        let writes = matches!(spec.direction.as_str(), "outbound" | "bidirectional");
        let reads = matches!(spec.direction.as_str(), "inbound" | "bidirectional");
        let writer = writes.then(|| {
            StreamWriter::start(
                rt.clone(),
                spec.channel.clone(),
                &spec.stream_id,
                spec.format,
                spec.writer,
            )
        });
        let reader = reads.then(|| {
            StreamReader::start(
                rt.clone(),
                spec.channel.clone(),
                spec.format,
                spec.reorder_timeout,
                spec.cursor,
            )
        });
        Arc::new(Stream {
            stream_id: spec.stream_id,
            channel: spec.channel,
            uuid: rt.user_id().to_string(),
            format: spec.format,
            direction: spec.direction,
            realtime: rt,
            writer,
            reader,
            ended: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// True until `end()`.
    pub fn is_active(&self) -> bool {
        !self.ended.load(Ordering::SeqCst)
    }

    /// Queue a write.
    pub fn write(&self, w: Write) -> Result<()> {
        if !self.is_active() {
            return Err(Error::Closed("Cannot write to an ended stream".into()));
        }
        match &self.writer {
            Some(wr) => wr.write(w),
            None => Err(Error::InvalidArgument("Cannot write to an inbound-only stream".into())),
        }
    }

    /// Publish what is buffered now.
    pub async fn flush(&self) -> Result<()> {
        match &self.writer {
            Some(w) => w.flush().await,
            None => Ok(()),
        }
    }

    /// The next inbound event (`None` when the stream ended).
    pub async fn next(&self) -> Result<Option<ReaderEvent>> {
        match &self.reader {
            Some(r) => Ok(r.next().await),
            None => Err(Error::InvalidArgument(
                "Cannot read from an outbound-only stream".into(),
            )),
        }
    }

    /// Flush, publish the end marker where the spec wants one, stop reading, leave. Idempotent.
    pub async fn end(&self) {
        if self.ended.swap(true, Ordering::SeqCst) {
            return;
        }
        if let Some(w) = &self.writer {
            w.end().await;
        }
        if let Some(r) = &self.reader {
            r.close();
        }
        self.realtime.close();
    }
}
