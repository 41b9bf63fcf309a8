//! The Blocks Network SDK engine. Pure Rust (no napi): configuration, auth, the backend client,
//! the realtime plane, task sessions and the agent runtime. The napi binding (`src/` at the
//! workspace root) only adapts these types to JS.

pub mod agent;
pub mod agent_auth;
pub mod auth;
pub mod backend;
pub mod card;
pub mod client;
pub mod config;
pub mod error;
pub mod files;
pub mod http;
pub mod realtime;
pub mod registry;
pub mod session;
pub mod stream;

pub use agent::{AgentInstance, AgentOptions, ArtifactOut, CancelReason, HandlerResult, TaskContext, TaskHandler};
pub use agent_auth::AgentAuth;
pub use auth::{AuthMode, ConsumerAuth, ExternalAuth, TokenResult, TokenSource};
pub use client::{ClientOptions, SendMessageRequest, TaskClient};
pub use error::{Error, ErrorCode, Result};
pub use session::{SessionEvent, SessionInfo, Snapshot, TaskSession};
