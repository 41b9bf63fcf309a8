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

/// Handle a `stream_setup` publish: always answered with a 403 "abort" carrying the result.
pub(crate) fn setup(net: &Net, sub_key: &str, channel: &str, msg: &Value) -> (u16, Value) {
    let str_of = |k: &str| msg.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
    if str_of("type") != "stream_setup" {
        return refuse("InvalidArgument", "setup channels accept only stream_setup messages");
    }
    let (task_id, stream_id, agent) = (str_of("taskId"), str_of("streamId"), str_of("agentName"));
    let (direction, format, affinity, phase) = (
        str_of("direction"),
        str_of("format"),
        str_of("affinity"),
        str_of("phase"),
    );
    if !blocks_wire::is_valid_stream_id(&stream_id) {
        return refuse("InvalidArgument", &format!("invalid streamId {stream_id:?}"));
    }
    if !matches!(direction.as_str(), "outbound" | "inbound" | "bidirectional")
        || !matches!(format.as_str(), "bytes" | "events")
        || !matches!(affinity.as_str(), "dedicated" | "shared")
        || !matches!(phase.as_str(), "embedded" | "token_request" | "activate")
    {
        return refuse(
            "InvalidArgument",
            "direction, format, affinity and phase must be valid (affinity is required)",
        );
    }
    let stream_channel = blocks_wire::stream_channel(&agent, &stream_id);
    if str_of("channel") != stream_channel {
        return refuse("InvalidArgument", &format!("channel must be {stream_channel}"));
    }
    let Some(org) = channel.split('.').nth(1).map(str::to_string) else {
        return refuse("InvalidArgument", "bad setup channel");
    };
    let ttl_min = msg.get("durationMinutes").and_then(Value::as_u64).unwrap_or(60).max(1);
    let (task, agent_owner) = {
        let r = net.records();
        let task = r.tasks.get(&task_id).cloned();
        let owner = task
            .as_ref()
            .and_then(|t| r.agents.get(&t.agent))
            .map(|a| a.owner.clone());
        (task, owner)
    };
    let Some(task) = task.filter(|t| t.org == org && t.agent == agent) else {
        return refuse(
            "NotFound",
            &format!("task {task_id} of agent {agent} not found in org {org}"),
        );
    };
    if task.is_terminal() {
        return refuse(
            "FailedPrecondition",
            &format!("task {task_id} is already {}", task.state),
        );
    }
    let ttl = Duration::from_secs(ttl_min * 60);
    let (agent_token, caller_token) = {
        let mut r = net.records();
        let a = (phase != "activate").then(|| {
            r.mint(
                TokenKind::Stream(stream_channel.clone()),
                agent_owner.as_deref().unwrap_or(""),
                Some(ttl),
                None,
            )
        });
        let c = (phase != "token_request")
            .then(|| r.mint(TokenKind::Stream(stream_channel.clone()), &task.owner, Some(ttl), None));
        (a, c)
    };
    if let Some(t7c) = caller_token {
        let mut entry = json!({
            "channel": stream_channel, "direction": direction, "format": format, "affinity": affinity,
            "token": t7c, "tokenTtlMinutes": ttl_min,
        });
        if let Some(m) = msg.get("metadata").filter(|m| !m.is_null()) {
            entry["metadata"] = m.clone();
        }
        let announcement = json!({
            "type": "progress", "taskId": task_id, "streamEvent": "stream_started",
            "declaredStream": msg.get("declaredStream").cloned().unwrap_or(Value::Null),
            "streams": { stream_id.clone(): entry }, "protocolVersion": blocks_wire::PROTOCOL_VERSION,
        });
        net.publish(sub_key, &task.channel(), announcement, None, "blocks-devnet", true);
    }
    let mut resp = json!({
        "taskId": task_id, "streamId": stream_id, "channel": stream_channel, "direction": direction,
        "phase": phase, "tokenTtlMinutes": ttl_min,
    });
    if let Some(t7a) = agent_token {
        resp["token"] = json!(t7a);
    }
    abort(json!({ "ok": true, "streamSetupResponse": resp }))
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
