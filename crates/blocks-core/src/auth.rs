//! Consumer authentication (consumer spec §4): API key, token endpoint or token provider; first
//! token at init, proactive refresh at 80 % of `expiresIn`, single-flight reactive refresh.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::http::{capture_write_affinity, error_body, HttpClient};
use blocks_wire::auth::{AuthCode, AuthError, TokenReply};

/// What a token source returns.
#[derive(Debug, Clone, Default)]
pub struct TokenResult {
    /// The bearer token.
    pub token: String,
    /// Lifetime in seconds, if known.
    pub expires_in: Option<f64>,
    /// The authenticated user id, if known.
    pub user_id: Option<String>,
    /// Refresh token (API-key mode only).
    pub refresh_token: Option<String>,
}

/// A caller-supplied token source (the JS `tokenProvider` function).
#[async_trait::async_trait]
pub trait TokenSource: Send + Sync {
    /// Fetch a fresh token.
    async fn fetch(&self) -> Result<TokenResult>;
}

/// An auth provider implemented outside the engine (a JS object with `getAuthHeader()` /
/// `onAuthFailure()`, or an [`crate::agent_auth::AgentAuth`]): asked for the header before every
/// request, and to refresh on a 401.
#[async_trait::async_trait]
pub trait ExternalAuth: Send + Sync {
    /// The full `Authorization` value (`Bearer …`), or none.
    async fn header(&self) -> Result<Option<String>>;
    /// Try to get a new token; true when one is available. A fatal error (an agent's key refused)
    /// is an `Err`.
    async fn refresh(&self) -> Result<bool>;
    /// Lazy first acquisition (idempotent).
    async fn ensure_ready(&self) -> Result<()> {
        Ok(())
    }
    /// The user id, if the provider knows one.
    fn user_id(&self) -> Option<String> {
        None
    }
}

/// A customer token endpoint (auth mode 2).
#[derive(Clone, Debug)]
pub struct TokenEndpoint {
    /// Endpoint URL.
    pub url: String,
    /// Extra headers (user values win over the JSON content type).
    pub headers: Vec<(String, String)>,
    /// JSON body; `{}` when absent.
    pub body: Option<Value>,
}

/// The three consumer auth modes.
#[derive(Clone)]
pub enum AuthMode {
    /// Long-lived API key exchanged at `/api/v1/auth/agent/consumer-token`.
    ApiKey(String),
    /// A customer endpoint returning `{token, expiresIn, userId?}`.
    TokenEndpoint {
        /// Endpoint URL.
        url: String,
        /// Extra headers (user values win over the JSON content type).
        headers: Vec<(String, String)>,
        /// JSON body; `{}` when absent.
        body: Option<Value>,
    },
    /// A caller function.
    Provider(Arc<dyn TokenSource>),
    /// A fixed token that cannot be refreshed.
    Static(String),
    /// A provider outside the engine, asked for its header on every request.
    External(Arc<dyn ExternalAuth>),
}

/// Called once when proactive refresh has failed three times in a row.
pub type AuthErrorCallback = Arc<dyn Fn(&Error) + Send + Sync>;

#[derive(Default)]
struct TokenState {
    token: Option<String>,
    refresh_token: Option<String>,
    user_id: Option<String>,
    expires_in: Option<f64>,
}

/// Consumer auth provider.
pub struct ConsumerAuth {
    mode: AuthMode,
    base_url: String,
    http: HttpClient,
    state: Mutex<TokenState>,
    /// Incremented on every successful acquisition (single-flight detection).
    generation: AtomicU64,
    refresh_lock: tokio::sync::Mutex<()>,
    last_error: Mutex<Option<String>>,
    destroyed: AtomicBool,
    timer: Mutex<Option<tokio::task::JoinHandle<()>>>,
    on_auth_error: Mutex<Option<AuthErrorCallback>>,
    /// Backoff between proactive attempts (5 s, 10 s in production; shortened by tests).
    retry_delays: Vec<Duration>,
}

impl ConsumerAuth {
    /// Build a provider; call [`ConsumerAuth::init`] to get the first token.
    pub fn new(mode: AuthMode, base_url: &str, http: HttpClient) -> Arc<Self> {
        Self::with_retry_delays(
            mode,
            base_url,
            http,
            vec![Duration::from_secs(5), Duration::from_secs(10)],
        )
    }

