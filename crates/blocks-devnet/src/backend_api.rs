//! The backend API: CDM document, auth, registry, agent connect, JSON-RPC tasks, read tokens.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Response};
use serde_json::{json, Value};

use crate::access::TokenKind;
use crate::net::Net;
use crate::request::{json_response, Req};
use crate::state::Effect;

fn err(status: u16, code: &str, message: &str) -> Response<Body> {
    json_response(status, &json!({ "error": message, "code": code, "message": message }))
}

pub(crate) async fn handle(net: &Net, req: &Req) -> Response<Body> {
    let seg: Vec<&str> = req.segments.iter().map(String::as_str).collect();
    match (req.method.clone(), seg.as_slice()) {
        (Method::GET, ["config.json"]) | (Method::GET, ["api", "v1", "cdm"]) => cdm(net),
        (Method::POST, ["api", "v1", "auth", "agent", "consumer-token"]) => consumer_token(net, req),
        (Method::POST, ["api", "v1", "auth", "agent", "refresh"]) => refresh(net, req),
        (Method::POST, ["api", "v1", "auth", "agent", "connect"]) => connect(net, req),
        (Method::GET, ["api", "v1", "registry", "agents"]) if req.q("agentName").is_none() => registry_list(net, req),
        (Method::GET, ["api", "v1", "registry", "agents"]) => registry(net, req),
        (Method::DELETE, ["api", "v1", "registry", "agents"]) => registry_remove(net, req),
        (Method::POST, ["devnet", "v1", "revoke-control-tokens"]) => revoke_control_tokens(net, req),
        // the RPC endpoint of a subscribe key, used by clients configured without a base URL
        (Method::POST, ["v1", "blocks", "sub-key", sk, "rpc"]) => {
            if *sk != crate::net::FREE_KEYS.1 && *sk != crate::net::PAID_KEYS.1 {
                return err(
                    404,
                    "UNKNOWN_SUBSCRIBE_KEY",
                    &format!("no keyset with subscribe key {sk} on this network"),
                );
            }
            rpc(net, req)
        }
        (Method::POST, ["api", "v1", "auth", "task-read-token"]) => read_token(net, req),
        (Method::POST, ["api", "v1", "auth", "anon-task-read-token"]) => anon_read_token(req),
        (Method::POST, ["api", "v1", "rpc"]) => rpc(net, req),
        (Method::POST, ["api", "v1", "files", op @ ("request-upload" | "confirm-upload")]) => match caller(net, req) {
            Ok(user) if *op == "request-upload" => crate::files_api::request_upload(net, req, &user),
            Ok(user) => crate::files_api::confirm_upload(net, req, &user),
            Err(e) => err(401, "UNAUTHORIZED", &e),
        },
        _ => json_response(
            404,
            &json!({ "error": "not found", "code": "NOT_FOUND", "message": format!("no route for {} /{}", req.method, req.segments.join("/")) }),
        ),
    }
}

fn cdm(net: &Net) -> Response<Body> {
    let (fp, fs) = crate::net::FREE_KEYS;
    let (pp, ps) = crate::net::PAID_KEYS;
    json_response(
        200,
        &json!({
            "playground": { "publishKey": fp, "subscribeKey": fs },
            "network": { "publishKey": pp, "subscribeKey": ps },
            "api": { "baseUrl": net.url, "clientId": "devnet" },
            "pubnub": { "origin": net.url },
        }),
    )
}

fn api_key_user(net: &Net, key: &str) -> Option<String> {
    net.records().api_keys.get(key).cloned()
}

/// The user of the `Authorization: Bearer <API key>` header and the JSON body, or the error answer.
fn key_and_body(net: &Net, req: &Req) -> Result<(String, String, Value), Box<Response<Body>>> {
    let key = req.bearer().unwrap_or_default();
    let Some(user) = api_key_user(net, &key) else {
        return Err(Box::new(err(401, "API_KEY_INVALID", "API key invalid or revoked")));
    };
    let body = req.json().map_err(|e| Box::new(err(400, "BAD_REQUEST", &e)))?;
    Ok((key, user, body))
}

