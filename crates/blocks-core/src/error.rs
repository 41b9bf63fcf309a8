//! The engine's one error type. Each variant has a stable [`ErrorCode`]; the binding maps the
//! code once to a JS error class (src/errors.rs), and `props()` carries the structured fields. The
//! engine names no JS class, and no caller decides anything by reading a message.

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
    /// The network failed (connection refused, reset, timeout, a certificate refused). `code` is
    /// stable (`ECONNREFUSED`, `ENOTFOUND`, `ETIMEDOUT`, `ECONNRESET`, `CERT_UNTRUSTED`,
    /// `CERT_HOSTNAME_MISMATCH`, `CERT_EXPIRED`, …); the message has the cause chain and the next step.
    #[error("{context}: {chain} ({code}{}){}", host.as_deref().map(|h| format!(", {h}")).unwrap_or_default(), next_step(code, host.as_deref()))]
    Transport {
        context: String,
        #[source]
        source: reqwest::Error,
        code: &'static str,
        host: Option<String>,
        chain: String,
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

/// The causes of a network error, outermost first, without repeats ("error sending request:
/// client error (Connect): tcp connect error: Connection refused (os error 111)").
fn cause_chain(e: &reqwest::Error) -> String {
    let mut parts: Vec<String> = vec![e.to_string()];
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = match s.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()) {
            Some(inner) if inner.to_string() != s.to_string() => Some(inner),
            _ => s.source(),
        };
    }
    parts.join(": ")
}

/// The code of a TLS refusal, when a rustls error is in the chain (also inside io errors that
/// wrap io errors, as the connector layers do; bounded depth).
fn tls_code(e: &(dyn std::error::Error + 'static)) -> Option<&'static str> {
    use rustls::CertificateError as C;
    let mut e = e;
    for _ in 0..8 {
        match e.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()) {
            Some(inner) => e = inner,
            None => break,
        }
    }
    let tls = e.downcast_ref::<rustls::Error>()?;
    Some(match tls {
        rustls::Error::InvalidCertificate(c) => match c {
            C::UnknownIssuer | C::BadSignature => "CERT_UNTRUSTED",
            C::NotValidForName | C::NotValidForNameContext { .. } => "CERT_HOSTNAME_MISMATCH",
            C::Expired | C::ExpiredContext { .. } => "CERT_EXPIRED",
            C::NotValidYet | C::NotValidYetContext { .. } => "CERT_NOT_YET_VALID",
            C::Revoked => "CERT_REVOKED",
            _ => "CERT_INVALID",
        },
        _ => "TLS_HANDSHAKE_FAILED",
    })
}

/// A stable code for a network failure, in the names Node users know.
pub fn transport_code(e: &reqwest::Error) -> &'static str {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(code) = tls_code(s) {
            return code;
        }
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            match io.kind() {
                ConnectionRefused => return "ECONNREFUSED",
                ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof => return "ECONNRESET",
                TimedOut => return "ETIMEDOUT",
                NetworkUnreachable => return "ENETUNREACH",
                HostUnreachable => return "EHOSTUNREACH",
                AddrNotAvailable => return "EADDRNOTAVAIL",
                _ => {}
            }
        }
        source = s.source();
    }
    if e.is_timeout() {
        "ETIMEDOUT"
    } else if e.is_connect() {
        // what remains of a failed connect is the name lookup
        "ENOTFOUND"
    } else if e.is_body() || e.is_decode() {
        "EBADRESPONSE"
    } else {
        "ETRANSPORT"
    }
}

/// What to do about a network failure, by its code.
fn next_step(code: &str, host: Option<&str>) -> String {
    let at = host.map(|h| format!(" at {h}")).unwrap_or_default();
    let local = host.is_some_and(|h| h.starts_with("127.") || h.starts_with("localhost") || h.starts_with("[::1]"));
    match code {
        "ECONNREFUSED" if local => format!(": nothing is listening{at}; is blocks-devnet running? start it with `npx blocks-devnet` (or LocalNetwork.start())"),
        "ECONNREFUSED" => format!(": nothing is listening{at}; check the URL and that the service is up"),
        "ENOTFOUND" => format!(": the host name{at} could not be resolved (or the connection failed before TLS); check the URL, your DNS and proxy settings (HTTPS_PROXY, NO_PROXY)"),
        "ETIMEDOUT" => ": the network did not answer in time; check your connection or proxy".into(),
        "ECONNRESET" => ": the connection was closed by the other side or a proxy; the call can be tried again".into(),
        "CERT_UNTRUSTED" => format!(": the certificate{at} was signed by an unknown issuer; give your CA bundle with NODE_EXTRA_CA_CERTS=/path/ca.pem or the `tls: {{ ca }}` option (for a TLS devnet: the NODE_EXTRA_CA_CERTS it prints)"),
        "CERT_HOSTNAME_MISMATCH" => format!(": the certificate is not valid for the host{at}; use the host name the certificate names"),
        "CERT_EXPIRED" => format!(": the certificate{at} has expired"),
        c if c.starts_with("CERT_") || c.starts_with("TLS_") => format!(": the TLS connection{at} was refused"),
        _ => String::new(),
    }
}

