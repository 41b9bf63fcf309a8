//! Hostile input to the devnet (proptest, bounded): filter expressions, and random HTTP requests
//! (paths, queries, bodies, methods) against a running devnet. Nothing panics, no request gets a
//! 5xx, and the devnet still serves normal traffic afterwards.

use blocks_devnet::{Devnet, DevnetConfig, Filter};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn filter_expressions_never_panic(s in ".{0,80}") {
        let _ = Filter::parse(&s);
    }

    #[test]
    fn filter_like_expressions_never_panic(s in "(meta\\.[a-z]{1,3}|'[a-z]*'|\"[a-z]*\"|==|!=|&&|\\|\\||\\(|\\)| |LIKE|[0-9]{1,3}){0,14}") {
        if let Ok(f) = Filter::parse(&s) {
            let _ = f.matches(Some(&serde_json::json!({"a": "x", "ab": 1})));
            let _ = f.matches(None);
        }
    }
}

fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("v2".to_string()),
        Just("v3".to_string()),
        Just("subscribe".to_string()),
        Just("publish".to_string()),
        Just("history".to_string()),
        Just("presence".to_string()),
        Just("sub-key".to_string()),
        Just("channel".to_string()),
        Just("heartbeat".to_string()),
        Just("leave".to_string()),
        Just("time".to_string()),
        Just("api".to_string()),
        Just("v1".to_string()),
        Just("rpc".to_string()),
        Just("auth".to_string()),
        Just("agent".to_string()),
        Just("files".to_string()),
        Just("sub-c-devnet-free".to_string()),
        Just("pub-c-devnet-free".to_string()),
        Just("0".to_string()),
        "[a-zA-Z0-9._%~-]{0,12}",
    ]
}

#[test]
fn random_http_requests_get_answers_not_crashes() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let net = rt
        .block_on(Devnet::start(DevnetConfig {
            long_poll_hold: std::time::Duration::from_millis(50),
            ..Default::default()
        }))
        .expect("devnet");
    let client = reqwest::Client::new();
    let url = net.url();
    let strategy = (
        prop::collection::vec(segment(), 0..9),
        prop::collection::vec(("[a-z_-]{1,10}", "[ -~]{0,20}"), 0..5),
        prop::collection::vec(any::<u8>(), 0..300),
        0..4u8,
        any::<bool>(),
    );
    let mut runner = TestRunner::new(Config {
        cases: 600,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&strategy, |(segs, query, body, method, json_body)| {
        let path = segs.join("/");
        let q: Vec<String> = query
            .iter()
            .map(|(k, v)| format!("{k}={}", percent_encode(v)))
            .collect();
        let target = format!("{url}/{path}?{}", q.join("&"));
        let body = if json_body {
            // almost-JSON: a JSON-RPC envelope with random bytes inside
            format!(
                "{{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"SendMessage\",\"params\":{}}}",
                String::from_utf8_lossy(&body)
            )
            .into_bytes()
        } else {
            body
        };
        let status = rt.block_on(async {
            let req = match method {
                0 => client.get(&target),
                1 => client.post(&target).body(body),
                2 => client.delete(&target),
                _ => client.patch(&target).body(body),
            };
            req.header("authorization", "Bearer bk_devnet_default")
                .send()
                .await
                .map(|r| r.status().as_u16())
        });
        let status = status.map_err(|e| TestCaseError::fail(format!("{target}: no answer: {e}")))?;
        prop_assert!(status < 500, "{} answered {}", target, status);
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    // still serving
    let ok = rt.block_on(async {
        client
            .get(format!("{url}/time/0"))
            .send()
            .await
            .map(|r| r.status().as_u16())
    });
    assert_eq!(ok.ok(), Some(200));
    rt.block_on(net.stop());
}

fn percent_encode(s: &str) -> String {
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
