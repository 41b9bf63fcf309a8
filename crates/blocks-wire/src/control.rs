//! Control-channel messages (agent spec §5): what the backend publishes on
//! `agent.{agentId}.control` for one instance (`meta.instance`) or any (`meta.broadcast`).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// `StartTask` (agent spec §5.3). The tokens are stripped before a handler sees the task.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StartTask {
    /// The task.
    #[serde(default)]
    pub task_id: String,
    /// The version pinned at task creation.
    #[serde(
        default,
        deserialize_with = "crate::lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub protocol_version: Option<String>,
    /// The agent (informational).
    #[serde(
        default,
        deserialize_with = "crate::lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub agent_name: Option<String>,
    /// The owner.
    #[serde(
        default,
        deserialize_with = "crate::lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub owner_id: Option<String>,
    /// The org of the task channel (default: the owner).
    #[serde(
        default,
        deserialize_with = "crate::lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub org_id: Option<String>,
    /// `request` (default) or `pipe`.
    #[serde(
        default,
        deserialize_with = "crate::lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub task_kind: Option<String>,
    /// Pipe only: whole minutes (checked with [`crate::PipeDuration`]; kept as sent so that a bad
    /// value can be refused with `invalid_start_task`).
    #[serde(
        default,
        deserialize_with = "crate::lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub duration: Option<Value>,
    /// Pipe only: the server's deadline (epoch ms).
    #[serde(
        default,
        deserialize_with = "crate::lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub duration_expires_at_ms: Option<Value>,
    /// E2E key passthrough.
    #[serde(
        default,
        deserialize_with = "crate::lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub consumer_public_key: Option<String>,
    /// Streaming negotiated.
    #[serde(
        default,
        deserialize_with = "crate::lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub has_stream: Option<bool>,
    /// T2, the task's write token.
    #[serde(
        default,
        deserialize_with = "crate::lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub write_token: Option<String>,
    /// A refreshed control token.
    #[serde(
        default,
        deserialize_with = "crate::lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub control_token: Option<String>,
    /// `requestParts`, `callerClaims`, `requestSummary`, … (the caller's JSON, passed to the handler).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A control message naming one task (`CancelTask`, `ExpireTask`, `TerminateTask`, `PauseTask`,
