//! The devnet over real HTTP on loopback: realtime semantics, backend API and dispatch.

use std::io::Write;
use std::time::Duration;

mod common;

use blocks_devnet::{Devnet, DevnetConfig};
use common::{get, post, rpc};
use serde_json::{json, Value};

const SUB: &str = "sub-c-devnet-free";
const PUB: &str = "pub-c-devnet-free";

async fn start() -> (Devnet, reqwest::Client) {
    let net = Devnet::start(DevnetConfig {
        long_poll_hold: Duration::from_secs(5),
        ..Default::default()
    })
    .await
    .expect("devnet starts");
    (net, reqwest::Client::new())
}

async fn publish(c: &reqwest::Client, net: &Devnet, channel: &str, msg: Value, query: &str) -> u64 {
    let r = c
        .post(format!(
            "{}/publish/{PUB}/{SUB}/0/{channel}/0?uuid=tester{query}",
            net.url()
        ))
        .header("content-type", "application/json")
        .body(msg.to_string())
        .send()
        .await
        .expect("publish");
    assert_eq!(r.status().as_u16(), 200);
    let v: Value = r.json().await.expect("json");
    assert_eq!(v[0], 1);
    assert_eq!(v[1], "Sent");
    v[2].as_str().and_then(|t| t.parse().ok()).expect("timetoken")
}

