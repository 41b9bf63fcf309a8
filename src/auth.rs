//! `NativeAuth`: consumer auth providers for direct `TaskClient` construction (wrapped by the JS
//! `ConsumerAuth` and `StaticAuthProvider`), and the JS-callback adapters shared with `create`.

use std::sync::Arc;

use blocks_core::auth::{AuthErrorCallback, AuthMode, ConsumerAuth, TokenEndpoint};
use blocks_core::http::HttpClient;
use blocks_core::{TokenResult, TokenSource};
use napi::bindgen_prelude::*;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi_derive::napi;
use serde_json::Value;

use crate::errors::OrJs;

/// The JS `tokenProvider` (wrapped by lib/ so it always returns a Promise).
pub type ProviderFn = ThreadsafeFunction<(), Promise<Value>, (), Status, false, true>;
/// `onAuthError(kind, message, propsJson)`; lib/ builds the error object.
pub type AuthErrorFn =
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

/// `() => Promise<string | null>`: the JS provider's `getAuthHeader()`.
pub type HeaderFn = ThreadsafeFunction<(), Promise<Option<String>>, (), Status, false, true>;
/// `() => Promise<boolean>`: the JS provider's `onAuthFailure()`.
pub type RefreshFn = ThreadsafeFunction<(), Promise<bool>, (), Status, false, true>;
/// `() => Promise<void>`: the JS provider's optional `ensureReady()`.
pub type ReadyFn = ThreadsafeFunction<(), Promise<()>, (), Status, false, true>;

/// A JS object implementing the reference's AuthProvider interface, called from the engine
/// whenever a request needs a token (lib/auth.js adapts the object to these three functions).
struct JsExternalAuth {
    header: HeaderFn,
    refresh: RefreshFn,
    ready: Option<ReadyFn>,
}

fn provider_error(what: &str, e: napi::Error) -> blocks_core::Error {
    blocks_core::Error::AuthRefreshFailed(format!("the authProvider's {what} failed: {}", e.reason))
}

#[async_trait::async_trait]
impl blocks_core::ExternalAuth for JsExternalAuth {
    async fn header(&self) -> blocks_core::Result<Option<String>> {
        let p = self
            .header
            .call_async_catch(())
            .await
            .map_err(|e| provider_error("getAuthHeader()", e))?;
        let h = p.await.map_err(|e| provider_error("getAuthHeader()", e))?;
        Ok(h.filter(|h| !h.is_empty()).map(|h| {
            if h.starts_with("Bearer ") {
                h
            } else {
                format!("Bearer {h}")
            }
        }))
    }

    async fn refresh(&self) -> blocks_core::Result<bool> {
        let p = self
            .refresh
            .call_async_catch(())
            .await
            .map_err(|e| provider_error("onAuthFailure()", e))?;
        p.await.map_err(|e| provider_error("onAuthFailure()", e))
    }

    async fn ensure_ready(&self) -> blocks_core::Result<()> {
        let Some(ready) = &self.ready else { return Ok(()) };
        let p = ready
            .call_async_catch(())
            .await
            .map_err(|e| provider_error("ensureReady()", e))?;
        p.await.map_err(|e| provider_error("ensureReady()", e))
    }
}

/// The functions of a JS auth provider (`NativeAuth.external`).
#[napi(object, object_to_js = false)]
pub struct NativeExternalAuthOptions {
    #[napi(ts_type = "() => Promise<string | null>")]
    pub get_header: HeaderFn,
    #[napi(ts_type = "() => Promise<boolean>")]
    pub refresh: RefreshFn,
    #[napi(ts_type = "() => Promise<void>")]
    pub ensure_ready: Option<ReadyFn>,
}

/// The auth fields shared by `create` options and `NativeAuth.consumer`.
pub struct AuthFields {
    pub api_key: Option<String>,
    pub token_endpoint_url: Option<String>,
    pub token_endpoint_headers: Option<Vec<Vec<String>>>,
    pub token_endpoint_body: Option<Value>,
    pub token_provider: Option<ProviderFn>,
}

