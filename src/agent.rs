//! `NativeAgent` and `NativeTaskContext`: the agent runtime with a JS handler. The handler is a
//! threadsafe function that keeps the process alive while the agent runs (released by `stop()`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use blocks_core::{AgentInstance, AgentOptions, ArtifactOut, HandlerResult, TaskContext, TaskHandler};
use napi::bindgen_prelude::*;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi_derive::napi;
use serde_json::Value;

use crate::errors::OrJs;

/// The JS side resolves with `null` on success or the failure message.
type HandlerFn =
    ThreadsafeFunction<NativeTaskContext, Promise<Option<String>>, NativeTaskContext, Status, false, false>;
type CancelFn = ThreadsafeFunction<(), (), (), Status, false, true>;

/// Options of `NativeAgent.start`.
#[napi(object)]
pub struct NativeAgentOptions {
    pub agent_name: String,
    pub api_key: Option<String>,
    pub cdm_url: Option<String>,
    pub base_url: Option<String>,
    pub realtime_origin: Option<String>,
    pub concurrency: Option<u32>,
    pub expected_instances: Option<u32>,
    pub max_pending_backlog: Option<u32>,
    pub max_running_time_sec: Option<u32>,
    pub listing: Option<String>,
    pub terminate_grace_ms: Option<u32>,
    /// Card streams: `[name, direction, format, affinity]`.
    pub streams: Option<Vec<Vec<String>>>,
    /// Give up on a silent subscribe long-poll after this many ms (default 310000).
    pub long_poll_timeout_ms: Option<f64>,
    /// Allow plain `http://` to hosts that are not loopback.
    pub allow_insecure_http: Option<bool>,
    /// Extra CAs and the proxy.
    pub net: Option<crate::net::NativeNetOptions>,
}

struct JsHandler {
    tsfn: Mutex<Option<Arc<HandlerFn>>>,
}

#[async_trait::async_trait]
impl TaskHandler for JsHandler {
    async fn handle(&self, task: Value, ctx: Arc<TaskContext>) -> std::result::Result<HandlerResult, String> {
        let tsfn = self
            .tsfn
            .lock()
            .ok()
            .and_then(|t| t.clone())
            .ok_or_else(|| "agent stopped".to_string())?;
        let native = NativeTaskContext { ctx, task };
        let promise = tsfn.call_async_catch(native).await.map_err(|e| e.reason.clone())?;
        // do not hold the handler function while waiting: a handler that never settles must not
        // keep a stopped agent's process alive
        drop(tsfn);
        match promise.await {
            Ok(None) => Ok(HandlerResult::default()),
            Ok(Some(message)) => Err(message),
            Err(e) => Err(e.reason.clone()),
        }
    }
}

/// Internal: the context of one task, as seen by the JS handler wrapper.
#[napi]
pub struct NativeTaskContext {
    ctx: Arc<TaskContext>,
    task: Value,
}

#[napi]
impl NativeTaskContext {
    /// The StartTask message without its tokens.
    #[napi(getter, ts_return_type = "any")]
    pub fn task(&self) -> Value {
        self.task.clone()
    }
    #[napi(getter)]
    pub fn task_id(&self) -> String {
        self.ctx.task_id().to_string()
    }
    #[napi(getter, ts_return_type = "any[]")]
    pub fn request_parts(&self) -> Value {
        self.ctx.request_parts().clone()
    }
    #[napi(getter)]
    pub fn has_stream(&self) -> bool {
        self.ctx.has_stream()
    }
    #[napi(getter)]
    pub fn consumer_public_key(&self) -> Option<String> {
        self.ctx.consumer_public_key().map(str::to_string)
    }
    #[napi(getter)]
    pub fn task_kind(&self) -> String {
        self.ctx.task_kind().to_string()
    }
    #[napi(getter)]
    pub fn is_cancelled(&self) -> bool {
        self.ctx.is_cancelled()
    }
    #[napi(getter)]
    pub fn is_expired(&self) -> bool {
        self.ctx.is_expired()
    }

    /// Throttled status update.
    #[napi]
    pub fn report_status(&self, message: String) {
        let ctx = self.ctx.clone();
        napi::bindgen_prelude::within_runtime_if_available(move || ctx.report_status(message));
    }

    /// Publish one artifact now.
    #[napi]
    pub async fn publish_artifact(
        &self,
        data: Buffer,
        mime_type: Option<String>,
        file_name: Option<String>,
        output_id: Option<String>,
    ) -> Result<()> {
        let artifact = ArtifactOut {
            data: data.to_vec(),
            mime_type,
            file_name,
            output_id,
        };
        self.ctx.publish_artifact(artifact).await.or_js().await
    }