fn consumer_token(net: &Net, req: &Req) -> Response<Body> {
    let body = match req.json() {
        Ok(b) => b,
        Err(e) => return err(400, "BAD_REQUEST", &e),
    };
    let Some(key) = body.get("apiKey").and_then(Value::as_str) else {
        return err(400, "BAD_REQUEST", "body must be {\"apiKey\": \"bk_…\"}");
    };
    let Some(user) = api_key_user(net, key) else {
        return err(401, "API_KEY_INVALID", "API key invalid or revoked");
    };
    let ttl = net.cfg.token_ttl;
    let mut r = net.records();
    let access = r.mint(TokenKind::ConsumerAccess, &user, Some(ttl), None);
    let refresh = r.mint(TokenKind::Refresh { agent: false }, &user, None, Some(key));
    json_response(
        200,
        &json!({ "accessToken": access, "token": access, "refreshToken": refresh, "expiresIn": ttl.as_secs_f64(), "userId": user }),
    )
}

fn refresh(net: &Net, req: &Req) -> Response<Body> {
    let (key, user, body) = match key_and_body(net, req) {
        Ok(v) => v,
        Err(resp) => return *resp,
    };
    let rt = body.get("refreshToken").and_then(Value::as_str).unwrap_or_default();
    let ttl = net.cfg.token_ttl;
    let mut r = net.records();
    let agent = match r.tokens.get(rt) {
        Some(t) if t.user_id == user && t.api_key.as_deref() == Some(key.as_str()) => match t.kind {
            TokenKind::Refresh { agent } => agent,
            _ => return err(401, "REFRESH_TOKEN_INVALID", "refresh token invalid"),
        },
        _ => return err(401, "REFRESH_TOKEN_INVALID", "refresh token invalid or already used"),
    };
    r.revoke(rt);
    let access = r.mint(
        if agent {
            TokenKind::AgentAccess
        } else {
            TokenKind::ConsumerAccess
        },
        &user,
        Some(ttl),
        None,
    );
    let refresh = r.mint(TokenKind::Refresh { agent }, &user, None, Some(&key));
    json_response(
        200,
        &json!({ "accessToken": access, "token": access, "refreshToken": refresh, "expiresIn": ttl.as_secs_f64(), "userId": user }),
    )
}

fn agent_json(a: &crate::state::Agent) -> Value {
    json!({
        "agentName": a.name, "name": a.name, "description": "", "tags": [], "listing": a.listing,
        "billingMode": a.billing, "card": { "identity": { "agentName": a.name } }, "cardRef": null, "cardSummary": null,
        "scaling": {}, "registeredAt": a.registered_at, "owner": a.owner,
    })
}

fn registry(net: &Net, req: &Req) -> Response<Body> {
    let Some(name) = req.q("agentName").filter(|n| !n.is_empty()) else {
        return json_response(400, &json!({ "message": "agentName query parameter is required" }));
    };
    if !blocks_wire::is_valid_agent_name(name) {
        return json_response(
            400,
            &json!({ "message": format!("invalid agentName {name:?}: use letters, digits and underscores") }),
        );
    }
    let bearer = req.bearer();
    let key_user = bearer.as_deref().and_then(|b| api_key_user(net, b));
    let paid = net.cfg.paid_agents.iter().any(|p| p == name);
    let mut r = net.records();
    let agent = match (r.agents.get(name).cloned(), key_user) {
        (Some(a), _) => a,
        (None, Some(user)) => r.ensure_agent(name, &user, paid),
        (None, None) => return json_response(404, &json!({ "message": format!("Agent '{name}' not found") })),
    };
    json_response(200, &json!({ "agent": agent_json(&agent) }))
}

/// `POST /devnet/v1/revoke-control-tokens {"controlChannel"}` (service token only): revoke every
/// token that reads an agent's control channel, as an operator revoking access would. Held
/// long-polls with those tokens end with 403. A devnet tool for tests and demos.
fn revoke_control_tokens(net: &Net, req: &Req) -> Response<Body> {
    if req.bearer().as_deref() != Some(net.service_token.as_str()) {
        return err(
            403,
            "FORBIDDEN",
            "this devnet endpoint needs the network's service token",
        );
    }
    let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
    let Some(channel) = body
        .get("controlChannel")
        .and_then(Value::as_str)
        .filter(|c| !c.is_empty())
    else {
        return err(400, "INVALID_ARGUMENT", "controlChannel is required");
    };
    let mut r = net.records();
    let doomed: Vec<String> = r
        .tokens
        .iter()
        .filter(|(_, t)| matches!(&t.kind, TokenKind::Control(c) if c == channel))
        .map(|(k, _)| k.clone())
        .collect();
    for t in &doomed {
        r.revoke(t);
    }
    drop(r);
    // held long-polls check their token when they wake: wake them so they end with 403 now
    net.rt.wake_all();
    json_response(200, &json!({ "revoked": doomed.len() }))
}

