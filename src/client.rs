//! `NativeTaskClient`: the caller's client (wrapped by the JS `TaskClient`).

use std::sync::Arc;

use blocks_core::config::Keyset;
use blocks_core::files::{FileSource, FileUpload};
use blocks_core::{ClientOptions, SendMessageRequest, TaskClient};
use napi::bindgen_prelude::*;
use napi_derive::napi;
use serde_json::Value;

use crate::auth::{auth_error_callback, token_endpoint, token_source, AuthErrorFn, NativeAuth, ProviderFn};
use crate::errors::OrJs;
use crate::net::{http_client, net_options, NativeNetOptions};
use crate::session::NativeSession;

/// Options of `NativeTaskClient.create` (validated and resolved in the engine).
#[napi(object, object_to_js = false)]
pub struct NativeClientOptions {
    pub billing_mode: Option<String>,
    pub cdm_url: Option<String>,
    pub subscribe_key: Option<String>,
    pub publish_key: Option<String>,
    pub base_url: Option<String>,
    pub realtime_origin: Option<String>,
    pub api_key: Option<String>,
    pub token_endpoint_url: Option<String>,
    pub token_endpoint_headers: Option<Vec<Vec<String>>>,
    #[napi(ts_type = "any")]
    pub token_endpoint_body: Option<Value>,
    pub anon_fingerprint: Option<String>,
    #[napi(ts_type = "() => Promise<{ token: string; expiresIn: number; userId?: string }>")]
    pub token_provider: Option<ProviderFn>,
    #[napi(ts_type = "(kind: string, message: string, propsJson: string) => void")]
    pub on_auth_error: Option<AuthErrorFn>,
    /// Give up on a silent subscribe long-poll after this many ms (default 310000).
    pub long_poll_timeout_ms: Option<f64>,
    /// `ownerId` sent when `sendMessage` names none.
    pub default_owner_id: Option<String>,
    /// Allow plain `http://` to hosts that are not loopback.
    pub allow_insecure_http: Option<bool>,
    /// Waits (ms) between proactive refresh attempts (default [5000, 10000]).
    pub auth_retry_delays_ms: Option<Vec<f64>>,
    /// Extra CAs and the proxy.
    pub net: Option<NativeNetOptions>,
}

/// Options of `NativeTaskClient.direct`.
#[napi(object)]
pub struct NativeDirectOptions {
    pub billing_mode: Option<String>,
    pub subscribe_key: Option<String>,
    pub publish_key: Option<String>,
    pub base_url: Option<String>,
    pub realtime_origin: Option<String>,
    pub default_owner_id: Option<String>,
    pub allow_insecure_http: Option<bool>,
    /// Extra CAs and the proxy.
    pub net: Option<NativeNetOptions>,
}

/// Internal caller client.
#[napi]
pub struct NativeTaskClient {
    inner: Arc<TaskClient>,
}

impl NativeTaskClient {
    pub(crate) fn from_core(inner: TaskClient) -> Self {
        NativeTaskClient { inner: Arc::new(inner) }
    }
}

fn str_field(v: &Value, k: &str) -> Option<String> {
    v.get(k).and_then(Value::as_str).map(str::to_string)
}

/// One large file of a `sendMessage` call (internal).
#[napi(object)]
pub struct NativeUpload {
    /// Index of its part in `requestParts`.
    pub index: u32,
    /// The bytes (in memory), or
    pub data: Option<Buffer>,
    /// a path to stream from.
    pub path: Option<String>,
    pub file_name: String,
    pub mime_type: String,
    pub size: f64,
}

/// JS `sendMessage` options → engine request (type conversion only; validation is in the engine).
fn send_request(v: &Value) -> std::result::Result<SendMessageRequest, String> {
    let parts = match v.get("requestParts") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a.clone(),
        Some(_) => return Err("requestParts must be an array".into()),
    };
    let duration = match v.get("duration") {
        None | Some(Value::Null) => None,
        Some(d) => Some(d.as_f64().ok_or_else(|| {
            format!(
                "Pipe tasks require {} (a number of minutes)",
                blocks_wire::PipeDuration::RULE
            )
        })?),
    };
    Ok(SendMessageRequest {
        agent_name: str_field(v, "agentName").unwrap_or_default(),
        request_parts: parts,
        idempotency_key: str_field(v, "idempotencyKey"),
        owner_id: str_field(v, "ownerId"),
        task_kind: str_field(v, "taskKind"),
        duration,
        stream: v.get("stream").and_then(Value::as_bool),
        consumer_public_key: str_field(v, "consumerPublicKey"),
        upload_session_id: str_field(v, "uploadSessionId"),
        retry_policy: v.get("retryPolicy").cloned().filter(|p| !p.is_null()),
        push_notification_config: v.get("pushNotificationConfig").cloned().filter(|p| !p.is_null()),
        uploads: Vec::new(),
        max_upload_bytes: v.get("maxUploadBytes").and_then(Value::as_f64).map(|m| m as u64),
    })
}