    /// Download an input file (`artifactRef` of kind `file`) with the task's token.
    #[napi(ts_args_type = "artifactRef: any")]
    pub async fn download_input(&self, artifact_ref: serde_json::Value) -> Result<Buffer> {
        let bytes = self.ctx.download_input(&artifact_ref).await.or_js().await?;
        Ok(bytes.into())
    }

    /// Open a stream to the caller (options as in `ctx.createStream`).
    #[napi(
        ts_args_type = "opts: { declaredStream?: string; direction?: string; format?: string; metadata?: any; bundleSizeBytes?: number; maxLatencyMs?: number; maxMessageSize?: number; external?: boolean; subscribeGraceMs?: number }"
    )]
    pub async fn create_stream(
        &self,
        opts: Value,
    ) -> Result<Either<crate::stream::NativeStream, crate::stream::NativeExternalStream>> {
        let s = |k: &str| opts.get(k).and_then(Value::as_str).map(str::to_string);
        let o = blocks_core::agent::CreateStreamOptions {
            declared_stream: s("declaredStream"),
            direction: s("direction"),
            format: s("format"),
            metadata: opts.get("metadata").cloned().filter(|m| !m.is_null()),
            bundle_bytes: opts.get("bundleSizeBytes").and_then(Value::as_u64).map(|b| b as usize),
            max_latency: opts
                .get("maxLatencyMs")
                .and_then(Value::as_f64)
                .map(|ms| Duration::from_secs_f64(ms.max(0.0) / 1000.0)),
            external: opts.get("external").and_then(Value::as_bool).unwrap_or(false),
            subscribe_grace: opts
                .get("subscribeGraceMs")
                .and_then(Value::as_f64)
                .map(|ms| Duration::from_secs_f64(ms.max(0.0) / 1000.0)),
            max_message_size: opts
                .get("maxMessageSize")
                .and_then(Value::as_f64)
                .map(|m| m.max(0.0) as usize),
        };
        let lease = self.ctx.create_stream(o).await.or_js().await?;
        Ok(match lease.stream.clone() {
            Some(stream) => Either::A(crate::stream::NativeStream::leased(stream, lease)),
            None => Either::B(crate::stream::NativeExternalStream::new(lease)),
        })
    }

    /// Call `cb` once when the task's cancel signal fires.
    #[napi(ts_args_type = "cb: () => void")]
    pub fn on_cancel(&self, cb: CancelFn) {
        let ctx = self.ctx.clone();
        napi::bindgen_prelude::spawn(async move {
            // ends with the task, so neither the context nor the JS callback outlives it
            if ctx.cancelled_or_finished().await {
                cb.call((), ThreadsafeFunctionCallMode::NonBlocking);
            }
        });
    }
}

/// Internal: a running agent instance.
#[napi]
pub struct NativeAgent {
    inner: Arc<AgentInstance>,
    handler: Arc<JsHandler>,
}

#[napi]
impl NativeAgent {
    /// Register, subscribe to the control channel and start taking tasks.
    #[napi(ts_args_type = "opts: NativeAgentOptions, handler: (ctx: NativeTaskContext) => Promise<string | null>")]
    pub async fn start(opts: NativeAgentOptions, handler: HandlerFn) -> Result<NativeAgent> {
        let handler = Arc::new(JsHandler {
            tsfn: Mutex::new(Some(Arc::new(handler))),
        });
        let options = AgentOptions {
            agent_name: opts.agent_name,
            api_key: opts.api_key,
            cdm_url: opts.cdm_url,
            base_url: opts.base_url,
            realtime_origin: opts.realtime_origin,
            concurrency: opts.concurrency,
            expected_instances: opts.expected_instances,
            max_pending_backlog: opts.max_pending_backlog,
            max_running_time_sec: opts.max_running_time_sec.map(u64::from),
            listing: opts.listing,
            terminate_grace: opts.terminate_grace_ms.map(|ms| Duration::from_millis(u64::from(ms))),
            long_poll_timeout: opts
                .long_poll_timeout_ms
                .filter(|ms| ms.is_finite() && *ms >= 0.0)
                .map(|ms| Duration::from_secs_f64(ms / 1000.0)),
            allow_insecure_http: opts.allow_insecure_http.unwrap_or(false),
            net: crate::net::net_options(opts.net),
            streams: opts
                .streams
                .unwrap_or_default()
                .into_iter()
                .filter_map(|s| match s.as_slice() {
                    [name, direction, format, affinity] => Some(blocks_core::agent::DeclaredStream {
                        name: name.clone(),
                        direction: direction.clone(),
                        format: format.clone(),
                        affinity: affinity.clone(),
                    }),
                    _ => None,
                })
                .collect(),
        };
        let inner = match AgentInstance::start(options, handler.clone()).await {
            Ok(i) => i,
            Err(e) => {
                if let Ok(mut t) = handler.tsfn.lock() {
                    t.take();
                }
                return Err(crate::errors::js_error(e).await);
            }
        };
        Ok(NativeAgent {
            inner: Arc::new(inner),
            handler,
        })
    }

