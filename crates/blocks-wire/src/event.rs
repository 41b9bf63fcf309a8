//! Task-channel events (consumer spec §8.2, agent spec §8.2): what agents and the backend publish
//! on `u.{orgId}.{taskId}` and what sessions deliver to listeners.
//!
//! Every struct keeps the fields it does not know in `extra`, so an event passes through unchanged
//! (forward compatibility); only the fields a rule reads are typed. An event whose `type` is not one
//! of the five known ones is [`TaskEvent::Other`], kept whole.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Number, Value};

use crate::{PROTOCOL_VERSION, TERMINAL_STATES};

/// The three states that end a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TerminalState {
    /// The handler finished.
    Completed,
    /// The handler (or the network) failed.
    Failed,
    /// The task was canceled or terminated.
    Canceled,
}

impl TerminalState {
    /// The wire name (`completed`, `failed`, `canceled`).
    pub fn as_str(self) -> &'static str {
        match self {
            TerminalState::Completed => TERMINAL_STATES[0],
            TerminalState::Failed => TERMINAL_STATES[1],
            TerminalState::Canceled => TERMINAL_STATES[2],
        }
    }

    /// A terminal state from its wire name.
    pub fn parse(s: &str) -> Option<TerminalState> {
        match s {
            "completed" => Some(TerminalState::Completed),
            "failed" => Some(TerminalState::Failed),
            "canceled" => Some(TerminalState::Canceled),
            _ => None,
        }
    }
}

impl std::fmt::Display for TerminalState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `progress`: accepted/running, a status line, or a stream announcement (`stream_started`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Progress {
    /// The task.
    #[serde(
        default,
        deserialize_with = "crate::lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub task_id: Option<String>,
    /// 0 on the first event of an accepted task.
    #[serde(
        default,
        deserialize_with = "crate::lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub progress: Option<Number>,
    /// `running` on the first event (any non-terminal state is taken as the session's state).
    #[serde(
        default,
        deserialize_with = "crate::lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub state: Option<String>,
    /// Status text.
    #[serde(
        default,
        deserialize_with = "crate::lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub message: Option<String>,
    /// `stream_started` on a stream announcement.
    #[serde(
        default,
        deserialize_with = "crate::lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub stream_event: Option<String>,
    /// The card's stream name of an announcement.
    #[serde(
        default,
        deserialize_with = "crate::lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub declared_stream: Option<String>,
    /// Announced streams by stream id (entries are checked one by one: [`StreamEntry::check`]).
    #[serde(
        default,
        deserialize_with = "crate::lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub streams: Option<Map<String, Value>>,
    /// `protocolVersion` and anything else.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Progress {
    /// True for a stream announcement.
    pub fn is_stream_started(&self) -> bool {
        self.stream_event.as_deref() == Some(STREAM_STARTED)
    }
}

/// The `streamEvent` of a stream announcement.
pub const STREAM_STARTED: &str = "stream_started";

/// One entry of a `stream_started` announcement's `streams` map.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StreamEntry {
    /// `stream.{agentName}.{streamId}`.
    #[serde(
        default,
        deserialize_with = "crate::lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub channel: Option<String>,
    /// From the agent's side: `outbound` = the agent writes.
    pub direction: Direction,
    /// `bytes` or `events`.
    pub format: StreamFormat,
    /// `dedicated` or `shared`.
    pub affinity: Affinity,
    /// The stream access token of the reader/writer.
    #[serde(
        default,
        deserialize_with = "crate::lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub token: Option<String>,
    /// The token's lifetime.
    #[serde(
        default,
        deserialize_with = "crate::lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub token_ttl_minutes: Option<Number>,
    /// The card's metadata of the stream (user JSON).
    #[serde(
        default,
        deserialize_with = "crate::lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub metadata: Option<Value>,
}

impl StreamEntry {
    /// An announced entry, or `None` when its direction, format or affinity is missing or unknown
    /// (such entries are dropped with a warning, consumer spec §8.2).
    pub fn check(entry: &Value) -> Option<StreamEntry> {
        serde_json::from_value(entry.clone()).ok()
    }
}

/// A stream's direction, from the agent's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// The agent writes, the caller reads.
    Outbound,
    /// The caller writes, the agent reads.
    Inbound,
    /// Both write.
    Bidirectional,
}

impl Direction {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Outbound => "outbound",
            Direction::Inbound => "inbound",
            Direction::Bidirectional => "bidirectional",
        }
    }

    /// The same stream seen from the other side.
    pub fn reversed(self) -> Direction {
        match self {
            Direction::Outbound => Direction::Inbound,
            Direction::Inbound => Direction::Outbound,
            Direction::Bidirectional => Direction::Bidirectional,
        }
    }
}

