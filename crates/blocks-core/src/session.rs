//! Task sessions (consumer spec §8): history catch-up, live subscription from the history
//! high-water mark, timetoken dedup, first-terminal-wins, cancel_requested at most once.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use blocks_wire::event::{
    Affinity, Artifact, CancelRequested, Direction, Malformed, Progress, StreamEntry, StreamFormat,
};
use blocks_wire::{TaskEvent, Terminal, TerminalState};
use futures::StreamExt;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::error::{Error, Result};
use crate::realtime::{HistoryEntry, Realtime};

/// How many timetokens the dedup set remembers.
const SEEN_CAPACITY: usize = 200;

/// Identity and RPC metadata of a session.
#[derive(Debug, Clone, Default)]
pub struct SessionInfo {
    /// Task id.
    pub task_id: String,
    /// Owner (user) id.
    pub owner_id: String,
    /// Org id (channel namespace).
    pub org_id: String,
    /// Agent the task was sent to, when known.
    pub agent_name: Option<String>,
    /// T4 read token.
    pub read_token: Option<String>,
    /// Task status channel.
    pub status_channel: String,
    /// True when an existing task was returned for the idempotency key.
    pub idempotent: bool,
    /// True when the task waits for a free agent instance.
    pub queued: bool,
    /// Push config id, if any.
    pub push_config_id: Option<String>,
}

/// The session's state as one snapshot.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Current state (`running`, `completed`, …) or `None` while unknown.
    pub state: Option<String>,
    /// The winning terminal event, if any.
    pub terminal: Option<Terminal>,
    /// Artifact events, in order.
    pub artifacts: Vec<Artifact>,
    /// The first cancel_requested event, if any.
    pub cancel_requested: Option<CancelRequested>,
    /// History events replayed to `listEvents()` (connect sessions only).
    pub events: Vec<TaskEvent>,
    /// Streams announced so far (discovery order).
    pub streams: Vec<StreamDescriptor>,
    /// True when the session has no live subscription (terminal, or closed).
    pub closed: bool,
}

/// An announced stream as the caller sees it (`StreamRef.descriptor`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StreamDescriptor {
    /// `{taskId}-{n}` (dedicated) or the declared name (shared).
    pub stream_id: String,
    /// The data channel.
    pub channel: Option<String>,
    /// The caller's stream token.
    pub token: Option<String>,
    /// The direction as the agent sees it.
    pub agent_direction: Direction,
    /// The direction as the caller sees it.
    pub local_direction: Direction,
    /// `bytes` or `events`.
    pub format: StreamFormat,
    /// `dedicated` or `shared`.
    pub affinity: Affinity,
    /// The card's metadata of the stream.
    pub metadata: Option<Value>,
    /// The card's stream name.
    pub declared_stream: Option<String>,
    /// The announcement's timetoken (a reader subscribes from there).
    pub timetoken: Option<String>,
}

/// Pure event bookkeeping of one session (unit-tested without a network).
#[derive(Debug, Default)]
pub struct SessionState {
    snapshot: Snapshot,
    seen: HashSet<u64>,
    seen_order: VecDeque<u64>,
}

