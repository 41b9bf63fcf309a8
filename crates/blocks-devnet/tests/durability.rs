//! A devnet with a data directory keeps what it acknowledged across a restart: tokens, agents,
//! instances, tasks and their state, task-channel history, the replay window (a reader resumes
//! with its cursor), increasing timetokens; running tasks of an instance that does not come back
//! fail instead of running forever.

use std::time::Duration;

mod common;

use blocks_devnet::{Devnet, DevnetConfig};
use common::{get, post, rpc};
use serde_json::{json, Value};

const SUB: &str = "sub-c-devnet-free";
const PUB: &str = "pub-c-devnet-free";

async fn publish(c: &reqwest::Client, url: &str, channel: &str, msg: Value, auth: &str) -> u64 {
    let r = c
        .post(format!(
            "{url}/publish/{PUB}/{SUB}/0/{channel}/0?uuid=AG-d-1&auth={auth}"
        ))
        .header("content-type", "application/json")
        .body(msg.to_string())
        .send()
        .await
        .expect("publish");
    assert_eq!(r.status().as_u16(), 200);
    let v: Value = r.json().await.expect("json");
    v[2].as_str().and_then(|t| t.parse().ok()).expect("timetoken")
}

fn config(dir: &std::path::Path, port: u16) -> DevnetConfig {
    DevnetConfig {
        port,
        data_dir: Some(dir.to_path_buf()),
        long_poll_hold: Duration::from_secs(5),
        restart_grace: Duration::from_secs(1),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_from_the_data_directory_loses_nothing_acknowledged() {
    let dir = std::env::temp_dir().join(format!("blocks-durability-{}", uuid::Uuid::new_v4()));
    let c = reqwest::Client::new();
    let net = Devnet::start(config(&dir, 0)).await.expect("devnet starts");
    let (url, port, key) = (net.url(), net.port(), net.api_key());
    let (_, tok) = post(
        &c,
        format!("{url}/api/v1/auth/agent/consumer-token"),
        None,
        json!({"apiKey": key}),
    )
    .await;
    let access = tok["accessToken"].as_str().expect("access").to_string();
    let (s, conn) = post(
        &c,
        format!("{url}/api/v1/auth/agent/connect"),
        Some(&key),
        json!({"agentName": "durable", "instanceId": "AG-d-1", "concurrency": 1}),
    )
    .await;
    assert_eq!(s, 200);
    let control = conn["controlChannel"].as_str().expect("control").to_string();
    let pam = conn["pamToken"].as_str().expect("pam").to_string();
    let sub = |tt: String| format!("{url}/v2/subscribe/{SUB}/{control}/0?tt={tt}&uuid=AG-d-1&heartbeat=2&auth={pam}");
    let (_, hs) = get(&c, sub("0".into())).await;
    let cursor = hs["t"]["t"].as_str().expect("cursor").to_string();
    let send = |parts: Value| {
        rpc(
            "SendMessage",
            json!({"agentName": "durable", "billingMode": "free", "requestParts": parts}),
        )
    };
    let (_, first) = post(
        &c,
        format!("{url}/api/v1/rpc"),
        Some(&access),
        send(json!([{"text": "one"}])),
    )
    .await;
    let t1 = first["result"]["taskId"].as_str().expect("task").to_string();
    let ch1 = first["result"]["extensions"]["blocks"]["streamChannels"]["status"]
        .as_str()
        .expect("channel")
        .to_string();
    let read1 = first["result"]["extensions"]["blocks"]["readToken"]
        .as_str()
        .expect("read token")
        .to_string();
    let (_, start) = get(&c, sub(cursor)).await;
    let st = &start["m"][0]["d"];
    assert_eq!(st["taskId"], json!(t1));
    let write = st["writeToken"].as_str().expect("write").to_string();
    publish(
        &c,
        &url,
        &ch1,
        json!({"type": "progress", "taskId": t1, "state": "running"}),
        &write,
    )
    .await;
    let last_tt = publish(
        &c,
        &url,
        &ch1,
        json!({"type": "terminal", "taskId": t1, "state": "completed"}),
        &write,
    )
    .await;
    // a second task is dispatched (StartTask in the replay window) and stays running
    let after_first = start["t"]["t"].as_str().expect("cursor").to_string();
    let (_, second) = post(
        &c,
        format!("{url}/api/v1/rpc"),
        Some(&access),
        send(json!([{"text": "two"}])),
    )
    .await;
    let t2 = second["result"]["taskId"].as_str().expect("task").to_string();
    let ch2 = second["result"]["extensions"]["blocks"]["streamChannels"]["status"]
        .as_str()
        .expect("channel")
        .to_string();
    let read2 = second["result"]["extensions"]["blocks"]["readToken"]
        .as_str()
        .expect("read token")
        .to_string();
    net.stop().await;
    drop(net);

    let net = Devnet::start(config(&dir, port))
        .await
        .expect("devnet restarts on the same port");
    // the old consumer token still works, the finished task kept its state and history
    let (s, got) = post(
        &c,
        format!("{url}/api/v1/rpc"),
        Some(&access),
        rpc("GetTask", json!({"taskId": t1})),
    )
    .await;
    assert_eq!(s, 200, "{got}");
    assert_eq!(got["result"]["task"]["state"], "completed");
    let (s, hist) = get(
        &c,
        format!("{url}/v3/history/sub-key/{SUB}/channel/{ch1}?max=100&auth={read1}"),
    )
    .await;
    assert_eq!(s, 200, "{hist}");
    let types: Vec<&str> = hist["channels"][ch1.as_str()]
        .as_array()
        .expect("history")
        .iter()
        .filter_map(|m| m["message"]["type"].as_str())
        .collect();
    assert_eq!(types, vec!["progress", "terminal"]);
    // the agent resumes its control subscription with its cursor and still gets the StartTask
    let (s, resumed) = get(&c, sub(after_first)).await;
    assert_eq!(s, 200, "{resumed}");
    assert_eq!(resumed["m"][0]["d"]["taskId"], json!(t2));
    // timetokens keep increasing across the restart
    let tt = publish(&c, &url, "plain", json!("x"), "").await;
    assert!(tt > last_tt, "timetoken {tt} after the restart is not after {last_tt}");
    let (_, list) = post(
        &c,
        format!("{url}/api/v1/rpc"),
        Some(&access),
        rpc("ListTasks", json!({})),
    )
    .await;
    assert_eq!(list["result"]["totalCount"], 2);
    // the instance never heartbeats again: its running task fails after the restart grace
    let mut cursor = "0".to_string();
    let terminal = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let (_, r) = get(
                &c,
                format!("{url}/v2/subscribe/{SUB}/{ch2}/0?tt={cursor}&uuid=caller&auth={read2}"),
            )
            .await;
            if let Some(t) = r["m"]
                .as_array()
                .and_then(|m| m.iter().find(|m| m["d"]["type"] == "terminal"))
            {
                return t["d"].clone();
            }
            cursor = r["t"]["t"].as_str().expect("cursor").to_string();
        }
    })
    .await
    .expect("the abandoned task ends");
    assert_eq!(terminal["state"], "failed");
    assert_eq!(terminal["error"], "agent_instance_lost");
    net.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}
