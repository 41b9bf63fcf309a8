//! Agent-side streams (agent spec §7.4, §9): resolving a card declaration, the setup handshake,
//! the instance's stream registry (shared streams written by one client for every pipe task that
//! holds them, released when the last task lets go), external streams (the SDK only does the
//! handshake; another process writes) and `failStream`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use serde_json::{json, Value};

use super::{CreateStreamOptions, DeclaredStream, TaskContext};
use crate::error::{Error, Result};
use crate::realtime::{Realtime, RealtimeConfig};
use crate::stream::io::{stream_uuid, Stream, StreamSpec, WriterOptions};
use crate::stream::Format;

/// Frames above this many bytes can never be split usefully (a part carries ~512 bytes of envelope).
const MIN_MESSAGE_SIZE: usize = 512;

/// Stream ids: 1..=92 bytes of `[A-Za-z0-9_-]` (STRM-18).
pub fn validate_stream_id(id: &str) -> Result<()> {
    if id.is_empty() {
        return Err(Error::InvalidArgument("Stream ID cannot be empty".into()));
    }
    if id.len() > 92 {
        return Err(Error::InvalidArgument(format!(
            "Stream ID exceeds 92 byte limit ({} bytes)",
            id.len()
        )));
    }
    if !blocks_wire::is_valid_stream_id(id) {
        return Err(Error::InvalidArgument(format!(
            "Stream ID contains invalid characters: {id:?} (use letters, digits, '_' and '-')"
        )));
    }
    Ok(())
}

/// What a registered stream is; a stream acquired again must be the same (ASTR-07).
#[derive(Clone, Debug, PartialEq)]
pub struct StreamKind {
    /// Agent-relative direction.
    pub direction: String,
    /// `bytes` or `events`.
    pub format: String,
    /// SDK-managed writer (false) or external writer (true).
    pub external: bool,
    /// `dedicated` or `shared`.
    pub affinity: String,
}

impl StreamKind {
    /// The error for acquiring an existing stream as something else, or none.
    pub fn mismatch(&self, wanted: &StreamKind, id: &str) -> Result<()> {
        let what = if self.direction != wanted.direction {
            format!(
                "direction mismatch ({} registered, {} asked)",
                self.direction, wanted.direction
            )
        } else if self.format != wanted.format {
            format!("format mismatch ({} registered, {} asked)", self.format, wanted.format)
        } else if self.external != wanted.external {
            "cannot mix embedded and external use of one stream".to_string()
        } else if self.affinity != wanted.affinity {
            format!(
                "affinity mismatch ({} registered, {} asked)",
                self.affinity, wanted.affinity
            )
        } else {
            return Ok(());
        };
        Err(Error::InvalidArgument(format!("stream {id}: {what}")))
    }
}

/// One task's hold on a stream: what `ctx.createStream()` returns. `release()` is task-scoped: the
/// stream itself ends when the last task that holds it releases it.
pub struct StreamLease {
    /// Stream id (`<taskId>-<n>`, or the declared key for shared streams).
    pub stream_id: String,
    /// `stream.<agent>.<streamId>`.
    pub channel: String,
    /// The SDK-managed client (none for external streams).
    pub stream: Option<Arc<Stream>>,
    /// External streams: the writer's token (T7a).
    pub token: Option<String>,
    /// `dedicated` or `shared`.
    pub affinity: String,
    task_id: String,
    task: Weak<TaskContext>,
    registry: Weak<StreamRegistry>,
    setup: Value,
    released: AtomicBool,
    activated: AtomicBool,
}

impl StreamLease {
    /// True once this task let go of the stream (or the stream was failed).
    pub fn is_released(&self) -> bool {
        self.released.load(Ordering::SeqCst)
    }

    /// Let go of the stream for this task (idempotent). The last holder ends it.
    pub async fn release(&self) {
        if self.released.swap(true, Ordering::SeqCst) {
            return;
        }
        if let Some(r) = self.registry.upgrade() {
            r.release(&self.stream_id, &self.task_id).await;
        } else if let Some(s) = &self.stream {
            s.end().await;
        }
    }

