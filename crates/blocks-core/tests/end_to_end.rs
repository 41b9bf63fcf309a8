//! The engine against a real devnet on loopback: sessions, history catch-up, the agent runtime.

use std::sync::Arc;
use std::time::Duration;

use blocks_core::realtime::{Realtime, RealtimeConfig};
use blocks_core::{
    AgentInstance, AgentOptions, ArtifactOut, ClientOptions, HandlerResult, SendMessageRequest, SessionInfo,
    TaskClient, TaskContext, TaskHandler, TaskSession,
};
use blocks_devnet::{Devnet, DevnetConfig};
use serde_json::{json, Value};

struct Echo;

#[async_trait::async_trait]
impl TaskHandler for Echo {
    async fn handle(&self, _task: Value, ctx: Arc<TaskContext>) -> Result<HandlerResult, String> {
        let text: Vec<String> = ctx
            .request_parts()
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|p| p.get("text").and_then(Value::as_str).map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let text = text.join(" ");
        if text == "fail" {
            return Err("asked to fail".into());
        }
        Ok(HandlerResult {
            artifacts: vec![ArtifactOut {
                data: format!("Echo: {text}").into_bytes(),
                mime_type: Some("text/plain".into()),
                ..Default::default()
            }],
        })
    }
}

async fn devnet() -> Devnet {
    Devnet::start(DevnetConfig::default()).await.expect("devnet starts")
}

async fn client(net: &Devnet) -> Arc<TaskClient> {
    TaskClient::create(ClientOptions {
        billing_mode: Some("free".into()),
        api_key: Some(net.api_key()),
        cdm_url: Some(net.cdm_url()),
        ..Default::default()
    })
    .await
    .expect("client")
}

async fn terminal_of(session: &TaskSession) -> Value {
    if let Some(t) = session.initial().terminal.clone() {
        return blocks_wire::TaskEvent::Terminal(t).to_value();
    }
    let mut rx = session.take_events().expect("events");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let ev = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .expect("terminal in time")
            .expect("channel open until terminal");
        if let blocks_core::SessionEvent::Event { event, .. } = ev {
            if event.as_terminal().is_some() {
                return event.to_value();
            }
        }
    }
}

// ART-02: a string artifact is inline base64 of its UTF-8 bytes
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_round_trip_through_the_dispatcher() {
    let net = devnet().await;
    let agent = AgentInstance::start(
        AgentOptions {
            agent_name: "echo".into(),
            api_key: Some(net.api_key()),
            cdm_url: Some(net.cdm_url()),
            ..Default::default()
        },
        Arc::new(Echo),
    )
    .await
    .expect("agent starts");
    assert!(agent.instance_id().starts_with("AG-echo-"));
    assert!(agent.control_channel().starts_with("agent.") && agent.control_channel().ends_with(".control"));
    let c = client(&net).await;
    let session = c
        .send_message(SendMessageRequest {
            agent_name: "echo".into(),
            request_parts: vec![json!({"partId": "text", "text": "hi"})],
            ..Default::default()
        })
        .await
        .expect("send");
    let t = terminal_of(&session).await;
    assert_eq!(t["state"], "completed");
    assert_eq!(t["protocolVersion"], blocks_wire::PROTOCOL_VERSION);
    let snap = session.snapshot();
    assert_eq!(snap.state.as_deref(), Some("completed"));
    assert_eq!(snap.artifacts.len(), 1);
    assert_eq!(snap.artifacts[0].artifact_ref.str_field("data"), Some("RWNobzogaGk=")); // "Echo: hi"
    let info = c.get_task(&session.info().task_id).await.expect("get task");
    assert_eq!(info["state"], "completed");

    let failing = c
        .send_message(SendMessageRequest {
            agent_name: "echo".into(),
            request_parts: vec![json!({"text": "fail"})],
            ..Default::default()
        })
        .await
        .expect("send");
    let t = terminal_of(&failing).await;
    assert_eq!(t["state"], "failed");
    assert_eq!(t["error"], "asked to fail");
    agent.stop(Duration::from_secs(1)).await;
    net.stop().await;
}

fn realtime(net: &Devnet, user: &str) -> Arc<Realtime> {
    Realtime::new(
        RealtimeConfig {
            origin: net.url(),
            subscribe_key: "sub-c-devnet-free".into(),
            publish_key: "pub-c-devnet-free".into(),
            user_id: user.into(),
            // these tests play both the agent and the caller on raw task channels
            token: Some(net.service_token()),
            ..Default::default()
        },
        &blocks_core::http::HttpClient::new().expect("http"),
    )
    .expect("realtime")
}

fn info(channel: &str) -> SessionInfo {
    SessionInfo {
        task_id: "t_hist".into(),
        status_channel: channel.into(),
        ..Default::default()
    }
}

