//! Streams on the devnet: the stream-setup handshake (the backend "Function" that intercepts
//! publishes on `setup.{org}.{task}`, mints stream tokens and announces the stream to the caller)
//! and the chaos knob tests use to prove reordering and dedup.

use std::time::Duration;

use serde_json::{json, Value};

use crate::access::TokenKind;
use crate::net::Net;

fn abort(body: Value) -> (u16, Value) {
    (
        403,
        json!({ "message": body, "status": 403, "error": true, "service": "Blocks Devnet Functions" }),
    )
}

fn refuse(code: &str, message: &str) -> (u16, Value) {
    abort(json!({ "ok": false, "error": { "code": code, "message": message } }))
}

/// A `stream_setup` message, checked.
struct SetupRequest {
    task_id: String,
    stream_id: String,
    agent: String,
    direction: String,
    format: String,
    affinity: String,
    phase: String,
    /// `stream.{agent}.{stream}`.
    stream_channel: String,
    /// The org of the setup channel.
    org: String,
    /// Lifetime of the stream tokens.
    ttl_min: u64,
}

/// The request a publish on `channel` (`setup.{org}.{task}`) makes, or the refusal.
fn setup_request(channel: &str, msg: &Value) -> Result<SetupRequest, (u16, Value)> {
    let str_of = |k: &str| msg.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
    if str_of("type") != "stream_setup" {
        return Err(refuse(
            "InvalidArgument",
            "setup channels accept only stream_setup messages",
        ));
    }
    let (task_id, stream_id, agent) = (str_of("taskId"), str_of("streamId"), str_of("agentName"));
    let (direction, format, affinity, phase) = (
        str_of("direction"),
        str_of("format"),
        str_of("affinity"),
        str_of("phase"),
    );
    if !blocks_wire::is_valid_stream_id(&stream_id) {
        return Err(refuse("InvalidArgument", &format!("invalid streamId {stream_id:?}")));
    }
    if !matches!(direction.as_str(), "outbound" | "inbound" | "bidirectional")
        || !matches!(format.as_str(), "bytes" | "events")
        || !matches!(affinity.as_str(), "dedicated" | "shared")
        || !matches!(phase.as_str(), "embedded" | "token_request" | "activate")
    {
        return Err(refuse(
            "InvalidArgument",
            "direction, format, affinity and phase must be valid (affinity is required)",
        ));
    }
    let stream_channel = blocks_wire::stream_channel(&agent, &stream_id);
    if str_of("channel") != stream_channel {
        return Err(refuse("InvalidArgument", &format!("channel must be {stream_channel}")));
    }
    let Some(org) = channel.split('.').nth(1).map(str::to_string) else {
        return Err(refuse("InvalidArgument", "bad setup channel"));
    };
    let ttl_min = msg.get("durationMinutes").and_then(Value::as_u64).unwrap_or(60).max(1);
    Ok(SetupRequest {
        task_id,
        stream_id,
        agent,
        direction,
        format,
        affinity,
        phase,
        stream_channel,
        org,
        ttl_min,
    })
}

