//! The JSON-RPC task API: SendMessage, GetTask, ListTasks and the lifecycle methods (cancel,
//! terminate, pause, resume, retry).

use std::time::Duration;

use axum::body::Body;
use axum::http::Response;
use serde_json::{json, Value};

use blocks_wire::event::CancelRequested;
use blocks_wire::{ControlMessage, TaskEvent, Terminal, TerminalState};

use super::caller;
use crate::access::TokenKind;
use crate::net::Net;
use crate::request::{json_response, Req};
use crate::state::{Effect, Task};

fn rpc_error(id: &Value, e: &RpcErr) -> Value {
    let mut data = json!({ "code": e.app, "message": e.message });
    if let Some(d) = &e.details {
        data["details"] = d.clone();
    }
    json!({ "jsonrpc": "2.0", "id": id, "error": { "code": e.code, "message": e.message, "data": data } })
}

pub(super) fn rpc(net: &Net, req: &Req) -> Response<Body> {
    let body = match req.json() {
        Ok(b) => b,
        Err(e) => return json_response(200, &rpc_error(&Value::Null, &fail(-32700, "ParseError", e))),
    };
    let id = body.get("id").cloned().unwrap_or(Value::Null);
    let user = match caller(net, req) {
        Ok(u) => u,
        Err(e) => {
            return json_response(
                401,
                &json!({ "jsonrpc": "2.0", "id": id, "error": { "code": 401, "message": format!("Unauthorized: {e}") } }),
            )
        }
    };
    let method = body.get("method").and_then(Value::as_str).unwrap_or_default();
    let params = body.get("params").cloned().unwrap_or_else(|| json!({}));
    let result = match method {
        "SendMessage" => send_message(net, &user, &params),
        "GetTask" => get_task(net, &user, &params),
        "ListTasks" => list_tasks(net, &user, &params),
        "CancelTask" | "TerminateTask" | "PauseTask" | "ResumeTask" | "RetryTask" => {
            lifecycle(net, &user, method, &params)
        }
        other => Err(fail(-32601, "MethodNotFound", format!("unknown method {other:?}"))),
    };
    match result {
        Ok(v) => json_response(200, &json!({ "jsonrpc": "2.0", "id": id, "result": v })),
        Err(e) => json_response(200, &rpc_error(&id, &e)),
    }
}

struct RpcErr {
    code: i64,
    app: &'static str,
    message: String,
    details: Option<Value>,
}

type RpcResult = Result<Value, RpcErr>;

fn fail(code: i64, app: &'static str, message: impl Into<String>) -> RpcErr {
    RpcErr {
        code,
        app,
        message: message.into(),
        details: None,
    }
}

fn invalid(msg: impl Into<String>) -> RpcErr {
    fail(-32602, "InvalidParams", msg)
}

/// What a SendMessage asks for, checked.
struct SendParams<'a> {
    name: &'a str,
    parts: Value,
    owner: String,
    kind: &'a str,
    duration: Option<i64>,
    stream: bool,
    cpk: Option<String>,
    billing: &'a str,
    idem: Option<String>,
    upload_session: Option<String>,
}

