//! Auth endpoints of the backend API: consumer tokens and their refresh, agent connect (an
//! instance registers and gets its control channel and tokens), task read tokens, and the devnet's
//! revoke-control-tokens tool.

use std::time::Duration;

use axum::body::Body;
use axum::http::Response;
use serde_json::{json, Value};

use super::{api_key_user, caller, err, key_and_body};
use crate::access::TokenKind;
use crate::net::Net;
use crate::request::{json_response, Req};
use crate::state::{Instance, Records};

pub(super) fn consumer_token(net: &Net, req: &Req) -> Response<Body> {
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

pub(super) fn refresh(net: &Net, req: &Req) -> Response<Body> {
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

/// `POST /devnet/v1/revoke-control-tokens {"controlChannel"}` (service token only): revoke every
/// token that reads an agent's control channel, as an operator revoking access would. Held
/// long-polls with those tokens end with 403. A devnet tool for tests and demos.
pub(super) fn revoke_control_tokens(net: &Net, req: &Req) -> Response<Body> {
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

/// `POST /api/v1/auth/agent/connect`: an instance registers (its agent too, on first sight) and
/// gets its tokens and control channel.
pub(super) fn connect(net: &Net, req: &Req) -> Response<Body> {
    let (key, user, body) = match key_and_body(net, req) {
        Ok(v) => v,
        Err(resp) => return *resp,
    };
    let (name, instance_id) = match connect_names(&body) {
        Ok(v) => v,
        Err(resp) => return *resp,
    };
    let paid = net.cfg.paid_agents.iter().any(|p| p == name);
    let ttl = net.cfg.token_ttl;
    let mut r = net.records();
    if let Err(resp) = check_instance_id(&r, instance_id, &user, name) {
        return *resp;
    }
    let agent = r.ensure_agent(name, &user, paid);
    if agent.owner != user {
        return err(403, "FORBIDDEN", &format!("agent {name} belongs to another user"));
    }
    let control_channel = blocks_wire::control_channel(&agent.agent_id);
    let concurrency = body.get("concurrency").and_then(Value::as_u64).unwrap_or(1) as usize;
    let instance = Instance {
        id: instance_id.to_string(),
        agent: name.to_string(),
        owner: user.clone(),
        concurrency,
        running: Default::default(),
        live: false,
        control_channel: control_channel.clone(),
        sub_key: Net::keys(&agent.billing).1.to_string(),
        last_assigned: 0,
        left_at: None,
    };
    register_instance(&mut r, instance);
    let access = r.mint(TokenKind::AgentAccess, &user, Some(ttl), None);
    let refresh = r.mint(TokenKind::Refresh { agent: true }, &user, None, Some(&key));
    let pam = r.mint(TokenKind::Control(control_channel.clone()), &user, None, None);
    json_response(
        200,
        &json!({ "accessToken": access, "refreshToken": refresh, "expiresIn": ttl.as_secs_f64(), "pamToken": pam, "agentId": agent.agent_id, "controlChannel": control_channel }),
    )
}

/// The agent name and instance id of a connect body, checked, or the 400 answer.
fn connect_names(body: &Value) -> Result<(&str, &str), Box<Response<Body>>> {
    let (Some(name), Some(instance_id)) = (
        body.get("agentName").and_then(Value::as_str),
        body.get("instanceId").and_then(Value::as_str),
    ) else {
        return Err(Box::new(err(
            400,
            "BAD_REQUEST",
            "agentName and instanceId are required",
        )));
    };
    if instance_id.is_empty() || instance_id.len() > crate::request::MAX_NAME_BYTES {
        return Err(Box::new(err(
            400,
            "BAD_REQUEST",
            &format!(
                "instanceId must be 1 to {} bytes long (it is the instance's realtime uuid)",
                crate::request::MAX_NAME_BYTES
            ),
        )));
    }
    if !blocks_wire::is_valid_agent_name(name) {
        return Err(Box::new(err(
            400,
            "BAD_REQUEST",
            &format!("invalid agentName {name:?}: use letters, digits and underscores"),
        )));
    }
    Ok((name, instance_id))
}

/// An instance id belongs to the user and agent that registered it (as a row belongs to its
/// owner): anyone else re-registering it would take over its tasks and its control messages.
fn check_instance_id(r: &Records, instance_id: &str, user: &str, name: &str) -> Result<(), Box<Response<Body>>> {
    let Some(old) = r.instances.get(instance_id) else {
        return Ok(());
    };
    let old_owner = if old.owner.is_empty() {
        r.agents.get(&old.agent).map(|a| a.owner.clone())
    } else {
        Some(old.owner.clone())
    };
    if old_owner.as_deref().is_some_and(|o| o != user) {
        return Err(Box::new(err(
            403,
            "INSTANCE_ID_TAKEN",
            &format!("instance id {instance_id} is registered by another user; choose another instance id"),
        )));
    }
    if old.agent != name {
        return Err(Box::new(err(
            403,
            "INSTANCE_ID_TAKEN",
            &format!(
                "instance id {instance_id} is registered to agent {}, not {name}; an instance id belongs to one agent: choose another",
                old.agent
            ),
        )));
    }
    Ok(())
}

/// Record a (re-)registered instance, not live until its control subscription is.
fn register_instance(r: &mut Records, mut instance: Instance) {
    r.touch_instance(&instance.id);
    // an instance registering again (new tokens after its control access was refused) keeps the
    // tasks it is running: they are neither dispatched twice nor counted twice against capacity
    if let Some(old) = r.instances.get(&instance.id).filter(|old| old.agent == instance.agent) {
        instance.running = old.running.clone();
        instance.last_assigned = old.last_assigned;
    }
    r.instances.insert(instance.id.clone(), instance);
}

pub(super) fn read_token(net: &Net, req: &Req) -> Response<Body> {
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
pub(super) fn anon_read_token(req: &Req) -> Response<Body> {
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
