//! `AgentAuth`: an agent's backend identity (agent spec §4.4, consumer spec §4.8). The API key is
//! exchanged at `/api/v1/auth/agent/connect` for an access token, refreshed at
//! `/api/v1/auth/agent/refresh`; a refused refresh token repeats the connect call with the same
//! payload; a refused key or a forced-offline agent is fatal. Used by the agent runtime for its
//! own backend calls (uploads) and, as an [`ExternalAuth`], by a `TaskClient` that acts as the agent.

use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use crate::auth::ExternalAuth;
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::http::HttpClient;
use blocks_wire::auth::{AuthCode, AuthError, TokenReply};
use serde::Deserialize;

/// Error codes that end an agent's session for good.

#[derive(Default)]
struct Tokens {
    access: String,
    refresh: String,
}

/// An agent's access token, from its API key.
pub struct AgentAuth {
    backend: Backend,
    api_key: String,
    /// The registration payload, kept for re-registration.
    payload: Mutex<Option<Value>>,
    tokens: tokio::sync::Mutex<Tokens>,
    /// The access token, readable without waiting.
    current: Mutex<Option<String>>,
    /// Set once the identity is refused for good (key refused, agent forced offline).
    fatal: tokio::sync::watch::Sender<Option<String>>,
}

impl AgentAuth {
    /// `api_key` and `base_url` (the backend root) are required.
    pub fn new(api_key: &str, base_url: &str, http: HttpClient) -> Result<Arc<Self>> {
        if api_key.is_empty() {
            return Err(Error::InvalidArgument("apiKey is required".into()));
        }
        if base_url.is_empty() {
            return Err(Error::InvalidArgument("baseUrl is required".into()));
        }
        Ok(Arc::new(AgentAuth {
            backend: Backend::new(http, base_url, None),
            api_key: api_key.to_string(),
            payload: Mutex::new(None),
            tokens: tokio::sync::Mutex::new(Tokens::default()),
            current: Mutex::new(None),
            fatal: tokio::sync::watch::channel(None).0,
        }))
    }

    /// Register (connect) with `payload` and keep the tokens. Returns the whole connect answer
    /// (`accessToken`, `refreshToken`, `expiresIn`, `pamToken`, `controlChannel`, …). Any HTTP
    /// refusal is fatal ([`Error::AgentAuthFatal`], "Agent registration failed: …").
    pub async fn init(&self, payload: Value) -> Result<Value> {
        let answer = self.connect(&payload).await?;
        if let Ok(mut p) = self.payload.lock() {
            *p = Some(payload);
        }
        let mut t = self.tokens.lock().await;
        self.store(&mut t, &answer);
        Ok(answer)
    }

    /// Register again with the payload of `init` (a new access token and control token).
    pub async fn reconnect(&self) -> Result<Value> {
        let payload = self
            .payload
            .lock()
            .ok()
            .and_then(|p| p.clone())
            .ok_or_else(|| Error::InvalidArgument("AgentAuth not initialized: call init(payload) first".into()))?;
        let answer = self.connect(&payload).await.map_err(|e| self.record_fatal(e))?;
        let mut t = self.tokens.lock().await;
        self.store(&mut t, &answer);
        Ok(answer)
    }

    async fn connect(&self, payload: &Value) -> Result<Value> {
        self.backend
            .post_json(
                "/api/v1/auth/agent/connect",
                payload,
                Some(&self.api_key),
                "Agent registration failed",
            )
            .await
            .map_err(|e| match e {
                Error::Http { status, body, .. } => {
                    let code = AuthError::code_of(&body).map(|c| format!(" ({c})")).unwrap_or_default();
                    Error::AgentAuthFatal(format!(
                        "Agent registration failed: HTTP {status}{code}: check BLOCKS_API_KEY and that the agent is registered to its owner"
                    ))
                }
                other => other,
            })
    }

    fn store(&self, t: &mut Tokens, answer: &Value) {
        let answer = TokenReply::deserialize(answer).unwrap_or_default();
        if let Some(a) = answer.access_token {
            if let Ok(mut c) = self.current.lock() {
                *c = Some(a.clone());
            }
            t.access = a;
        }
        if let Some(r) = answer.refresh_token {
            t.refresh = r;
        }
    }