/// What a stream carries: bytes (`stream_data` frames) or JSON events (`stream_events`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StreamFormat {
    /// Raw bytes (base64 chunks on the wire).
    Bytes,
    /// JSON events.
    Events,
}

impl StreamFormat {
    /// Parse the wire name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "bytes" => Some(StreamFormat::Bytes),
            "events" => Some(StreamFormat::Events),
            _ => None,
        }
    }

    /// First sequence number of a stream of this format (`stream_data` from 0, `stream_events` from 1).
    pub fn first_seq(self) -> u64 {
        match self {
            StreamFormat::Bytes => 0,
            StreamFormat::Events => 1,
        }
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            StreamFormat::Bytes => "bytes",
            StreamFormat::Events => "events",
        }
    }
}

/// Whether a stream belongs to one task or is shared by the agent's tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Affinity {
    /// One stream per task (`{taskId}-{n}`).
    Dedicated,
    /// One stream per declared name.
    Shared,
}

impl Affinity {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Affinity::Dedicated => "dedicated",
            Affinity::Shared => "shared",
        }
    }
}

/// An artifact reference (consumer spec §10.1): inline (base64 `data`) or file (`channel`, `fileId`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArtifactRef {
    /// `inline` or `file` (other kinds pass through).
    pub kind: String,
    /// `mimeType`, `size`, `data`, `fileId`, `fileName`, `hash`, `channel`, `expiresAt`, …
    #[serde(flatten)]
    pub fields: Map<String, Value>,
}

impl ArtifactRef {
    /// True for `kind: "file"`.
    pub fn is_file(&self) -> bool {
        self.kind == "file"
    }

    /// A string field (`fileId`, `channel`, `fileName`, `mimeType`, `data`, …).
    pub fn str_field(&self, name: &str) -> Option<&str> {
        self.fields.get(name).and_then(Value::as_str)
    }
}

/// `artifact`: an inline artifact (agent) or a file artifact (backend, after confirm-upload).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Artifact {
    /// The task.
    #[serde(
        default,
        deserialize_with = "crate::lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub task_id: Option<String>,
    /// The reference.
    pub artifact_ref: ArtifactRef,
    /// The card output it fills (`io.outputs[].id`).
    #[serde(
        default,
        deserialize_with = "crate::lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub output_id: Option<String>,
    /// Anything else.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `terminal`: the task ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Terminal {
    /// The task.
    #[serde(
        default,
        deserialize_with = "crate::lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub task_id: Option<String>,
    /// How it ended.
    pub state: TerminalState,
    /// Why it failed (the handler's text or a runtime code such as `agent_at_capacity`).
    #[serde(
        default,
        deserialize_with = "crate::lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub error: Option<String>,
    /// `terminated` after TerminateTask.
    #[serde(
        default,
        deserialize_with = "crate::lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub reason: Option<String>,
    /// `duration_expired` when a pipe task's duration ran out.
    #[serde(
        default,
        deserialize_with = "crate::lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub completion_reason: Option<String>,
    /// Anything else.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Terminal {
    /// A terminal in `state` with no other field.
    pub fn new(state: TerminalState) -> Terminal {
        Terminal {
            task_id: None,
            state,
            error: None,
            reason: None,
            completion_reason: None,
            extra: Map::new(),
        }
    }

    /// A failed terminal with its error.
    pub fn failed(error: impl Into<String>) -> Terminal {
        Terminal {
            error: Some(error.into()),
            ..Terminal::new(TerminalState::Failed)
        }
    }

    /// `completed` with `completionReason: "duration_expired"` (a pipe task's duration ran out).
    pub fn duration_expired() -> Terminal {
        Terminal {
            completion_reason: Some("duration_expired".into()),
            ..Terminal::new(TerminalState::Completed)
        }
    }

    /// `canceled` with `reason: "terminated"` (TerminateTask).
    pub fn terminated() -> Terminal {
        Terminal {
            reason: Some("terminated".into()),
            ..Terminal::new(TerminalState::Canceled)
        }
    }
}

