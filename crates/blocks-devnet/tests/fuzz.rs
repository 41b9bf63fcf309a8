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

// ---------------------------------------------------------------------------------------------
// Issue 20: the request-path parsers under hostile input, with fixed seeds (a failure reproduces
// on every run) and time bounds (each case, and each whole run).

use std::time::{Duration, Instant};

use blocks_devnet::fuzzing::{read_body, BodyError};
use blocks_devnet::limits;
use proptest::test_runner::{RngAlgorithm, TestRng};

fn seeded(cases: u32, seed: u8) -> TestRunner {
    TestRunner::new_with_rng(
        Config {
            cases,
            failure_persistence: None,
            ..Config::default()
        },
        TestRng::from_seed(RngAlgorithm::ChaCha, &[seed; 32]),
    )
}

fn run<S: Strategy>(
    name: &str,
    mut runner: TestRunner,
    strategy: S,
    bound: Duration,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) {
    let t = Instant::now();
    if let Err(e) = runner.run(&strategy, test) {
        panic!("{name}: {e}");
    }
    assert!(t.elapsed() < bound, "{name} took {:?} (bound {bound:?})", t.elapsed());
}

/// Filter-like text: mostly parentheses and operators, up to about 2 KiB.
fn filter_text() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            8 => Just("(".to_string()),
            4 => Just(")".to_string()),
            2 => Just("meta.a == 'x'".to_string()),
            1 => Just(" && ".to_string()),
            1 => Just(" || ".to_string()),
            1 => Just("!=".to_string()),
            1 => "[ -~]{0,8}",
        ],
        0..320,
    )
    .prop_map(|v| v.concat())
}

#[test]
fn filter_parsing_is_bounded_in_depth_length_and_time() {
    run(
        "filter text",
        seeded(4000, 20),
        filter_text(),
        Duration::from_secs(60),
        |s| {
            let t = Instant::now();
            let r = Filter::parse(&s);
            prop_assert!(
                t.elapsed() < Duration::from_millis(200),
                "{} bytes took {:?}",
                s.len(),
                t.elapsed()
            );
            if s.len() > limits::MAX_FILTER_BYTES {
                prop_assert!(r.is_err());
            }
            if let Ok(f) = r {
                let _ = f.matches(Some(&serde_json::json!({"a": "x"})));
                let _ = f.matches(None);
            }
            Ok(())
        },
    );
    // nesting: accepted exactly up to the depth limit (when it fits the length limit)
    run(
        "filter nesting",
        seeded(3000, 21),
        (0usize..4000, prop::bool::ANY),
        Duration::from_secs(60),
        |(depth, and)| {
            let term = if and {
                "meta.a == 'x' && meta.b != 'y'"
            } else {
                "meta.a == 'x'"
            };
            let s = format!("{}{term}{}", "(".repeat(depth), ")".repeat(depth));
            let r = Filter::parse(&s);
            let fits = s.len() <= limits::MAX_FILTER_BYTES && depth <= limits::MAX_FILTER_DEPTH;
            prop_assert_eq!(r.is_ok(), fits, "depth {} ({} bytes): {:?}", depth, s.len(), r.err());
            Ok(())
        },
    );
}

/// How a body is compressed on the wire.
#[derive(Debug, Clone, Copy)]
enum Coding {
    Identity,
    Gzip,
    Zlib,
    RawDeflate,
}

fn compress(coding: Coding, data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let level = flate2::Compression::fast();
    match coding {
        Coding::Identity => data.to_vec(),
        Coding::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), level);
            e.write_all(data).expect("gzip");
            e.finish().expect("gzip")
        }
        Coding::Zlib => {
            let mut e = flate2::write::ZlibEncoder::new(Vec::new(), level);
            e.write_all(data).expect("zlib");
            e.finish().expect("zlib")
        }
        Coding::RawDeflate => {
            let mut e = flate2::write::DeflateEncoder::new(Vec::new(), level);
            e.write_all(data).expect("deflate");
            e.finish().expect("deflate")
        }
    }
}