    /// Same as [`ConsumerAuth::new`] with custom proactive retry delays.
    pub fn with_retry_delays(
        mode: AuthMode,
        base_url: &str,
        http: HttpClient,
        retry_delays: Vec<Duration>,
    ) -> Arc<Self> {
        Arc::new(ConsumerAuth {
            mode,
            base_url: base_url.trim_end_matches('/').to_string(),
            http,
            state: Mutex::new(TokenState::default()),
            generation: AtomicU64::new(0),
            refresh_lock: tokio::sync::Mutex::new(()),
            last_error: Mutex::new(None),
            destroyed: AtomicBool::new(false),
            timer: Mutex::new(None),
            on_auth_error: Mutex::new(None),
            retry_delays,
        })
    }

    /// Register the permanent-failure callback.
    pub fn set_on_auth_error(&self, cb: Option<AuthErrorCallback>) {
        if let Ok(mut slot) = self.on_auth_error.lock() {
            *slot = cb;
        }
    }

    /// First acquisition (idempotent: a second call is a no-op once a token exists).
    pub async fn init(self: &Arc<Self>) -> Result<()> {
        if let AuthMode::External(ext) = &self.mode {
            ext.ensure_ready().await?;
            let h = ext.header().await?;
            self.cache_header(h);
            return Ok(());
        }
        let _guard = self.refresh_lock.lock().await;
        if self.header().is_some() {
            return Ok(());
        }
        let result = self.acquire(false).await?;
        self.apply(result);
        Ok(())
    }

    /// Acquire the first token if none exists yet (for providers built without `init`).
    pub async fn ensure_ready(self: &Arc<Self>) -> Result<()> {
        if let AuthMode::External(ext) = &self.mode {
            return ext.ensure_ready().await;
        }
        if self.header().is_some() {
            return Ok(());
        }
        self.init().await
    }

    /// `Bearer <token>` once a token exists.
    pub fn header(&self) -> Option<String> {
        let s = self.state.lock().ok()?;
        s.token.as_ref().map(|t| {
            if t.starts_with("Bearer ") {
                t.clone()
            } else {
                format!("Bearer {t}")
            }
        })
    }

    /// The header to send now: an external provider is asked each time; the others answer from
    /// the current token.
    pub async fn current_header(&self) -> Result<Option<String>> {
        if let AuthMode::External(ext) = &self.mode {
            let h = ext.header().await?;
            self.cache_header(h.clone());
            return Ok(h);
        }
        Ok(self.header())
    }

    fn cache_header(&self, h: Option<String>) {
        if let Ok(mut s) = self.state.lock() {
            s.token = h;
        }
    }

    /// User id of the latest acquisition.
    pub fn user_id(&self) -> Option<String> {
        if let AuthMode::External(ext) = &self.mode {
            if let Some(u) = ext.user_id() {
                return Some(u);
            }
        }
        self.state.lock().ok()?.user_id.clone()
    }

    /// The refresh before a retry: like [`ConsumerAuth::on_auth_failure`], but a fatal error of an
    /// external provider (an agent's key refused or forced offline) is returned, not swallowed.
    pub async fn refresh_for_retry(self: &Arc<Self>) -> Result<bool> {
        if let AuthMode::External(ext) = &self.mode {
            return self.external_refresh(ext).await;
        }
        Ok(self.on_auth_failure().await)
    }

    async fn external_refresh(&self, ext: &Arc<dyn ExternalAuth>) -> Result<bool> {
        {
            if self.destroyed.load(Ordering::SeqCst) {
                return Ok(false);
            }
            match ext.refresh().await {
                Ok(b) => Ok(b),
                Err(e @ Error::AgentAuthFatal(_)) => Err(e),
                Err(e) => {
                    tracing::warn!(target: "blocks::auth", "token refresh failed: {e}");
                    Ok(false)
                }
            }
        }
    }