    /// Watch for the identity being refused for good (the agent then shuts down).
    pub fn fatal(&self) -> tokio::sync::watch::Receiver<Option<String>> {
        self.fatal.subscribe()
    }

    fn record_fatal(&self, e: Error) -> Error {
        if let Error::AgentAuthFatal(m) = &e {
            self.fatal.send_replace(Some(m.clone()));
        }
        e
    }

    /// The backend root URL.
    pub fn base_url(&self) -> &str {
        self.backend.base_url()
    }

    /// True when a backend URL is configured (always, once built).
    pub fn has_backend(&self) -> bool {
        !self.backend.base_url().is_empty()
    }

    /// The current access token (none before `init`).
    pub fn access_token(&self) -> Option<String> {
        self.current.lock().ok()?.clone().filter(|t| !t.is_empty())
    }

    /// Get a new access token. Concurrent calls share one request.
    pub async fn refresh(&self) -> Result<()> {
        let stale = self.access_token().unwrap_or_default();
        self.refresh_from(&stale).await
    }

    /// Refresh unless someone already replaced `stale` meanwhile.
    async fn refresh_from(&self, stale: &str) -> Result<()> {
        let mut t = self.tokens.lock().await;
        if t.access != stale {
            return Ok(());
        }
        if t.refresh.is_empty() {
            return Err(Error::InvalidArgument(
                "AgentAuth not initialized: call init(payload) first".into(),
            ));
        }
        let refreshed = self
            .backend
            .post_json(
                "/api/v1/auth/agent/refresh",
                &json!({ "refreshToken": t.refresh }),
                Some(&self.api_key),
                "agent token refresh failed",
            )
            .await;
        let answer = match refreshed {
            Ok(v) => v,
            Err(Error::Http { status, body, .. }) => match AuthError::code_of(&body) {
                Some(AuthCode::RefreshTokenInvalid) => {
                    let payload = self.payload.lock().ok().and_then(|p| p.clone());
                    let Some(payload) = payload else {
                        return Err(Error::AgentAuthFatal(
                            "agent token refresh failed: refresh token refused and no registration payload to reconnect with".into(),
                        ));
                    };
                    self.connect(&payload).await.map_err(|e| self.record_fatal(e))?
                }
                Some(c) if c.is_fatal_for_agent() => {
                    return Err(self.record_fatal(Error::AgentAuthFatal(format!(
                        "agent token refresh failed: HTTP {status} ({c}): the agent's API key was refused or the agent was forced offline"
                    ))))
                }
                _ => {
                    return Err(Error::Http {
                        context: "agent token refresh failed".into(),
                        status,
                        body,
                    })
                }
            },
            Err(e) => return Err(e),
        };
        self.store(&mut t, &answer);
        Ok(())
    }

    /// POST to a backend path with the access token; on 401, refresh once and retry.
    pub async fn post(&self, path: &str, body: &Value, context: &str) -> Result<Value> {
        let access = self.access_token().unwrap_or_default();
        match self.backend.post_json(path, body, Some(&access), context).await {
            Err(e) if e.is_unauthorized() => {
                self.refresh_from(&access).await?;
                let access = self.access_token().unwrap_or_default();
                self.backend.post_json(path, body, Some(&access), context).await
            }
            other => other,
        }
    }
}

#[async_trait::async_trait]
impl crate::files::AuthedPost for AgentAuth {
    async fn post(&self, path: &str, body: &Value, context: &str) -> Result<Value> {
        AgentAuth::post(self, path, body, context).await
    }
}

#[async_trait::async_trait]
impl ExternalAuth for AgentAuth {
    async fn header(&self) -> Result<Option<String>> {
        Ok(self.access_token().map(|t| format!("Bearer {t}")))
    }

    async fn refresh(&self) -> Result<bool> {
        AgentAuth::refresh(self).await.map(|()| true)
    }

    async fn ensure_ready(&self) -> Result<()> {
        if self.access_token().is_none() {
            return Err(Error::InvalidArgument(
                "AgentAuth not initialized: call init(payload) first".into(),
            ));
        }
        Ok(())
    }
}