/// The params of a SendMessage of `user`, or the InvalidParams (PermissionDenied) error.
fn send_params<'a>(user: &str, p: &'a Value) -> Result<SendParams<'a>, RpcErr> {
    let name = p
        .get("agentName")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| invalid("agentName is required"))?;
    let parts = match p.get("requestParts") {
        None | Some(Value::Null) => json!([]),
        Some(v @ Value::Array(_)) => v.clone(),
        Some(_) => return Err(invalid("requestParts must be an array")),
    };
    // the parts are published again inside StartTask on the agent's control channel: nested too
    // deeply, they would make that channel unreadable for the agent (see MAX_MESSAGE_DEPTH)
    if crate::request::json_depth(&parts) > crate::request::MAX_MESSAGE_DEPTH {
        return Err(invalid(format!(
            "requestParts nest more than {} levels deep",
            crate::request::MAX_MESSAGE_DEPTH
        )));
    }
    let owner = match p.get("ownerId").and_then(Value::as_str).filter(|s| !s.is_empty()) {
        Some(o) if o != user => {
            return Err(fail(
                -32000,
                "PermissionDenied",
                format!("ownerId {o} does not match the authenticated user"),
            ))
        }
        _ => user.to_string(),
    };
    let blocks = p.pointer("/extensions/blocks");
    let (kind, duration) = task_kind(blocks)?;
    let stream = blocks
        .and_then(|b| b.get("stream"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let cpk = blocks
        .and_then(|b| b.get("consumerPublicKey"))
        .and_then(Value::as_str)
        .map(str::to_string);
    let text = |k: &str| {
        p.get(k)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    Ok(SendParams {
        name,
        parts,
        owner,
        kind,
        duration,
        stream,
        cpk,
        billing: p.get("billingMode").and_then(Value::as_str).unwrap_or("free"),
        idem: text("idempotencyKey"),
        upload_session: text("uploadSessionId"),
    })
}

/// The task kind (`extensions.blocks.taskKind`, default `request`) and the duration a pipe task
/// needs (a request task has none).
fn task_kind(blocks: Option<&Value>) -> Result<(&str, Option<i64>), RpcErr> {
    let kind = blocks
        .and_then(|b| b.get("taskKind"))
        .and_then(Value::as_str)
        .unwrap_or("request");
    let duration = blocks.and_then(|b| b.get("duration"));
    let duration = match (kind, duration) {
        ("pipe", d) => match d
            .and_then(Value::as_i64)
            .and_then(blocks_wire::PipeDuration::from_minutes)
        {
            Some(d) => Some(d.minutes()),
            None => {
                return Err(invalid(format!(
                    "pipe tasks need {} (whole minutes)",
                    blocks_wire::PipeDuration::RULE
                )))
            }
        },
        ("request", None) => None,
        ("request", Some(_)) => return Err(invalid("request tasks must not have a duration")),
        (other, _) => return Err(invalid(format!("unknown taskKind {other:?}"))),
    };
    Ok((kind, duration))
}

fn send_message(net: &Net, user: &str, p: &Value) -> RpcResult {
    let sp = send_params(user, p)?;
    let name = sp.name;
    let (task, queued, idempotent) = submit(net, user, sp)?;
    if !idempotent {
        net.dispatch(name);
    }
    let (current, queued) = {
        let r = net.records();
        let t = r.tasks.get(&task.id).cloned().unwrap_or(task.clone());
        let q = queued && t.instance.is_none() && !t.is_terminal();
        (t, q)
    };
    let billing_keys = {
        let r = net.records();
        r.agents
            .get(name)
            .map(|a| Net::keys(&a.billing))
            .unwrap_or(crate::net::FREE_KEYS)
    };
    Ok(json!({
        "taskId": current.id, "orgId": current.org, "idempotent": idempotent, "queued": queued, "state": current.state,
        "extensions": { "blocks": {
            "readToken": net.records().mint(TokenKind::Read(current.channel()), user, Some(Duration::from_secs(24 * 3600)), None),
            "streamChannels": { "status": current.channel() },
            "subscribeKey": billing_keys.1, "publishKey": billing_keys.0,
        }},
    }))
}

/// The task of a SendMessage: the one its idempotency key already names, or a new one (with its
/// uploaded inputs bound). Returns it, whether it was queued, and whether it already existed.
fn submit(net: &Net, user: &str, sp: SendParams<'_>) -> Result<(Task, bool, bool), RpcErr> {
    let (name, billing) = (sp.name, sp.billing);
    let mut r = net.records();
    let Some(agent) = r.agents.get(name).cloned() else {
        return Err(fail(
            -32000,
            "AgentNotFound",
            format!("Agent '{name}' is not registered on this network"),
        ));
    };
    if agent.billing != billing {
        return Err(RpcErr {
            code: -32000,
            app: "BillingModeMismatch",
            message: format!(
                "Billing mode mismatch: agent {name} is {}, request said {billing}",
                agent.billing
            ),
            details: Some(json!({ "expected": agent.billing, "got": billing })),
        });
    }
    if let Some(existing) = sp
        .idem
        .as_ref()
        .and_then(|k| r.idempotency.get(&(user.to_string(), k.clone())))
        .and_then(|id| r.tasks.get(id))
        .cloned()
    {
        return Ok((existing, false, true));
    }
    let sub = Net::keys(&agent.billing).1;
    if let Some(sid) = &sp.upload_session {
        net.files.check_session(user, sid).map_err(invalid)?;
    }
    let has_stream = sp.kind == "pipe" || sp.stream;
    let mut t = r.create_task(name, &sp.owner, sp.kind, sp.duration, sp.parts, has_stream, sp.cpk, sub);
    if let Some(sid) = &sp.upload_session {
        let mut parts = t.request_parts.clone();
        net.files
            .bind_session(user, sid, &t.channel(), &mut parts, false)
            .map_err(invalid)?;
        if let Some(stored) = r.tasks.get_mut(&t.id) {
            stored.request_parts = parts.clone();
        }
        t.request_parts = parts;
    }
    if let Some(k) = sp.idem {
        if let Some(stored) = r.tasks.get_mut(&t.id) {
            stored.idempotency_key = Some(k.clone());
        }
        r.idempotency.insert((user.to_string(), k), t.id.clone());
    }
    r.touch_task(&t.id);
    Ok((t, true, false))
}

fn get_task(net: &Net, user: &str, p: &Value) -> RpcResult {
    let id = p
        .get("taskId")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("taskId is required"))?;
    let r = net.records();
    match r.tasks.get(id) {
        Some(t) if t.owner == user || r.agents.get(&t.agent).is_some_and(|a| a.owner == user) => {
            Ok(json!({ "task": t.info() }))
        }
        _ => Err(fail(-32000, "TaskNotFound", format!("Task not found: {id}"))),
    }
}

fn list_tasks(net: &Net, user: &str, p: &Value) -> RpcResult {
    let owner = p
        .get("ownerId")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .unwrap_or(user);
    if owner != user {
        return Err(fail(-32000, "PermissionDenied", "you can only list your own tasks"));
    }
    let agent = p.get("agentName").and_then(Value::as_str).filter(|s| !s.is_empty());
    let state = p.get("state").and_then(Value::as_str).filter(|s| !s.is_empty());
    let limit = p.get("limit").and_then(Value::as_u64).unwrap_or(50).clamp(1, 1000) as usize;
    let cursor = match p.get("cursor").and_then(Value::as_str).filter(|s| !s.is_empty()) {
        Some(c) => Some(
            c.strip_prefix("c")
                .and_then(|n| n.parse::<u64>().ok())
                .ok_or_else(|| invalid(format!("invalid cursor {c:?}")))?,
        ),
        None => None,
    };
    let r = net.records();
    // indexed: the owner's (or the owner's and agent's) task ids in creation order; without a
    // state filter the count is the index length and a page costs a binary search plus `limit`
    let empty = Vec::new();
    let ids = match agent {
        Some(a) => r
            .by_owner_agent
            .get(&(owner.to_string(), a.to_string()))
            .unwrap_or(&empty),
        None => r.by_owner.get(owner).unwrap_or(&empty),
    };
    let seq_of = |id: &String| r.tasks.get(id).map(|t| t.seq).unwrap_or(0);
    // ids before this index are older than the cursor (seqs increase along the index)
    let below = match cursor {
        Some(c) => ids.partition_point(|id| seq_of(id) < c),
        None => ids.len(),
    };
    let matches = |t: &&crate::state::Task| state.is_none_or(|s| t.state == s);
    let total = match state {
        None => ids.len(),
        Some(_) => ids.iter().filter_map(|id| r.tasks.get(id)).filter(matches).count(),
    };
    let page: Vec<&crate::state::Task> = ids[..below]
        .iter()
        .rev()
        .filter_map(|id| r.tasks.get(id))
        .filter(matches)
        .take(limit + 1)
        .collect();
    let more = page.len() > limit;
    let page = &page[..page.len().min(limit)];
    let mut out = json!({ "tasks": page.iter().map(|t| t.info()).collect::<Vec<_>>(), "totalCount": total });
    if more {
        if let Some(last) = page.last() {
            out["next"] = json!(format!("c{}", last.seq));
        }
    }
    Ok(out)
}

fn lifecycle(net: &Net, user: &str, method: &str, p: &Value) -> RpcResult {
    let id = p
        .get("taskId")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("taskId is required"))?;
    let (task, control) = {
        let r = net.records();
        let Some(t) = r.tasks.get(id).filter(|t| t.owner == user).cloned() else {
            return Err(fail(-32000, "TaskNotFound", format!("Task not found: {id}")));
        };
        let msg = ControlMessage::signal(method, id, Some(user)).map(|m| m.to_value());
        let control = msg.and_then(|m| r.control_for(id, m));
        (t, control)
    };
    if method == "RetryTask" {
        return retry(net, user, &task);
    }
    if method == "TerminateTask" {
        // forceful: the task's stream tokens are revoked (readers get 403 and end)
        let prefix = format!("stream.{}.{}-", task.agent, task.id);
        let mut r = net.records();
        let revoked: Vec<String> = r
            .tokens
            .iter()
            .filter(|(_, t)| matches!(&t.kind, TokenKind::Stream(ch) if ch.starts_with(&prefix)))
            .map(|(k, _)| k.clone())
            .collect();
        for t in revoked {
            r.revoke(&t);
        }
        drop(r);
        net.rt.wake_all();
    }
    if task.is_terminal() {
        return Ok(json!({}));
    }
    let mut effects: Vec<Effect> = Vec::new();
    if method == "CancelTask" {
        effects.push(Effect {
            sub_key: task.sub_key.clone(),
            channel: task.channel(),
            payload: TaskEvent::CancelRequested(CancelRequested {
                ts: Some(crate::clock::now_ms().into()),
                ..CancelRequested::default()
            })
            .stamped(id)
            .to_value(),
            meta: None,
            store: true,
        });
    }
    match control {
        Some(c) => effects.push(c),
        None if matches!(method, "CancelTask" | "TerminateTask") => {
            // not dispatched yet: the backend ends it itself
            let t = if method == "TerminateTask" {
                Terminal::terminated()
            } else {
                Terminal::new(TerminalState::Canceled)
            };
            let t = TaskEvent::from(t).stamped(id).to_value();
            effects.push(Effect {
                sub_key: task.sub_key.clone(),
                channel: task.channel(),
                payload: t,
                meta: None,
                store: true,
            });
        }
        None => {}
    }
    net.run(effects);
    Ok(json!({}))
}

/// RetryTask: a failed or canceled task runs again as a new task with the same request.
fn retry(net: &Net, user: &str, task: &crate::state::Task) -> RpcResult {
    if !matches!(task.state.as_str(), "failed" | "canceled") {
        return Err(fail(
            -32000,
            "TaskNotRetryable",
            format!(
                "task {} is {}; only failed or canceled tasks can be retried",
                task.id, task.state
            ),
        ));
    }
    let new = net.records().create_task(
        &task.agent,
        user,
        &task.kind,
        task.duration,
        task.request_parts.clone(),
        task.has_stream,
        task.consumer_public_key.clone(),
        &task.sub_key,
    );
    net.dispatch(&task.agent);
    Ok(json!({ "taskId": new.id, "retryOf": task.id, "orgId": new.org }))
}
