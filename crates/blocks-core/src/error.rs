//! The engine's one error type. The binding maps each variant once to a JS error class
//! (`kind()` names the class, `props()` carries its structured fields).

use serde_json::{json, Value};

/// Every failure the engine reports.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad options or arguments, detected before any network call.
    #[error("{0}")]
    InvalidArgument(String),
    /// Configuration could not be resolved (CDM, keys, base URL).
    #[error("{0}")]
    Config(String),
    /// A JSON-RPC call failed. `code` is the JSON-RPC code, or the HTTP status for transport-level
    /// failures, or `None` for network errors.
    #[error("[RPC] {message}")]
    Rpc {
        code: Option<i64>,
        message: String,
        data: Option<Value>,
    },
    /// The agent's billing mode differs from the one the client was created with.
    #[error("[RPC] {message}")]
    BillingModeMismatch {
        message: String,
        expected: String,
        got: String,
        code: Option<i64>,
        data: Option<Value>,
    },
    /// An HTTP call to the backend answered with a non-success status.
    #[error("{context}: HTTP {status}{}", if body.is_empty() { String::new() } else { format!(" {body}") })]
    Http { context: String, status: u16, body: String },
    /// The network failed (connection refused, reset, timeout).
    #[error("{context}: {source}")]
    Transport {
        context: String,
        #[source]
        source: reqwest::Error,
    },
    /// Realtime (publish/subscribe) failure.
    #[error("realtime: {0}")]
    Realtime(String),
    /// Token refresh has failed permanently; the cause is kept in the message.
    #[error("Consumer auth refresh permanently failed: {0}")]
    AuthRefreshFailed(String),
    /// The agent's API key is invalid or the agent was forced offline.
    #[error("{0}")]
    AgentAuthFatal(String),
    /// Anonymous viewer was refused a read token (HTTP 403).
    #[error("Anonymous task access denied (HTTP 403): {0}")]
    AnonTaskAccessDenied(String),
    /// A stream of a finished task was never opened; stream data is live-only.
    #[error("Stream {stream_name} of task {task_id} is unavailable: the task is already {terminal_state} and stream data is live-only. Inspect ref.descriptor, session.listArtifacts() and session.state instead.")]
    StreamUnavailable {
        task_id: String,
        stream_id: String,
        stream_name: String,
        declared_stream: Option<String>,
        terminal_state: String,
    },
    /// A wait exceeded its deadline.
    /// The upload handshake or a file download failed (`status` = HTTP status when there was one).
    #[error("{message}")]
    FileUpload { message: String, status: Option<u16> },
    #[error("{0}")]
    Timeout(String),
    /// The object was closed or destroyed.
    #[error("{0}")]
    Closed(String),
    /// A response did not have the expected shape.
    #[error("{0}")]
    Protocol(String),
}

/// Engine result.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Name of the JS error class this error becomes.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::InvalidArgument(_) => "InvalidArgumentError",
            Error::Config(_) => "ConfigError",
            Error::Rpc { .. } => "RpcError",
            Error::BillingModeMismatch { .. } => "BillingModeMismatchError",
            Error::Http { .. } | Error::Transport { .. } | Error::Realtime(_) | Error::Protocol(_) => "TransportError",
            Error::AuthRefreshFailed(_) => "AuthRefreshFailedError",
            Error::AgentAuthFatal(_) => "AgentAuthFatalError",
            Error::AnonTaskAccessDenied(_) => "AnonTaskAccessDeniedError",
            Error::StreamUnavailable { .. } => "StreamUnavailableError",
            Error::Timeout(_) => "TimeoutError",
            Error::FileUpload { .. } => "FileUploadError",
            Error::Closed(_) => "ClosedError",
        }
    }

    /// Structured fields of the JS error object.
    pub fn props(&self) -> Value {
        match self {
            Error::Rpc { code, message, data } => json!({ "code": code, "rpcMessage": message, "data": data }),
            Error::BillingModeMismatch {
                message,
                expected,
                got,
                code,
                data,
            } => {
                json!({ "code": code, "rpcMessage": message, "data": data, "expected": expected, "got": got })
            }
            Error::Http { status, body, .. } => json!({ "status": status, "body": body }),
            Error::FileUpload { status, .. } => json!({ "status": status }),
            Error::StreamUnavailable {
                task_id,
                stream_id,
                declared_stream,
                terminal_state,
                ..
            } => json!({
                "taskId": task_id, "streamId": stream_id, "declaredStream": declared_stream,
                "terminalState": terminal_state,
            }),
            _ => json!({}),
        }
    }

    /// Wrap a reqwest error with what was being done.
    /// The URL is dropped from the message: realtime URLs carry the access token in `auth=`.
    pub fn transport(context: impl Into<String>, source: reqwest::Error) -> Self {
        Error::Transport {
            context: context.into(),
            source: source.without_url(),
        }
    }

    /// True for HTTP 401 answers (the trigger of a reactive token refresh).
    pub fn is_unauthorized(&self) -> bool {
        matches!(
            self,
            Error::Http { status: 401, .. } | Error::Rpc { code: Some(401), .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // ERR-01: error kinds and their properties (RpcError code, rpcMessage, data)
    #[test]
    fn kinds_and_props() {
        let e = Error::Rpc {
            code: Some(-32000),
            message: "boom".into(),
            data: Some(json!({"code": "X"})),
        };
        assert_eq!(e.kind(), "RpcError");
        assert_eq!(e.to_string(), "[RPC] boom");
        assert_eq!(e.props()["code"], -32000);
        assert_eq!(e.props()["rpcMessage"], "boom");
        let e = Error::Http {
            context: "consumer-token failed".into(),
            status: 401,
            body: String::new(),
        };
        assert_eq!(e.to_string(), "consumer-token failed: HTTP 401");
        assert!(e.is_unauthorized());
    }
}