    /// The recorded permanent failure, if any.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().ok()?.clone()
    }

    /// Before a backend call: if a permanent failure is recorded, try one reactive refresh; if the
    /// failure is still recorded, fail without touching the network.
    pub async fn preflight(self: &Arc<Self>) -> Result<()> {
        if self.last_error().is_none() {
            return Ok(());
        }
        self.on_auth_failure().await;
        match self.last_error() {
            Some(cause) => Err(Error::AuthRefreshFailed(cause)),
            None => Ok(()),
        }
    }

    /// Reactive refresh, single-flight: concurrent callers share one refresh. True when a new token
    /// is available.
    pub async fn on_auth_failure(self: &Arc<Self>) -> bool {
        if self.destroyed.load(Ordering::SeqCst) {
            return false;
        }
        if let AuthMode::External(ext) = &self.mode {
            return self.external_refresh(ext).await.unwrap_or(false);
        }
        let seen = self.generation.load(Ordering::SeqCst);
        let _guard = self.refresh_lock.lock().await;
        if self.generation.load(Ordering::SeqCst) != seen {
            return true; // someone else refreshed while we waited
        }
        match self.acquire(true).await {
            Ok(result) => {
                self.apply(result);
                true
            }
            Err(e) => {
                // a failed reactive refresh keeps the old token and records nothing: only the
                // proactive loop's third failure is permanent (AUTH-13, AUTH-09)
                tracing::warn!(target: "blocks::auth", "token refresh failed: {e}");
                false
            }
        }
    }

    /// Stop the refresh timer. The current token stays readable for live sessions.
    pub fn destroy(&self) {
        self.destroyed.store(true, Ordering::SeqCst);
        if let Ok(mut t) = self.timer.lock() {
            if let Some(h) = t.take() {
                h.abort();
            }
        }
    }

    fn record_error(&self, e: &Error) {
        if let Ok(mut slot) = self.last_error.lock() {
            *slot = Some(e.to_string());
        }
    }

    fn apply(self: &Arc<Self>, r: TokenResult) {
        let expires_in = {
            let Ok(mut s) = self.state.lock() else { return };
            s.token = Some(r.token);
            if r.refresh_token.is_some() {
                s.refresh_token = r.refresh_token;
            }
            if r.user_id.is_some() {
                s.user_id = r.user_id;
            }
            if r.expires_in.is_some() {
                s.expires_in = r.expires_in;
            }
            s.expires_in
        };
        if let Ok(mut slot) = self.last_error.lock() {
            *slot = None;
        }
        self.generation.fetch_add(1, Ordering::SeqCst);
        if !matches!(self.mode, AuthMode::Static(_) | AuthMode::External(_)) {
            self.arm_timer(expires_in.unwrap_or(60.0));
        }
    }

    fn arm_timer(self: &Arc<Self>, expires_in: f64) {
        if self.destroyed.load(Ordering::SeqCst) || expires_in <= 0.0 {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let delay = Duration::from_secs_f64((expires_in * 0.8).max(1.0));
        let weak: Weak<Self> = Arc::downgrade(self);
        let task = handle.spawn(async move {
            tokio::time::sleep(delay).await;
            proactive_refresh(weak).await;
        });
        if let Ok(mut t) = self.timer.lock() {
            if let Some(old) = t.replace(task) {
                old.abort();
            }
        }
    }

    /// Get a token from the configured source. `refresh` selects the refresh endpoint in API-key mode.
    async fn acquire(&self, refresh: bool) -> Result<TokenResult> {
        match &self.mode {
            AuthMode::ApiKey(key) => {
                let refresh_token = self.state.lock().ok().and_then(|s| s.refresh_token.clone());
                if refresh {
                    if let Some(rt) = refresh_token {
                        match self.refresh_with_api_key(key, &rt).await {
                            Err(Error::Http { status: 401, body, .. })
                                if AuthError::code_of(&body) == Some(AuthCode::RefreshTokenInvalid) => {}
                            other => return other,
                        }
                    }
                }
                self.consumer_token(key).await
            }
            AuthMode::TokenEndpoint { url, headers, body } => self.token_endpoint(url, headers, body.as_ref()).await,
            AuthMode::Static(token) => {
                if refresh {
                    return Err(Error::Http {
                        context: "a static token cannot be refreshed".into(),
                        status: 401,
                        body: String::new(),
                    });
                }
                Ok(TokenResult {
                    token: token.clone(),
                    ..TokenResult::default()
                })
            }
            AuthMode::External(ext) => {
                if !ext.refresh().await? {
                    return Err(Error::Http {
                        context: "the auth provider could not refresh".into(),
                        status: 401,
                        body: String::new(),
                    });
                }
                let token = ext.header().await?.unwrap_or_default();
                Ok(TokenResult {
                    token,
                    user_id: ext.user_id(),
                    ..TokenResult::default()
                })
            }
            AuthMode::Provider(source) => {
                let r = source.fetch().await?;
                if r.token.is_empty() {
                    return Err(Error::Protocol("tokenProvider returned an empty token".into()));
                }
                Ok(r)
            }
        }
    }

    async fn consumer_token(&self, key: &str) -> Result<TokenResult> {
        if self.base_url.is_empty() {
            return Err(Error::Config("API-key auth requires a backend baseUrl".into()));
        }
        let url = format!("{}/api/v1/auth/agent/consumer-token", self.base_url);
        let resp = self
            .http
            .backend(reqwest::Method::POST, &url)
            .json(&json!({ "apiKey": key }))
            .send()
            .await
            .map_err(|e| Error::transport("consumer-token failed", e))?;
        capture_write_affinity(resp.headers());
        parse_token_response(resp, "consumer-token failed", "accessToken").await
    }

    async fn refresh_with_api_key(&self, key: &str, refresh_token: &str) -> Result<TokenResult> {
        let url = format!("{}/api/v1/auth/agent/refresh", self.base_url);
        let resp = self
            .http
            .backend(reqwest::Method::POST, &url)
            .bearer_auth(key)
            .json(&json!({ "refreshToken": refresh_token }))
            .send()
            .await
            .map_err(|e| Error::transport("refresh failed", e))?;
        capture_write_affinity(resp.headers());
        if resp.status().as_u16() == 401 {
            let body = error_body(resp).await;
            let refused = AuthError::parse(&body).filter(|e| e.code == Some(AuthCode::ApiKeyInvalid));
            if let Some(refused) = refused {
                let msg = refused.message.unwrap_or(body);
                return Err(Error::Http {
                    context: format!("API key invalid or revoked: {msg}"),
                    status: 401,
                    body: String::new(),
                });
            }
            return Err(Error::Http {
                context: "refresh failed".into(),
                status: 401,
                body,
            });
        }
        parse_token_response(resp, "refresh failed", "accessToken").await
    }

    async fn token_endpoint(
        &self,
        url: &str,
        headers: &[(String, String)],
        body: Option<&Value>,
    ) -> Result<TokenResult> {
        // the user's headers win over the JSON content type (replace it, never sent beside it)
        let mut map = reqwest::header::HeaderMap::new();
        map.insert(
            reqwest::header::CONTENT_TYPE,
            reqwest::header::HeaderValue::from_static("application/json"),
        );
        for (k, v) in headers {
            let name = reqwest::header::HeaderName::from_bytes(k.as_bytes()).map_err(|_| {
                Error::InvalidArgument(format!(
                    "tokenEndpoint header name {k:?} is not a valid HTTP header name"
                ))
            })?;
            let value = reqwest::header::HeaderValue::from_str(v).map_err(|_| {
                Error::InvalidArgument(format!(
                    "tokenEndpoint header {k} has a value that is not valid in HTTP"
                ))
            })?;
            map.insert(name, value);
        }
        let b = self
            .http
            .inner()
            .post(url)
            .timeout(Duration::from_secs(30))
            .headers(map);
        let body = body.cloned().unwrap_or_else(|| json!({}));
        let resp = b
            .body(body.to_string())
            .send()
            .await
            .map_err(|e| Error::transport("token endpoint failed", e))?;
        parse_token_response(resp, "token endpoint failed", "token").await
    }
}

