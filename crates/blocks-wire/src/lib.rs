//! Wire constants and small helpers shared by the SDK engine (`blocks-core`) and the local
//! Blocks Network (`blocks-devnet`). Everything here is fixed by the wire contract in
//! `shared/spec/` and must not change without a protocol version bump.
//!
//! The typed model: [`event`] (task-channel events), [`control`] (control-channel messages),
//! [`auth`] (token answers and auth error codes),
//! [`Channel`] (channel names), [`PipeDuration`] and the limits below.

pub mod auth;
pub mod control;
pub mod event;

pub use control::ControlMessage;

/// Serde helper: an optional field kept only when it has the expected JSON type (a wrong-typed
/// optional field is dropped; the message around it still counts). Fields that decide what a
/// message is (`type`, a terminal's `state`, `artifactRef.kind`, a stream's direction, format
/// and affinity) do not use it.
pub(crate) fn lenient<'de, D: serde::Deserializer<'de>, T: serde::de::DeserializeOwned>(
    d: D,
) -> Result<Option<T>, D::Error> {
    use serde::Deserialize as _;
    let v = serde_json::Value::deserialize(d)?;
    Ok(T::deserialize(v).ok())
}
pub use event::{TaskEvent, Terminal, TerminalState};

/// The one wire protocol version both SDKs speak.
pub const PROTOCOL_VERSION: &str = "2026-05-01";
/// Every protocol version this implementation accepts.
pub const SUPPORTED_PROTOCOL_VERSIONS: &[&str] = &[PROTOCOL_VERSION];
/// HTTP header that carries [`PROTOCOL_VERSION`] on backend calls.
pub const PROTOCOL_HEADER: &str = "Blocks-Protocol-Version";
/// Read-your-writes header echoed by clients (see consumer spec §3.2).
pub const WRITE_AFFINITY_HEADER: &str = "X-Write-Affinity";
/// Default CDM document of the hosted network.
pub const DEFAULT_CDM_URL: &str = "https://config.blocks.ai/config.json";
/// Default realtime origin of the hosted network.
pub const DEFAULT_PUBNUB_ORIGIN: &str = "https://ps.pndsn.com";
/// Files up to this many bytes (inclusive) travel inline as base64.
pub const INLINE_LIMIT_BYTES: usize = 16384;
/// Largest file the SDK will upload (bytes).
pub const MAX_UPLOAD_BYTES: u64 = 26_214_400;
/// Pipe task duration bounds (minutes).
pub const MIN_PIPE_DURATION_MIN: i64 = 1;
/// Pipe task duration bounds (minutes).
pub const MAX_PIPE_DURATION_MIN: i64 = 43_200;
/// How long a stream reader waits for a missing sequence number before it skips the gap (ms).
pub const DEFAULT_REORDER_TIMEOUT_MS: u64 = 750;

/// A pipe task's duration: whole minutes in
/// [`MIN_PIPE_DURATION_MIN`]..=[`MAX_PIPE_DURATION_MIN`]. A value of this type cannot be out of
/// range; every place that accepts a duration (the SDK's `sendMessage`, the agent's StartTask
/// check, the devnet's SendMessage) builds one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PipeDuration(i64);

impl PipeDuration {
    /// The rule, as the messages that refuse a duration say it.
    pub const RULE: &'static str = "a duration between 1 and 43200 minutes";

    /// Whole minutes within the bounds, or `None`.
    pub fn from_minutes(minutes: i64) -> Option<PipeDuration> {
        (MIN_PIPE_DURATION_MIN..=MAX_PIPE_DURATION_MIN)
            .contains(&minutes)
            .then_some(PipeDuration(minutes))
    }

    /// A JSON number (or JS number) of minutes: whole and within the bounds, or `None`.
    pub fn from_f64(minutes: f64) -> Option<PipeDuration> {
        if minutes.fract() != 0.0 || !minutes.is_finite() {
            return None;
        }
        Self::from_minutes(minutes as i64)
    }

    /// The minutes.
    pub fn minutes(self) -> i64 {
        self.0
    }
}

/// Presence timeout (seconds) of an agent's control client.
pub const CONTROL_PRESENCE_TIMEOUT_SEC: u64 = 20;

/// Task states that end a task.
pub const TERMINAL_STATES: &[&str] = &["completed", "failed", "canceled"];

/// True for `completed`, `failed` and `canceled`.
pub fn is_terminal_state(state: &str) -> bool {
    TERMINAL_STATES.contains(&state)
}