/// The user behind a bearer: an API key's owner, or an access token's user.
fn bearer_user(net: &Net, req: &Req) -> Option<String> {
    let b = req.bearer()?;
    if let Some(u) = api_key_user(net, &b) {
        return Some(u);
    }
    caller(net, req).ok()
}

/// `GET /api/v1/registry/agents?include=full[&limit&cursor&skill|tag|listing]`: public agents and
/// the caller's own, by name, paged by name.
fn registry_list(net: &Net, req: &Req) -> Response<Body> {
    let user = bearer_user(net, req);
    let limit = match req.q("limit").map(str::parse::<usize>) {
        None => 50,
        Some(Ok(n)) if (1..=200).contains(&n) => n,
        Some(_) => return json_response(400, &json!({ "message": "limit must be a whole number from 1 to 200" })),
    };
    let listing = req.q("listing");
    if listing.is_some_and(|l| l != "public" && l != "private") {
        return json_response(400, &json!({ "message": "listing must be public or private" }));
    }
    let cursor = req.q("cursor").unwrap_or_default();
    let r = net.records();
    let mut visible: Vec<&crate::state::Agent> = r
        .agents
        .values()
        .filter(|a| a.listing == "public" || user.as_deref() == Some(a.owner.as_str()))
        .filter(|a| listing.is_none_or(|l| a.listing == l))
        // devnet agents carry no tags or skills: a tag or skill filter matches none
        .filter(|_| req.q("tag").is_none() && req.q("skill").is_none())
        .collect();
    visible.sort_by(|a, b| a.name.cmp(&b.name));
    let total = visible.len();
    let page: Vec<Value> = visible
        .iter()
        .filter(|a| a.name.as_str() > cursor)
        .take(limit)
        .map(|a| agent_json(a))
        .collect();
    let mut out = json!({ "agents": page, "totalCount": total });
    if page.len() == limit {
        if let Some(last) = page.last().and_then(|a| a["agentName"].as_str()) {
            if visible.iter().any(|a| a.name.as_str() > last) {
                out["next"] = json!(last);
            }
        }
    }
    json_response(200, &out)
}

/// `DELETE /api/v1/registry/agents?agentName=`: only the owner's API key removes an agent.
fn registry_remove(net: &Net, req: &Req) -> Response<Body> {
    let Some(name) = req.q("agentName").filter(|n| !n.is_empty()) else {
        return json_response(400, &json!({ "message": "agentName query parameter is required" }));
    };
    let Some(user) = req.bearer().and_then(|b| api_key_user(net, &b)) else {
        return err(401, "API_KEY_INVALID", "removing an agent needs its owner's API key");
    };
    let mut r = net.records();
    match r.agents.get(name) {
        None => json_response(404, &json!({ "message": format!("Agent '{name}' not found") })),
        Some(a) if a.owner != user => err(403, "FORBIDDEN", &format!("agent {name} belongs to another user")),
        Some(_) => {
            r.agents.remove(name);
            r.dirty.agents.insert(name.to_string());
            json_response(200, &json!({ "removed": true, "agentName": name }))
        }
    }
}

