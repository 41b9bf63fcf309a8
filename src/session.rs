//! `NativeSession`: one task session; events reach JS through one threadsafe function, and the
//! JS `TaskSession` (lib/session.js) fans them out to listeners.

use std::sync::Arc;

use blocks_core::{SessionEvent, Snapshot, TaskSession};
use blocks_wire::TaskEvent;
use napi::bindgen_prelude::*;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi_derive::napi;
use serde_json::{json, Value};

use crate::errors::{NativeErrorInfo, OrJs};

/// Keeps the event loop alive (not weak) while the session is live; dropped at the end.
type EventSink = ThreadsafeFunction<Value, (), Value, Status, false, false>;

/// Internal handle of a task session (wrapped by the JS `TaskSession`).
#[napi]
pub struct NativeSession {
    inner: Arc<TaskSession>,
}

impl NativeSession {
    pub fn new(inner: TaskSession) -> Self {
        NativeSession { inner: Arc::new(inner) }
    }
}

/// One delivered event as lib/session.js reads it: `{ timetoken, event }`, where a skipped message is
/// `{ $malformed, message }` and a lost subscription `{ $lost }`.
fn event_json(e: SessionEvent) -> Value {
    match e {
        SessionEvent::Event { timetoken, event } => {
            json!({ "timetoken": timetoken.map(|t| t.to_string()), "event": event.to_value() })
        }
        SessionEvent::Malformed {
            timetoken,
            reason,
            shown,
        } => {
            json!({ "timetoken": timetoken.to_string(), "event": { "$malformed": reason, "message": shown } })
        }
        SessionEvent::Lost(reason) => json!({ "timetoken": null, "event": { "$lost": reason } }),
    }
}

/// A snapshot's events as JSON (each with its `type`).
fn snapshot_json(s: &Snapshot) -> Value {
    let events = |it: Vec<TaskEvent>| Value::Array(it.iter().map(TaskEvent::to_value).collect());
    json!({
        "state": s.state,
        "terminal": s.terminal.clone().map(|t| TaskEvent::Terminal(t).to_value()),
        "artifacts": events(s.artifacts.iter().cloned().map(TaskEvent::Artifact).collect()),
        "cancelRequested": s.cancel_requested.clone().map(|c| TaskEvent::CancelRequested(c).to_value()),
        "events": events(s.events.clone()),
        "closed": s.closed,
        "streams": serde_json::to_value(&s.streams).unwrap_or_default(),
    })
}

