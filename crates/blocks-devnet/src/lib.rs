//! The local Blocks Network (devnet): one loopback port serving the CDM document, the backend API
//! (auth, registry, JSON-RPC tasks), a PubNub-REST-protocol realtime server and the dispatcher.
//! Embeddable (`Devnet::start`) and runnable (`blocks-devnet`).

mod access;
mod backend_api;
mod clock;
pub mod config;
mod conn;
mod devnet;
mod files;
mod files_api;
mod filter;
mod http;
mod ids;
mod net;
mod pubnub_api;
mod realtime;
mod request;
mod state;
mod store;
mod streams;
mod tls;

/// The devnet's flags and option rules under their former name ([`config`]).
pub use config as cli;
pub use config::{ApiKey, DevnetConfig};
pub use devnet::{Devnet, DevnetError};
pub use filter::Filter;
pub use net::{FREE_KEYS, PAID_KEYS};
pub use state::DISPATCH_ATTEMPTS;
pub use tls::TlsCa;

/// The limits the devnet holds every request to (issue 20: hostile and careless input).
pub mod limits {
    pub use crate::filter::{MAX_FILTER_BYTES, MAX_FILTER_DEPTH};
    pub use crate::http::MAX_BODY;
    pub use crate::realtime::RETAINED_BYTES;
    pub use crate::request::{
        MAX_CHANNELS_PER_REQUEST, MAX_MESSAGE_BYTES, MAX_MESSAGE_DEPTH, MAX_NAME_BYTES, MAX_PRESENCE_TIMEOUT,
    };
}

/// The request-body reader, for the property tests (not a stable API).
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::http::{read_body, BodyError};
}
