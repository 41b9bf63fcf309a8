//! Auth replies (consumer spec §4, agent spec §4.3–4.4): token answers and the error codes the
//! backend gives, decided by code, never by message text.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// An error code of the auth endpoints or of a JSON-RPC `data.code`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AuthCode {
    /// The refresh token is no longer valid: register / authenticate again.
    RefreshTokenInvalid,
    /// The API key is invalid or revoked (fatal for an agent).
    ApiKeyInvalid,
    /// The agent was forced offline (fatal for an agent).
    AgentForcedOffline,
    /// An embedded JWT was revoked, logged out, killed or drifted in scope, or the agent is out
    /// of scope: refresh the token and retry once.
    RefreshAndRetry(String),
    /// Any other code.
    Other(String),
}

impl AuthCode {
    /// A code from its wire text.
    pub fn parse(code: &str) -> AuthCode {
        match code {
            "REFRESH_TOKEN_INVALID" => AuthCode::RefreshTokenInvalid,
            "API_KEY_INVALID" => AuthCode::ApiKeyInvalid,
            "AGENT_FORCED_OFFLINE" => AuthCode::AgentForcedOffline,
            "EMBEDDED_JWT_REVOKED"
            | "EMBEDDED_JWT_LOGOUT"
            | "EMBEDDED_JWT_KILLED"
            | "EMBEDDED_JWT_SCOPE_DRIFT"
            | "AGENT_OUT_OF_SCOPE" => AuthCode::RefreshAndRetry(code.to_string()),
            other => AuthCode::Other(other.to_string()),
        }
    }

    /// The wire text.
    pub fn as_str(&self) -> &str {
        match self {
            AuthCode::RefreshTokenInvalid => "REFRESH_TOKEN_INVALID",
            AuthCode::ApiKeyInvalid => "API_KEY_INVALID",
            AuthCode::AgentForcedOffline => "AGENT_FORCED_OFFLINE",
            AuthCode::RefreshAndRetry(c) | AuthCode::Other(c) => c,
        }
    }

    /// True for the codes that end an agent's identity for good.
    pub fn is_fatal_for_agent(&self) -> bool {
        matches!(self, AuthCode::ApiKeyInvalid | AuthCode::AgentForcedOffline)
    }
}

impl std::fmt::Display for AuthCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The body of a refused auth call: `{"code", "error": "<text>"}` or `{"error": {"code", "message"}}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthError {
    /// The code, when the body has one.
    pub code: Option<AuthCode>,
    /// The server's text, when it has one.
    pub message: Option<String>,
}

impl AuthError {
    /// Read an error body; `None` when it is not a JSON object.
    pub fn parse(body: &str) -> Option<AuthError> {
        let v: Value = serde_json::from_str(body).ok()?;
        let o = v.as_object()?;
        let nested = o.get("error").and_then(Value::as_object);
        let code = o
            .get("code")
            .or_else(|| nested.and_then(|e| e.get("code")))
            .and_then(Value::as_str)
            .map(AuthCode::parse);
        let message = o
            .get("error")
            .and_then(Value::as_str)
            .or_else(|| nested.and_then(|e| e.get("message")).and_then(Value::as_str))
            .or_else(|| o.get("message").and_then(Value::as_str))
            .map(str::to_string);
        Some(AuthError { code, message })
    }

    /// The code of an error body, if any.
    pub fn code_of(body: &str) -> Option<AuthCode> {
        AuthError::parse(body).and_then(|e| e.code)
    }
}

/// A token answer (consumer-token, refresh, agent connect/refresh, task-read-token). Fields of
/// an unexpected type count as absent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenReply {
    /// The access token (`accessToken`).
    #[serde(
        default,
        deserialize_with = "crate::lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub access_token: Option<String>,
    /// The same under the name `token`.
    #[serde(
        default,
        deserialize_with = "crate::lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub token: Option<String>,
    /// Lifetime in seconds.
    #[serde(
        default,
        deserialize_with = "crate::lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub expires_in: Option<f64>,
    /// The user the token authenticates.
    #[serde(
        default,
        deserialize_with = "crate::lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub user_id: Option<String>,
    /// The refresh token.
    #[serde(
        default,
        deserialize_with = "crate::lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub refresh_token: Option<String>,
    /// `pamToken`, `channel`, `agentId`, … (endpoint-specific fields).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl TokenReply {
    /// The token under `field` (an endpoint's own name, e.g. `pamToken`), else `token`, else
    /// `accessToken`; empty strings do not count.
    pub fn token_named(&self, field: &str) -> Option<&str> {
        let named = match field {
            "accessToken" => self.access_token.as_deref(),
            "token" => self.token.as_deref(),
            other => self.extra.get(other).and_then(Value::as_str),
        };
        named
            .or(self.token.as_deref())
            .or(self.access_token.as_deref())
            .filter(|t| !t.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_read_from_both_body_shapes() {
        assert_eq!(
            AuthError::code_of(r#"{"code":"REFRESH_TOKEN_INVALID"}"#),
            Some(AuthCode::RefreshTokenInvalid)
        );
        let e = AuthError::parse(r#"{"error":{"code":"API_KEY_INVALID","message":"revoked"}}"#).unwrap();
        assert_eq!(e.code, Some(AuthCode::ApiKeyInvalid));
        assert_eq!(e.message.as_deref(), Some("revoked"));
        let e = AuthError::parse(r#"{"code":"AGENT_FORCED_OFFLINE","error":"kicked"}"#).unwrap();
        assert!(e.code.as_ref().is_some_and(AuthCode::is_fatal_for_agent));
        assert_eq!(e.message.as_deref(), Some("kicked"));
        assert_eq!(
            AuthCode::parse("EMBEDDED_JWT_KILLED"),
            AuthCode::RefreshAndRetry("EMBEDDED_JWT_KILLED".into())
        );
        assert_eq!(AuthError::code_of("not json"), None);
        assert_eq!(AuthError::code_of(r#"{"error":"text only"}"#), None);
    }

    #[test]
    fn token_replies_name_their_token() {
        let r: TokenReply = serde_json::from_str(r#"{"pamToken":"P","expiresIn":60,"channel":"u.o.t"}"#).unwrap();
        assert_eq!(r.token_named("pamToken"), Some("P"));
        assert_eq!(r.expires_in, Some(60.0));
        let r: TokenReply = serde_json::from_str(r#"{"accessToken":"A","refreshToken":"R"}"#).unwrap();
        assert_eq!(r.token_named("token"), Some("A"));
        assert_eq!(r.refresh_token.as_deref(), Some("R"));
        let r: TokenReply = serde_json::from_str(r#"{"token":"T","expiresIn":"soon","userId":7}"#).unwrap();
        assert_eq!(
            (r.token_named("token"), r.expires_in, r.user_id.as_deref()),
            (Some("T"), None, None)
        );
        let r: TokenReply = serde_json::from_str(r#"{"token":""}"#).unwrap();
        assert_eq!(r.token_named("token"), None);
    }
}
