//! `blocks-floor <devnet-url> <api-key> <mode> <count>`: the benchmark floor. A minimal caller and
//! a minimal agent that do the same wire steps as the SDK (connect, control long-poll, publish
//! running/artifact/terminal; SendMessage, long-poll the task channel until the terminal) with plain
//! HTTP and no SDK logic (no history catch-up, no dedup, no batching, no validation). Modes:
//! `echo` (sequential round trips; prints median and p99 in ms) and `throughput` (64 concurrent
//! callers; prints tasks/s). Output: one JSON line.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

type Res<T> = Result<T, String>;

const SUB: &str = "sub-c-devnet-free";
const PUB: &str = "pub-c-devnet-free";

struct Floor {
    http: reqwest::Client,
    url: String,
    api_key: String,
}

impl Floor {
    async fn post(&self, path: &str, bearer: &str, body: &Value) -> Res<Value> {
        let r = self
            .http
            .post(format!("{}{path}", self.url))
            .bearer_auth(bearer)
            .header("Blocks-Protocol-Version", "2026-05-01")
            .json(body)
            .send()
            .await
            .map_err(|e| format!("{path}: {e}"))?;
        r.json().await.map_err(|e| format!("{path}: {e}"))
    }

    async fn subscribe(&self, channel: &str, tt: u64, auth: &str, uuid: &str, filter: Option<&str>) -> Res<Value> {
        let mut q = vec![
            ("tt", tt.to_string()),
            ("uuid", uuid.to_string()),
            ("auth", auth.to_string()),
        ];
        if let Some(f) = filter {
            q.push(("filter-expr", f.to_string()));
        }
        let r = self
            .http
            .get(format!("{}/v2/subscribe/{SUB}/{channel}/0", self.url))
            .query(&q)
            .send()
            .await
            .map_err(|e| format!("subscribe: {e}"))?;
        r.json().await.map_err(|e| format!("subscribe: {e}"))
    }

    async fn publish(&self, channel: &str, auth: &str, uuid: &str, msg: &Value) -> Res<()> {
        let r = self
            .http
            .post(format!("{}/publish/{PUB}/{SUB}/0/{channel}/0", self.url))
            .query(&[("auth", auth), ("uuid", uuid), ("store", "1")])
            .json(msg)
            .send()
            .await
            .map_err(|e| format!("publish: {e}"))?;
        if !r.status().is_success() {
            return Err(format!("publish: HTTP {}", r.status()));
        }
        Ok(())
    }

    async fn time(&self) -> Res<u64> {
        let v: Value = self
            .http
            .get(format!("{}/time/0", self.url))
            .send()
            .await
            .map_err(|e| format!("time: {e}"))?
            .json()
            .await
            .map_err(|e| format!("time: {e}"))?;
        v.get(0).and_then(Value::as_u64).ok_or("time: bad answer".into())
    }
}

fn cursor(v: &Value) -> u64 {
    v.pointer("/t/t")
        .and_then(Value::as_str)
        .and_then(|t| t.parse().ok())
        .unwrap_or(0)
}

/// The floor agent: connect, long-poll the control channel, answer each StartTask with
/// running + artifact + terminal on the task channel.
async fn agent(f: Arc<Floor>, name: &str, ready: tokio::sync::oneshot::Sender<()>) -> Res<()> {
    let instance = format!("AG-{name}-floor{}", std::process::id());
    let c = f
        .post(
            "/api/v1/auth/agent/connect",
            &f.api_key,
            &json!({ "agentName": name, "instanceId": instance, "billingMode": "free", "expectedInstances": 1,
                     "concurrency": 64, "protocolVersions": ["2026-05-01"], "preferredProtocolVersion": "2026-05-01" }),
        )
        .await?;
    let channel = c["controlChannel"]
        .as_str()
        .ok_or("connect: no controlChannel")?
        .to_string();
    let token = c["pamToken"].as_str().unwrap_or_default().to_string();
    let filter = format!("meta.instance == '{instance}' || meta.broadcast == \"true\"");
    let mut tt = cursor(&f.subscribe(&channel, 0, &token, &instance, Some(&filter)).await?);
    let _ = ready.send(());
    loop {
        let v = f.subscribe(&channel, tt, &token, &instance, Some(&filter)).await?;
        tt = cursor(&v);
        for m in v["m"].as_array().into_iter().flatten() {
            let d = &m["d"];
            if d["type"] != "StartTask" {
                continue;
            }
            let (f, instance) = (f.clone(), instance.clone());
            let d = d.clone();
            tokio::spawn(async move {
                let task = d["taskId"].as_str().unwrap_or_default();
                let ch = format!("u.{}.{task}", d["orgId"].as_str().unwrap_or_default());
                let w = d["writeToken"].as_str().unwrap_or_default();
                let v = "2026-05-01";
                for ev in [
                    json!({ "type": "progress", "taskId": task, "progress": 0, "state": "running", "protocolVersion": v }),
                    json!({ "type": "artifact", "taskId": task, "protocolVersion": v,
                            "artifactRef": { "kind": "inline", "mimeType": "text/plain", "size": 1, "data": "eA==" } }),
                    json!({ "type": "terminal", "taskId": task, "state": "completed", "protocolVersion": v }),
                ] {
                    if let Err(e) = f.publish(&ch, w, &instance, &ev).await {
                        eprintln!("floor agent: {e}");
                    }
                }
            });
        }
    }
}