/// `cancel_requested`: the backend's acknowledgement of CancelTask.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CancelRequested {
    /// The task.
    #[serde(
        default,
        deserialize_with = "crate::lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub task_id: Option<String>,
    /// When (epoch ms).
    #[serde(
        default,
        deserialize_with = "crate::lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub ts: Option<Number>,
    /// Anything else.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `system`: `paused` / `resumed` after PauseTask / ResumeTask.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SystemStatus {
    /// The task.
    #[serde(
        default,
        deserialize_with = "crate::lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub task_id: Option<String>,
    /// `paused` or `resumed`.
    #[serde(
        default,
        deserialize_with = "crate::lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub status: Option<String>,
    /// Anything else.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One task-channel event.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TaskEvent {
    /// `progress`.
    Progress(Progress),
    /// `artifact`.
    Artifact(Artifact),
    /// `terminal`.
    Terminal(Terminal),
    /// `cancel_requested`.
    CancelRequested(CancelRequested),
    /// `system`.
    System(SystemStatus),
    /// Any other `type` (the whole message, `type` included): only catch-all listeners see it.
    #[serde(untagged)]
    Other(Map<String, Value>),
}

/// Why a task-channel message is not a task event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed(pub String);

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Malformed {}

impl TaskEvent {
    /// Read one task-channel message. `Err` says why it is not a task event (not an object, no
    /// string `type`, or a known type whose typed fields are missing or of the wrong type).
    pub fn parse(message: &Value) -> Result<TaskEvent, Malformed> {
        let Some(map) = message.as_object() else {
            return Err(Malformed("a task-channel message that is not a JSON object".into()));
        };
        let kind = match map.get("type") {
            None => return Err(Malformed("a task-channel message without a `type`".into())),
            Some(Value::String(k)) => k.as_str(),
            Some(_) => return Err(Malformed("a task-channel message whose `type` is not a string".into())),
        };
        fn typed<T: serde::de::DeserializeOwned>(v: &Value, why: &str) -> Result<T, Malformed> {
            T::deserialize(v).map_err(|e| Malformed(format!("{why} ({e})")))
        }
        let wrong = |kind: &str| format!("a {kind} event with a field of the wrong type");
        // `type` lands in each struct's `extra` (flattened); the tag is printed by the enum
        Ok(match kind {
            "progress" => {
                let mut e: Progress = typed(message, &wrong(kind))?;
                e.extra.remove("type");
                TaskEvent::Progress(e)
            }
            "artifact" => {
                let mut e: Artifact = typed(message, "an artifact event without `artifactRef.kind`")?;
                e.extra.remove("type");
                TaskEvent::Artifact(e)
            }
            "terminal" => {
                let mut e: Terminal = typed(
                    message,
                    "a terminal event without a valid `state` (completed, failed or canceled)",
                )?;
                e.extra.remove("type");
                TaskEvent::Terminal(e)
            }
            "cancel_requested" => {
                let mut e: CancelRequested = typed(message, &wrong(kind))?;
                e.extra.remove("type");
                TaskEvent::CancelRequested(e)
            }
            "system" => {
                let mut e: SystemStatus = typed(message, &wrong(kind))?;
                e.extra.remove("type");
                TaskEvent::System(e)
            }
            _ => TaskEvent::Other(map.clone()),
        })
    }

    /// The wire `type`.
    pub fn kind(&self) -> &str {
        match self {
            TaskEvent::Progress(_) => "progress",
            TaskEvent::Artifact(_) => "artifact",
            TaskEvent::Terminal(_) => "terminal",
            TaskEvent::CancelRequested(_) => "cancel_requested",
            TaskEvent::System(_) => "system",
            TaskEvent::Other(m) => m.get("type").and_then(Value::as_str).unwrap_or_default(),
        }
    }

    /// The terminal, if this is one.
    pub fn as_terminal(&self) -> Option<&Terminal> {
        match self {
            TaskEvent::Terminal(t) => Some(t),
            _ => None,
        }
    }

    /// The task id the event names, if any.
    pub fn task_id(&self) -> Option<&str> {
        match self {
            TaskEvent::Progress(e) => e.task_id.as_deref(),
            TaskEvent::Artifact(e) => e.task_id.as_deref(),
            TaskEvent::Terminal(e) => e.task_id.as_deref(),
            TaskEvent::CancelRequested(e) => e.task_id.as_deref(),
            TaskEvent::System(e) => e.task_id.as_deref(),
            TaskEvent::Other(m) => m.get("taskId").and_then(Value::as_str),
        }
    }