/// `ResumeTask`, `RetryTask`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskSignal {
    /// The task.
    #[serde(default)]
    pub task_id: String,
    /// Why (CancelTask, ExpireTask).
    #[serde(
        default,
        deserialize_with = "crate::lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub reason: Option<String>,
    /// Who asked.
    #[serde(
        default,
        deserialize_with = "crate::lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub caller: Option<Value>,
    /// `protocolVersion`, `agentName`, …
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `SwitchEnvironment` (agent spec §5.7).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SwitchEnvironment {
    /// `playground` or `network`.
    #[serde(
        default,
        deserialize_with = "crate::lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub environment: Option<String>,
    /// The control token for the new environment (required by the agent).
    #[serde(
        default,
        deserialize_with = "crate::lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub pam_token: Option<String>,
    /// `protocolVersion`, …
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One control message. Unknown types are [`ControlMessage::Other`] (ignored by agents).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum ControlMessage {
    /// Run a task (boxed: it is by far the largest message).
    StartTask(Box<StartTask>),
    /// Cooperative cancel.
    CancelTask(TaskSignal),
    /// A pipe task's duration ran out.
    ExpireTask(TaskSignal),
    /// Cancel with reason `terminated`.
    TerminateTask(TaskSignal),
    /// Publish `system` `paused`.
    PauseTask(TaskSignal),
    /// Publish `system` `resumed`.
    ResumeTask(TaskSignal),
    /// A no-op for agents.
    RetryTask(TaskSignal),
    /// Move the control client to another keyset.
    SwitchEnvironment(SwitchEnvironment),
    /// Anything else (the whole message).
    #[serde(untagged)]
    Other(Map<String, Value>),
}

impl ControlMessage {
    /// Read a control message; `None` for a message that is not a JSON object with a string `type`.
    /// A known type whose fields have the wrong JSON type is `Other` (agents ignore it).
    pub fn parse(message: Value) -> Option<ControlMessage> {
        message.get("type")?.as_str()?;
        Some(
            serde_json::from_value(message.clone()).unwrap_or_else(|_| match message {
                Value::Object(m) => ControlMessage::Other(m),
                _ => ControlMessage::Other(Map::new()),
            }),
        )
    }

    /// The wire `type`.
    pub fn kind(&self) -> &str {
        match self {
            ControlMessage::StartTask(_) => "StartTask",
            ControlMessage::CancelTask(_) => "CancelTask",
            ControlMessage::ExpireTask(_) => "ExpireTask",
            ControlMessage::TerminateTask(_) => "TerminateTask",
            ControlMessage::PauseTask(_) => "PauseTask",
            ControlMessage::ResumeTask(_) => "ResumeTask",
            ControlMessage::RetryTask(_) => "RetryTask",
            ControlMessage::SwitchEnvironment(_) => "SwitchEnvironment",
            ControlMessage::Other(m) => m.get("type").and_then(Value::as_str).unwrap_or("?"),
        }
    }

    /// A signal message (`CancelTask`, …) for `task_id` with the protocol version and, when
    /// given, who asked; `None` for a kind that is not a signal.
    pub fn signal(kind: &str, task_id: &str, caller: Option<&str>) -> Option<ControlMessage> {
        let s = TaskSignal {
            task_id: task_id.into(),
            caller: caller.map(|c| Value::String(c.into())),
            extra: Map::from_iter([(
                "protocolVersion".to_string(),
                Value::String(crate::PROTOCOL_VERSION.into()),
            )]),
            ..TaskSignal::default()
        };
        Some(match kind {
            "CancelTask" => ControlMessage::CancelTask(s),
            "ExpireTask" => ControlMessage::ExpireTask(s),
            "TerminateTask" => ControlMessage::TerminateTask(s),
            "PauseTask" => ControlMessage::PauseTask(s),
            "ResumeTask" => ControlMessage::ResumeTask(s),
            "RetryTask" => ControlMessage::RetryTask(s),
            _ => return None,
        })
    }

    /// The message as JSON.
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

impl StartTask {
    /// A pipe task's terms (agent spec §5.4 step 2): a [`crate::PipeDuration`] and a positive
    /// `durationExpiresAtMs`. A pipe StartTask without them is refused with `invalid_start_task`.
    pub fn has_valid_pipe_terms(&self) -> bool {
        let duration = self.duration.as_ref().and_then(Value::as_f64);
        let expires = self.duration_expires_at_ms.as_ref().and_then(Value::as_f64);
        duration.and_then(crate::PipeDuration::from_f64).is_some() && expires.is_some_and(|e| e > 0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pipe_terms() {
        let start = |v: Value| serde_json::from_value::<StartTask>(v).unwrap();
        assert!(start(json!({"duration": 1, "durationExpiresAtMs": 5})).has_valid_pipe_terms());
        for bad in [
            json!({"duration": 0, "durationExpiresAtMs": 5}),
            json!({"duration": 43201, "durationExpiresAtMs": 5}),
            json!({"duration": 1.5, "durationExpiresAtMs": 5}),
            json!({"duration": 1, "durationExpiresAtMs": 0}),
            json!({"duration": 1}),
        ] {
            assert!(!start(bad.clone()).has_valid_pipe_terms(), "{bad}");
        }
    }

    #[test]
    fn control_messages_parse_and_print() {
        let start = json!({"type": "StartTask", "taskId": "t", "protocolVersion": "2026-05-01", "taskKind": "pipe", "duration": 5, "durationExpiresAtMs": 9, "requestParts": [{"text": "hi"}], "writeToken": "w"});
        let m = ControlMessage::parse(start.clone()).unwrap();
        let ControlMessage::StartTask(s) = &m else {
            panic!("{m:?}")
        };
        assert_eq!(s.write_token.as_deref(), Some("w"));
        assert_eq!(s.extra["requestParts"], json!([{"text": "hi"}]));
        assert_eq!(m.to_value(), start);
        let c = ControlMessage::parse(json!({"type": "CancelTask", "taskId": "t"})).unwrap();
        assert_eq!(c.kind(), "CancelTask");
        assert!(matches!(
            ControlMessage::parse(json!({"type": "Nope"})),
            Some(ControlMessage::Other(_))
        ));
        assert!(ControlMessage::parse(json!({"taskId": "t"})).is_none());
        // a wrong-typed optional field does not lose the message
        let odd =
            ControlMessage::parse(json!({"type": "StartTask", "taskId": "t", "agentName": 5, "hasStream": "yes"}))
                .unwrap();
        assert!(matches!(odd, ControlMessage::StartTask(s) if s.agent_name.is_none() && s.has_stream.is_none()));
        assert!(ControlMessage::parse(json!("x")).is_none());
        assert_eq!(
            ControlMessage::signal("PauseTask", "t", None).unwrap().to_value(),
            json!({"type": "PauseTask", "taskId": "t", "protocolVersion": crate::PROTOCOL_VERSION})
        );
    }
}