/// One floor caller round trip: SendMessage, then long-poll the task channel until the terminal.
async fn round_trip(f: &Floor, token: &str, agent: &str, uuid: &str) -> Res<()> {
    let start = f.time().await?;
    let r = f
        .post(
            "/api/v1/rpc",
            token,
            &json!({ "jsonrpc": "2.0", "id": 1, "method": "SendMessage",
                     "params": { "agentName": agent, "billingMode": "free", "requestParts": [] } }),
        )
        .await?;
    let res = &r["result"];
    let read = res
        .pointer("/extensions/blocks/readToken")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let ch = res
        .pointer("/extensions/blocks/streamChannels/status")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("SendMessage: {r}"))?;
    let mut tt = start;
    loop {
        let v = f.subscribe(ch, tt, read, uuid, None).await?;
        tt = cursor(&v);
        if v["m"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|m| m["d"]["type"] == "terminal")
        {
            return Ok(());
        }
    }
}

#[tokio::main]
async fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, url, api_key, mode, count] = args.as_slice() else {
        return Err("usage: blocks-floor <devnet-url> <api-key> echo|throughput|agent <count>".into());
    };
    let count: usize = count.parse().map_err(|_| "count must be a number")?;
    let f = Arc::new(Floor {
        http: reqwest::Client::builder()
            .tcp_nodelay(true)
            .pool_max_idle_per_host(256)
            .timeout(Duration::from_secs(120))
            .build()
            .map_err(|e| e.to_string())?,
        url: url.trim_end_matches('/').to_string(),
        api_key: api_key.clone(),
    });
    let token = f
        .post("/api/v1/auth/agent/consumer-token", "", &json!({ "apiKey": api_key }))
        .await?["accessToken"]
        .as_str()
        .ok_or("consumer-token: no accessToken")?
        .to_string();
    let name = format!("floor_{mode}");
    let (ready_tx, ready) = tokio::sync::oneshot::channel();
    let agent_task = tokio::spawn({
        let f = f.clone();
        let name = name.clone();
        async move {
            if let Err(e) = agent(f, &name, ready_tx).await {
                eprintln!("floor agent stopped: {e}");
            }
        }
    });
    ready.await.map_err(|_| "the floor agent did not start")?;
    match mode.as_str() {
        "agent" => {
            // serve tasks for agent `floor_agent` until killed
            println!("{}", json!({ "mode": "agent", "agentName": name }));
            let _ = agent_task.await;
            return Ok(());
        }
        "echo" => {
            for _ in 0..10 {
                round_trip(&f, &token, &name, "floor-caller").await?;
            }
            let mut samples = Vec::with_capacity(count);
            for _ in 0..count {
                let t0 = Instant::now();
                round_trip(&f, &token, &name, "floor-caller").await?;
                samples.push(t0.elapsed().as_secs_f64() * 1000.0);
            }
            samples.sort_by(|a, b| a.total_cmp(b));
            let q = |p: f64| samples[((p * samples.len() as f64) as usize).min(samples.len() - 1)];
            println!(
                "{}",
                json!({ "mode": "echo", "n": count, "median_ms": q(0.5), "p99_ms": q(0.99) })
            );
        }
        "throughput" => {
            let next = Arc::new(AtomicUsize::new(0));
            let t0 = Instant::now();
            let workers: Vec<_> = (0..64)
                .map(|i| {
                    let (f, next, token, name) = (f.clone(), next.clone(), token.clone(), name.clone());
                    tokio::spawn(async move {
                        while next.fetch_add(1, Ordering::SeqCst) < count {
                            round_trip(&f, &token, &name, &format!("floor-caller-{i}")).await?;
                        }
                        Ok::<(), String>(())
                    })
                })
                .collect();
            for w in workers {
                w.await.map_err(|e| e.to_string())??;
            }
            let secs = t0.elapsed().as_secs_f64();
            println!(
                "{}",
                json!({ "mode": "throughput", "n": count, "tasks_per_sec": count as f64 / secs })
            );
        }
        other => return Err(format!("unknown mode {other:?}: use echo or throughput")),
    }
    agent_task.abort();
    Ok(())
}