#[napi]
impl NativeTaskClient {
    /// Resolve config, authenticate, build the client.
    #[napi]
    pub async fn create(opts: NativeClientOptions) -> Result<NativeTaskClient> {
        let options = ClientOptions {
            billing_mode: opts.billing_mode,
            cdm_url: opts.cdm_url,
            subscribe_key: opts.subscribe_key,
            publish_key: opts.publish_key,
            base_url: opts.base_url,
            realtime_origin: opts.realtime_origin,
            api_key: opts.api_key,
            token_endpoint: token_endpoint(
                opts.token_endpoint_url,
                opts.token_endpoint_headers,
                opts.token_endpoint_body,
            ),
            token_provider: token_source(opts.token_provider),
            anon_fingerprint: opts.anon_fingerprint,
            on_auth_error: auth_error_callback(opts.on_auth_error),
            long_poll_timeout: opts
                .long_poll_timeout_ms
                .filter(|ms| ms.is_finite() && *ms >= 0.0)
                .map(|ms| std::time::Duration::from_secs_f64(ms / 1000.0)),
            default_owner_id: opts.default_owner_id,
            external_auth: None,
            allow_insecure_http: opts.allow_insecure_http.unwrap_or(false),
            auth_retry_delays_ms: opts.auth_retry_delays_ms,
            net: net_options(opts.net),
        };
        let inner = TaskClient::create(options).await.or_js().await?;
        Ok(NativeTaskClient { inner })
    }

    /// Direct construction without a CDM fetch (advanced path).
    #[napi(factory)]
    pub fn direct(opts: NativeDirectOptions, auth: Option<&NativeAuth>) -> Result<NativeTaskClient> {
        let origin = opts
            .realtime_origin
            .filter(|o| !o.is_empty())
            .unwrap_or_else(|| blocks_core::config::realtime_origin(None));
        let insecure = blocks_core::config::insecure_http_allowed(opts.allow_insecure_http.unwrap_or(false));
        let base = opts.base_url.clone().unwrap_or_default();
        for (url, what) in [
            (origin.as_str(), "the realtime origin"),
            (base.as_str(), "the backend baseUrl"),
        ] {
            blocks_core::config::check_transport_security(url, what, insecure).map_err(crate::errors::thrown)?;
        }
        let keys = Keyset {
            subscribe_key: opts.subscribe_key.unwrap_or_default(),
            publish_key: opts.publish_key.unwrap_or_default(),
        };
        let client = TaskClient::new_direct(
            &opts.billing_mode.unwrap_or_default(),
            keys,
            &origin,
            &opts.base_url.unwrap_or_default(),
            auth.map(|a| a.inner.clone()),
            http_client(opts.net)?,
        )
        .map_err(crate::errors::thrown)?;
        client.set_default_owner_id(opts.default_owner_id);
        Ok(NativeTaskClient {
            inner: Arc::new(client),
        })
    }

    /// Swap the keys used for sessions created afterwards (and the key-based RPC URL).
    #[napi]
    pub fn update_keys(&self, subscribe_key: String, publish_key: Option<String>) {
        self.inner.update_keys(&subscribe_key, publish_key.as_deref());
    }

    /// The current keys: `{ subscribeKey, publishKey }`.
    #[napi(getter, ts_return_type = "{ subscribeKey: string; publishKey: string }")]
    pub fn keys(&self) -> Value {
        let k = self.inner.keys();
        serde_json::json!({ "subscribeKey": k.subscribe_key, "publishKey": k.publish_key })
    }

    /// User id of the latest token acquisition.
    #[napi(getter)]
    pub fn user_id(&self) -> Option<String> {
        self.inner.user_id()
    }

    /// Billing mode.
    #[napi(getter)]
    pub fn billing_mode(&self) -> String {
        self.inner.billing_mode().as_str().to_string()
    }

    /// Create a task and return its session. `uploads` are the large files, uploaded first.
    #[napi(ts_args_type = "request: any, uploads?: NativeUpload[]")]
    pub async fn send_message(&self, request: Value, uploads: Option<Vec<NativeUpload>>) -> Result<NativeSession> {
        let mut req = send_request(&request)
            .map_err(blocks_core::Error::InvalidArgument)
            .or_js()
            .await?;
        for u in uploads.unwrap_or_default() {
            let source = match (u.data, u.path) {
                (Some(d), _) => FileSource::Bytes(bytes::Bytes::from(d.to_vec())),
                (None, Some(p)) => FileSource::Path(p.into()),
                (None, None) => {
                    return Err(blocks_core::Error::InvalidArgument(
                        "an upload needs data or a path".into(),
                    ))
                    .or_js()
                    .await
                }
            };
            req.uploads.push((
                u.index as usize,
                FileUpload {
                    source,
                    file_name: u.file_name,
                    mime_type: u.mime_type,
                    size: u.size as u64,
                },
            ));
        }
        let session = self.inner.send_message(req).await.or_js().await?;
        Ok(NativeSession::new(session))
    }

    /// Attach to an existing task.
    #[napi]
    pub async fn connect(&self, task_id: String, role: Option<String>) -> Result<NativeSession> {
        let session = self.inner.connect(&task_id, role.as_deref()).await.or_js().await?;
        Ok(NativeSession::new(session))
    }

    /// The registry card of an agent, or null.
    #[napi(ts_return_type = "Promise<any>")]
    pub async fn get_agent_card(&self, agent_name: String) -> Result<Option<Value>> {
        self.inner.get_agent_card(&agent_name).await.or_js().await
    }

    /// GetTask.
    #[napi(ts_return_type = "Promise<any>")]
    pub async fn get_task(&self, task_id: String) -> Result<Value> {
        self.inner.get_task(&task_id).await.or_js().await
    }

    /// Any JSON-RPC method (lifecycle calls, ListTasks).
    #[napi(ts_args_type = "method: string, params: any", ts_return_type = "Promise<any>")]
    pub async fn rpc(&self, method: String, params: Value) -> Result<Value> {
        self.inner.backend().rpc(&method, params).await.or_js().await
    }

    /// Stop token refresh. Idempotent.
    #[napi]
    pub fn destroy(&self) {
        self.inner.destroy();
    }
}
