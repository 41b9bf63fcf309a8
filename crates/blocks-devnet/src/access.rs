//! Who may read and write which channel: the devnet's tokens, what each grants, and the access
//! rules for them.

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Response;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::clock::now_ms;
use crate::request::{json_response, Req};

/// What a token grants.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum TokenKind {
    /// Consumer JWT (backend calls).
    ConsumerAccess,
    /// Agent JWT (backend calls of an instance).
    AgentAccess,
    /// Refresh token (consumer or agent), bound to the API key that minted it.
    Refresh {
        /// Refreshes an agent token.
        agent: bool,
    },
    /// T4 read token of one task channel.
    Read(String),
    /// T2 write token of one task.
    Write(String),
    /// Control token of one control channel.
    Control(String),
    /// Stream token (T7a agent side, T7c caller side) of one stream channel.
    Stream(String),
    /// The devnet's own all-access token (the backend's secret key, for tests and tools).
    Service,
}

/// A minted token.
#[derive(Debug, Clone)]
pub struct Token {
    /// What it grants.
    pub kind: TokenKind,
    /// Whose it is.
    pub user_id: String,
    /// The API key behind it (refresh tokens).
    pub api_key: Option<String>,
    /// Expiry.
    pub expires: Option<Instant>,
}

/// A token as stored (expiry on the wall clock).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredToken {
    kind: TokenKind,
    user_id: String,
    api_key: Option<String>,
    /// Expiry, milliseconds since the epoch.
    pub expires_ms: Option<u64>,
}

impl Token {
    /// The stored form.
    pub fn to_stored(&self) -> StoredToken {
        let now = now_ms();
        StoredToken {
            kind: self.kind.clone(),
            user_id: self.user_id.clone(),
            api_key: self.api_key.clone(),
            expires_ms: self
                .expires
                .map(|e| now + e.saturating_duration_since(Instant::now()).as_millis() as u64),
        }
    }

    /// Back from the stored form (None when it has expired).
    pub fn from_stored(s: StoredToken) -> Option<Token> {
        let expires = match s.expires_ms {
            Some(ms) => Some(Instant::now() + Duration::from_millis(ms.checked_sub(now_ms()).filter(|d| *d > 0)?)),
            None => None,
        };
        Some(Token {
            kind: s.kind,
            user_id: s.user_id,
            api_key: s.api_key,
            expires,
        })
    }
}

/// What a request does with a channel.
#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Op {
    Read,
    Write,
}

/// What the access rules need to know of the records.
pub(crate) trait Grants {
    /// What `token` grants, while it is valid (unexpired).
    fn grant(&self, token: &str) -> Option<&TokenKind>;
    /// True when `control_channel` is the control channel of an instance of the agent of task
    /// `task_id`, or of any instance when there is no such task.
    fn controls_task(&self, control_channel: &str, task_id: Option<&str>) -> bool;
}

/// Channel access rules (the devnet mints its own tokens; SDKs treat them as opaque):
///
/// | channel | read (subscribe, history, files) | write (publish) |
/// |---|---|---|
/// | `u.{org}.{task}` | the task's read token (T4) or write token (T2) | T2; the control token of an instance of the task's agent (admission failures) |
/// | `setup.{org}.{task}` | T2 of the task | T2 of the task |
/// | `agent.{id}.control` | that channel's control token | that channel's control token |
/// | `stream.{agent}.{id}` | that stream's token | that stream's token |
/// | anything else | open | open |
///
/// The devnet's service token (`Devnet::service_token`, the backend's secret-key stand-in) passes
/// every rule. Expired or unknown tokens pass none.
pub(crate) fn allowed(records: &impl Grants, auth: &str, channel: &str, op: Op) -> bool {
    use TokenKind as K;
    let kind = records.grant(auth);
    if matches!(kind, Some(K::Service)) {
        return true;
    }
    if let Some(rest) = channel.strip_prefix("u.") {
        return match kind {
            Some(K::Read(c)) => c == channel && op == Op::Read,
            Some(K::Write(c)) => c == channel,
            // an instance of the task's agent (a StartTask the network never sent has no task)
            Some(K::Control(cc)) if op == Op::Write => records.controls_task(cc, rest.split('.').nth(1)),
            _ => false,
        };
    }
    if let Some(rest) = channel.strip_prefix("setup.") {
        let task_channel = format!("u.{rest}");
        return matches!(kind, Some(K::Write(c)) if *c == task_channel);
    }
    if channel.starts_with("agent.") && channel.ends_with(".control") {
        return matches!(kind, Some(K::Control(c)) if c == channel);
    }
    if channel.starts_with("stream.") {
        return matches!(kind, Some(K::Stream(c)) if c == channel);
    }
    true
}

/// The spec's 403 answer unless `auth` may `op` every channel.
pub(crate) fn check_access(records: &impl Grants, req: &Req, channels: &[String], op: Op) -> Option<Response<Body>> {
    let auth = req.q("auth").unwrap_or("");
    let denied = channels.iter().find(|c| !allowed(records, auth, c, op))?;
    tracing::debug!(target: "blocks::devnet", "403: {} on {denied}", if op == Op::Read { "read" } else { "write" });
    Some(json_response(
        403,
        &json!({ "status": 403, "error": true, "message": "Forbidden", "service": "Access Manager", "payload": { "channels": [denied] } }),
    ))
}