/// Token endpoint from its JS parts.
pub fn token_endpoint(
    url: Option<String>,
    headers: Option<Vec<Vec<String>>>,
    body: Option<Value>,
) -> Option<TokenEndpoint> {
    url.map(|url| TokenEndpoint {
        url,
        headers: headers
            .unwrap_or_default()
            .into_iter()
            .filter_map(|kv| match kv.as_slice() {
                [k, v] => Some((k.clone(), v.clone())),
                _ => None,
            })
            .collect(),
        body,
    })
}

/// A JS tokenProvider as an engine token source.
pub fn token_source(provider: Option<ProviderFn>) -> Option<Arc<dyn TokenSource>> {
    provider.map(|provider| Arc::new(JsTokenSource { provider }) as Arc<dyn TokenSource>)
}

/// A JS onAuthError as an engine callback.
pub fn auth_error_callback(f: Option<AuthErrorFn>) -> Option<AuthErrorCallback> {
    f.map(|f| {
        let f = Arc::new(f);
        Arc::new(move |e: &blocks_core::Error| {
            let args = crate::errors::error_parts(e);
            f.call(args.into(), ThreadsafeFunctionCallMode::NonBlocking);
        }) as AuthErrorCallback
    })
}

impl AuthFields {
    fn mode(self) -> Option<AuthMode> {
        if let Some(k) = self.api_key {
            return Some(AuthMode::ApiKey(k));
        }
        if let Some(te) = token_endpoint(
            self.token_endpoint_url,
            self.token_endpoint_headers,
            self.token_endpoint_body,
        ) {
            return Some(AuthMode::TokenEndpoint {
                url: te.url,
                headers: te.headers,
                body: te.body,
            });
        }
        token_source(self.token_provider).map(AuthMode::Provider)
    }
}

/// Options of `NativeAuth.consumer`.
#[napi(object, object_to_js = false)]
pub struct NativeAuthOptions {
    pub base_url: Option<String>,
    pub api_key: Option<String>,
    pub token_endpoint_url: Option<String>,
    pub token_endpoint_headers: Option<Vec<Vec<String>>>,
    #[napi(ts_type = "any")]
    pub token_endpoint_body: Option<Value>,
    #[napi(ts_type = "() => Promise<{ token: string; expiresIn: number; userId?: string }>")]
    pub token_provider: Option<ProviderFn>,
    #[napi(ts_type = "(kind: string, message: string, propsJson: string) => void")]
    pub on_auth_error: Option<AuthErrorFn>,
    /// Extra CAs and the proxy.
    pub net: Option<crate::net::NativeNetOptions>,
}

/// Internal: a consumer auth provider.
#[napi]
pub struct NativeAuth {
    pub(crate) inner: Arc<ConsumerAuth>,
}

#[napi]
impl NativeAuth {
    /// API key, token endpoint or token provider.
    #[napi(factory)]
    pub fn consumer(opts: NativeAuthOptions) -> Result<NativeAuth> {
        let base_url = opts.base_url.unwrap_or_default();
        let on_error = auth_error_callback(opts.on_auth_error);
        let fields = AuthFields {
            api_key: opts.api_key,
            token_endpoint_url: opts.token_endpoint_url,
            token_endpoint_headers: opts.token_endpoint_headers,
            token_endpoint_body: opts.token_endpoint_body,
            token_provider: opts.token_provider,
        };
        let mode = fields.mode().ok_or_else(|| {
            crate::errors::thrown(blocks_core::Error::InvalidArgument(
                "ConsumerAuth requires one of: apiKey, tokenEndpoint, or tokenProvider".into(),
            ))
        })?;
        let http = crate::net::http_client(opts.net)?;
        let inner = ConsumerAuth::new(mode, &base_url, http);
        inner.set_on_auth_error(on_error);
        Ok(NativeAuth { inner })
    }

