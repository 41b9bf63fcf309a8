//! Who may read and write which channel: the devnet's access rules for its own tokens.

use axum::body::Body;
use axum::http::Response;
use serde_json::json;

use crate::net::Net;
use crate::request::{json_response, Req};

/// What a request does with a channel.
#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Op {
    Read,
    Write,
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
pub(crate) fn allowed(net: &Net, auth: &str, channel: &str, op: Op) -> bool {
    use crate::state::TokenKind as K;
    let r = net.records();
    let kind = r.token(auth).map(|t| &t.kind);
    if matches!(kind, Some(K::Service)) {
        return true;
    }
    if let Some(rest) = channel.strip_prefix("u.") {
        return match kind {
            Some(K::Read(c)) => c == channel && op == Op::Read,
            Some(K::Write(c)) => c == channel,
            Some(K::Control(cc)) if op == Op::Write => {
                let task = rest.split('.').nth(1).and_then(|id| r.tasks.get(id));
                match task {
                    // an instance of the task's agent (a StartTask the network never sent has no task)
                    Some(t) => r
                        .instances
                        .values()
                        .any(|i| i.control_channel == *cc && i.agent == t.agent),
                    None => r.instances.values().any(|i| i.control_channel == *cc),
                }
            }
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
pub(crate) fn check_access(net: &Net, req: &Req, channels: &[String], op: Op) -> Option<Response<Body>> {
    let auth = req.q("auth").unwrap_or("");
    let denied = channels.iter().find(|c| !allowed(net, auth, c, op))?;
    tracing::debug!(target: "blocks::devnet", "403: {} on {denied}", if op == Op::Read { "read" } else { "write" });
    Some(json_response(
        403,
        &json!({ "status": 403, "error": true, "message": "Forbidden", "service": "Access Manager", "payload": { "channels": [denied] } }),
    ))
}