    /// External streams: complete the handshake (`phase: "activate"`); the network then announces
    /// the stream to the caller. Once only.
    pub async fn activate(&self, metadata: Option<Value>) -> Result<()> {
        if self.stream.is_some() {
            return Err(Error::InvalidArgument("activate() is for external streams only".into()));
        }
        if self.activated.swap(true, Ordering::SeqCst) {
            return Err(Error::InvalidArgument(format!(
                "stream {} is already activated",
                self.stream_id
            )));
        }
        let task = self
            .task
            .upgrade()
            .ok_or_else(|| Error::Closed(format!("task {} has ended", self.task_id)))?;
        let mut setup = self.setup.clone();
        setup["phase"] = json!("activate");
        if let Some(m) = metadata {
            setup["metadata"] = m;
        }
        if let Err(e) = task.handshake(&setup).await {
            self.activated.store(false, Ordering::SeqCst);
            return Err(e);
        }
        Ok(())
    }
}

struct Entry {
    kind: StreamKind,
    stream: Option<Arc<Stream>>,
    /// The leases of the tasks holding the stream, by task id.
    holders: HashMap<String, Arc<StreamLease>>,
}

/// One stream id's place in the registry; `setup` serialises acquisitions of that id.
#[derive(Default)]
struct Slot {
    setup: tokio::sync::Mutex<()>,
    entry: Mutex<Option<Entry>>,
}

/// The instance's streams, by stream id.
#[derive(Default)]
pub struct StreamRegistry {
    slots: Mutex<HashMap<String, Arc<Slot>>>,
}

impl StreamRegistry {
    fn slot(&self, id: &str) -> Arc<Slot> {
        let mut s = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        s.entry(id.to_string()).or_default().clone()
    }

    /// Drop one task's hold; end the stream when nobody holds it any more.
    async fn release(&self, id: &str, task_id: &str) {
        let Some(slot) = self.slots.lock().ok().and_then(|s| s.get(id).cloned()) else {
            return;
        };
        let ended = {
            let mut e = slot.entry.lock().unwrap_or_else(|e| e.into_inner());
            let empty = match e.as_mut() {
                Some(entry) => {
                    entry.holders.remove(task_id);
                    entry.holders.is_empty()
                }
                None => false,
            };
            if empty {
                e.take()
            } else {
                None
            }
        };
        if let Some(entry) = ended {
            self.forget(id, &slot);
            if let Some(s) = entry.stream {
                s.end().await;
            }
        }
    }

    fn forget(&self, id: &str, slot: &Arc<Slot>) {
        if let Ok(mut s) = self.slots.lock() {
            if s.get(id).is_some_and(|x| Arc::ptr_eq(x, slot)) {
                s.remove(id);
            }
        }
    }

    /// Remove a stream for good and end it; returns the tasks that held it.
    pub async fn remove(&self, id: &str) -> Vec<Weak<TaskContext>> {
        let Some(slot) = self.slots.lock().ok().and_then(|s| s.get(id).cloned()) else {
            return Vec::new();
        };
        // a task still attaching (its handshake in flight) finishes first, so it is failed too
        let _setup = slot.setup.lock().await;
        self.forget(id, &slot);
        let entry = slot.entry.lock().unwrap_or_else(|e| e.into_inner()).take();
        let Some(entry) = entry else { return Vec::new() };
        for lease in entry.holders.values() {
            lease.released.store(true, Ordering::SeqCst);
        }
        if let Some(s) = &entry.stream {
            s.end().await;
        }
        entry.holders.values().map(|l| l.task.clone()).collect()
    }

    /// Streams held now (embedded and external), for presence.
    pub fn len(&self) -> usize {
        self.slots.lock().map(|s| s.len()).unwrap_or(0)
    }