fn connect(net: &Net, req: &Req) -> Response<Body> {
    let (key, user, body) = match key_and_body(net, req) {
        Ok(v) => v,
        Err(resp) => return *resp,
    };
    let (Some(name), Some(instance_id)) = (
        body.get("agentName").and_then(Value::as_str),
        body.get("instanceId").and_then(Value::as_str),
    ) else {
        return err(400, "BAD_REQUEST", "agentName and instanceId are required");
    };
    if instance_id.is_empty() || instance_id.len() > crate::request::MAX_NAME_BYTES {
        return err(
            400,
            "BAD_REQUEST",
            &format!(
                "instanceId must be 1 to {} bytes long (it is the instance's realtime uuid)",
                crate::request::MAX_NAME_BYTES
            ),
        );
    }
    if !blocks_wire::is_valid_agent_name(name) {
        return err(
            400,
            "BAD_REQUEST",
            &format!("invalid agentName {name:?}: use letters, digits and underscores"),
        );
    }
    let paid = net.cfg.paid_agents.iter().any(|p| p == name);
    let ttl = net.cfg.token_ttl;
    let mut r = net.records();
    // an instance id belongs to the user and agent that registered it (as a row belongs to its
    // owner): anyone else re-registering it would take over its tasks and its control messages
    if let Some(old) = r.instances.get(instance_id) {
        let old_owner = if old.owner.is_empty() {
            r.agents.get(&old.agent).map(|a| a.owner.clone())
        } else {
            Some(old.owner.clone())
        };
        if old_owner.as_deref().is_some_and(|o| o != user) {
            return err(
                403,
                "INSTANCE_ID_TAKEN",
                &format!("instance id {instance_id} is registered by another user; choose another instance id"),
            );
        }
        if old.agent != name {
            return err(
                403,
                "INSTANCE_ID_TAKEN",
                &format!(
                    "instance id {instance_id} is registered to agent {}, not {name}; an instance id belongs to one agent: choose another",
                    old.agent
                ),
            );
        }
    }
    let agent = r.ensure_agent(name, &user, paid);
    if agent.owner != user {
        return err(403, "FORBIDDEN", &format!("agent {name} belongs to another user"));
    }
    let control_channel = blocks_wire::control_channel(&agent.agent_id);
    let concurrency = body.get("concurrency").and_then(Value::as_u64).unwrap_or(1) as usize;
    let sub_key = Net::keys(&agent.billing).1.to_string();
    r.touch_instance(instance_id);
    // an instance registering again (new tokens after its control access was refused) keeps the
    // tasks it is running: they are neither dispatched twice nor counted twice against capacity
    let (running, last_assigned) = match r.instances.get(instance_id) {
        Some(old) if old.agent == name => (old.running.clone(), old.last_assigned),
        _ => (Default::default(), 0),
    };
    r.instances.insert(
        instance_id.to_string(),
        crate::state::Instance {
            id: instance_id.to_string(),
            agent: name.to_string(),
            owner: user.clone(),
            concurrency,
            running,
            live: false,
            control_channel: control_channel.clone(),
            sub_key,
            last_assigned,
            left_at: None,
        },
    );
    let access = r.mint(TokenKind::AgentAccess, &user, Some(ttl), None);
    let refresh = r.mint(TokenKind::Refresh { agent: true }, &user, None, Some(&key));
    let pam = r.mint(TokenKind::Control(control_channel.clone()), &user, None, None);
    json_response(
        200,
        &json!({ "accessToken": access, "refreshToken": refresh, "expiresIn": ttl.as_secs_f64(), "pamToken": pam, "agentId": agent.agent_id, "controlChannel": control_channel }),
    )
}

/// The caller behind a bearer access token, or the 401 answer.
fn caller(net: &Net, req: &Req) -> Result<String, String> {
    let Some(t) = req.bearer() else {
        return Err("missing Authorization bearer token".into());
    };
    let r = net.records();
    match r.token(&t) {
        Some(tok) if matches!(tok.kind, TokenKind::ConsumerAccess | TokenKind::AgentAccess) => Ok(tok.user_id.clone()),
        Some(_) => Err("not an access token".into()),
        None if r.tokens.contains_key(&t) => Err("token expired".into()),
        None => Err("unknown token".into()),
    }
}

fn read_token(net: &Net, req: &Req) -> Response<Body> {
    let user = match caller(net, req) {
        Ok(u) => u,
        Err(e) => return err(401, "UNAUTHORIZED", &e),
    };
    let body = match req.json() {
        Ok(b) => b,
        Err(e) => return err(400, "BAD_REQUEST", &e),
    };
    let task_id = body.get("taskId").and_then(Value::as_str).unwrap_or_default();
    let mut r = net.records();
    let Some(task) = r.tasks.get(task_id).cloned() else {
        return err(404, "NOT_FOUND", &format!("task {task_id} not found"));
    };
    let agent_owner = r.agents.get(&task.agent).map(|a| a.owner.clone());
    if task.owner != user && agent_owner.as_deref() != Some(user.as_str()) {
        return err(403, "FORBIDDEN", &format!("task {task_id} belongs to another user"));
    }
    let channel = task.channel();
    let token = r.mint(
        TokenKind::Read(channel.clone()),
        &user,
        Some(Duration::from_secs(24 * 3600)),
        None,
    );
    json_response(
        200,
        &json!({ "pamToken": token, "channel": channel, "ttlMinutes": 1440 }),
    )
}