#[cfg(test)]
mod pipe_duration_tests {
    use super::PipeDuration;

    #[test]
    fn only_whole_minutes_in_range() {
        assert_eq!(PipeDuration::from_f64(1.0).map(PipeDuration::minutes), Some(1));
        assert_eq!(
            PipeDuration::from_f64(43_200.0).map(PipeDuration::minutes),
            Some(43_200)
        );
        for bad in [0.0, -1.0, 43_201.0, 1.5, f64::NAN, f64::INFINITY] {
            assert_eq!(PipeDuration::from_f64(bad), None, "{bad}");
        }
        assert_eq!(PipeDuration::from_minutes(0), None);
    }
}

/// True when `version` is a protocol version this implementation speaks.
pub fn is_protocol_version_supported(version: &str) -> bool {
    SUPPORTED_PROTOCOL_VERSIONS.contains(&version)
}

/// Task status channel: `u.{orgId}.{taskId}`.
pub fn task_channel(org_id: &str, task_id: &str) -> String {
    Channel::Task {
        org_id: org_id.into(),
        task_id: task_id.into(),
    }
    .to_string()
}

/// Agent control channel: `agent.{agentId}.control`.
pub fn control_channel(agent_id: &str) -> String {
    Channel::Control {
        agent_id: agent_id.into(),
    }
    .to_string()
}

/// Stream data channel: `stream.{agentName}.{streamId}`.
pub fn stream_channel(agent_name: &str, stream_id: &str) -> String {
    Channel::Stream {
        agent_name: agent_name.into(),
        stream_id: stream_id.into(),
    }
    .to_string()
}

/// Stream setup channel: `setup.{orgId}.{taskId}`.
pub fn setup_channel(org_id: &str, task_id: &str) -> String {
    Channel::Setup {
        org_id: org_id.into(),
        task_id: task_id.into(),
    }
    .to_string()
}

/// The control-channel subscribe filter of one instance (exact text of the spec).
pub fn instance_filter(instance_id: &str) -> String {
    format!("meta.instance == '{instance_id}' || meta.broadcast == \"true\"")
}

/// Agent names: `^[a-zA-Z0-9_]+$`.
pub fn is_valid_agent_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Stream ids: 1..=92 bytes of `[A-Za-z0-9_-]`.
pub fn is_valid_stream_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 92 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Owner ids that name system namespaces and can never be a task owner (any case).
pub const RESERVED_OWNER_IDS: &[&str] = &["agent", "obs", "sys", "u", "anonymous", "system"];

/// True for a reserved owner id ([`RESERVED_OWNER_IDS`], any case).
pub fn is_reserved_owner_id(id: &str) -> bool {
    RESERVED_OWNER_IDS.iter().any(|r| r.eq_ignore_ascii_case(id))
}

/// A skill name as a registry channel segment: lower-case, `-` and spaces become `_`, dots
/// kept, runs of `_` collapsed, `_` trimmed from both ends.
pub fn skill_slug(skill: &str) -> String {
    let mut out = String::with_capacity(skill.len());
    for c in skill.trim().chars().flat_map(char::to_lowercase) {
        let c = if c == '-' || c.is_whitespace() { '_' } else { c };
        if c == '_' && out.ends_with('_') {
            continue;
        }
        out.push(c);
    }
    out.trim_matches('_').to_string()
}

/// A realtime channel, parsed from or printed as its name (consumer spec §8.1).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Channel {
    /// `u.{orgId}.{taskId}`: a task's events.
    Task { org_id: String, task_id: String },
    /// `agent.{agentId}.control`: an agent's control channel.
    Control { agent_id: String },
    /// `stream.{agentName}.{streamId}`: stream data.
    Stream { agent_name: String, stream_id: String },
    /// `setup.{orgId}.{taskId}`: the stream-setup handshake.
    Setup { org_id: String, task_id: String },
    /// `registry.*`.
    Registry(String),
    /// `obs.{agentName}.log`: an agent's log channel.
    Log { agent_name: String },
}