    /// True when no stream is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// `STREAM_*` environment defaults (STRM-19), overridden by explicit options. Invalid values are
/// ignored with a warning.
fn env_number(name: &str) -> Option<u64> {
    let v = crate::config::env(name)?;
    match v.trim().parse::<u64>() {
        Ok(n) => Some(n),
        Err(_) => {
            tracing::warn!(target: "blocks::stream", "{name}={v:?} is not a whole number; using the default");
            None
        }
    }
}

/// Writer options from explicit values, else `STREAM_*` variables, else the defaults.
pub fn writer_options(
    bundle: Option<usize>,
    latency: Option<Duration>,
    max_message: Option<usize>,
) -> Result<WriterOptions> {
    let mut w = WriterOptions::default();
    if let Some(b) = bundle.or_else(|| env_number("STREAM_BUNDLE_SIZE").map(|n| n as usize)) {
        w.bundle_bytes = b;
    }
    if let Some(l) = latency.or_else(|| env_number("STREAM_MAX_LATENCY_MS").map(Duration::from_millis)) {
        w.max_latency = l;
    }
    let explicit = max_message.is_some();
    if let Some(m) = max_message.or_else(|| env_number("STREAM_MAX_MESSAGE_SIZE").map(|n| n as usize)) {
        if m <= MIN_MESSAGE_SIZE {
            if explicit {
                return Err(Error::InvalidArgument(format!(
                    "maxMessageSize must be greater than {MIN_MESSAGE_SIZE} bytes, got {m}"
                )));
            }
            tracing::warn!(target: "blocks::stream", "STREAM_MAX_MESSAGE_SIZE={m} is not above {MIN_MESSAGE_SIZE}; using the default");
        } else {
            w.max_message_size = m;
        }
    }
    Ok(w)
}

impl TaskContext {
    /// The stream token lifetime sent in `stream_setup` (AGT-15): the task's duration, else 60
    /// minutes for pipe tasks, else `ceil(maxRunningTimeSec / 60)` (default 3600 s → 60).
    pub fn stream_ttl_minutes(&self) -> i64 {
        if let Some(d) = self.duration {
            return d;
        }
        if self.task_kind == "pipe" {
            return 60;
        }
        let secs = self.max_running_time_sec.unwrap_or(3600).max(1);
        secs.div_ceil(60) as i64
    }

    fn resolve(&self, opts: &CreateStreamOptions) -> Result<DeclaredStream> {
        if self.declared.is_empty() {
            return Err(Error::InvalidArgument(
                "the agent card declares no streams: add a \"streams\" section (e.g. {\"_default\": {\"direction\": \"outbound\", \"format\": \"bytes\"}})".into(),
            ));
        }
        let name = match &opts.declared_stream {
            Some(n) => n.clone(),
            None if self.declared.len() == 1 => self.declared[0].name.clone(),
            None if self.declared.iter().any(|d| d.name == "_default") => "_default".into(),
            None => {
                let names: Vec<&str> = self.declared.iter().map(|d| d.name.as_str()).collect();
                return Err(Error::InvalidArgument(format!(
                    "the card declares several streams ({}): pass declaredStream",
                    names.join(", ")
                )));
            }
        };
        let decl = self
            .declared
            .iter()
            .find(|d| d.name == name)
            .ok_or_else(|| {
                Error::InvalidArgument(format!("declaredStream {name:?} is not declared in the agent card"))
            })?
            .clone();
        for (what, given, card) in [
            ("direction", &opts.direction, &decl.direction),
            ("format", &opts.format, &decl.format),
        ] {
            if let Some(g) = given.as_ref().filter(|g| *g != card) {
                return Err(Error::InvalidArgument(format!(
                    "{what} {g:?} conflicts with card declaration {card:?} of stream {name:?}"
                )));
            }
        }
        Ok(decl)
    }

    /// What the task may open (CTX-04, CTX-05, ASTR-04), checked before any setup publish.
    fn allowed(&self, decl: &DeclaredStream, external: bool) -> Result<()> {
        if !self.has_stream {
            return Err(Error::InvalidArgument(format!(
                "streaming was not negotiated for task {} (hasStream is false): the caller must send `stream: true`, or use a pipe task",
                self.task_id
            )));
        }
        let shared = decl.affinity == "shared";
        if shared && external {
            return Err(Error::InvalidArgument(
                "Shared-affinity external streams are not supported".into(),
            ));
        }
        if self.task_kind != "pipe" {
            if decl.direction != "outbound" {
                return Err(Error::InvalidArgument(format!(
                    "request tasks can only open outbound streams; stream {:?} is {}",
                    decl.name, decl.direction
                )));
            }
            if external {
                return Err(Error::InvalidArgument(
                    "external streams are only supported on pipe tasks".into(),
                ));
            }
            if shared {
                return Err(Error::InvalidArgument(
                    "Shared-affinity streams are not supported on request tasks".into(),
                ));
            }
        }
        Ok(())
    }

    /// Publish a `stream_setup` and read the backend's answer (agent spec §9.4).
    pub(super) async fn handshake(&self, setup: &Value) -> Result<Value> {
        let (status, body) = self
            .publisher
            .publish_raw(&blocks_wire::setup_channel(&self.org_id, &self.task_id), setup, false)
            .await?;
        let answer = body.get("message").cloned().unwrap_or(body.clone());
        if status != 403 || answer.get("ok").and_then(Value::as_bool) != Some(true) {
            let code = answer
                .pointer("/error/code")
                .and_then(Value::as_str)
                .unwrap_or("SetupFailed");
            let msg = answer
                .pointer("/error/message")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| format!("HTTP {status}"));
            return Err(Error::Realtime(format!("Stream setup failed: [{code}] {msg}")));
        }
        Ok(answer.get("streamSetupResponse").cloned().unwrap_or(Value::Null))
    }

