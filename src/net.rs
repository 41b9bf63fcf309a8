//! `NativeNetOptions`: the `tls` and `proxy` options of every JS entry point (clients, auth
//! providers, agents), as the engine's [`NetOptions`]. Type conversion only: the engine checks
//! the certificates and the proxy URL.

use blocks_core::http::{HttpClient, NetOptions};
use napi::bindgen_prelude::*;
use napi_derive::napi;

/// Whom the engine trusts and which proxy it goes through (internal).
#[napi(object)]
pub struct NativeNetOptions {
    /// Extra CA certificates (PEM), from `tls.ca`.
    pub tls_ca: Option<Vec<Buffer>>,
    /// Proxy URL for every request (`NO_PROXY` still applies).
    pub proxy: Option<String>,
}

/// JS options → engine options.
pub(crate) fn net_options(o: Option<NativeNetOptions>) -> NetOptions {
    match o {
        None => NetOptions::default(),
        Some(o) => NetOptions {
            ca: o.tls_ca.unwrap_or_default().into_iter().map(|b| b.to_vec()).collect(),
            proxy: o.proxy,
        },
    }
}

/// The HTTP client of a synchronous constructor (its errors thrown as their JS class).
pub(crate) fn http_client(o: Option<NativeNetOptions>) -> Result<HttpClient> {
    HttpClient::with_net(&net_options(o)).map_err(crate::errors::thrown)
}
