//! Registry endpoints of the backend API: look an agent up (registering it for its owner on first
//! sight), list the visible agents, remove one.

use axum::body::Body;
use axum::http::Response;
use serde_json::{json, Value};

use super::{api_key_user, caller, err};
use crate::net::Net;
use crate::request::{json_response, Req};

fn agent_json(a: &crate::state::Agent) -> Value {
    json!({
        "agentName": a.name, "name": a.name, "description": "", "tags": [], "listing": a.listing,
        "billingMode": a.billing, "card": { "identity": { "agentName": a.name } }, "cardRef": null, "cardSummary": null,
        "scaling": {}, "registeredAt": a.registered_at, "owner": a.owner,
    })
}

pub(super) fn registry(net: &Net, req: &Req) -> Response<Body> {
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
pub(super) fn registry_list(net: &Net, req: &Req) -> Response<Body> {
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
pub(super) fn registry_remove(net: &Net, req: &Req) -> Response<Body> {
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
