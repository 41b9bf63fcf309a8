//! `NativeTaskClient`: the caller's client (wrapped by the JS `TaskClient`).

use std::sync::Arc;

use blocks_core::auth::AuthErrorCallback;
use blocks_core::{ClientOptions, SendMessageRequest, TaskClient, TokenResult, TokenSource};
use napi::bindgen_prelude::*;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi_derive::napi;
use serde_json::Value;

use crate::errors::OrJs;
use crate::session::NativeSession;

/// The JS `tokenProvider` (wrapped by lib/client.js so it always returns a Promise).
type ProviderFn = ThreadsafeFunction<(), Promise<Value>, (), Status, false, true>;
/// `onAuthError(kind, message, propsJson)`; lib/client.js builds the error object.
type AuthErrorFn =
    ThreadsafeFunction<FnArgs<(String, String, String)>, (), FnArgs<(String, String, String)>, Status, false, true>;

struct JsTokenSource {
    provider: ProviderFn,
}

#[async_trait::async_trait]
impl TokenSource for JsTokenSource {
    async fn fetch(&self) -> blocks_core::Result<TokenResult> {
        let bad =
            |what: &str, e: napi::Error| blocks_core::Error::Protocol(format!("tokenProvider {what}: {}", e.reason));
        let promise = self.provider.call_async_catch(()).await.map_err(|e| bad("threw", e))?;
        let v = promise.await.map_err(|e| bad("failed", e))?;
        let token = v
            .get("token")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                blocks_core::Error::Protocol(
                    "tokenProvider must return { token, expiresIn, userId? } with a non-empty token".into(),
                )
            })?;
        Ok(TokenResult {
            token: token.to_string(),
            expires_in: v.get("expiresIn").and_then(Value::as_f64),
            user_id: v.get("userId").and_then(Value::as_str).map(str::to_string),
            refresh_token: None,
        })
    }
}

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
}

/// Internal caller client.
#[napi]
pub struct NativeTaskClient {
    inner: Arc<TaskClient>,
}

fn str_field(v: &Value, k: &str) -> Option<String> {
    v.get(k).and_then(Value::as_str).map(str::to_string)
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
        Some(d) => Some(
            d.as_f64()
                .ok_or_else(|| "Pipe tasks require an integer duration between 1 and 43200 minutes".to_string())?,
        ),
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
    })
}

#[napi]
impl NativeTaskClient {
    /// Resolve config, authenticate, build the client.
    #[napi]
    pub async fn create(opts: NativeClientOptions) -> Result<NativeTaskClient> {
        let token_endpoint = opts.token_endpoint_url.map(|url| {
            let headers = opts
                .token_endpoint_headers
                .unwrap_or_default()
                .into_iter()
                .filter_map(|kv| match kv.as_slice() {
                    [k, v] => Some((k.clone(), v.clone())),
                    _ => None,
                })
                .collect();
            blocks_core::auth::TokenEndpoint {
                url,
                headers,
                body: opts.token_endpoint_body,
            }
        });
        let options = ClientOptions {
            billing_mode: opts.billing_mode,
            cdm_url: opts.cdm_url,
            subscribe_key: opts.subscribe_key,
            publish_key: opts.publish_key,
            base_url: opts.base_url,
            realtime_origin: opts.realtime_origin,
            api_key: opts.api_key,
            token_endpoint,
            token_provider: opts
                .token_provider
                .map(|provider| std::sync::Arc::new(JsTokenSource { provider }) as std::sync::Arc<dyn TokenSource>),
            anon_fingerprint: opts.anon_fingerprint,
            on_auth_error: opts.on_auth_error.map(|f| {
                let f = std::sync::Arc::new(f);
                std::sync::Arc::new(move |e: &blocks_core::Error| {
                    let args = (e.kind().to_string(), e.to_string(), e.props().to_string());
                    f.call(args.into(), ThreadsafeFunctionCallMode::NonBlocking);
                }) as AuthErrorCallback
            }),
        };
        let inner = TaskClient::create(options).await.or_js().await?;
        Ok(NativeTaskClient { inner })
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

    /// Create a task and return its session.
    #[napi(ts_args_type = "request: any")]
    pub async fn send_message(&self, request: Value) -> Result<NativeSession> {
        let req = send_request(&request)
            .map_err(blocks_core::Error::InvalidArgument)
            .or_js()
            .await?;
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
