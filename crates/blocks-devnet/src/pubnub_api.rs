//! The PubNub REST subset of the realtime plane: publish (with the stream-setup "Function" and
//! the chaos knob), subscribe long-polls, presence (heartbeat, leave, state), time and history,
//! each checked against the access rules and the request limits.

use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Response};
use serde_json::{json, Value};

use crate::access::{check_access, Op};
use crate::filter::Filter;
use crate::net::Net;
use crate::request::{
    json_depth, json_response, pn_error, Req, MAX_CHANNELS_PER_REQUEST, MAX_MESSAGE_BYTES, MAX_MESSAGE_DEPTH,
    MAX_NAME_BYTES, MAX_PRESENCE_TIMEOUT, MAX_STATE_BYTES,
};

fn split_channels(s: &str) -> Vec<String> {
    s.split(',').filter(|c| !c.is_empty()).map(str::to_string).collect()
}

/// The 400 answer when `v` (what: "message", "meta", "state") nests too deeply.
fn check_depth(what: &str, v: &Value) -> Option<Response<Body>> {
    let d = json_depth(v);
    (d > MAX_MESSAGE_DEPTH).then(|| {
        pn_error(
            400,
            &format!("Invalid JSON {what}: nested {d} levels deep; the limit is {MAX_MESSAGE_DEPTH}"),
        )
    })
}

/// The 400 answer when a request names too many channels, or a channel or uuid that is too long.
fn check_names(channels: &[String], uuid: &str) -> Option<Response<Body>> {
    if channels.len() > MAX_CHANNELS_PER_REQUEST {
        return Some(pn_error(
            400,
            &format!(
                "{} channels in one request; the limit is {MAX_CHANNELS_PER_REQUEST}",
                channels.len()
            ),
        ));
    }
    if let Some(c) = channels.iter().find(|c| c.len() > MAX_NAME_BYTES) {
        return Some(pn_error(
            400,
            &format!("a channel name of {} bytes; the limit is {MAX_NAME_BYTES}", c.len()),
        ));
    }
    if uuid.len() > MAX_NAME_BYTES {
        return Some(pn_error(
            400,
            &format!("a uuid of {} bytes; the limit is {MAX_NAME_BYTES}", uuid.len()),
        ));
    }
    None
}

/// The presence timeout a request asks for (`heartbeat=`), clamped to [`MAX_PRESENCE_TIMEOUT`].
fn presence_timeout(req: &Req) -> Option<Duration> {
    req.q("heartbeat")
        .and_then(|h| h.parse::<u64>().ok())
        .map(|h| Duration::from_secs(h).min(MAX_PRESENCE_TIMEOUT))
}

/// The presence state a request sets (`state=`): JSON of at most [`MAX_STATE_BYTES`].
fn presence_state(req: &Req) -> Result<Option<Value>, Box<Response<Body>>> {
    match req.q("state") {
        None => Ok(None),
        Some(s) if s.len() > MAX_STATE_BYTES => Err(Box::new(pn_error(
            413,
            &format!("State Too Large: {} bytes; the limit is {MAX_STATE_BYTES}", s.len()),
        ))),
        Some(s) => {
            let state: Option<Value> = serde_json::from_str(s).ok();
            match state.as_ref().and_then(|v| check_depth("state", v)) {
                Some(bad) => Err(Box::new(bad)),
                None => Ok(state),
            }
        }
    }
}