    /// A JS object implementing the AuthProvider interface (`getAuthHeader`, `onAuthFailure`,
    /// optional `ensureReady`), asked for its header on every request.
    #[napi(factory)]
    pub fn external(opts: NativeExternalAuthOptions) -> Result<NativeAuth> {
        let http = HttpClient::new().map_err(crate::errors::thrown)?;
        let ext = Arc::new(JsExternalAuth {
            header: opts.get_header,
            refresh: opts.refresh,
            ready: opts.ensure_ready,
        });
        Ok(NativeAuth {
            inner: ConsumerAuth::new(AuthMode::External(ext), "", http),
        })
    }

    /// An agent's identity (`AgentAuth`) as the auth of a caller client.
    #[napi(factory)]
    pub fn agent(agent: &NativeAgentAuth) -> Result<NativeAuth> {
        let http = HttpClient::new().map_err(crate::errors::thrown)?;
        Ok(NativeAuth {
            inner: ConsumerAuth::new(AuthMode::External(agent.inner.clone()), agent.inner.base_url(), http),
        })
    }

    /// A fixed token that cannot be refreshed.
    #[napi(factory)]
    pub fn static_token(token: String) -> Result<NativeAuth> {
        let http = HttpClient::new().map_err(crate::errors::thrown)?;
        Ok(NativeAuth {
            inner: ConsumerAuth::new(AuthMode::Static(token), "", http),
        })
    }

    /// Acquire the first token (idempotent).
    #[napi]
    pub async fn init(&self) -> Result<()> {
        self.inner.init().await.or_js().await
    }

    /// `Bearer <token>`, or null before the first token.
    #[napi(getter)]
    pub fn header(&self) -> Option<String> {
        self.inner.header()
    }

    /// Refresh now (single-flight); true when a new token is available.
    #[napi]
    pub async fn on_auth_failure(&self) -> bool {
        self.inner.on_auth_failure().await
    }

    #[napi(getter)]
    pub fn user_id(&self) -> Option<String> {
        self.inner.user_id()
    }

    #[napi(getter)]
    pub fn last_error(&self) -> Option<String> {
        self.inner.last_error()
    }

    /// Stop refreshing. Idempotent.
    #[napi]
    pub fn destroy(&self) {
        self.inner.destroy();
    }
}

/// Internal: an agent's backend identity (wrapped by the JS `AgentAuth`).
#[napi]
pub struct NativeAgentAuth {
    pub(crate) inner: Arc<blocks_core::AgentAuth>,
}

#[napi]
impl NativeAgentAuth {
    /// `apiKey` and `baseUrl` are required (errors name which is missing).
    #[napi(constructor)]
    pub fn new(
        api_key: String,
        base_url: String,
        net: Option<crate::net::NativeNetOptions>,
    ) -> Result<NativeAgentAuth> {
        let http = crate::net::http_client(net)?;
        let inner = blocks_core::AgentAuth::new(&api_key, &base_url, http).map_err(crate::errors::thrown)?;
        Ok(NativeAgentAuth { inner })
    }

    /// Register with `payload`; resolves with the connect answer.
    #[napi(ts_args_type = "payload: any", ts_return_type = "Promise<any>")]
    pub async fn init(&self, payload: Value) -> Result<Value> {
        self.inner.init(payload).await.or_js().await
    }

    /// Get a new access token (concurrent calls share one request).
    #[napi]
    pub async fn refresh(&self) -> Result<()> {
        self.inner.refresh().await.or_js().await
    }

    /// The current access token, or null before `init`.
    #[napi(getter)]
    pub fn access_token(&self) -> Option<String> {
        self.inner.access_token()
    }

    /// The backend root URL.
    #[napi(getter)]
    pub fn base_url(&self) -> String {
        self.inner.base_url().to_string()
    }
}

impl NativeAgentAuth {
    pub(crate) fn from_core(inner: Arc<blocks_core::AgentAuth>) -> Self {
        NativeAgentAuth { inner }
    }
}
