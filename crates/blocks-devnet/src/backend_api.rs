//! The backend API: CDM document, auth (`auth`), registry (`registry`), JSON-RPC tasks (`rpc`),
//! read tokens, and the routes to the file endpoints.

mod auth;
mod registry;
mod rpc;

use axum::body::Body;
use axum::http::{Method, Response};
use serde_json::{json, Value};

use crate::access::TokenKind;
use crate::net::Net;
use crate::request::{json_response, Req};

fn err(status: u16, code: &str, message: &str) -> Response<Body> {
    json_response(status, &json!({ "error": message, "code": code, "message": message }))
}

pub(crate) async fn handle(net: &Net, req: &Req) -> Response<Body> {
    let seg: Vec<&str> = req.segments.iter().map(String::as_str).collect();
    match (req.method.clone(), seg.as_slice()) {
        (Method::GET, ["config.json"]) | (Method::GET, ["api", "v1", "cdm"]) => cdm(net),
        (Method::POST, ["api", "v1", "auth", "agent", "consumer-token"]) => auth::consumer_token(net, req),
        (Method::POST, ["api", "v1", "auth", "agent", "refresh"]) => auth::refresh(net, req),
        (Method::POST, ["api", "v1", "auth", "agent", "connect"]) => auth::connect(net, req),
        (Method::GET, ["api", "v1", "registry", "agents"]) if req.q("agentName").is_none() => {
            registry::registry_list(net, req)
        }
        (Method::GET, ["api", "v1", "registry", "agents"]) => registry::registry(net, req),
        (Method::DELETE, ["api", "v1", "registry", "agents"]) => registry::registry_remove(net, req),
        (Method::POST, ["devnet", "v1", "revoke-control-tokens"]) => auth::revoke_control_tokens(net, req),
        // the RPC endpoint of a subscribe key, used by clients configured without a base URL
        (Method::POST, ["v1", "blocks", "sub-key", sk, "rpc"]) => {
            if *sk != crate::net::FREE_KEYS.1 && *sk != crate::net::PAID_KEYS.1 {
                return err(
                    404,
                    "UNKNOWN_SUBSCRIBE_KEY",
                    &format!("no keyset with subscribe key {sk} on this network"),
                );
            }
            rpc::rpc(net, req)
        }
        (Method::POST, ["api", "v1", "auth", "task-read-token"]) => auth::read_token(net, req),
        (Method::POST, ["api", "v1", "auth", "anon-task-read-token"]) => auth::anon_read_token(req),
        (Method::POST, ["api", "v1", "rpc"]) => rpc::rpc(net, req),
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