pub(crate) fn publish(net: &Net, req: &Req, pk: &str, sk: &str, channel: &str, rest: &[&str]) -> Response<Body> {
    if !Net::is_known_sub_key(sk) {
        return pn_error(
            400,
            &format!("unknown subscribe key {sk:?} (use the keys of this devnet's CDM document)"),
        );
    }
    if pk.is_empty() {
        return pn_error(400, "missing publish key");
    }
    if channel.len() > MAX_NAME_BYTES {
        return pn_error(
            400,
            &format!(
                "a channel name of {} bytes; the limit is {MAX_NAME_BYTES}",
                channel.len()
            ),
        );
    }
    let raw = if req.method == Method::POST {
        String::from_utf8_lossy(&req.body).into_owned()
    } else {
        rest.join("/")
    };
    // PubNub's "Message Too Large", checked before anything is parsed
    let size = raw.len() + req.q("meta").map_or(0, str::len);
    if size > MAX_MESSAGE_BYTES {
        return json_response(
            413,
            &json!({
                "status": 413, "error": true, "service": "Blocks Devnet",
                "message": format!("Message Too Large: the message and its meta are {size} bytes; the limit is {MAX_MESSAGE_BYTES}"),
            }),
        );
    }
    let payload: Value = match serde_json::from_str(&raw) {
        Ok(v) => v,
        Err(e) => return pn_error(400, &format!("Invalid JSON message: {e}")),
    };
    if let Some(bad) = check_depth("message", &payload) {
        return bad;
    }
    let meta = match req.q("meta") {
        Some(m) if !m.is_empty() => match serde_json::from_str::<Value>(m) {
            Ok(v) => Some(v),
            Err(e) => return pn_error(400, &format!("Invalid JSON meta: {e}")),
        },
        _ => None,
    };
    if let Some(bad) = meta.as_ref().and_then(|m| check_depth("meta", m)) {
        return bad;
    }
    let store = !matches!(req.q("store"), Some("0") | Some("false"));
    let publisher = req.q("uuid").unwrap_or("").to_string();
    if let Some(denied) = check_access(&*net.records(), req, &[channel.to_string()], Op::Write) {
        return denied;
    }
    if channel.starts_with("setup.") {
        // the stream-setup "Function": aborts the publish with a 403 carrying the answer
        let (status, body) = crate::streams::setup(net, sk, channel, &payload);
        return json_response(status, &body);
    }
    if channel.starts_with("stream.") && net.cfg.stream_chaos {
        crate::streams::chaotic_publish(net, sk, channel, payload, meta, &publisher);
        return json_response(200, &json!([1, "Sent", net.rt.current_tt().to_string()]));
    }
    let tt = net.publish(sk, channel, payload, meta, &publisher, store);
    json_response(200, &json!([1, "Sent", tt.to_string()]))
}

pub(crate) async fn subscribe(net: &Net, req: &Req, sk: &str, channels: &str) -> Response<Body> {
    if !Net::is_known_sub_key(sk) {
        return pn_error(400, &format!("unknown subscribe key {sk:?}"));
    }
    let channels = split_channels(channels);
    let uuid = req.q("uuid").unwrap_or("").to_string();
    if let Some(bad) = check_names(&channels, &uuid) {
        return bad;
    }
    if let Some(denied) = check_access(&*net.records(), req, &channels, Op::Read) {
        return denied;
    }
    let filter = match req.q("filter-expr").filter(|f| !f.trim().is_empty()) {
        Some(f) => match Filter::parse(f) {
            Ok(f) => Some(f),
            Err(e) => return pn_error(400, &format!("Invalid filter expression: {e}")),
        },
        None => None,
    };
    let heartbeat = presence_timeout(req);
    let state = match presence_state(req) {
        Ok(s) => s,
        Err(resp) => return *resp,
    };
    net.rt.seen(&uuid, &channels, heartbeat, state.as_ref());
    let tt = req.q("tt").and_then(|t| t.parse::<u64>().ok()).unwrap_or(0);
    if tt == 0 {
        let cursor = net.rt.current_tt();
        let resp = json_response(200, &json!({ "t": { "t": cursor.to_string(), "r": 1 }, "m": [] }));
        instance_went_live(net, &uuid, &channels);
        return resp;
    }
    // a client may start from a cursor (a reconnect, or a first subscribe from the time it
    // registered): it is live from its first long-poll as well
    instance_went_live(net, &uuid, &channels);
    let deadline = tokio::time::Instant::now() + net.cfg.long_poll_hold;
    loop {
        let wake = net.rt.notified();
        tokio::pin!(wake);
        wake.as_mut().enable();
        // a token revoked while the poll was held ends it with 403
        if let Some(denied) = check_access(&*net.records(), req, &channels, Op::Read) {
            return denied;
        }
        let (msgs, cursor) = net.rt.poll(sk, &channels, tt, filter.as_ref());
        let stopping = net.stopped.load(Ordering::SeqCst);
        if !msgs.is_empty() || stopping {
            net.rt.seen(&uuid, &channels, heartbeat, None);
            let m: Vec<Value> = msgs
                .iter()
                .map(|m| {
                    let mut env = json!({
                        "a": "1", "f": 0, "i": m.publisher, "p": { "t": m.tt.to_string(), "r": 1 },
                        "k": sk, "c": m.channel, "d": m.payload, "b": m.channel,
                    });
                    if let Some(meta) = &m.meta {
                        env["u"] = meta.clone();
                    }
                    env
                })
                .collect();
            return json_response(200, &json!({ "t": { "t": cursor.to_string(), "r": 1 }, "m": m }));
        }
        net.rt.held.fetch_add(1, Ordering::SeqCst);
        let woke = tokio::time::timeout_at(deadline, wake).await;
        net.rt.held.fetch_sub(1, Ordering::SeqCst);
        if woke.is_err() {
            net.rt.seen(&uuid, &channels, heartbeat, None);
            let (_, cursor) = net.rt.poll(sk, &channels, tt, filter.as_ref());
            return json_response(200, &json!({ "t": { "t": cursor.to_string(), "r": 1 }, "m": [] }));
        }
    }
}