fn header(coding: Coding) -> &'static str {
    match coding {
        Coding::Identity => "",
        Coding::Gzip => "gzip",
        Coding::Zlib | Coding::RawDeflate => "deflate",
    }
}

/// Feed `wire` to the devnet's body reader in chunks of the given sizes.
fn read(
    rt: &tokio::runtime::Runtime,
    coding: &str,
    wire: Vec<u8>,
    cuts: &[usize],
    limit: usize,
) -> Result<bytes::Bytes, BodyError> {
    let mut chunks = Vec::new();
    let mut rest = &wire[..];
    let mut i = 0;
    while !rest.is_empty() {
        let n = cuts.get(i).copied().unwrap_or(rest.len()).clamp(1, rest.len());
        chunks.push(Ok::<_, std::io::Error>(bytes::Bytes::copy_from_slice(&rest[..n])));
        rest = &rest[n..];
        i += 1;
    }
    let body = axum::body::Body::from_stream(futures::stream::iter(chunks));
    let mut headers = axum::http::HeaderMap::new();
    if !coding.is_empty() {
        headers.insert("content-encoding", coding.parse().expect("header"));
    }
    rt.block_on(read_body(&headers, body, limit, Duration::from_secs(5)))
}

#[test]
fn compressed_bodies_inflate_exactly_or_are_refused_within_the_limit() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    const LIMIT: usize = 64 * 1024;
    let coding = prop_oneof![
        Just(Coding::Identity),
        Just(Coding::Gzip),
        Just(Coding::Zlib),
        Just(Coding::RawDeflate)
    ];
    // a pattern repeated up to 200 times: bodies from empty to well past the limit
    let strategy = (
        coding,
        prop::collection::vec(any::<u8>(), 0..1024),
        1usize..200,
        prop::collection::vec(1usize..4096, 0..16),
        prop::option::of((any::<prop::sample::Index>(), any::<u8>(), any::<bool>())),
    );
    run(
        "compressed bodies",
        seeded(3000, 22),
        strategy,
        Duration::from_secs(120),
        |(coding, pattern, times, cuts, damage)| {
            let data = pattern.repeat(times);
            let mut wire = compress(coding, &data);
            if let Some((at, byte, truncate)) = damage {
                if !wire.is_empty() {
                    let i = at.index(wire.len());
                    if truncate {
                        wire.truncate(i);
                    } else {
                        wire[i] ^= byte | 1;
                    }
                }
            }
            let t = Instant::now();
            let r = read(&rt, header(coding), wire, &cuts, LIMIT);
            prop_assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
            match (&r, damage) {
                (Ok(b), _) => prop_assert!(b.len() <= LIMIT),
                (Err(BodyError::Timeout(_)), _) => prop_assert!(false, "no pause here"),
                _ => {}
            }
            if damage.is_none() {
                if data.len() <= LIMIT {
                    prop_assert_eq!(r.as_deref().ok(), Some(&data[..]), "{:?} {} bytes", coding, data.len());
                } else {
                    prop_assert_eq!(r.err(), Some(BodyError::TooLarge(LIMIT)));
                }
            }
            Ok(())
        },
    );
    // arbitrary bytes claiming to be compressed
    run(
        "random compressed bytes",
        seeded(3000, 23),
        (prop::collection::vec(any::<u8>(), 0..2048), 0..3u8),
        Duration::from_secs(60),
        |(bytes, c)| {
            let coding = ["gzip", "deflate", "x-gzip"][c as usize];
            match read(&rt, coding, bytes, &[], LIMIT) {
                Ok(b) => prop_assert!(b.len() <= LIMIT),
                Err(BodyError::Timeout(_)) => prop_assert!(false, "no pause here"),
                Err(_) => {}
            }
            Ok(())
        },
    );
}

/// A channel list: names of every length around the 512-byte limit, counts around 100.
fn channels() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            6 => "[a-z0-9._-]{1,12}",
            1 => "[a-z]{500,520}",
            1 => "[ -~]{0,6}",
        ],
        0..130,
    )
    .prop_map(|v| v.join(","))
}