/// Anonymous viewers may read public free tasks submitted with their fingerprint; the devnet has
/// no public tasks, so the answer is always 403 (or 400 for a malformed request).
fn anon_read_token(req: &Req) -> Response<Body> {
    let body = match req.json() {
        Ok(b) => b,
        Err(e) => return err(400, "BAD_REQUEST", &e),
    };
    match (
        body.get("taskId").and_then(Value::as_str),
        body.get("fingerprint").and_then(Value::as_str),
    ) {
        (Some(t), Some(_)) => err(
            403,
            "FORBIDDEN",
            &format!("anonymous access to task {t} denied: only public free tasks can be viewed anonymously"),
        ),
        _ => err(400, "BAD_REQUEST", "taskId and fingerprint are required"),
    }
}

fn rpc_error(id: &Value, e: &RpcErr) -> Value {
    let mut data = json!({ "code": e.app, "message": e.message });
    if let Some(d) = &e.details {
        data["details"] = d.clone();
    }
    json!({ "jsonrpc": "2.0", "id": id, "error": { "code": e.code, "message": e.message, "data": data } })
}

fn rpc(net: &Net, req: &Req) -> Response<Body> {
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

fn send_message(net: &Net, user: &str, p: &Value) -> RpcResult {
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
    let stream = blocks
        .and_then(|b| b.get("stream"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let cpk = blocks
        .and_then(|b| b.get("consumerPublicKey"))
        .and_then(Value::as_str)
        .map(str::to_string);
    let billing = p.get("billingMode").and_then(Value::as_str).unwrap_or("free");
    let idem = p
        .get("idempotencyKey")
        .and_then(Value::as_str)
        .filter(|k| !k.is_empty())
        .map(str::to_string);
    let upload_session = p
        .get("uploadSessionId")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    let (task, queued, idempotent) = {
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
        if let Some(existing) = idem
            .as_ref()
            .and_then(|k| r.idempotency.get(&(user.to_string(), k.clone())))
            .and_then(|id| r.tasks.get(id))
            .cloned()
        {
            (existing, false, true)
        } else {
            let sub = Net::keys(&agent.billing).1;
            if let Some(sid) = &upload_session {
                net.files.check_session(user, sid).map_err(invalid)?;
            }
            let mut t = r.create_task(name, &owner, kind, duration, parts, kind == "pipe" || stream, cpk, sub);
            if let Some(sid) = &upload_session {
                let mut parts = t.request_parts.clone();
                net.files
                    .bind_session(user, sid, &t.channel(), &mut parts, false)
                    .map_err(invalid)?;
                if let Some(stored) = r.tasks.get_mut(&t.id) {
                    stored.request_parts = parts.clone();
                }
                t.request_parts = parts;
            }
            if let Some(k) = idem {
                if let Some(stored) = r.tasks.get_mut(&t.id) {
                    stored.idempotency_key = Some(k.clone());
                }
                r.idempotency.insert((user.to_string(), k), t.id.clone());
            }
            r.touch_task(&t.id);
            (t, true, false)
        }
    };
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
        let msg =
            json!({ "type": method, "taskId": id, "caller": user, "protocolVersion": blocks_wire::PROTOCOL_VERSION });
        let control = r.control_for(id, msg);
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
            payload: json!({ "type": "cancel_requested", "taskId": id, "ts": crate::clock::now_ms(), "protocolVersion": blocks_wire::PROTOCOL_VERSION }),
            meta: None,
            store: true,
        });
    }
    match control {
        Some(c) => effects.push(c),
        None if matches!(method, "CancelTask" | "TerminateTask") => {
            // not dispatched yet: the backend ends it itself
            let mut t = json!({ "type": "terminal", "taskId": id, "state": "canceled", "protocolVersion": blocks_wire::PROTOCOL_VERSION });
            if method == "TerminateTask" {
                t["reason"] = json!("terminated");
            }
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