#[napi]
impl NativeSession {
    /// Identity and RPC metadata.
    #[napi(
        getter,
        ts_return_type = "{ taskId: string; ownerId: string; orgId: string; agentName: string | null; readToken: string | null; statusChannel: string; idempotent: boolean; queued: boolean; pushConfigId: string | null }"
    )]
    pub fn info(&self) -> Value {
        let i = self.inner.info();
        json!({
            "taskId": i.task_id, "ownerId": i.owner_id, "orgId": i.org_id, "agentName": i.agent_name,
            "readToken": i.read_token, "statusChannel": i.status_channel, "idempotent": i.idempotent,
            "queued": i.queued, "pushConfigId": i.push_config_id,
        })
    }

    /// Download a file artifact into memory.
    #[napi(ts_args_type = "artifactRef: any")]
    pub async fn download_file(&self, artifact_ref: Value) -> Result<Buffer> {
        let bytes = self.inner.download_file(&artifact_ref).await.or_js().await?;
        Ok(bytes.into())
    }

    /// Download a file artifact to `path` (streamed; no partial file on failure). Resolves with the byte count.
    #[napi(ts_args_type = "artifactRef: any, path: string")]
    pub async fn download_file_to(&self, artifact_ref: Value, path: String) -> Result<f64> {
        let n = self
            .inner
            .download_file_to(&artifact_ref, std::path::Path::new(&path))
            .await
            .or_js()
            .await?;
        Ok(n as f64)
    }

    /// The state when the session was created (history effects included).
    #[napi(
        ts_return_type = "{ state: string | null; terminal: any; artifacts: any[]; cancelRequested: any; events: any[]; closed: boolean }"
    )]
    pub fn initial(&self) -> Value {
        snapshot_json(self.inner.initial())
    }

    /// Start delivering live events to `sink` (once), in batches: whatever arrived together is one
    /// call (fewer thread hops under load).
    #[napi(ts_args_type = "sink: (events: Array<{ timetoken: string | null; event: any }>) => void")]
    pub fn start(&self, sink: EventSink) -> Result<()> {
        let Some(mut rx) = self.inner.take_events() else {
            return Ok(());
        };
        napi::bindgen_prelude::spawn(async move {
            while let Some(ev) = rx.recv().await {
                let mut batch = vec![event_json(ev)];
                while let Ok(more) = rx.try_recv() {
                    batch.push(event_json(more));
                }
                sink.call(Value::Array(batch), ThreadsafeFunctionCallMode::NonBlocking);
            }
            drop(sink);
        });
        Ok(())
    }

    /// Stream descriptors announced so far.
    #[napi(ts_return_type = "any[]")]
    pub fn streams(&self) -> Value {
        serde_json::to_value(self.inner.snapshot().streams).unwrap_or_default()
    }

    /// Open an announced stream (by runtime id or declared name), synchronously: the stream
    /// connects in the background. An error comes back as data (JS throws it as its class).
    #[napi]
    pub fn open_stream(
        &self,
        stream_id: String,
        reorder_timeout_ms: Option<f64>,
        uuid_prefix: String,
        writer: Option<NativeWriterOptions>,
    ) -> Either<crate::stream::NativeStream, NativeErrorInfo> {
        let writer = match writer.unwrap_or_default().tuning() {
            Ok(w) => w,
            Err(m) => return Either::B(blocks_core::error::Error::InvalidArgument(m).into()),
        };
        let timeout = std::time::Duration::from_secs_f64(
            reorder_timeout_ms
                .unwrap_or(blocks_wire::DEFAULT_REORDER_TIMEOUT_MS as f64)
                // NaN and negatives are 0; the JS side refuses more than an hour, this guards
                // from_secs_f64 (it panics on infinity)
                .clamp(0.0, 3_600_000.0)
                / 1000.0,
        );
        let inner = self.inner.clone();
        napi::bindgen_prelude::within_runtime_if_available(move || {
            match inner.open_stream(&stream_id, timeout, &uuid_prefix, writer) {
                Ok(s) => Either::A(crate::stream::NativeStream::new(s)),
                Err(e) => Either::B(e.into()),
            }
        })
    }

    /// The download URL of a file artifact (carries the read token).
    #[napi(ts_args_type = "artifactRef: any")]
    pub fn file_url(&self, artifact_ref: Value) -> Either<String, NativeErrorInfo> {
        match self.inner.file_url(&artifact_ref) {
            Ok(u) => Either::A(u),
            Err(e) => Either::B(e.into()),
        }
    }

    /// Stop the live subscription. Idempotent.
    #[napi]
    pub fn close(&self) {
        let inner = self.inner.clone();
        napi::bindgen_prelude::within_runtime_if_available(move || inner.close());
    }
}

/// How the caller's writes on a stream are framed (`StreamRef.open` options).
#[napi(object)]
#[derive(Default)]
pub struct NativeWriterOptions {
    /// Bytes bundled into one frame before it is sent.
    pub bundle_size_bytes: Option<f64>,
    /// Milliseconds a partial bundle waits before it is sent.
    pub max_latency_ms: Option<f64>,
    /// Largest message in bytes (above 512) before a frame is split into parts.
    pub max_message_size: Option<f64>,
}

impl NativeWriterOptions {
    /// The tuning, or the message naming the bad option.
    fn tuning(&self) -> std::result::Result<blocks_core::session::WriterTuning, String> {
        fn count(name: &str, v: Option<f64>) -> std::result::Result<Option<u64>, String> {
            match v {
                None => Ok(None),
                Some(n) if n.is_finite() && n >= 0.0 && n.fract() == 0.0 && n <= 1e12 => Ok(Some(n as u64)),
                Some(n) => Err(format!(
                    "open(options): {name} must be a whole number of at least 0, got {n}"
                )),
            }
        }
        Ok(blocks_core::session::WriterTuning {
            bundle_bytes: count("bundleSizeBytes", self.bundle_size_bytes)?.map(|n| n as usize),
            max_latency: count("maxLatencyMs", self.max_latency_ms)?.map(std::time::Duration::from_millis),
            max_message_size: count("maxMessageSize", self.max_message_size)?.map(|n| n as usize),
        })
    }
}