fn enc(s: &str) -> String {
    percent_encode(s)
}

#[test]
fn subscribe_and_publish_urls_get_answers_within_their_limits() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let net = rt
        .block_on(Devnet::start(DevnetConfig {
            long_poll_hold: Duration::from_millis(20),
            ..Default::default()
        }))
        .expect("devnet");
    let client = reqwest::Client::new();
    let url = net.url();
    let sub = "sub-c-devnet-free";
    let status = |target: String, body: Option<String>| {
        rt.block_on(async {
            let r = match body {
                Some(b) => client.post(&target).body(b),
                None => client.get(&target),
            };
            r.send().await.map(|r| r.status().as_u16())
        })
        .map_err(|e| TestCaseError::fail(format!("no answer: {e}")))
    };
    let subscribe = (
        channels(),
        prop::option::of(filter_text()),
        prop::option::of(prop_oneof!["[0-9]{1,25}", "[ -~]{0,6}"]),
        prop::option::of(prop_oneof![
            Just("{\"a\":1}".to_string()),
            "[\\[\\]{}:,\"a-z0-9]{0,200}"
        ]),
        prop_oneof![Just("0".to_string()), Just("1000".to_string()), "[0-9]{1,20}"],
    );
    run(
        "subscribe urls",
        seeded(2000, 24),
        subscribe,
        Duration::from_secs(180),
        |(channels, filter, heartbeat, state, tt)| {
            let mut target = format!("{url}/v2/subscribe/{sub}/{}/0?tt={tt}&uuid=fuzz", enc(&channels));
            if let Some(f) = filter {
                target += &format!("&filter-expr={}", enc(&f));
            }
            if let Some(h) = heartbeat {
                target += &format!("&heartbeat={}", enc(&h));
            }
            if let Some(s) = state {
                target += &format!("&state={}", enc(&s));
            }
            let t = Instant::now();
            let s = status(target, None)?;
            prop_assert!(matches!(s, 200 | 400 | 403 | 404 | 413), "status {}", s);
            prop_assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
            Ok(())
        },
    );
    let message = prop_oneof![
        3 => "[\\[\\]{}:,\"a-z0-9 ]{0,300}",
        1 => (1usize..3000).prop_map(|n| format!("{}1{}", "[".repeat(n), "]".repeat(n))),
        1 => (32_700usize..32_900).prop_map(|n| format!("\"{}\"", "x".repeat(n - 2))),
    ];
    // (no `.` in channel names here: the client's URL parser would remove `.` segments)
    let publish = (
        "[a-z0-9_-]{1,12}",
        message,
        prop::option::of("[\\[\\]{}:,\"a-z0-9]{0,100}"),
        any::<bool>(),
    );
    run(
        "publish urls",
        seeded(2000, 25),
        publish,
        Duration::from_secs(180),
        |(channel, message, meta, post)| {
            let mut q = "uuid=fuzz".to_string();
            if let Some(m) = &meta {
                q += &format!("&meta={}", enc(m));
            }
            let (target, body) = if post {
                (
                    format!("{url}/publish/pub-c-devnet-free/{sub}/0/{channel}/0?{q}"),
                    Some(message.clone()),
                )
            } else {
                (
                    format!(
                        "{url}/publish/pub-c-devnet-free/{sub}/0/{channel}/0/{}?{q}",
                        enc(&message)
                    ),
                    None,
                )
            };
            let s = status(target, body)?;
            let size = message.len() + meta.as_ref().map_or(0, |m| m.len());
            if size > limits::MAX_MESSAGE_BYTES {
                prop_assert_eq!(s, 413);
            } else {
                prop_assert!(matches!(s, 200 | 400), "status {} for {} bytes", s, size);
            }
            Ok(())
        },
    );
    assert!(net.retained_message_bytes() <= limits::RETAINED_BYTES);
    assert_eq!(status(format!("{url}/time/0"), None).ok(), Some(200));
    rt.block_on(net.stop());
}