async fn subscribe(c: &reqwest::Client, net: &Devnet, channels: &str, tt: u64, extra: &str) -> Value {
    get(
        c,
        format!(
            "{}/v2/subscribe/{SUB}/{channels}/0?tt={tt}&tr=1&uuid=reader{extra}",
            net.url()
        ),
    )
    .await
    .1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_then_publish_then_cursor_delivery() {
    let (net, c) = start().await;
    let hs = subscribe(&c, &net, "ch1", 0, "").await;
    assert_eq!(hs["m"], json!([]));
    let cursor: u64 = hs["t"]["t"].as_str().and_then(|t| t.parse().ok()).expect("cursor");
    assert_eq!(cursor.to_string().len(), 17);
    let tt = publish(&c, &net, "ch1", json!({"a": 1}), "").await;
    assert!(tt > cursor);
    let r = subscribe(&c, &net, "ch1", cursor, "").await;
    let m = r["m"].as_array().expect("messages");
    assert_eq!(m.len(), 1);
    assert_eq!(m[0]["d"], json!({"a": 1}));
    assert_eq!(m[0]["c"], "ch1");
    assert_eq!(m[0]["p"]["t"], tt.to_string());
    assert_eq!(m[0]["i"], "tester");
    assert_eq!(r["t"]["t"], tt.to_string());
    // stateless: the same request gives the same answer
    assert_eq!(subscribe(&c, &net, "ch1", cursor, "").await["m"], r["m"]);
    net.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_long_poll_wakes_on_publish() {
    let (net, c) = start().await;
    let cursor: u64 = subscribe(&c, &net, "wake", 0, "").await["t"]["t"]
        .as_str()
        .and_then(|t| t.parse().ok())
        .expect("cursor");
    let url = format!("{}/v2/subscribe/{SUB}/wake/0?tt={cursor}&uuid=r", net.url());
    let c2 = c.clone();
    let poll = tokio::spawn(async move {
        c2.get(url)
            .send()
            .await
            .expect("poll")
            .json::<Value>()
            .await
            .expect("json")
    });
    // wait until the server holds the poll (nothing to return yet), then publish
    while net.held_long_polls() == 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert!(!poll.is_finished());
    publish(&c, &net, "wake", json!("hello"), "").await;
    let r = tokio::time::timeout(Duration::from_secs(3), poll)
        .await
        .expect("woken before the hold ends")
        .expect("join");
    assert_eq!(r["m"][0]["d"], "hello");
    net.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timetokens_order_and_replay_cache_and_history() {
    let (net, c) = start().await;
    let a = publish(&c, &net, "h", json!(1), "").await;
    let b = publish(&c, &net, "h", json!(2), "&store=0").await;
    let d = publish(&c, &net, "h", json!(3), "").await;
    assert!(a < b && b < d);
    let cache = subscribe(&c, &net, "h", 1000, "").await;
    let seen: Vec<Value> = cache["m"]
        .as_array()
        .expect("m")
        .iter()
        .map(|m| m["d"].clone())
        .collect();
    assert_eq!(
        seen,
        vec![json!(1), json!(2), json!(3)],
        "tt=1000 replays the cache, store=0 included"
    );
    let (s, h) = get(&c, format!("{}/v3/history/sub-key/{SUB}/channel/h?max=100", net.url())).await;
    assert_eq!(s, 200);
    let hist: Vec<Value> = h["channels"]["h"]
        .as_array()
        .expect("h")
        .iter()
        .map(|m| m["message"].clone())
        .collect();
    assert_eq!(hist, vec![json!(1), json!(3)], "store=0 is not in history");
    let (_, page) = get(
        &c,
        format!("{}/v3/history/sub-key/{SUB}/channel/h?max=1&start={d}", net.url()),
    )
    .await;
    assert_eq!(page["channels"]["h"][0]["timetoken"], a.to_string());
    net.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_publish_and_compressed_bodies() {
    let (net, c) = start().await;
    let r = c
        .get(format!(
            "{}/publish/{PUB}/{SUB}/0/g/0/%7B%22k%22%3A%22v%22%7D?uuid=x",
            net.url()
        ))
        .send()
        .await
        .expect("get publish");
    assert_eq!(r.status().as_u16(), 200);
    let body = br#"{"z":"deflated"}"#;
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(body).expect("zlib");
    let mut g = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    g.write_all(br#"{"z":"gzipped"}"#).expect("gzip");
    for (enc, bytes) in [
        ("deflate", z.finish().expect("zlib")),
        ("gzip", g.finish().expect("gzip")),
    ] {
        let r = c
            .post(format!("{}/publish/{PUB}/{SUB}/0/g/0?uuid=x", net.url()))
            .header("content-encoding", enc)
            .body(bytes)
            .send()
            .await
            .expect("post");
        assert_eq!(r.status().as_u16(), 200, "{enc}");
    }
    let m = subscribe(&c, &net, "g", 1000, "").await;
    let got: Vec<Value> = m["m"].as_array().expect("m").iter().map(|x| x["d"].clone()).collect();
    assert_eq!(
        got,
        vec![json!({"k": "v"}), json!({"z": "deflated"}), json!({"z": "gzipped"})]
    );
    let bad = c
        .post(format!("{}/publish/{PUB}/{SUB}/0/g/0", net.url()))
        .body("{not json")
        .send()
        .await
        .expect("post");
    assert_eq!(bad.status().as_u16(), 400);
    net.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_select_by_meta_and_keysets_are_isolated() {
    let (net, c) = start().await;
    publish(&c, &net, "ctl", json!("for-a"), "&meta=%7B%22instance%22%3A%22a%22%7D").await;
    publish(&c, &net, "ctl", json!("for-b"), "&meta=%7B%22instance%22%3A%22b%22%7D").await;
    publish(
        &c,
        &net,
        "ctl",
        json!("for-all"),
        "&meta=%7B%22broadcast%22%3A%22true%22%7D",
    )
    .await;
    let filter = "&filter-expr=meta.instance%20%3D%3D%20%27a%27%20%7C%7C%20meta.broadcast%20%3D%3D%20%22true%22";
    let r = subscribe(&c, &net, "ctl", 1000, filter).await;
    let got: Vec<Value> = r["m"].as_array().expect("m").iter().map(|x| x["d"].clone()).collect();
    assert_eq!(got, vec![json!("for-a"), json!("for-all")]);
    assert_eq!(r["m"][0]["u"], json!({"instance": "a"}), "meta travels in `u`");
    let bad = get(
        &c,
        format!(
            "{}/v2/subscribe/{SUB}/ctl/0?tt=1000&filter-expr=meta.x%20%3D",
            net.url()
        ),
    )
    .await;
    assert_eq!(bad.0, 400);
    let r = c
        .post(format!(
            "{}/publish/pub-c-devnet-paid/sub-c-devnet-paid/0/ctl/0",
            net.url()
        ))
        .body("\"paid-only\"")
        .send()
        .await
        .expect("publish");
    assert_eq!(r.status().as_u16(), 200);
    let other = get(
        &c,
        format!("{}/v2/subscribe/sub-c-devnet-paid/ctl/0?tt=1000", net.url()),
    )
    .await;
    let paid: Vec<Value> = other.1["m"]
        .as_array()
        .expect("m")
        .iter()
        .map(|x| x["d"].clone())
        .collect();
    assert_eq!(paid, vec![json!("paid-only")], "keysets are separate namespaces");
    let unknown = get(&c, format!("{}/v2/subscribe/sub-c-nope/ctl/0?tt=0", net.url())).await;
    assert_eq!(unknown.0, 400);
    net.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_paths_in_both_spellings_and_time() {
    let (net, c) = start().await;
    for spelling in ["sub-key", "sub_key"] {
        let (s, v) = get(
            &c,
            format!(
                "{}/v2/presence/{spelling}/{SUB}/channel/p/heartbeat?heartbeat=20&uuid=u",
                net.url()
            ),
        )
        .await;
        assert_eq!((s, v["message"].as_str()), (200, Some("OK")));
        let (s, v) = get(
            &c,
            format!(
                "{}/v2/presence/{spelling}/{SUB}/channel/p/uuid/u/data?state=%7B%22a%22%3A1%7D",
                net.url()
            ),
        )
        .await;
        assert_eq!(s, 200);
        assert_eq!(v["payload"], json!({"a": 1}));
        let (s, v) = get(
            &c,
            format!("{}/v2/presence/{spelling}/{SUB}/channel/p/leave?uuid=u", net.url()),
        )
        .await;
        assert_eq!((s, v["action"].as_str()), (200, Some("leave")));
    }
    let (s, t) = get(&c, format!("{}/time/0", net.url())).await;
    assert_eq!(s, 200);
    assert_eq!(t[0].as_u64().map(|t| t.to_string().len()), Some(17));
    net.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_registry_and_dispatch_to_a_live_instance() {
    let (net, c) = start().await;
    let (s, cdm) = get(&c, net.cdm_url()).await;
    assert_eq!(s, 200);
    assert_eq!(cdm["api"]["baseUrl"], net.url());
    assert_eq!(cdm["pubnub"]["origin"], net.url());
    assert_eq!(cdm["playground"]["subscribeKey"], SUB);
    let key = net.api_key();
    let (s, bad) = post(
        &c,
        format!("{}/api/v1/auth/agent/consumer-token", net.url()),
        None,
        json!({"apiKey": "bk_wrong"}),
    )
    .await;
    assert_eq!((s, bad["code"].as_str()), (401, Some("API_KEY_INVALID")));
    let (s, tok) = post(
        &c,
        format!("{}/api/v1/auth/agent/consumer-token", net.url()),
        None,
        json!({"apiKey": key}),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(tok["userId"], "user_default");
    let access = tok["accessToken"].as_str().expect("token").to_string();
    // refresh rotates: the old refresh token is refused afterwards
    let rt = tok["refreshToken"].as_str().expect("refresh").to_string();
    let (s, rot) = post(
        &c,
        format!("{}/api/v1/auth/agent/refresh", net.url()),
        Some(&key),
        json!({"refreshToken": rt}),
    )
    .await;
    assert_eq!(s, 200);
    assert_ne!(rot["refreshToken"], json!(rt));
    let (s, again) = post(
        &c,
        format!("{}/api/v1/auth/agent/refresh", net.url()),
        Some(&key),
        json!({"refreshToken": rt}),
    )
    .await;
    assert_eq!((s, again["code"].as_str()), (401, Some("REFRESH_TOKEN_INVALID")));
    // unknown agents are registered on first lookup with an API key, and 404 without one
    let (s, _) = get(
        &c,
        format!("{}/api/v1/registry/agents?agentName=fresh_agent", net.url()),
    )
    .await;
    assert_eq!(s, 404);
    let r = c
        .get(format!("{}/api/v1/registry/agents?agentName=fresh_agent", net.url()))
        .bearer_auth(&key)
        .send()
        .await
        .expect("registry");
    let reg: Value = r.json().await.expect("json");
    assert_eq!(reg["agent"]["billingMode"], "free");
    // connect an instance and make its control subscription live
    let (s, conn) = post(
        &c,
        format!("{}/api/v1/auth/agent/connect", net.url()),
        Some(&key),
        json!({"agentName": "fresh_agent", "instanceId": "AG-fresh_agent-1", "concurrency": 1}),
    )
    .await;
    assert_eq!(s, 200);
    let control = conn["controlChannel"].as_str().expect("control").to_string();
    let pam = conn["pamToken"].as_str().expect("pamToken").to_string();
    assert!(control.starts_with("agent.agt_") && control.ends_with(".control"));
    let hs = get(
        &c,
        format!(
            "{}/v2/subscribe/{SUB}/{control}/0?uuid=AG-fresh_agent-1&heartbeat=20&auth={pam}",
            net.url()
        ),
    )
    .await
    .1;
    let cursor = hs["t"]["t"].as_str().expect("cursor").to_string();
    let (s, sent) = post(
        &c,
        format!("{}/api/v1/rpc", net.url()),
        Some(&access),
        rpc(
            "SendMessage",
            json!({"agentName": "fresh_agent", "billingMode": "free", "requestParts": [{"text": "x"}], "ownerId": ""}),
        ),
    )
    .await;
    assert_eq!(s, 200, "{sent}");
    let task_id = sent["result"]["taskId"].as_str().expect("taskId").to_string();
    assert_eq!(sent["result"]["queued"], false);
    let filter = "meta.instance%20%3D%3D%20%27AG-fresh_agent-1%27%20%7C%7C%20meta.broadcast%20%3D%3D%20%22true%22";
    let start = get(
        &c,
        format!(
            "{}/v2/subscribe/{SUB}/{control}/0?tt={cursor}&uuid=AG-fresh_agent-1&filter-expr={filter}&auth={pam}",
            net.url()
        ),
    )
    .await
    .1;
    let st = &start["m"][0]["d"];
    assert_eq!(st["type"], "StartTask");
    assert_eq!(st["taskId"], json!(task_id));
    assert_eq!(st["ownerId"], "user_default");
    assert_eq!(st["protocolVersion"], "2026-05-01");
    assert!(st["writeToken"].is_string() && st["controlToken"].is_string());
    assert_eq!(start["m"][0]["u"], json!({"instance": "AG-fresh_agent-1"}));
    // a second task queues while the instance (concurrency 1) is busy
    let (_, second) = post(
        &c,
        format!("{}/api/v1/rpc", net.url()),
        Some(&access),
        rpc(
            "SendMessage",
            json!({"agentName": "fresh_agent", "billingMode": "free", "requestParts": []}),
        ),
    )
    .await;
    assert_eq!(second["result"]["queued"], true);
    // the task's state follows its channel
    let channel = sent["result"]["extensions"]["blocks"]["streamChannels"]["status"]
        .as_str()
        .expect("channel")
        .to_string();
    let write = format!("&auth={}", st["writeToken"].as_str().expect("writeToken"));
    publish(
        &c,
        &net,
        &channel,
        json!({"type": "progress", "taskId": task_id, "state": "running"}),
        &write,
    )
    .await;
    let (_, got) = post(
        &c,
        format!("{}/api/v1/rpc", net.url()),
        Some(&access),
        rpc("GetTask", json!({"taskId": task_id})),
    )
    .await;
    assert_eq!(got["result"]["task"]["state"], "running");
    publish(
        &c,
        &net,
        &channel,
        json!({"type": "terminal", "taskId": task_id, "state": "completed"}),
        &write,
    )
    .await;
    let (_, got) = post(
        &c,
        format!("{}/api/v1/rpc", net.url()),
        Some(&access),
        rpc("GetTask", json!({"taskId": task_id})),
    )
    .await;
    assert_eq!(got["result"]["task"]["state"], "completed");
    // capacity freed: the queued task was dispatched
    let next_cursor = start["t"]["t"].as_str().expect("cursor");
    let next = get(
        &c,
        format!(
            "{}/v2/subscribe/{SUB}/{control}/0?tt={next_cursor}&uuid=AG-fresh_agent-1&filter-expr={filter}&auth={pam}",
            net.url()
        ),
    )
    .await
    .1;
    assert_eq!(next["m"][0]["d"]["taskId"], second["result"]["taskId"]);
    // errors of the spec
    let (s, e) = post(
        &c,
        format!("{}/api/v1/rpc", net.url()),
        Some(&access),
        rpc(
            "SendMessage",
            json!({"agentName": "fresh_agent", "billingMode": "paid", "requestParts": []}),
        ),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(e["error"]["data"]["code"], "BillingModeMismatch");
    assert_eq!(
        e["error"]["data"]["details"],
        json!({"expected": "free", "got": "paid"})
    );
    let (_, e) = post(
        &c,
        format!("{}/api/v1/rpc", net.url()),
        Some(&access),
        rpc("SendMessage", json!({"agentName": "nobody", "billingMode": "free"})),
    )
    .await;
    assert_eq!(e["error"]["data"]["code"], "AgentNotFound");
    let (s, _) = post(
        &c,
        format!("{}/api/v1/rpc", net.url()),
        Some("tok_bogus"),
        rpc("GetTask", json!({"taskId": task_id})),
    )
    .await;
    assert_eq!(s, 401);
    net.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_tokens_get_401() {
    let net = Devnet::start(DevnetConfig {
        token_ttl: Duration::from_millis(300),
        ..Default::default()
    })
    .await
    .expect("start");
    let c = reqwest::Client::new();
    let (_, tok) = post(
        &c,
        format!("{}/api/v1/auth/agent/consumer-token", net.url()),
        None,
        json!({"apiKey": net.api_key()}),
    )
    .await;
    let access = tok["accessToken"].as_str().expect("token").to_string();
    let body = json!({"jsonrpc": "2.0", "id": "1", "method": "ListTasks", "params": {}});
    let (s, _) = post(&c, format!("{}/api/v1/rpc", net.url()), Some(&access), body.clone()).await;
    assert_eq!(s, 200);
    tokio::time::sleep(Duration::from_millis(400)).await; // the clock is what is under test
    let (s, e) = post(&c, format!("{}/api/v1/rpc", net.url()), Some(&access), body).await;
    assert_eq!(s, 401);
    assert!(e["error"]["message"].as_str().unwrap_or_default().contains("expired"));
    net.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_ends_held_long_polls_and_frees_the_port() {
    let (net, c) = start().await;
    let cursor = subscribe(&c, &net, "s", 0, "").await["t"]["t"]
        .as_str()
        .expect("cursor")
        .to_string();
    let url = format!("{}/v2/subscribe/{SUB}/s/0?tt={cursor}", net.url());
    let c2 = c.clone();
    let poll = tokio::spawn(async move { c2.get(url).send().await.map(|r| r.status().as_u16()) });
    while net.held_long_polls() == 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    tokio::time::timeout(Duration::from_secs(3), net.stop())
        .await
        .expect("stop is prompt");
    let _ = tokio::time::timeout(Duration::from_secs(3), poll)
        .await
        .expect("poll ended");
    let port = net.port();
    net.stop().await; // idempotent
    let again = tokio::net::TcpListener::bind(("127.0.0.1", port)).await;
    assert!(again.is_ok(), "port released");
}