    fn setup_message(
        &self,
        decl: &DeclaredStream,
        stream_id: &str,
        channel: &str,
        phase: &str,
        metadata: &Option<Value>,
    ) -> Value {
        let mut setup = json!({
            "type": "stream_setup", "protocolVersion": blocks_wire::PROTOCOL_VERSION, "taskId": self.task_id,
            "orgId": self.org_id, "agentName": self.agent_name, "streamId": stream_id, "channel": channel,
            "direction": decl.direction, "format": decl.format, "taskKind": self.task_kind,
            "durationMinutes": self.stream_ttl_minutes(), "affinity": decl.affinity,
            "declaredStream": decl.name, "phase": phase,
        });
        if let Some(m) = metadata {
            setup["metadata"] = m.clone();
        }
        setup
    }

    /// Open (or, for a shared stream this instance already writes, attach to) a stream to the
    /// caller: resolves the card declaration, runs the setup handshake and returns this task's
    /// lease on the stream.
    pub async fn create_stream(self: &Arc<Self>, opts: CreateStreamOptions) -> Result<Arc<StreamLease>> {
        let decl = self.resolve(&opts)?;
        self.allowed(&decl, opts.external)?;
        let format = Format::parse(&decl.format)
            .ok_or_else(|| Error::InvalidArgument(format!("Invalid stream format: {:?}", decl.format)))?;
        let mut writer = writer_options(opts.bundle_bytes, opts.max_latency, opts.max_message_size)?;
        let shared = decl.affinity == "shared";
        // shared and bidirectional streams never publish an end marker (STRM-11, STRM-21)
        writer.end_marker = !shared && decl.direction != "bidirectional";
        let stream_id = if shared {
            decl.name.clone()
        } else {
            let n = self.stream_count.fetch_add(1, Ordering::SeqCst) + 1;
            format!("{}-{n}", self.task_id)
        };
        validate_stream_id(&stream_id)?;
        let channel = blocks_wire::stream_channel(&self.agent_name, &stream_id);
        let kind = StreamKind {
            direction: decl.direction.clone(),
            format: decl.format.clone(),
            external: opts.external,
            affinity: decl.affinity.clone(),
        };
        let slot = self.registry.slot(&stream_id);
        let _setup = slot.setup.lock().await;
        let existing = {
            let e = slot.entry.lock().unwrap_or_else(|e| e.into_inner());
            match e.as_ref() {
                Some(entry) => {
                    entry.kind.mismatch(&kind, &stream_id)?;
                    if let Some(lease) = entry.holders.get(&self.task_id) {
                        // the same task again (ASTR-03): the same lease, no new handshake
                        return Ok(lease.clone());
                    }
                    Some(entry.stream.clone())
                }
                None => None,
            }
        };
        let mut lease = StreamLease {
            stream_id: stream_id.clone(),
            channel: channel.clone(),
            stream: None,
            token: None,
            affinity: decl.affinity.clone(),
            task_id: self.task_id.clone(),
            task: Arc::downgrade(self),
            registry: Arc::downgrade(&self.registry),
            setup: Value::Null,
            released: AtomicBool::new(false),
            activated: AtomicBool::new(false),
        };
        if let Some(stream) = existing {
            // a later task attaching to a shared stream this instance already writes
            self.handshake(&self.setup_message(&decl, &stream_id, &channel, "activate", &opts.metadata))
                .await?;
            lease.stream = stream;
            let lease = Arc::new(lease);
            if let Some(entry) = slot.entry.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
                entry.holders.insert(self.task_id.clone(), lease.clone());
            }
            self.remember(&lease);
            return Ok(lease);
        }
        let phase = if opts.external { "token_request" } else { "embedded" };
        let setup = self.setup_message(&decl, &stream_id, &channel, phase, &opts.metadata);
        // read from just before the setup so nothing the caller writes after the announcement is missed
        let cursor = self.publisher.time().await.ok();
        let answer = match self.handshake(&setup).await {
            Ok(a) => a,
            Err(e) => {
                // a failed first setup leaves nothing behind: a later task may try again (ASTR-03)
                self.registry.forget(&stream_id, &slot);
                return Err(e);
            }
        };
        let token = answer.get("token").and_then(Value::as_str).map(str::to_string);
        if opts.external {
            lease.token = token;
            lease.setup = setup;
        } else {
            lease.stream = Some(self.open_client(&decl, &stream_id, &channel, format, writer, token, cursor)?);
        }
        let lease = Arc::new(lease);
        *slot.entry.lock().unwrap_or_else(|e| e.into_inner()) = Some(Entry {
            kind,
            stream: lease.stream.clone(),
            holders: HashMap::from([(self.task_id.clone(), lease.clone())]),
        });
        self.remember(&lease);
        if lease.stream.is_some() && decl.direction != "inbound" {
            let grace = opts.subscribe_grace.unwrap_or(Duration::from_secs(1));
            if !grace.is_zero() {
                tokio::time::sleep(grace).await;
            }
        }
        Ok(lease)
    }

    fn remember(&self, lease: &Arc<StreamLease>) {
        if let Ok(mut l) = self.leases.lock() {
            l.push(lease.clone());
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn open_client(
        &self,
        decl: &DeclaredStream,
        stream_id: &str,
        channel: &str,
        format: Format,
        writer: WriterOptions,
        token: Option<String>,
        cursor: Option<u64>,
    ) -> Result<Arc<Stream>> {
        let uuid = stream_uuid(&self.agent_name);
        let base = self.publisher.config();
        let rt = Realtime::new(
            RealtimeConfig {
                origin: base.origin.clone(),
                subscribe_key: base.subscribe_key.clone(),
                publish_key: base.publish_key.clone(),
                user_id: uuid.clone(),
                token,
                filter: (decl.direction == "bidirectional").then(|| format!("meta.sender != '{uuid}'")),
                presence_timeout: None,
                leave_on_close: true,
                give_up_after: Some(crate::realtime::SHORT_LIVED_GIVE_UP),
            },
            self.publisher.http(),
        )?;
        Ok(Stream::open(
            rt,
            StreamSpec {
                stream_id: stream_id.to_string(),
                channel: channel.to_string(),
                format,
                direction: decl.direction.clone(),
                reorder_timeout: Duration::from_millis(blocks_wire::DEFAULT_REORDER_TIMEOUT_MS),
                writer,
                cursor,
            },
        ))
    }

    /// Release every stream this task holds (flush, end markers where due). Called before its
    /// terminal; a shared stream goes on for the other tasks that hold it.
    pub async fn end_streams(&self) {
        let leases: Vec<Arc<StreamLease>> = self
            .leases
            .lock()
            .map(|mut l| l.drain(..).collect())
            .unwrap_or_default();
        for l in leases {
            l.release().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // STRM-18: the stream-id rule and its three messages
    #[test]
    fn stream_ids_are_validated() {
        assert!(validate_stream_id("t_1-1").is_ok());
        let e = |id: &str| validate_stream_id(id).unwrap_err().to_string();
        assert_eq!(e(""), "Stream ID cannot be empty");
        assert!(e("a.b").starts_with("Stream ID contains invalid characters"));
        assert!(e(&"a".repeat(93)).starts_with("Stream ID exceeds 92 byte limit"));
    }

    // ASTR-07: a stream acquired again as something else is refused, naming what differs
    #[test]
    fn reacquiring_as_something_else_is_refused() {
        let k = StreamKind {
            direction: "outbound".into(),
            format: "events".into(),
            external: false,
            affinity: "shared".into(),
        };
        assert!(k.mismatch(&k.clone(), "p").is_ok());
        let with = |f: &dyn Fn(&mut StreamKind)| {
            let mut w = k.clone();
            f(&mut w);
            k.mismatch(&w, "p").unwrap_err().to_string()
        };
        assert!(with(&|w| w.direction = "inbound".into()).contains("direction mismatch"));
        assert!(with(&|w| w.format = "bytes".into()).contains("format mismatch"));
        assert!(with(&|w| w.external = true).contains("cannot mix embedded and external"));
        assert!(with(&|w| w.affinity = "dedicated".into()).contains("affinity mismatch"));
    }

    // STRM-14: maxMessageSize of 512 or less is refused
    #[test]
    fn writer_options_validate_the_message_size() {
        assert!(writer_options(None, None, Some(512)).is_err());
        assert_eq!(
            writer_options(None, None, Some(513)).map(|w| w.max_message_size).ok(),
            Some(513)
        );
        assert_eq!(
            writer_options(Some(10), None, None).map(|w| w.bundle_bytes).ok(),
            Some(10)
        );
    }
}