impl Channel {
    /// The channel a name denotes (a `-pnpres` suffix is not stripped), or `None` for any other name.
    pub fn parse(name: &str) -> Option<Channel> {
        let parts: Vec<&str> = name.split('.').collect();
        let s = |x: &str| x.to_string();
        match parts.as_slice() {
            ["u", org, task] if !org.is_empty() && !task.is_empty() => Some(Channel::Task {
                org_id: s(org),
                task_id: s(task),
            }),
            ["agent", id, "control"] if !id.is_empty() => Some(Channel::Control { agent_id: s(id) }),
            ["stream", agent, id] if !agent.is_empty() && !id.is_empty() => Some(Channel::Stream {
                agent_name: s(agent),
                stream_id: s(id),
            }),
            ["setup", org, task] if !org.is_empty() && !task.is_empty() => Some(Channel::Setup {
                org_id: s(org),
                task_id: s(task),
            }),
            ["registry", rest @ ..] if !rest.is_empty() => Some(Channel::Registry(rest.join("."))),
            ["obs", agent, "log"] if !agent.is_empty() => Some(Channel::Log { agent_name: s(agent) }),
            _ => None,
        }
    }
}

impl std::fmt::Display for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Channel::Task { org_id, task_id } => write!(f, "u.{org_id}.{task_id}"),
            Channel::Control { agent_id } => write!(f, "agent.{agent_id}.control"),
            Channel::Stream { agent_name, stream_id } => write!(f, "stream.{agent_name}.{stream_id}"),
            Channel::Setup { org_id, task_id } => write!(f, "setup.{org_id}.{task_id}"),
            Channel::Registry(rest) => write!(f, "registry.{rest}"),
            Channel::Log { agent_name } => write!(f, "obs.{agent_name}.log"),
        }
    }
}

/// Registry channels: `registry.all`, `registry.public`, `registry.private`, `registry.log`.
pub const REGISTRY_CHANNELS: &[&str] = &["registry.all", "registry.public", "registry.private", "registry.log"];

/// The registry channel of one skill: `registry.skill.<slug>`.
pub fn registry_skill_channel(skill: &str) -> String {
    format!("registry.skill.{}", skill_slug(skill))
}

/// Parse a timetoken string (17-digit decimal) for numeric comparison.
pub fn parse_timetoken(tt: &str) -> Option<u64> {
    tt.trim().parse::<u64>().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    // LIST-07: task, control, stream and setup channel names; AGT-05: the instance filter expression
    #[test]
    fn channels_follow_the_spec() {
        assert_eq!(task_channel("org_1", "t_1"), "u.org_1.t_1");
        assert_eq!(control_channel("agt_1"), "agent.agt_1.control");
        assert_eq!(stream_channel("echo", "t_1-1"), "stream.echo.t_1-1");
        assert_eq!(setup_channel("o", "t"), "setup.o.t");
        assert_eq!(
            instance_filter("AG-x-1"),
            "meta.instance == 'AG-x-1' || meta.broadcast == \"true\""
        );
    }

    #[test]
    fn channels_parse_and_print() {
        for name in [
            "u.o.t",
            "agent.a1.control",
            "stream.echo.t-1",
            "setup.o.t",
            "registry.skill.x_y",
            "obs.echo.log",
        ] {
            assert_eq!(Channel::parse(name).map(|c| c.to_string()).as_deref(), Some(name));
        }
        assert_eq!(
            Channel::parse("u.o.t"),
            Some(Channel::Task {
                org_id: "o".into(),
                task_id: "t".into()
            })
        );
        for bad in ["u.o", "u..t", "agent.a.other", "x.y.z", "", "stream.a"] {
            assert_eq!(Channel::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn names_are_validated() {
        assert!(is_valid_agent_name("echo_2"));
        assert!(!is_valid_agent_name("echo-2"));
        assert!(!is_valid_agent_name("a.b"));
        assert!(!is_valid_agent_name(""));
        assert!(is_valid_stream_id("t_1-1"));
        assert!(!is_valid_stream_id("t.1"));
        assert!(!is_valid_stream_id(&"a".repeat(93)));
    }

    // LIST-07: skill slugs are normalised; reserved owner ids in any case
    #[test]
    fn skill_slugs_and_reserved_owners() {
        assert_eq!(skill_slug("  Text-Summary  v2.1 "), "text_summary_v2.1");
        assert_eq!(skill_slug("--a  --b--"), "a_b");
        assert_eq!(registry_skill_channel("Code Review"), "registry.skill.code_review");
        assert!(is_reserved_owner_id("SyStem"));
        assert!(is_reserved_owner_id("u"));
        assert!(!is_reserved_owner_id("user_1"));
    }

    #[test]
    fn terminal_states() {
        assert!(is_terminal_state("canceled"));
        assert!(!is_terminal_state("cancelled"));
        assert!(!is_terminal_state("running"));
        assert!(is_protocol_version_supported("2026-05-01"));
        assert!(!is_protocol_version_supported("2099-01-01"));
    }
}