    /// Stamp the task id and the protocol version, as every published event carries them.
    pub fn stamped(mut self, task_id: &str) -> TaskEvent {
        let id = Some(task_id.to_string());
        let extra = match &mut self {
            TaskEvent::Progress(e) => {
                e.task_id = id;
                &mut e.extra
            }
            TaskEvent::Artifact(e) => {
                e.task_id = id;
                &mut e.extra
            }
            TaskEvent::Terminal(e) => {
                e.task_id = id;
                &mut e.extra
            }
            TaskEvent::CancelRequested(e) => {
                e.task_id = id;
                &mut e.extra
            }
            TaskEvent::System(e) => {
                e.task_id = id;
                &mut e.extra
            }
            TaskEvent::Other(m) => {
                m.insert("taskId".into(), Value::String(task_id.into()));
                m
            }
        };
        extra
            .entry("protocolVersion")
            .or_insert_with(|| Value::String(PROTOCOL_VERSION.into()));
        self
    }

    /// The event as a JSON value (what listeners receive).
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

impl<'de> Deserialize<'de> for TaskEvent {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        TaskEvent::parse(&Value::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

impl From<Terminal> for TaskEvent {
    fn from(t: Terminal) -> Self {
        TaskEvent::Terminal(t)
    }
}

impl From<Progress> for TaskEvent {
    fn from(p: Progress) -> Self {
        TaskEvent::Progress(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn known_events_round_trip_with_their_unknown_fields() {
        for v in [
            json!({"type": "terminal", "taskId": "t", "state": "failed", "error": "boom", "x": [1]}),
            json!({"type": "progress", "taskId": "t", "progress": 0, "state": "running", "protocolVersion": "2026-05-01"}),
            json!({"type": "artifact", "artifactRef": {"kind": "inline", "data": "aGk=", "size": 2}, "outputId": "o"}),
            json!({"type": "cancel_requested", "taskId": "t", "ts": 1_700_000_000_000_u64}),
            json!({"type": "system", "status": "paused"}),
            json!({"type": "something_new", "a": {"b": 1}}),
        ] {
            let e = TaskEvent::parse(&v).unwrap();
            assert_eq!(e.to_value(), v);
        }
    }

    #[test]
    fn malformed_messages_say_why() {
        let why = |v: Value| TaskEvent::parse(&v).unwrap_err().0;
        assert!(why(json!([1])).contains("not a JSON object"));
        assert!(why(json!({"no": "type"})).contains("without a `type`"));
        assert!(why(json!({"type": 3})).contains("not a string"));
        assert!(why(json!({"type": "terminal", "state": "done"})).contains("valid `state`"));
        assert!(why(json!({"type": "artifact"})).contains("artifactRef.kind"));
        assert!(why(json!({"type": "artifact", "artifactRef": {}})).contains("artifactRef.kind"));
        assert!(TaskEvent::parse(&json!({"type": "progress"})).is_ok());
    }

    #[test]
    fn a_wrong_typed_optional_field_is_dropped_and_the_event_kept() {
        let t =
            TaskEvent::parse(&json!({"type": "terminal", "state": "failed", "error": {"code": "E"}, "x": 1})).unwrap();
        assert_eq!(t.to_value(), json!({"type": "terminal", "state": "failed", "x": 1}));
        let p = TaskEvent::parse(&json!({"type": "progress", "message": 5, "progress": "half"})).unwrap();
        assert_eq!(p.to_value(), json!({"type": "progress"}));
        let s = json!({"channel": 7, "direction": "outbound", "format": "bytes", "affinity": "shared", "token": null});
        assert!(StreamEntry::check(&s).is_some_and(|e| e.channel.is_none() && e.token.is_none()));
    }

    #[test]
    fn stream_entries_need_direction_format_and_affinity() {
        let ok = json!({"channel": "stream.a.t-1", "direction": "outbound", "format": "bytes", "affinity": "dedicated", "token": "T"});
        let e = StreamEntry::check(&ok).unwrap();
        assert_eq!(e.direction.reversed(), Direction::Inbound);
        assert!(StreamEntry::check(&json!({"direction": "outbound", "format": "bytes"})).is_none());
        assert!(StreamEntry::check(&json!({"direction": "up", "format": "bytes", "affinity": "shared"})).is_none());
    }

    #[test]
    fn stamping_sets_task_id_and_keeps_a_given_version() {
        let e = TaskEvent::from(Terminal::failed("x")).stamped("t1").to_value();
        assert_eq!(
            e,
            json!({"type": "terminal", "taskId": "t1", "state": "failed", "error": "x", "protocolVersion": PROTOCOL_VERSION})
        );
        let mut t = Terminal::new(TerminalState::Failed);
        t.extra.insert("protocolVersion".into(), json!("2025-01-01"));
        assert_eq!(
            TaskEvent::from(t).stamped("t").to_value()["protocolVersion"],
            "2025-01-01"
        );
    }
}