impl SessionState {
    /// Start from an initial state.
    pub fn new(state: Option<String>) -> Self {
        SessionState {
            snapshot: Snapshot {
                state,
                ..Snapshot::default()
            },
            ..SessionState::default()
        }
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    /// True once a terminal was accepted.
    pub fn is_terminal(&self) -> bool {
        self.snapshot.terminal.is_some()
    }

    fn remember(&mut self, tt: u64) -> bool {
        if !self.seen.insert(tt) {
            return false;
        }
        self.seen_order.push_back(tt);
        if self.seen_order.len() > SEEN_CAPACITY {
            if let Some(old) = self.seen_order.pop_front() {
                self.seen.remove(&old);
            }
        }
        true
    }

    /// Apply one task event. Returns the event to deliver to listeners, or `None` when it is a
    /// duplicate, a terminal after the first, or a repeated cancel_requested.
    pub fn apply(&mut self, timetoken: Option<u64>, event: TaskEvent) -> Option<TaskEvent> {
        if self.snapshot.closed {
            return None;
        }
        if let Some(tt) = timetoken {
            if !self.remember(tt) {
                return None;
            }
        }
        match &event {
            TaskEvent::Terminal(t) => {
                if self.snapshot.terminal.is_some() {
                    return None;
                }
                self.snapshot.state = Some(t.state.as_str().to_string());
                self.snapshot.terminal = Some(t.clone());
            }
            TaskEvent::CancelRequested(c) => {
                if self.snapshot.terminal.is_some() || self.snapshot.cancel_requested.is_some() {
                    return None;
                }
                self.snapshot.cancel_requested = Some(c.clone());
            }
            TaskEvent::Artifact(a) => self.snapshot.artifacts.push(a.clone()),
            TaskEvent::Progress(p) => {
                if p.is_stream_started() {
                    self.discover_streams(p, timetoken);
                }
                if let Some(s) = &p.state {
                    if self.snapshot.terminal.is_none() && !blocks_wire::is_terminal_state(s) {
                        self.snapshot.state = Some(s.clone());
                    }
                }
            }
            TaskEvent::System(_) | TaskEvent::Other(_) => {}
        }
        Some(event)
    }

    fn discover_streams(&mut self, event: &Progress, timetoken: Option<u64>) {
        let Some(entries) = &event.streams else {
            return;
        };
        for (id, e) in entries {
            let Some(entry) = StreamEntry::check(e) else {
                tracing::warn!(target: "blocks::session", "stream {id} announced with a missing or invalid format/affinity/direction; ignored");
                continue;
            };
            if self.snapshot.streams.iter().any(|s| s.stream_id == *id) {
                continue;
            }
            self.snapshot.streams.push(StreamDescriptor {
                stream_id: id.clone(),
                channel: entry.channel,
                token: entry.token,
                agent_direction: entry.direction,
                local_direction: entry.direction.reversed(),
                format: entry.format,
                affinity: entry.affinity,
                metadata: entry.metadata,
                declared_stream: event.declared_stream.clone(),
                timetoken: timetoken.map(|t| t.to_string()),
            });
        }
    }

    /// Replay history (oldest first): effects only (state, artifacts, terminal); returns the
    /// events for `listEvents()`. Messages that are not task events are skipped.
    pub fn apply_history(&mut self, entries: &[HistoryEntry]) -> Vec<TaskEvent> {
        entries
            .iter()
            .filter_map(|e| {
                let event = TaskEvent::parse(&e.message).ok()?;
                self.apply(Some(e.timetoken), event)
            })
            .collect()
    }

    /// Mark closed: later events are ignored.
    pub fn close(&mut self) {
        self.snapshot.closed = true;
    }
}

/// What a session delivers to its listeners.
#[derive(Debug, Clone)]
pub enum SessionEvent {
    /// A task event (with its publish timetoken; none for synthetic events).
    Event { timetoken: Option<u64>, event: TaskEvent },
    /// A task-channel message that is not a task event: skipped, reported (`onError`).
    Malformed {
        timetoken: u64,
        /// Why ([`Malformed`]).
        reason: String,
        /// The message, cut to 200 bytes.
        shown: String,
    },
    /// The live subscription stopped reconnecting; the session keeps its history.
    Lost(String),
}

/// A message cut to `max` bytes (on a character boundary) for an error report.
fn shown(message: &Value, max: usize) -> String {
    let mut shown = message.to_string();
    if shown.len() > max {
        let cut = (0..=max).rev().find(|i| shown.is_char_boundary(*i)).unwrap_or(0);
        shown.truncate(cut);
        shown.push('…');
    }
    shown
}

struct Shared {
    state: Mutex<SessionState>,
    realtime: Mutex<Option<Arc<Realtime>>>,
    pump: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// A live or finished task session.
pub struct TaskSession {
    info: SessionInfo,
    initial: Snapshot,
    shared: Arc<Shared>,
    events: Mutex<Option<mpsc::UnboundedReceiver<SessionEvent>>>,
    opened: Mutex<std::collections::HashMap<String, Arc<crate::stream::io::Stream>>>,
    /// What file downloads use (kept after the subscription ends).
    files: Option<(crate::http::HttpClient, crate::files::FileAccess)>,
}

/// A subscribe cursor older than any message: the server answers from its replay cache.
const CACHE_REPLAY_TIMETOKEN: u64 = 1000;

impl TaskSession {
    /// A session that is already finished and has no realtime client (idempotent hit on a terminal task).
    pub fn pre_closed(info: SessionInfo, state: &str) -> Self {
        let mut st = SessionState::new(Some(state.to_string()));
        st.snapshot.terminal = TerminalState::parse(state).map(|state| Terminal {
            task_id: Some(info.task_id.clone()),
            ..Terminal::new(state)
        });
        st.close();
        let initial = st.snapshot().clone();
        TaskSession {
            info,
            initial,
            shared: Arc::new(Shared {
                state: Mutex::new(st),
                realtime: Mutex::new(None),
                pump: Mutex::new(None),
            }),
            events: Mutex::new(None),
            opened: Mutex::new(Default::default()),
            files: None,
        }
    }