/// A control-channel handshake from an instance: it can now receive StartTask.
fn instance_went_live(net: &Net, uuid: &str, channels: &[String]) {
    let agent = {
        let mut r = net.records();
        match r.instances.get_mut(uuid) {
            Some(i) if channels.contains(&i.control_channel) && !i.live => {
                i.live = true;
                let (id, agent) = (i.id.clone(), i.agent.clone());
                r.touch_instance(&id);
                Some(agent)
            }
            _ => None,
        }
    };
    if let Some(a) = agent {
        net.dispatch(&a);
    }
}

pub(crate) fn presence(net: &Net, req: &Req, sk: &str, channels: &str, rest: &[&str]) -> Response<Body> {
    if !Net::is_known_sub_key(sk) {
        return pn_error(400, &format!("unknown subscribe key {sk:?}"));
    }
    let channels = split_channels(channels);
    let uuid = req.q("uuid").unwrap_or("").to_string();
    let who = match rest {
        ["uuid", who, "data"] => *who,
        _ => "",
    };
    if let Some(bad) = check_names(&channels, &uuid).or_else(|| check_names(&[], who)) {
        return bad;
    }
    // presence on a channel (heartbeat, leave, state) needs the right to read it: nobody can keep
    // another user's instance alive, make it leave, or read its state
    if let Some(denied) = check_access(&*net.records(), req, &channels, Op::Read) {
        return denied;
    }
    match rest {
        ["heartbeat"] => {
            let hb = presence_timeout(req);
            let state = match presence_state(req) {
                Ok(s) => s,
                Err(resp) => return *resp,
            };
            net.rt.seen(&uuid, &channels, hb, state.as_ref());
            json_response(200, &json!({ "status": 200, "message": "OK", "service": "Presence" }))
        }
        ["leave"] => {
            net.rt.leave(&uuid, &channels);
            // a graceful stop: no new tasks; running ones may still finish (see Net::tick)
            let mut r = net.records();
            if let Some(i) = r
                .instances
                .get_mut(&uuid)
                .filter(|i| i.live && channels.contains(&i.control_channel))
            {
                i.live = false;
                i.left_at = Some(std::time::Instant::now());
                r.touch_instance(&uuid);
            }
            drop(r);
            json_response(
                200,
                &json!({ "status": 200, "message": "OK", "action": "leave", "service": "Presence" }),
            )
        }
        ["uuid", who, "data"] => {
            if req.q("state").is_some_and(|s| s.len() > MAX_STATE_BYTES) {
                return pn_error(413, &format!("State Too Large: the limit is {MAX_STATE_BYTES} bytes"));
            }
            let state: Value = match req.q("state").map(serde_json::from_str::<Value>) {
                Some(Ok(v)) => v,
                Some(Err(e)) => return pn_error(400, &format!("Invalid JSON state: {e}")),
                None => json!({}),
            };
            if let Some(bad) = check_depth("state", &state) {
                return bad;
            }
            for c in &channels {
                net.rt.set_state(who, c, state.clone());
            }
            json_response(
                200,
                &json!({ "status": 200, "message": "OK", "payload": state, "service": "Presence" }),
            )
        }
        _ => pn_error(404, "unknown presence endpoint"),
    }
}

/// `GET /time/0`: the current timetoken.
pub(crate) fn time(net: &Net) -> Response<Body> {
    json_response(200, &json!([net.rt.current_tt()]))
}

pub(crate) fn history(net: &Net, req: &Req, sk: &str, channel: &str) -> Response<Body> {
    if !Net::is_known_sub_key(sk) {
        return pn_error(400, &format!("unknown subscribe key {sk:?}"));
    }
    if let Some(denied) = check_access(&*net.records(), req, &[channel.to_string()], Op::Read) {
        return denied;
    }
    let max = req
        .q("max")
        .and_then(|m| m.parse::<usize>().ok())
        .unwrap_or(100)
        .clamp(1, 100);
    let start = req.q("start").and_then(|s| s.parse::<u64>().ok());
    let end = req.q("end").and_then(|s| s.parse::<u64>().ok());
    let with_meta = req.q("include_meta") == Some("true");
    let msgs: Vec<Value> = net
        .rt
        .history(sk, channel, max, start, end)
        .into_iter()
        .map(|m| {
            let mut e = json!({ "message": m.payload, "timetoken": m.tt.to_string() });
            if with_meta {
                if let Some(meta) = &m.meta {
                    e["meta"] = meta.clone();
                }
            }
            e
        })
        .collect();
    json_response(
        200,
        &json!({ "status": 200, "error": false, "error_message": "", "channels": { channel: msgs } }),
    )
}