/// Engine result.
pub type Result<T> = std::result::Result<T, Error>;

/// The stable code of an [`Error`] variant: what callers (the binding's class table, retries,
/// tests) decide on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// [`Error::InvalidArgument`].
    InvalidArgument,
    /// [`Error::Config`].
    Config,
    /// [`Error::Rpc`].
    Rpc,
    /// [`Error::BillingModeMismatch`].
    BillingModeMismatch,
    /// [`Error::Http`].
    Http,
    /// [`Error::Transport`].
    Transport,
    /// [`Error::Realtime`].
    Realtime,
    /// [`Error::AuthRefreshFailed`].
    AuthRefreshFailed,
    /// [`Error::AgentAuthFatal`].
    AgentAuthFatal,
    /// [`Error::AnonTaskAccessDenied`].
    AnonTaskAccessDenied,
    /// [`Error::StreamUnavailable`].
    StreamUnavailable,
    /// [`Error::FileUpload`].
    FileUpload,
    /// [`Error::Timeout`].
    Timeout,
    /// [`Error::Closed`].
    Closed,
    /// [`Error::Protocol`].
    Protocol,
}

impl ErrorCode {
    /// Every code, for exhaustive tables and tests.
    pub const ALL: [ErrorCode; 15] = [
        ErrorCode::InvalidArgument,
        ErrorCode::Config,
        ErrorCode::Rpc,
        ErrorCode::BillingModeMismatch,
        ErrorCode::Http,
        ErrorCode::Transport,
        ErrorCode::Realtime,
        ErrorCode::AuthRefreshFailed,
        ErrorCode::AgentAuthFatal,
        ErrorCode::AnonTaskAccessDenied,
        ErrorCode::StreamUnavailable,
        ErrorCode::FileUpload,
        ErrorCode::Timeout,
        ErrorCode::Closed,
        ErrorCode::Protocol,
    ];

    /// The code as text (`INVALID_ARGUMENT`, `RPC`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidArgument => "INVALID_ARGUMENT",
            ErrorCode::Config => "CONFIG",
            ErrorCode::Rpc => "RPC",
            ErrorCode::BillingModeMismatch => "BILLING_MODE_MISMATCH",
            ErrorCode::Http => "HTTP",
            ErrorCode::Transport => "TRANSPORT",
            ErrorCode::Realtime => "REALTIME",
            ErrorCode::AuthRefreshFailed => "AUTH_REFRESH_FAILED",
            ErrorCode::AgentAuthFatal => "AGENT_AUTH_FATAL",
            ErrorCode::AnonTaskAccessDenied => "ANON_TASK_ACCESS_DENIED",
            ErrorCode::StreamUnavailable => "STREAM_UNAVAILABLE",
            ErrorCode::FileUpload => "FILE_UPLOAD",
            ErrorCode::Timeout => "TIMEOUT",
            ErrorCode::Closed => "CLOSED",
            ErrorCode::Protocol => "PROTOCOL",
        }
    }
}

impl Error {
    /// The variant's stable code.
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::InvalidArgument(_) => ErrorCode::InvalidArgument,
            Error::Config(_) => ErrorCode::Config,
            Error::Rpc { .. } => ErrorCode::Rpc,
            Error::BillingModeMismatch { .. } => ErrorCode::BillingModeMismatch,
            Error::Http { .. } => ErrorCode::Http,
            Error::Transport { .. } => ErrorCode::Transport,
            Error::Realtime(_) => ErrorCode::Realtime,
            Error::AuthRefreshFailed(_) => ErrorCode::AuthRefreshFailed,
            Error::AgentAuthFatal(_) => ErrorCode::AgentAuthFatal,
            Error::AnonTaskAccessDenied(_) => ErrorCode::AnonTaskAccessDenied,
            Error::StreamUnavailable { .. } => ErrorCode::StreamUnavailable,
            Error::FileUpload { .. } => ErrorCode::FileUpload,
            Error::Timeout(_) => ErrorCode::Timeout,
            Error::Closed(_) => ErrorCode::Closed,
            Error::Protocol(_) => ErrorCode::Protocol,
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
            Error::Transport { code, host, .. } => json!({ "code": code, "host": host }),
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
    /// The URL is dropped from the message (realtime URLs carry the access token in `auth=`); its
    /// host stays, with a stable code and the causes.
    pub fn transport(context: impl Into<String>, source: reqwest::Error) -> Self {
        let host = source.url().and_then(|u| {
            u.host_str()
                .map(|h| u.port().map(|p| format!("{h}:{p}")).unwrap_or_else(|| h.to_string()))
        });
        let source = source.without_url();
        Error::Transport {
            context: context.into(),
            code: transport_code(&source),
            chain: cause_chain(&source),
            host,
            source,
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
        assert_eq!(e.code(), ErrorCode::Rpc);
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