    /// Set what file downloads use (pre-closed sessions have no realtime client to take it from).
    pub fn with_files(mut self, http: crate::http::HttpClient, access: crate::files::FileAccess) -> Self {
        self.files = Some((http, access));
        self
    }

    fn file_access(&self) -> Result<&(crate::http::HttpClient, crate::files::FileAccess)> {
        self.files
            .as_ref()
            .ok_or_else(|| Error::Config("this session has no read token for file downloads".into()))
    }

    /// Download a file artifact into memory (with the session's read token).
    pub async fn download_file(&self, artifact_ref: &Value) -> Result<Vec<u8>> {
        let (http, access) = self.file_access()?;
        crate::files::download(http, access, artifact_ref).await
    }

    /// The download URL of a file artifact (it carries the session's read token).
    pub fn file_url(&self, artifact_ref: &Value) -> Result<String> {
        let (_, access) = self.file_access()?;
        crate::files::download_url(access, artifact_ref)
    }

    /// Download a file artifact to `path`, streamed. Returns the byte count.
    pub async fn download_file_to(&self, artifact_ref: &Value, path: &std::path::Path) -> Result<u64> {
        let (http, access) = self.file_access()?;
        crate::files::download_to(http, access, artifact_ref, path).await
    }

    /// Open a session: read server time and the full history, then (unless the task is already
    /// terminal) subscribe from the history high-water mark so nothing published in between is lost.
    /// `keep_history_events` fills `listEvents()` (connect sessions). A refused history read is an
    /// error when `history_refusal_fatal` (connect: the history is the session); otherwise (a
    /// task just created) a warning, and the session starts live (SEND-09).
    pub async fn open(
        info: SessionInfo,
        realtime: Arc<Realtime>,
        initial_state: Option<String>,
        keep_history_events: bool,
        history_refusal_fatal: bool,
    ) -> Result<Self> {
        // time strictly before history: anything published after the time read is either in the
        // history or newer than the cursor (reading both at once lost events published in between)
        let server_time = realtime.time().await?;
        let history = realtime.history(&info.status_channel).await;
        // a failed history read still yields a usable (live) session
        // a refusal (bad key, no access) is the caller's to see; a transient failure is not fatal
        let mut replay = false;
        let history = match history {
            Ok(h) => h,
            Err(
                e @ Error::Http {
                    status: 400 | 401 | 403 | 404,
                    ..
                },
            ) if history_refusal_fatal => return Err(e),
            Err(e) => {
                // without the history, the live subscription starts from the channel's replay
                // cache (the oldest timetoken it holds), so what was published since the task
                // was created still arrives; timetoken dedup drops anything seen twice
                tracing::warn!(target: "blocks::session", "history of {} unavailable ({e}); the session replays the channel's recent messages instead", info.status_channel);
                replay = true;
                Vec::new()
            }
        };
        let mut st = SessionState::new(initial_state);
        let events = st.apply_history(&history);
        if keep_history_events {
            st.snapshot.events = events;
        }
        let cursor = if replay {
            CACHE_REPLAY_TIMETOKEN
        } else {
            history.iter().map(|e| e.timetoken).max().unwrap_or(server_time)
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let terminal = st.is_terminal();
        let initial = st.snapshot().clone();
        let shared = Arc::new(Shared {
            state: Mutex::new(st),
            realtime: Mutex::new(Some(realtime.clone())),
            pump: Mutex::new(None),
        });
        if !terminal {
            let status = info.status_channel.clone();
            let stream = realtime.subscribe_until(std::slice::from_ref(&info.status_channel), Some(cursor), move |m| {
                // a valid terminal only: a malformed one is skipped and must not end the subscription
                m.channel == status
                    && m.timetoken > cursor
                    && m.payload.get("type").and_then(Value::as_str) == Some("terminal")
                    && TaskEvent::parse(&m.payload).is_ok()
            });
            let channel = info.status_channel.clone();
            let weak = Arc::downgrade(&shared);
            let gave_up = realtime.gave_up();
            let pump = tokio::spawn(async move {
                let mut stream = Box::pin(stream);
                let tx_lost = tx.clone();
                let lost = move |reason: String| {
                    // the JS session reports it to onError; the session stays usable for its
                    // history (listArtifacts, downloads) and `connect()` can attach again
                    let _ = tx_lost.send(SessionEvent::Lost(reason));
                };
                while let Some(msg) = stream.next().await {
                    if msg.channel != channel || msg.timetoken <= cursor {
                        continue;
                    }
                    let Some(shared) = weak.upgrade() else { return };
                    let event = match TaskEvent::parse(&msg.payload) {
                        Ok(event) => event,
                        Err(Malformed(reason)) => {
                            tracing::debug!(target: "blocks::session", "skipping {reason} on {channel}");
                            // reported to the JS session (onError), never applied
                            let _ = tx.send(SessionEvent::Malformed {
                                timetoken: msg.timetoken,
                                shown: shown(&msg.payload, 200),
                                reason,
                            });
                            continue;
                        }
                    };
                    let (delivered, done) = {
                        let Ok(mut st) = shared.state.lock() else { return };
                        let d = st.apply(Some(msg.timetoken), event);
                        (d, st.is_terminal())
                    };
                    if let Some(event) = delivered {
                        // a send fails when nobody listens any more; the state stays current until terminal
                        let _ = tx.send(SessionEvent::Event {
                            timetoken: Some(msg.timetoken),
                            event,
                        });
                    }
                    if done {
                        shared.finish();
                        return;
                    }
                }
                let reason = gave_up.borrow().clone();
                if let Some(reason) = reason {
                    lost(format!("the live subscription to {channel} stopped reconnecting ({reason}); reattach with client.connect(taskId) once the network is back"));
                }
            });
            if let Ok(mut p) = shared.pump.lock() {
                *p = Some(pump);
            }
        } else {
            drop(tx);
        }
        let files = Some((
            realtime.http().clone(),
            crate::files::FileAccess::from(realtime.config()),
        ));
        Ok(TaskSession {
            info,
            initial,
            shared,
            events: Mutex::new(Some(rx)),
            opened: Mutex::new(Default::default()),
            files,
        })
    }

    /// Identity and RPC metadata.
    pub fn info(&self) -> &SessionInfo {
        &self.info
    }

    /// The state when the session was handed to the caller (history effects included).
    pub fn initial(&self) -> &Snapshot {
        &self.initial
    }

    /// The current state.
    pub fn snapshot(&self) -> Snapshot {
        self.shared
            .state
            .lock()
            .map(|s| s.snapshot().clone())
            .unwrap_or_default()
    }

    /// The live events after [`TaskSession::initial`], once. The channel ends after the terminal or `close()`.
    pub fn take_events(&self) -> Option<mpsc::UnboundedReceiver<SessionEvent>> {
        self.events.lock().ok().and_then(|mut e| e.take())
    }

    /// Stop the subscription and release the realtime client. Idempotent.
    pub fn close(&self) {
        self.shared.finish();
        if let Ok(mut st) = self.shared.state.lock() {
            st.close();
        }
    }

    /// Open an announced stream (consumer side). Reopening an active one returns it; an ended one
    /// cannot be reopened; a never-opened stream of a finished task is unavailable (live-only).
    /// `writer` tunes what the caller writes (explicit values, else the `STREAM_*` variables,
    /// else the defaults), as an agent's `createStream` options do (STRM-14, STRM-19).
    pub fn open_stream(
        &self,
        stream_id: &str,
        reorder_timeout: std::time::Duration,
        uuid_prefix: &str,
        writer: WriterTuning,
    ) -> Result<Arc<crate::stream::io::Stream>> {
        use crate::error::Error;
        use crate::stream::io::{stream_uuid, Stream, StreamSpec, WriterOptions};
        let tuned = crate::agent::writer_options(writer.bundle_bytes, writer.max_latency, writer.max_message_size)?;
        let snap = self.snapshot();
        let desc = snap
            .streams
            .iter()
            .find(|s| s.stream_id == stream_id || s.declared_stream.as_deref() == Some(stream_id))
            .cloned()
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "no stream {stream_id:?} was announced for task {}",
                    self.info.task_id
                ))
            })?;
        let id = desc.stream_id.clone();
        if let Some(existing) = self.opened.lock().ok().and_then(|o| o.get(&id).cloned()) {
            if existing.is_active() {
                return Ok(existing);
            }
            return Err(Error::InvalidArgument(format!(
                "stream {id} has already been ended and cannot be reopened"
            )));
        }
        if let (Some(state), Some(_)) = (snap.state.clone(), snap.terminal.as_ref()) {
            let declared = desc.declared_stream.clone();
            return Err(Error::StreamUnavailable {
                task_id: self.info.task_id.clone(),
                stream_name: declared.clone().unwrap_or_else(|| id.clone()),
                stream_id: id,
                declared_stream: declared,
                terminal_state: state,
            });
        }
        let base = self
            .realtime()
            .ok_or_else(|| Error::Closed("TaskSession closed".into()))?;
        let cfg = base.config().clone();
        let uuid = stream_uuid(uuid_prefix);
        let local = desc.local_direction;
        let rt = Realtime::new(
            crate::realtime::RealtimeConfig {
                user_id: uuid.clone(),
                token: desc.token.clone(),
                filter: (local == Direction::Bidirectional).then(|| format!("meta.sender != '{uuid}'")),
                presence_timeout: None,
                leave_on_close: true,
                ..cfg
            },
            base.http(),
        )?;
        let format = desc.format;
        let end_marker = desc.affinity == Affinity::Dedicated && local == Direction::Outbound;
        let stream = Stream::open(
            rt,
            StreamSpec {
                stream_id: id.clone(),
                channel: desc.channel.clone().unwrap_or_default(),
                format,
                direction: local.as_str().to_string(),
                reorder_timeout,
                writer: WriterOptions { end_marker, ..tuned },
                cursor: desc.timetoken.as_deref().and_then(|t| t.parse().ok()),
            },
        );
        if let Ok(mut o) = self.opened.lock() {
            o.insert(id, stream.clone());
        }
        Ok(stream)
    }

    /// End every opened stream.
    pub async fn end_streams(&self) {
        let all: Vec<Arc<crate::stream::io::Stream>> = self
            .opened
            .lock()
            .map(|o| o.values().cloned().collect())
            .unwrap_or_default();
        for s in all {
            s.end().await;
        }
    }

    /// The session's realtime client, while it has one.
    pub fn realtime(&self) -> Option<Arc<Realtime>> {
        self.shared.realtime.lock().ok().and_then(|r| r.clone())
    }
}

