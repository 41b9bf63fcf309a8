//! Hostile and careless input to the devnet (issue 20), each attack made from outside (a raw
//! socket, a second user's key, the devnet binary as a child process whose memory is read from
//! /proc) with the safe outcome asserted.

use std::io::{BufRead, Write};
use std::time::{Duration, Instant};

mod common;

use blocks_devnet::{limits, ApiKey, Devnet, DevnetConfig};
use common::{get, post, rpc};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SUB: &str = "sub-c-devnet-free";
const PUB: &str = "pub-c-devnet-free";

async fn start(cfg: DevnetConfig) -> Devnet {
    Devnet::start(cfg).await.expect("devnet starts")
}

fn quick() -> DevnetConfig {
    DevnetConfig {
        long_poll_hold: Duration::from_millis(200),
        ..Default::default()
    }
}

/// A raw HTTP response: status, head and body.
struct Raw {
    status: u16,
    head: String,
    body: String,
}

impl Raw {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

/// Read one response (the devnet always sends a content-length), or None when the connection
/// closed first.
async fn read_response(s: &mut TcpStream) -> Option<Raw> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    while buf.len() < head_end + len {
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let body = String::from_utf8_lossy(&buf[head_end..]).to_string();
    Some(Raw { status, head, body })
}

/// Send `request` on a new connection and read the answer.
async fn raw(port: u16, request: &[u8]) -> Raw {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
    s.write_all(request).await.expect("write");
    tokio::time::timeout(Duration::from_secs(30), read_response(&mut s))
        .await
        .expect("an answer within 30 s")
        .expect("an answer, not a closed connection")
}

/// Wait until the server closes `s` (EOF or reset); how long that took. Fails after `limit`.
async fn closed_within(s: &mut TcpStream, limit: Duration) -> Duration {
    let t = Instant::now();
    let mut buf = [0u8; 4096];
    let r = tokio::time::timeout(limit, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(r.is_ok(), "the connection was still open after {limit:?}");
    t.elapsed()
}

fn get_request(path: &str, host: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n").into_bytes()
}

fn pct(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// 1. Unbounded recursion on a request path

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filter_nested_thousands_deep_gets_400_and_the_devnet_lives() {
    let net = start(quick()).await;
    let host = format!("127.0.0.1:{}", net.port());
    // this killed the devnet (stack overflow) with one unauthenticated request
    let nested = pct(&"(".repeat(5000));
    let r = raw(
        net.port(),
        &get_request(
            &format!("/v2/subscribe/{SUB}/open/0?tt=0&uuid=x&filter-expr={nested}"),
            &host,
        ),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(
        r.json()["message"].as_str().unwrap_or("").contains("limit is 1024"),
        "{}",
        r.body
    );
    // as deep as the length limit allows: refused for its depth, before any recursion
    let nested = pct(&"(".repeat(1000));
    let r = raw(
        net.port(),
        &get_request(
            &format!("/v2/subscribe/{SUB}/open/0?tt=0&uuid=x&filter-expr={nested}"),
            &host,
        ),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap_or("")
            .contains("nested deeper than 32"),
        "{}",
        r.body
    );
    // within the length limit but deeper than 32: still refused with the reason
    let deep = pct(&format!("{}meta.a == 'x'{}", "(".repeat(33), ")".repeat(33)));
    let r = raw(
        net.port(),
        &get_request(
            &format!("/v2/subscribe/{SUB}/open/0?tt=0&uuid=x&filter-expr={deep}"),
            &host,
        ),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.body);
    let long = pct(&format!("meta.a == '{}'", "x".repeat(limits::MAX_FILTER_BYTES)));
    let r = raw(
        net.port(),
        &get_request(
            &format!("/v2/subscribe/{SUB}/open/0?tt=0&uuid=x&filter-expr={long}"),
            &host,
        ),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(
        r.json()["message"].as_str().unwrap_or("").contains("limit is 1024"),
        "{}",
        r.body
    );
    // 32 deep is served
    let ok = pct(&format!("{}meta.a == 'x'{}", "(".repeat(32), ")".repeat(32)));
    let r = raw(
        net.port(),
        &get_request(
            &format!("/v2/subscribe/{SUB}/open/0?tt=0&uuid=x&filter-expr={ok}"),
            &host,
        ),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(raw(net.port(), &get_request("/time/0", &host)).await.status, 200);
    net.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_nested_deeper_than_128_is_refused_everywhere_and_the_devnet_lives() {
    let net = start(quick()).await;
    let c = reqwest::Client::new();
    let url = net.url();
    let deep = format!("{}1{}", "[".repeat(20_000), "]".repeat(20_000));
    let deep_object = format!("{}1{}", "{\"a\":".repeat(10_000), "}".repeat(10_000));
    // a publish body (POST), within the message limit
    let r = c
        .post(format!("{url}/publish/{PUB}/{SUB}/0/open/0?uuid=x"))
        .body("[".repeat(30_000))
        .send()
        .await
        .expect("publish");
    assert_eq!(r.status().as_u16(), 400);
    let r = c
        .post(format!("{url}/publish/{PUB}/{SUB}/0/open/0?uuid=x"))
        .body(format!("{}1{}", "[".repeat(200), "]".repeat(200)))
        .send()
        .await
        .expect("publish");
    assert_eq!(r.status().as_u16(), 400, "200 levels");
    let text = r.text().await.unwrap_or_default();
    assert!(text.contains("recursion limit"), "{text}");
    // a publish through the URL, and a nested meta
    let r = c
        .get(format!(
            "{url}/publish/{PUB}/{SUB}/0/open/0/{}?uuid=x",
            pct(&format!("{}1{}", "[".repeat(5000), "]".repeat(5000)))
        ))
        .send()
        .await
        .expect("get publish");
    assert_eq!(r.status().as_u16(), 400);
    let r = c
        .post(format!(
            "{url}/publish/{PUB}/{SUB}/0/open/0?uuid=x&meta={}",
            pct(&format!("{}1{}", "[".repeat(5000), "]".repeat(5000)))
        ))
        .body("1")
        .send()
        .await
        .expect("publish with meta");
    assert_eq!(r.status().as_u16(), 400);
    // backend bodies: JSON-RPC answers a parse error, the REST endpoints 400
    let r = c
        .post(format!("{url}/api/v1/rpc"))
        .body(deep.clone())
        .send()
        .await
        .expect("rpc");
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["error"]["code"], -32700, "{v}");
    // request parts are published again inside StartTask: bounded like messages
    let (_, tok) = post(
        &c,
        format!("{url}/api/v1/auth/agent/consumer-token"),
        None,
        json!({"apiKey": net.api_key()}),
    )
    .await;
    let access = tok["accessToken"].as_str().expect("access").to_string();
    let parts: Value = serde_json::from_str(&format!("[{}1{}]", "[".repeat(100), "]".repeat(100))).expect("json");
    let (_, sent) = post(
        &c,
        format!("{url}/api/v1/rpc"),
        Some(&access),
        rpc("SendMessage", json!({"agentName": "anyone", "requestParts": parts})),
    )
    .await;
    assert_eq!(sent["error"]["data"]["code"], "InvalidParams", "{sent}");
    for path in ["api/v1/auth/agent/consumer-token", "api/v1/auth/agent/connect"] {
        let r = c
            .post(format!("{url}/{path}"))
            .bearer_auth(net.api_key())
            .body(deep_object.clone())
            .send()
            .await
            .expect("post");
        assert_eq!(r.status().as_u16(), 400, "{path}");
    }
    // presence state
    let r = c
        .get(format!(
            "{url}/v2/presence/sub-key/{SUB}/channel/open/uuid/x/data?state={}",
            pct(&format!("{}1{}", "[".repeat(5000), "]".repeat(5000)))
        ))
        .send()
        .await
        .expect("state");
    assert_eq!(r.status().as_u16(), 400);
    // 127 levels is valid JSON, but inside the subscribe envelope it would be 130 deep and
    // unreadable for serde_json clients (the SDK among them): every poll of the channel would
    // fail. Messages, meta and state nest at most 64 levels.
    let r = c
        .post(format!("{url}/publish/{PUB}/{SUB}/0/deep-ok/0?uuid=x"))
        .body(format!("{}1{}", "[".repeat(127), "]".repeat(127)))
        .send()
        .await
        .expect("publish");
    assert_eq!(r.status().as_u16(), 400);
    assert!(r.text().await.unwrap_or_default().contains("the limit is 64"));
    let r = c
        .post(format!(
            "{url}/publish/{PUB}/{SUB}/0/deep-ok/0?uuid=x&meta={}",
            pct(&format!("{}1{}", "[".repeat(65), "]".repeat(65)))
        ))
        .body("1")
        .send()
        .await
        .expect("publish");
    assert_eq!(r.status().as_u16(), 400);
    let ok = format!("{}1{}", "[".repeat(63), "]".repeat(63));
    let r = c
        .post(format!("{url}/publish/{PUB}/{SUB}/0/deep-ok/0?uuid=x"))
        .body(ok.clone())
        .send()
        .await
        .expect("publish");
    assert_eq!(r.status().as_u16(), 200);
    let (s, m) = get(&c, format!("{url}/v2/subscribe/{SUB}/deep-ok/0?tt=1000&uuid=r")).await;
    assert_eq!(s, 200);
    assert_eq!(m["m"][0]["d"].to_string(), ok);
    assert_eq!(get(&c, format!("{url}/time/0")).await.0, 200);
    net.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 2. Compressed-body bombs, and the devnet binary as a child process

/// The devnet binary, started as a child process on a free port.
struct Child {
    child: std::process::Child,
    port: u16,
}

impl Child {
    fn start(args: &[&str]) -> Child {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_blocks-devnet"))
            .args(["--in-memory", "--port", "0", "--log", "error"])
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("spawn blocks-devnet");
        let out = child.stdout.take().expect("stdout");
        let mut lines = std::io::BufReader::new(out).lines();
        let port = loop {
            let line = lines
                .next()
                .expect("blocks-devnet printed its address")
                .expect("stdout line");
            if let Some(rest) = line.split("listening on http://127.0.0.1:").nth(1) {
                break rest
                    .split(|c: char| !c.is_ascii_digit())
                    .next()
                    .and_then(|p| p.parse().ok())
                    .expect("port");
            }
        };
        Child { child, port }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A memory figure of the process from /proc, in KiB (`VmRSS`: now, `VmHWM`: peak).
    fn kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).expect("proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{field}:")))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("memory field")
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A raw deflate stream of `mib` MiB of zeros, about 1 KiB per MiB: one full-flushed block
/// sequence repeated (a full flush resets the dictionary, so the copies are independent), then
/// the final empty block.
fn deflate_bomb(mib: usize) -> Vec<u8> {
    use flate2::{Compress, Compression, FlushCompress};
    let zeros = vec![0u8; 1024 * 1024];
    let mut c = Compress::new(Compression::best(), false);
    let mut block = Vec::with_capacity(64 * 1024);
    c.compress_vec(&zeros, &mut block, FlushCompress::Full)
        .expect("compress");
    assert_eq!(c.total_in(), zeros.len() as u64, "the whole MiB went in");
    let mut out = Vec::with_capacity(block.len() * mib + 16);
    for _ in 0..mib {
        out.extend_from_slice(&block);
    }
    let mut end = Vec::with_capacity(64);
    Compress::new(Compression::best(), false)
        .compress_vec(&[], &mut end, FlushCompress::Finish)
        .expect("final block");
    out.extend_from_slice(&end);
    out
}

fn gzip_bomb(mib: usize) -> Vec<u8> {
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];
    out.extend(deflate_bomb(mib));
    // the trailer (CRC and size) is never reached: the devnet stops long before
    out.extend_from_slice(&[0; 8]);
    out
}

fn zlib_bomb(mib: usize) -> Vec<u8> {
    let mut out = vec![0x78, 0xda];
    out.extend(deflate_bomb(mib));
    out.extend_from_slice(&[0; 4]);
    out
}

#[test]
fn the_bomb_really_inflates_to_a_gibibyte() {
    // the test's own weapon, checked on a smaller charge: 64 MiB of zeros from ~64 KiB
    let bomb = gzip_bomb(64);
    assert!(bomb.len() < 100 * 1024, "{}", bomb.len());
    let mut counted = flate2::write::DeflateDecoder::new(Counter(0));
    counted
        .write_all(&bomb[10..bomb.len() - 8])
        .expect("a valid deflate stream");
    assert_eq!(counted.finish().expect("finish").0, 64 * 1024 * 1024);
    assert!(gzip_bomb(1024).len() < 1536 * 1024, "1 GiB from at most 1.5 MiB");
}

struct Counter(usize);
impl Write for Counter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0 += b.len();
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gzip_bomb_gets_413_and_the_devnet_does_not_grow() {
    let dev = Child::start(&[]);
    let c = reqwest::Client::new();
    assert_eq!(get(&c, format!("{}/time/0", dev.url())).await.0, 200);
    let base = dev.kib("VmRSS");
    let gzip = gzip_bomb(1024);
    let zlib = zlib_bomb(1024);
    let rawd = deflate_bomb(1024);
    for (encoding, bomb, path) in [
        ("gzip", &gzip, format!("publish/{PUB}/{SUB}/0/bomb/0?uuid=x")),
        ("gzip", &gzip, "api/v1/rpc".to_string()),
        ("deflate", &zlib, format!("publish/{PUB}/{SUB}/0/bomb/0?uuid=x")),
        ("deflate", &rawd, "api/v1/auth/agent/consumer-token".to_string()),
    ] {
        let t = Instant::now();
        let r = c
            .post(format!("{}/{path}", dev.url()))
            .header("content-encoding", encoding)
            .body(bomb.clone())
            .send()
            .await
            .expect("an answer, not a reset");
        assert_eq!(r.status().as_u16(), 413, "{encoding} {path}");
        let v: Value = r.json().await.expect("json");
        assert!(
            v["message"]
                .as_str()
                .unwrap_or("")
                .contains("larger than 8388608 bytes"),
            "{v}"
        );
        assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
    }
    let peak = dev.kib("VmHWM");
    // it grew by over 1 GiB before; now by at most the body limit (8 MiB) and some buffers
    assert!(peak < base + 64 * 1024, "RSS {base} KiB before, peak {peak} KiB");
    // an honest compressed body still works, and so does the devnet
    let mut g = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    g.write_all(br#"{"ok":true}"#).expect("gzip");
    let r = c
        .post(format!("{}/publish/{PUB}/{SUB}/0/fine/0?uuid=x", dev.url()))
        .header("content-encoding", "gzip")
        .body(g.finish().expect("gzip"))
        .send()
        .await
        .expect("publish");
    assert_eq!(r.status().as_u16(), 200);
    // a plain body over the limit: 413 as well
    let r = c
        .post(format!("{}/api/v1/rpc", dev.url()))
        .body(vec![b' '; limits::MAX_BODY + 1])
        .send()
        .await
        .expect("an answer");
    assert_eq!(r.status().as_u16(), 413);
}

// ---------------------------------------------------------------------------------------------
// 3. Instance ids belong to the user and agent that registered them

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_users_instance_id_is_refused_and_the_owner_keeps_its_tasks() {
    let net = start(DevnetConfig {
        long_poll_hold: Duration::from_secs(5),
        api_keys: vec![
            ApiKey {
                key: "bk_alice".into(),
                user_id: "alice".into(),
            },
            ApiKey {
                key: "bk_bob".into(),
                user_id: "bob".into(),
            },
        ],
        ..Default::default()
    })
    .await;
    let c = reqwest::Client::new();
    let url = net.url();
    let connect = |key: &'static str, agent: &'static str, instance: &'static str| {
        let (c, url) = (c.clone(), url.clone());
        async move {
            post(
                &c,
                format!("{url}/api/v1/auth/agent/connect"),
                Some(key),
                json!({"agentName": agent, "instanceId": instance, "concurrency": 1}),
            )
            .await
        }
    };
    let (s, a) = connect("bk_alice", "alice_agent", "AG-alice_agent-1").await;
    assert_eq!(s, 200, "{a}");
    let control = a["controlChannel"].as_str().expect("control").to_string();
    let pam = a["pamToken"].as_str().expect("pam").to_string();
    let hs = get(
        &c,
        format!("{url}/v2/subscribe/{SUB}/{control}/0?uuid=AG-alice_agent-1&heartbeat=20&auth={pam}"),
    )
    .await
    .1;
    let cursor = hs["t"]["t"].as_str().expect("cursor").to_string();
    // Bob takes Alice's instance id, with his own agent and with hers: 403, clearly
    let (s, e) = connect("bk_bob", "bob_agent", "AG-alice_agent-1").await;
    assert_eq!((s, e["code"].as_str()), (403, Some("INSTANCE_ID_TAKEN")), "{e}");
    assert!(
        e["message"]
            .as_str()
            .unwrap_or("")
            .contains("registered by another user"),
        "{e}"
    );
    let (s, e) = connect("bk_bob", "alice_agent", "AG-alice_agent-1").await;
    assert_eq!(s, 403, "{e}");
    // the same user cannot move an instance id to another agent either
    let (s, e) = connect("bk_alice", "alice_other", "AG-alice_agent-1").await;
    assert_eq!((s, e["code"].as_str()), (403, Some("INSTANCE_ID_TAKEN")), "{e}");
    // Alice's instance still receives her tasks, and her cancels
    let (_, tok) = post(
        &c,
        format!("{url}/api/v1/auth/agent/consumer-token"),
        None,
        json!({"apiKey": "bk_alice"}),
    )
    .await;
    let access = tok["accessToken"].as_str().expect("access").to_string();
    let (_, sent) = post(
        &c,
        format!("{url}/api/v1/rpc"),
        Some(&access),
        rpc("SendMessage", json!({"agentName": "alice_agent", "requestParts": []})),
    )
    .await;
    let task = sent["result"]["taskId"].as_str().expect("taskId").to_string();
    assert_eq!(sent["result"]["queued"], false, "dispatched to Alice's live instance");
    let filter = pct("meta.instance == 'AG-alice_agent-1'");
    let poll = |cursor: String| {
        let (c, url, control, pam, filter) = (c.clone(), url.clone(), control.clone(), pam.clone(), filter.clone());
        async move {
            get(
                &c,
                format!("{url}/v2/subscribe/{SUB}/{control}/0?tt={cursor}&uuid=AG-alice_agent-1&filter-expr={filter}&auth={pam}"),
            )
            .await
            .1
        }
    };
    let start = poll(cursor).await;
    assert_eq!(start["m"][0]["d"]["type"], "StartTask", "{start}");
    assert_eq!(start["m"][0]["d"]["taskId"], json!(task));
    let cursor = start["t"]["t"].as_str().expect("cursor").to_string();
    let (_, canceled) = post(
        &c,
        format!("{url}/api/v1/rpc"),
        Some(&access),
        rpc("CancelTask", json!({"taskId": task})),
    )
    .await;
    assert!(canceled.get("error").is_none(), "{canceled}");
    let cancel = poll(cursor).await;
    assert_eq!(cancel["m"][0]["d"]["type"], "CancelTask", "{cancel}");
    assert_eq!(cancel["m"][0]["d"]["taskId"], json!(task));
    // Alice registering her own instance again keeps its running task (capacity 1: the next
    // task queues)
    let (s, _) = connect("bk_alice", "alice_agent", "AG-alice_agent-1").await;
    assert_eq!(s, 200);
    let (_, second) = post(
        &c,
        format!("{url}/api/v1/rpc"),
        Some(&access),
        rpc("SendMessage", json!({"agentName": "alice_agent", "requestParts": []})),
    )
    .await;
    assert_eq!(second["result"]["queued"], true, "{second}");
    net.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 4. Slowloris and friends

fn timeouts() -> DevnetConfig {
    DevnetConfig {
        header_timeout: Duration::from_millis(400),
        body_timeout: Duration::from_millis(400),
        keep_alive_timeout: Duration::from_millis(600),
        long_poll_hold: Duration::from_secs(2),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_sent_request_head_is_closed_after_the_header_timeout() {
    let net = start(timeouts()).await;
    // half a request head, then silence
    let mut s = TcpStream::connect(("127.0.0.1", net.port())).await.expect("connect");
    s.write_all(b"GET /time/0 HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        .await
        .expect("write");
    let took = closed_within(&mut s, Duration::from_secs(10)).await;
    assert!(took >= Duration::from_millis(300), "{took:?}");
    // trickling bytes does not extend it: the limit is for the whole head
    let mut s = TcpStream::connect(("127.0.0.1", net.port())).await.expect("connect");
    let t = Instant::now();
    let trickle = async {
        for b in b"GET /time/0 HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" {
            if s.write_all(&[*b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    trickle.await;
    let _ = closed_within(&mut s, Duration::from_secs(10)).await;
    assert!(t.elapsed() < Duration::from_millis(3000), "{:?}", t.elapsed());
    // a connection that sends nothing at all
    let mut s = TcpStream::connect(("127.0.0.1", net.port())).await.expect("connect");
    closed_within(&mut s, Duration::from_secs(10)).await;
    net.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_body_gets_408() {
    let net = start(timeouts()).await;
    for path in [
        format!("/publish/{PUB}/{SUB}/0/open/0?uuid=x"),
        "/storage/upload".to_string(),
    ] {
        let mut s = TcpStream::connect(("127.0.0.1", net.port())).await.expect("connect");
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=XX\r\nContent-Length: 1000\r\n\r\n--XX\r\n"
        );
        s.write_all(head.as_bytes()).await.expect("write");
        let t = Instant::now();
        let r = tokio::time::timeout(Duration::from_secs(10), read_response(&mut s))
            .await
            .expect("answered")
            .expect("a response");
        assert_eq!(r.status, 408, "{path}: {}", r.body);
        assert!(t.elapsed() >= Duration::from_millis(300), "{:?}", t.elapsed());
        closed_within(&mut s, Duration::from_secs(5)).await;
    }
    net.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connections_close_and_long_polls_keep_working() {
    let net = start(timeouts()).await;
    let port = net.port();
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
    s.write_all(&get_request("/time/0", "127.0.0.1")).await.expect("write");
    let r = read_response(&mut s).await.expect("response");
    assert_eq!(r.status, 200);
    let idle = closed_within(&mut s, Duration::from_secs(10)).await;
    assert!(idle >= Duration::from_millis(500), "{idle:?}");
    // a long-poll is held for 2 s, far past every timeout, answered, and the connection serves
    // the next request
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
    s.write_all(&get_request(
        &format!("/v2/subscribe/{SUB}/lp/0?tt=0&uuid=r"),
        "127.0.0.1",
    ))
    .await
    .expect("write");
    let hs = read_response(&mut s).await.expect("handshake");
    let cursor = hs.json()["t"]["t"].as_str().expect("cursor").to_string();
    let t = Instant::now();
    s.write_all(&get_request(
        &format!("/v2/subscribe/{SUB}/lp/0?tt={cursor}&uuid=r"),
        "127.0.0.1",
    ))
    .await
    .expect("write");
    let held = read_response(&mut s).await.expect("the held poll is answered");
    assert_eq!(held.status, 200);
    assert_eq!(held.json()["m"], json!([]));
    assert!(t.elapsed() >= Duration::from_millis(1800), "held {:?}", t.elapsed());
    // a held poll that a publish ends
    s.write_all(&get_request(
        &format!("/v2/subscribe/{SUB}/lp/0?tt={cursor}&uuid=r"),
        "127.0.0.1",
    ))
    .await
    .expect("write");
    while net.held_long_polls() == 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let c = reqwest::Client::new();
    let r = c
        .post(format!("{}/publish/{PUB}/{SUB}/0/lp/0?uuid=p", net.url()))
        .body("\"wake\"")
        .send()
        .await
        .expect("publish");
    assert_eq!(r.status().as_u16(), 200);
    let woke = read_response(&mut s).await.expect("woken");
    assert_eq!(woke.json()["m"][0]["d"], "wake");
    net.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_cap_get_503_and_a_freed_slot_is_reused() {
    let net = start(DevnetConfig {
        max_connections: 4,
        header_timeout: Duration::from_secs(30),
        ..quick()
    })
    .await;
    let port = net.port();
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(TcpStream::connect(("127.0.0.1", port)).await.expect("connect"));
    }
    while net.open_connections() < 4 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let r = raw(port, &get_request("/time/0", "127.0.0.1")).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.head.to_ascii_lowercase().contains("retry-after: 1"), "{}", r.head);
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap_or("")
            .contains("4 open connections"),
        "{}",
        r.body
    );
    // one slot freed: served again
    drop(held.pop());
    while net.open_connections() > 3 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let r = raw(port, &get_request("/time/0", "127.0.0.1")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    drop(held);
    net.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 5. Bounded memory: message size, history, presence; a publish flood against the binary

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_over_32_kib_get_413_message_too_large() {
    let net = start(quick()).await;
    let c = reqwest::Client::new();
    let url = net.url();
    let text = |n: usize| format!("\"{}\"", "x".repeat(n - 2));
    let ok = c
        .post(format!("{url}/publish/{PUB}/{SUB}/0/big/0?uuid=x"))
        .body(text(limits::MAX_MESSAGE_BYTES))
        .send()
        .await
        .expect("publish");
    assert_eq!(ok.status().as_u16(), 200, "exactly 32 KiB is fine");
    let big = c
        .post(format!("{url}/publish/{PUB}/{SUB}/0/big/0?uuid=x"))
        .body(text(limits::MAX_MESSAGE_BYTES + 1))
        .send()
        .await
        .expect("publish");
    assert_eq!(big.status().as_u16(), 413);
    let v: Value = big.json().await.expect("json");
    assert!(
        v["message"].as_str().unwrap_or("").starts_with("Message Too Large"),
        "{v}"
    );
    // meta counts, and so does a publish through the URL
    let meta = pct(&json!({"m": "y".repeat(100)}).to_string());
    let r = c
        .post(format!("{url}/publish/{PUB}/{SUB}/0/big/0?uuid=x&meta={meta}"))
        .body(text(limits::MAX_MESSAGE_BYTES - 50))
        .send()
        .await
        .expect("publish");
    assert_eq!(r.status().as_u16(), 413);
    let r = c
        .get(format!(
            "{url}/publish/{PUB}/{SUB}/0/big/0/{}?uuid=x",
            pct(&text(limits::MAX_MESSAGE_BYTES + 10))
        ))
        .send()
        .await
        .expect("get publish");
    assert_eq!(r.status().as_u16(), 413);
    // only the message that fitted was kept
    let (_, h) = get(&c, format!("{url}/v3/history/sub-key/{SUB}/channel/big")).await;
    assert_eq!(h["channels"]["big"].as_array().map(Vec::len), Some(1));
    net.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_entries_expire_and_requests_are_bounded() {
    let net = start(quick()).await;
    let c = reqwest::Client::new();
    let url = net.url();
    for i in 0..200 {
        let r = c
            .get(format!(
                "{url}/v2/presence/sub-key/{SUB}/channel/open.{i}/heartbeat?uuid=ghost-{i}&heartbeat=0"
            ))
            .send()
            .await
            .expect("heartbeat");
        assert_eq!(r.status().as_u16(), 200);
    }
    assert!(net.presence_entries() >= 200);
    // timeout 0 + 10 s grace, swept every 5 s
    let t = Instant::now();
    while net.presence_entries() > 0 {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "{} entries left",
            net.presence_entries()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // one request names at most 100 channels of at most 512 bytes
    let many: Vec<String> = (0..101).map(|i| format!("c{i}")).collect();
    let (s, e) = get(&c, format!("{url}/v2/subscribe/{SUB}/{}/0?tt=0&uuid=u", many.join(","))).await;
    assert_eq!(s, 400, "{e}");
    let (s, _) = get(
        &c,
        format!(
            "{url}/v2/presence/sub-key/{SUB}/channel/{}/heartbeat?uuid=u",
            many.join(",")
        ),
    )
    .await;
    assert_eq!(s, 400);
    let (s, _) = get(
        &c,
        format!("{url}/v2/subscribe/{SUB}/{}/0?tt=0&uuid=u", "c".repeat(513)),
    )
    .await;
    assert_eq!(s, 400);
    let (s, _) = get(
        &c,
        format!("{url}/v2/subscribe/{SUB}/c/0?tt=0&uuid={}", "u".repeat(513)),
    )
    .await;
    assert_eq!(s, 400);
    let (s, _) = get(
        &c,
        format!(
            "{url}/v2/presence/sub-key/{SUB}/channel/c/heartbeat?uuid=u&state={}",
            pct(&format!("{{\"c\":\"{}\"}}", "s".repeat(40_000)))
        ),
    )
    .await;
    assert_eq!(s, 413);
    assert_eq!(net.presence_entries(), 0, "refused requests leave no presence behind");
    net.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_flood_keeps_the_devnet_binary_under_256_mib() {
    let dev = Child::start(&[]);
    let c = reqwest::Client::new();
    assert_eq!(get(&c, format!("{}/time/0", dev.url())).await.0, 200);
    let base = dev.kib("VmRSS");
    // 16,000 zeros: 32 KiB of text, about 512 KiB parsed. 1,200 of them (38 MiB on the wire)
    // would keep well over 600 MiB with no limits (1.2 GiB as the devnet was: two copies).
    let dense = format!("[{}0]", "0,".repeat(15_999));
    assert!(dense.len() <= limits::MAX_MESSAGE_BYTES);
    let t = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..4 {
        let (c, url, dense) = (c.clone(), dev.url(), dense.clone());
        tasks.push(tokio::spawn(async move {
            for i in (w..1_200).step_by(4) {
                // half to one channel, half to a new open channel each; some outside history
                let channel = if i % 2 == 0 {
                    "flood".to_string()
                } else {
                    format!("flood.{i}")
                };
                let store = if i % 3 == 0 { 0 } else { 1 };
                let r = c
                    .post(format!("{url}/publish/{PUB}/{SUB}/0/{channel}/0?uuid=f&store={store}"))
                    .body(dense.clone())
                    .send()
                    .await
                    .expect("publish");
                assert_eq!(r.status().as_u16(), 200);
            }
        }));
    }
    for t in tasks {
        t.await.expect("flood task");
    }
    assert!(t.elapsed() < Duration::from_secs(120), "{:?}", t.elapsed());
    let (rss, peak) = (dev.kib("VmRSS"), dev.kib("VmHWM"));
    eprintln!("devnet RSS: {base} KiB before, {rss} KiB after, peak {peak} KiB");
    assert!(peak < 256 * 1024, "peak RSS {peak} KiB (limit 256 MiB)");
    // the newest messages are all there; the oldest open channels were dropped
    let (_, newest) = get(&c, format!("{}/v3/history/sub-key/{SUB}/channel/flood.1199", dev.url())).await;
    assert_eq!(newest["channels"]["flood.1199"].as_array().map(Vec::len), Some(1));
    let (_, oldest) = get(&c, format!("{}/v3/history/sub-key/{SUB}/channel/flood.1", dev.url())).await;
    assert_eq!(oldest["channels"]["flood.1"].as_array().map(Vec::len), Some(0));
    assert_eq!(get(&c, format!("{}/time/0", dev.url())).await.0, 200);
}

// ---------------------------------------------------------------------------------------------
// 6. DNS rebinding

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_for_other_host_names_get_421() {
    let net = start(DevnetConfig {
        allowed_hosts: vec!["devnet.test".into(), ".lan.test".into()],
        ..quick()
    })
    .await;
    let port = net.port();
    for host in [
        "evil.example".to_string(),
        format!("evil.example:{port}"),
        "localhost.evil.example".into(),
        "127.0.0.1.nip.io".into(),
        "0.0.0.0".into(),
        "xdevnet.test".into(),
    ] {
        let r = raw(port, &get_request("/config.json", &host)).await;
        assert_eq!(r.status, 421, "{host}: {}", r.body);
        assert!(
            r.json()["message"]
                .as_str()
                .unwrap_or("")
                .contains("Misdirected Request"),
            "{}",
            r.body
        );
    }
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        "LOCALHOST".into(),
        "127.3.2.1".into(),
        format!("[::1]:{port}"),
        "devnet.test".into(),
        format!("a.lan.test:{port}"),
    ] {
        let r = raw(port, &get_request("/config.json", &host)).await;
        assert_eq!(r.status, 200, "{host}: {}", r.body);
    }
    // an absolute-form target names the host, whatever Host says
    let r = raw(
        port,
        b"GET http://evil.example/config.json HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 421);
    // every path, the upload endpoint included, is checked before anything else happens
    let r = raw(
        port,
        b"POST /storage/upload HTTP/1.1\r\nHost: evil.example\r\nContent-Length: 0\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 421);
    let r = raw(
        port,
        format!("GET /publish/{PUB}/{SUB}/0/rebound/0/1 HTTP/1.1\r\nHost: evil.example\r\n\r\n").as_bytes(),
    )
    .await;
    assert_eq!(r.status, 421);
    let c = reqwest::Client::new();
    let (_, h) = get(&c, format!("{}/v3/history/sub-key/{SUB}/channel/rebound", net.url())).await;
    assert_eq!(h["channels"]["rebound"], json!([]), "nothing was published");
    net.stop().await;
}