/// Handle a `stream_setup` publish: always answered with a 403 "abort" carrying the result.
pub(crate) fn setup(net: &Net, sub_key: &str, channel: &str, msg: &Value) -> (u16, Value) {
    let s = match setup_request(channel, msg) {
        Ok(s) => s,
        Err(refusal) => return refusal,
    };
    let (task, agent_owner) = {
        let r = net.records();
        let task = r.tasks.get(&s.task_id).cloned();
        let owner = task
            .as_ref()
            .and_then(|t| r.agents.get(&t.agent))
            .map(|a| a.owner.clone());
        (task, owner)
    };
    let Some(task) = task.filter(|t| t.org == s.org && t.agent == s.agent) else {
        return refuse(
            "NotFound",
            &format!("task {} of agent {} not found in org {}", s.task_id, s.agent, s.org),
        );
    };
    if task.is_terminal() {
        return refuse(
            "FailedPrecondition",
            &format!("task {} is already {}", s.task_id, task.state),
        );
    }
    let ttl = Duration::from_secs(s.ttl_min * 60);
    let (agent_token, caller_token) = {
        let mut r = net.records();
        let a = (s.phase != "activate").then(|| {
            r.mint(
                TokenKind::Stream(s.stream_channel.clone()),
                agent_owner.as_deref().unwrap_or(""),
                Some(ttl),
                None,
            )
        });
        let c = (s.phase != "token_request").then(|| {
            r.mint(
                TokenKind::Stream(s.stream_channel.clone()),
                &task.owner,
                Some(ttl),
                None,
            )
        });
        (a, c)
    };
    if let Some(t7c) = caller_token {
        announce(net, sub_key, &task.channel(), &s, msg, &t7c);
    }
    let mut resp = json!({
        "taskId": s.task_id, "streamId": s.stream_id, "channel": s.stream_channel, "direction": s.direction,
        "phase": s.phase, "tokenTtlMinutes": s.ttl_min,
    });
    if let Some(t7a) = agent_token {
        resp["token"] = json!(t7a);
    }
    abort(json!({ "ok": true, "streamSetupResponse": resp }))
}

/// Announce the stream to the caller (`stream_started` on the task channel, with its token).
fn announce(net: &Net, sub_key: &str, task_channel: &str, s: &SetupRequest, msg: &Value, t7c: &str) {
    let mut entry = json!({
        "channel": s.stream_channel, "direction": s.direction, "format": s.format, "affinity": s.affinity,
        "token": t7c, "tokenTtlMinutes": s.ttl_min,
    });
    if let Some(m) = msg.get("metadata").filter(|m| !m.is_null()) {
        entry["metadata"] = m.clone();
    }
    let announcement = json!({
        "type": "progress", "taskId": s.task_id, "streamEvent": "stream_started",
        "declaredStream": msg.get("declaredStream").cloned().unwrap_or(Value::Null),
        "streams": { s.stream_id.clone(): entry }, "protocolVersion": blocks_wire::PROTOCOL_VERSION,
    });
    net.publish(sub_key, task_channel, announcement, None, "blocks-devnet", true);
}

/// Publish with chaos: every 3rd message is held back and published after the next one (or after
/// 20 ms), and every 5th message is published twice.
pub(crate) fn chaotic_publish(
    net: &Net,
    sub_key: &str,
    channel: &str,
    payload: Value,
    meta: Option<Value>,
    publisher: &str,
) {
    let (held, n) = {
        let mut c = net.chaos.lock().unwrap_or_else(|e| e.into_inner());
        let e = c.entry(channel.to_string()).or_default();
        e.1 += 1;
        (e.0.take(), e.1)
    };
    if held.is_none() && n % 3 == 0 {
        {
            let mut c = net.chaos.lock().unwrap_or_else(|e| e.into_inner());
            c.entry(channel.to_string()).or_default().0 = Some((payload, meta, publisher.to_string()));
        }
        flush_later(net, sub_key, channel);
        return;
    }
    net.publish(sub_key, channel, payload.clone(), meta.clone(), publisher, false);
    if n % 5 == 0 {
        net.publish(sub_key, channel, payload, meta, publisher, false);
    }
    if let Some((p, m, who)) = held {
        net.publish(sub_key, channel, p, m, &who, false);
    }
}

fn flush_later(net: &Net, sub_key: &str, channel: &str) {
    let Some(me) = net.me.upgrade() else { return };
    let (sub_key, channel) = (sub_key.to_string(), channel.to_string());
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let held = me
            .chaos
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(&channel)
            .and_then(|e| e.0.take());
        if let Some((p, m, who)) = held {
            me.publish(&sub_key, &channel, p, m, &who, false);
        }
    });
}