impl Shared {
    /// End the live subscription (terminal reached or closed).
    fn finish(&self) {
        if let Ok(mut p) = self.pump.lock() {
            if let Some(h) = p.take() {
                h.abort();
            }
        }
        let rt = self.realtime.lock().ok().and_then(|r| r.clone());
        if let Some(rt) = rt {
            rt.close();
        }
    }
}

impl Drop for TaskSession {
    fn drop(&mut self) {
        self.shared.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use serde_json::json;

    fn ev(kind: &str) -> TaskEvent {
        parse(json!({ "type": kind, "taskId": "t" }))
    }

    fn parse(v: Value) -> TaskEvent {
        TaskEvent::parse(&v).unwrap()
    }

    // SESS-05: the same timetoken is delivered once; absent timetokens are all delivered
    #[test]
    fn duplicates_by_timetoken_are_dropped() {
        let mut s = SessionState::new(None);
        assert!(s.apply(Some(1), ev("progress")).is_some());
        assert!(s.apply(Some(1), ev("progress")).is_none());
        assert!(s.apply(None, ev("progress")).is_some());
        assert!(s.apply(None, ev("progress")).is_some());
    }

    // SESS-05: the seen-set is bounded (oldest evicted after 200)
    #[test]
    fn seen_set_is_bounded() {
        let mut s = SessionState::new(None);
        for tt in 0..(SEEN_CAPACITY as u64 + 1) {
            assert!(s.apply(Some(tt), ev("progress")).is_some());
        }
        // the oldest was evicted, so it is delivered again
        assert!(s.apply(Some(0), ev("progress")).is_some());
        assert!(s.apply(Some(SEEN_CAPACITY as u64), ev("progress")).is_none());
    }

    // LIFE-10 WAIT-05 SESS-06: the first terminal sets the state and wins over a later one
    #[test]
    fn first_terminal_wins_and_sets_state() {
        let mut s = SessionState::new(None);
        let t1 = parse(json!({"type": "terminal", "taskId": "t", "state": "canceled"}));
        let t2 = parse(json!({"type": "terminal", "taskId": "t", "state": "completed"}));
        assert!(s.apply(Some(1), t1).is_some());
        assert_eq!(s.snapshot().state.as_deref(), Some("canceled"));
        assert!(s.apply(Some(2), t2).is_none());
        assert_eq!(
            s.snapshot().terminal.as_ref().map(|t| t.state),
            Some(TerminalState::Canceled)
        );
    }

    #[test]
    fn cancel_requested_once_and_not_after_terminal() {
        let mut s = SessionState::new(None);
        assert!(s.apply(Some(1), ev("cancel_requested")).is_some());
        assert!(s.apply(Some(2), ev("cancel_requested")).is_none());
        let mut s = SessionState::new(None);
        s.apply(Some(1), parse(json!({"type": "terminal", "state": "completed"})));
        assert!(s.apply(Some(2), ev("cancel_requested")).is_none());
    }

    #[test]
    fn artifacts_accumulate_and_need_a_kind() {
        let mut s = SessionState::new(None);
        s.apply(
            Some(1),
            parse(json!({"type": "artifact", "artifactRef": {"kind": "inline", "data": "aGk="}})),
        );
        // an artifact without `artifactRef.kind` is not one (the wire model refuses it)
        assert!(TaskEvent::parse(&json!({"type": "artifact", "artifactRef": {}})).is_err());
        assert_eq!(s.snapshot().artifacts.len(), 1);
    }

    // SESS-13: a terminal with an unknown state is malformed (onError), never applied
    #[test]
    fn invalid_terminal_state_is_malformed() {
        assert!(TaskEvent::parse(&json!({"type": "terminal", "state": "exploded"}))
            .is_err_and(|m| m.0.contains("valid `state`")));
    }

    // STRM-01: announced streams become descriptors seen from the caller's side; bad entries are dropped
    #[test]
    fn stream_announcements_become_descriptors() {
        let mut s = SessionState::new(None);
        s.apply(
            Some(7),
            parse(json!({"type": "progress", "streamEvent": "stream_started", "declaredStream": "tokens", "streams": {
                "t-1": {"channel": "stream.a.t-1", "direction": "outbound", "format": "bytes", "affinity": "dedicated", "token": "T"},
                "t-2": {"channel": "stream.a.t-2", "direction": "outbound", "format": "bytes"}
            }})),
        );
        let streams = &s.snapshot().streams;
        assert_eq!(streams.len(), 1);
        assert_eq!(streams[0].local_direction, Direction::Inbound);
        assert_eq!(streams[0].declared_stream.as_deref(), Some("tokens"));
        assert_eq!(streams[0].timetoken.as_deref(), Some("7"));
    }
}

/// How a caller's writes on a stream are framed (`StreamRef.open` options); `None` leaves the
/// `STREAM_*` variable or the default.
#[derive(Clone, Copy, Debug, Default)]
pub struct WriterTuning {
    /// Bytes bundled into one frame before it is sent (`bundleSizeBytes`).
    pub bundle_bytes: Option<usize>,
    /// How long a partial bundle waits (`maxLatencyMs`).
    pub max_latency: Option<std::time::Duration>,
    /// Largest message before a frame is split into parts (`maxMessageSize`, above 512).
    pub max_message_size: Option<usize>,
}