    #[napi(getter)]
    pub fn instance_id(&self) -> String {
        self.inner.instance_id().to_string()
    }
    #[napi(getter)]
    pub fn agent_name(&self) -> String {
        self.inner.agent_name().to_string()
    }
    #[napi(getter)]
    pub fn control_channel(&self) -> String {
        self.inner.control_channel().to_string()
    }
    #[napi(getter)]
    pub fn subscribe_key(&self) -> String {
        self.inner.subscribe_key().to_string()
    }
    /// `free` or `paid`, from the registry.
    #[napi(getter)]
    pub fn billing_mode(&self) -> String {
        self.inner.billing_mode().as_str().to_string()
    }
    #[napi(getter)]
    pub fn active_tasks(&self) -> u32 {
        self.inner.active_tasks() as u32
    }

    /// A caller client acting as this agent (its token, keys and network): `ctx.taskClient`.
    #[napi]
    pub fn task_client(&self) -> Result<crate::client::NativeTaskClient> {
        let c = self.inner.task_client().map_err(crate::errors::thrown)?;
        Ok(crate::client::NativeTaskClient::from_core(c))
    }

    /// End a stream for good: every task holding it gets terminal `failed` with `reason`.
    #[napi]
    pub async fn fail_stream(&self, stream_id: String, reason: String) -> Result<()> {
        self.inner.fail_stream(&stream_id, &reason).await;
        Ok(())
    }

    /// Publish a terminal for one of this instance's tasks with its cached credentials.
    #[napi(ts_args_type = "taskId: string, terminal: any")]
    pub async fn publish_terminal(&self, task_id: String, terminal: Value) -> Result<()> {
        self.inner.publish_terminal(&task_id, terminal).await.or_js().await
    }

    /// The CDM document the instance was configured from.
    #[napi(getter, ts_return_type = "any")]
    pub fn cdm_config(&self) -> Value {
        self.inner.cdm_config().clone()
    }

    /// The instance's backend identity.
    #[napi(getter)]
    pub fn agent_auth(&self) -> crate::auth::NativeAgentAuth {
        crate::auth::NativeAgentAuth::from_core(self.inner.agent_auth())
    }

    /// Stop taking tasks; running handlers get `graceMs` (default 10000) to finish. Idempotent.
    #[napi]
    pub async fn stop(&self, grace_ms: Option<u32>) -> Result<()> {
        self.inner
            .stop(Duration::from_millis(u64::from(grace_ms.unwrap_or(10_000))))
            .await;
        if let Ok(mut t) = self.handler.tsfn.lock() {
            t.take();
        }
        Ok(())
    }
}

/// Internal: validate an agent card. Returns `{ card }` (the runtime fields) or `{ error }`.
#[napi(
    ts_args_type = "card: any",
    ts_return_type = "{ card?: { agentName: string; displayName: string; taskKinds: string[]; handler: string; handlerExport: string | null; concurrency: number; expectedInstances: number; maxPendingBacklog: number | null; maxRunningTimeSec: number | null }; error?: string }"
)]
pub fn validate_card(card: Value) -> Value {
    match blocks_core::card::validate_card(&card) {
        Ok(c) => serde_json::json!({ "card": {
            "agentName": c.agent_name, "displayName": c.display_name, "taskKinds": c.task_kinds,
            "handler": c.handler, "handlerExport": c.handler_export, "concurrency": c.concurrency,
            "expectedInstances": c.expected_instances, "maxPendingBacklog": c.max_pending_backlog,
            "maxRunningTimeSec": c.max_running_time_sec,
        }}),
        Err(e) => serde_json::json!({ "error": e.to_string() }),
    }
}
