#![deny(clippy::all)]
//! napi-rs binding of the Blocks Network SDK. Thin by rule: it converts types, bridges events to
//! JS and maps errors once; all protocol logic lives in `blocks-core`.

mod agent;
mod auth;
mod client;
mod devnet;
mod errors;
mod log;
mod net;
mod registry;
mod session;
mod stream;

pub use agent::*;
pub use auth::*;
pub use client::*;
pub use devnet::*;
pub use errors::*;
pub use log::*;
pub use net::*;
pub use registry::*;
pub use session::*;
pub use stream::*;
