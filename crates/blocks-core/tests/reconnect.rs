//! RETRY-01: an agent's control client reconnects without a cap; short-lived subscriptions
//! (task sessions, stream readers) stop after `give_up_after` of continuous failure and say so.

use std::time::Duration;

use blocks_core::http::HttpClient;
use blocks_core::realtime::{Realtime, RealtimeConfig};
use futures::StreamExt;

/// A loopback port that nothing listens on (bound, then released).
fn dead_origin() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    drop(l);
    format!("http://127.0.0.1:{port}")
}

fn client(give_up_after: Option<Duration>) -> std::sync::Arc<Realtime> {
    Realtime::new(
        RealtimeConfig {
            origin: dead_origin(),
            subscribe_key: "sub-c-x".into(),
            user_id: "reconnect-test".into(),
            give_up_after,
            ..Default::default()
        },
        &HttpClient::new().expect("http"),
    )
    .expect("realtime")
}

// RETRY-01: short-lived clients have bounded retries and report why they stopped
#[tokio::test]
async fn a_short_lived_subscription_gives_up_and_reports_why() {
    let rt = client(Some(Duration::from_millis(1500)));
    let mut sub = Box::pin(rt.subscribe(&["u.o.t".to_string()], None));
    // the stream ends by itself (bounded: well inside 30 s even on a loaded machine)
    let end = tokio::time::timeout(Duration::from_secs(30), sub.next()).await;
    assert!(matches!(end, Ok(None)), "the subscription should have ended");
    let reason = rt.gave_up().borrow().clone().expect("a reason is reported");
    assert!(reason.contains("attempts"), "{reason}");
}

// RETRY-01: the control client re-subscribes without a retry cap
#[tokio::test]
async fn a_control_client_keeps_reconnecting() {
    let rt = client(None);
    let mut sub = Box::pin(rt.subscribe(&["agent.a.control".to_string()], None));
    // past the short-lived limit above, the subscription is still trying
    let still = tokio::time::timeout(Duration::from_secs(4), sub.next()).await;
    assert!(still.is_err(), "a control subscription must not end on its own");
    assert!(rt.gave_up().borrow().is_none());
    rt.close();
}