// SEND-09: a terminal in history makes the session terminal at once; LIFE-10: the first terminal wins
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_that_finished_before_the_session_opened_is_terminal_from_history() {
    let net = devnet().await;
    let publisher = realtime(&net, "agent-x");
    let channel = "u.user_x.t_hist";
    for ev in [
        json!({"type": "progress", "taskId": "t_hist", "progress": 0, "state": "running"}),
        json!({"type": "artifact", "taskId": "t_hist", "artifactRef": {"kind": "inline", "mimeType": "text/plain", "size": 2, "data": "aGk="}}),
        json!({"type": "terminal", "taskId": "t_hist", "state": "completed"}),
        json!({"type": "terminal", "taskId": "t_hist", "state": "failed"}),
    ] {
        publisher.publish(channel, ev, None, true).await.expect("publish");
    }
    let session = TaskSession::open(info(channel), realtime(&net, "caller"), None, true, true)
        .await
        .expect("open");
    let init = session.initial();
    assert_eq!(init.state.as_deref(), Some("completed"), "first terminal wins");
    assert_eq!(init.artifacts.len(), 1);
    assert_eq!(init.events.len(), 3, "duplicate terminal is not an event");
    assert!(
        session.take_events().expect("rx").recv().await.is_none(),
        "no live feed for a finished task"
    );
    net.stop().await;
}

// SEND-09 CONN-04 RETRY-02: events after the history read arrive live, exactly once
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_after_the_history_read_arrive_live_exactly_once() {
    let net = devnet().await;
    let publisher = realtime(&net, "agent-y");
    let channel = "u.user_y.t_live";
    publisher
        .publish(
            channel,
            json!({"type": "progress", "taskId": "t_live", "state": "running"}),
            None,
            true,
        )
        .await
        .expect("publish");
    let session = TaskSession::open(info(channel), realtime(&net, "caller"), None, false, true)
        .await
        .expect("open");
    assert_eq!(session.initial().state.as_deref(), Some("running"));
    let mut rx = session.take_events().expect("rx");
    publisher
        .publish(
            channel,
            json!({"type": "progress", "taskId": "t_live", "message": "one"}),
            None,
            true,
        )
        .await
        .expect("publish");
    publisher
        .publish(
            channel,
            json!({"type": "terminal", "taskId": "t_live", "state": "canceled"}),
            None,
            true,
        )
        .await
        .expect("publish");
    let mut got = Vec::new();
    while let Ok(Some(ev)) = tokio::time::timeout(Duration::from_secs(15), rx.recv()).await {
        if let blocks_core::SessionEvent::Event { event, .. } = ev {
            got.push(event.to_value());
        }
    }
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0]["message"], "one");
    assert_eq!(got[1]["state"], "canceled");
    assert_eq!(session.snapshot().state.as_deref(), Some("canceled"));
    net.stop().await;
}

// CFG-01 PIPE-02 ERR-07: billingMode and pipe-duration checks happen before any network call
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_validation_happens_before_the_network() {
    let err = TaskClient::create(ClientOptions {
        billing_mode: Some("gold".into()),
        cdm_url: Some("http://127.0.0.1:9".into()),
        ..Default::default()
    })
    .await
    .err()
    .expect("error");
    assert_eq!(err.to_string(), blocks_core::client::BILLING_MODE_REQUIRED);
    let net = devnet().await;
    let c = client(&net).await;
    for (req, msg) in [
        (
            SendMessageRequest {
                agent_name: "x".into(),
                task_kind: Some("pipe".into()),
                ..Default::default()
            },
            "Pipe tasks require a duration between 1 and 43200 minutes",
        ),
        (
            SendMessageRequest {
                agent_name: "x".into(),
                task_kind: Some("pipe".into()),
                duration: Some(43201.0),
                ..Default::default()
            },
            "Pipe tasks require",
        ),
        (
            SendMessageRequest {
                agent_name: "x".into(),
                duration: Some(5.0),
                ..Default::default()
            },
            "Request tasks must not include a duration",
        ),
        (
            SendMessageRequest {
                agent_name: "x-y".into(),
                ..Default::default()
            },
            "invalid",
        ),
    ] {
        let e = c.send_params(&req).expect_err("invalid");
        assert!(e.to_string().contains(msg), "{e} should contain {msg}");
    }
    let ok = c
        .send_params(&SendMessageRequest {
            agent_name: "x".into(),
            task_kind: Some("pipe".into()),
            duration: Some(43200.0),
            ..Default::default()
        })
        .expect("valid");
    assert_eq!(
        ok["extensions"]["blocks"],
        json!({"taskKind": "pipe", "duration": 43200})
    );
    let plain = c
        .send_params(&SendMessageRequest {
            agent_name: "x".into(),
            ..Default::default()
        })
        .expect("valid");
    assert!(plain.get("extensions").is_none());
    // CFG-09: no ownerId and no defaultOwnerId: "" (the backend takes the authenticated caller)
    assert_eq!(plain["ownerId"], "");
    assert_eq!(plain["billingMode"], "free");
    net.stop().await;
}