async fn parse_token_response(resp: reqwest::Response, context: &str, field: &str) -> Result<TokenResult> {
    let status = resp.status();
    if !status.is_success() {
        let body = error_body(resp).await;
        return Err(Error::Http {
            context: context.into(),
            status: status.as_u16(),
            body,
        });
    }
    let v: TokenReply = resp.json().await.map_err(|e| Error::transport(context, e))?;
    let token = v
        .token_named(field)
        .ok_or_else(|| Error::Protocol(format!("{context}: response has no {field}")))?
        .to_string();
    Ok(TokenResult {
        token,
        expires_in: v.expires_in,
        user_id: v.user_id,
        refresh_token: v.refresh_token,
    })
}

/// The proactive loop: up to three attempts (now, after 5 s, after 10 s more); after the third
/// failure, record the error and call `onAuthError` once.
async fn proactive_refresh(weak: Weak<ConsumerAuth>) {
    let delays = match weak.upgrade() {
        Some(a) => a.retry_delays.clone(),
        None => return,
    };
    let mut last: Option<Error> = None;
    for attempt in 0..=delays.len() {
        if attempt > 0 {
            tokio::time::sleep(delays[attempt - 1]).await;
        }
        let Some(auth) = weak.upgrade() else { return };
        if auth.destroyed.load(Ordering::SeqCst) {
            return;
        }
        let _guard = auth.refresh_lock.lock().await;
        match auth.acquire(true).await {
            Ok(r) => {
                auth.apply(r);
                return;
            }
            Err(e) => {
                tracing::warn!(target: "blocks::auth", "proactive token refresh attempt {} failed: {e}", attempt + 1);
                last = Some(e);
            }
        }
    }
    let Some(auth) = weak.upgrade() else { return };
    if let Some(e) = last {
        auth.record_error(&e);
        let cb = auth.on_auth_error.lock().ok().and_then(|c| c.clone());
        if let Some(cb) = cb {
            cb(&e);
        }
    }
}
