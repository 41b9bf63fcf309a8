//! Engine errors → instances of the JS error classes in `lib/errors.js`. JS registers one factory
//! at load time; Rust calls it on the JS thread and rejects with the returned object, so
//! `instanceof RpcError` holds on every async path.

use std::sync::OnceLock;

use blocks_core::Error as EngineError;
use napi::bindgen_prelude::*;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi_derive::napi;

type ErrFactory = ThreadsafeFunction<
    FnArgs<(String, String, String)>,
    Unknown<'static>,
    FnArgs<(String, String, String)>,
    Status,
    false,
    true,
>;

static ERR_FACTORY: OnceLock<ErrFactory> = OnceLock::new();

/// Internal: registers the JS error factory (called once by `index.js`).
#[napi]
pub fn register_error_factory(
    #[napi(ts_arg_type = "(kind: string, message: string, propsJson: string) => Error")] factory: ErrFactory,
) {
    let _ = ERR_FACTORY.set(factory);
}

/// Convert an engine error to the JS error object (falls back to a plain Error).
pub(crate) async fn js_error(e: EngineError) -> napi::Error {
    let (kind, msg, props) = (e.kind().to_string(), e.to_string(), e.props().to_string());
    let fallback = napi::Error::new(Status::GenericFailure, msg.clone());
    let Some(factory) = ERR_FACTORY.get() else {
        return fallback;
    };
    let (tx, rx) = tokio::sync::oneshot::channel::<napi::Error>();
    let status = factory.call_with_return_value(
        (kind, msg, props).into(),
        ThreadsafeFunctionCallMode::NonBlocking,
        move |ret: Result<Unknown<'static>>, _env| {
            let _ = tx.send(match ret {
                Ok(obj) => napi::Error::from(obj),
                Err(e) => e,
            });
            Ok(())
        },
    );
    if status != Status::Ok {
        return fallback;
    }
    rx.await.unwrap_or(fallback)
}

/// An engine error as data, for synchronous calls: JS turns it into its class with `makeError`.
#[napi(object)]
pub struct NativeErrorInfo {
    pub kind: String,
    pub message: String,
    pub props_json: String,
}

impl From<EngineError> for NativeErrorInfo {
    fn from(e: EngineError) -> Self {
        NativeErrorInfo {
            kind: e.kind().to_string(),
            message: e.to_string(),
            props_json: e.props().to_string(),
        }
    }
}

/// `engine_result.or_js().await?` inside async fns.
pub(crate) trait OrJs<T> {
    /// Map the engine error to its JS class.
    async fn or_js(self) -> Result<T>;
}

impl<T> OrJs<T> for std::result::Result<T, EngineError> {
    async fn or_js(self) -> Result<T> {
        match self {
            Ok(v) => Ok(v),
            Err(e) => Err(js_error(e).await),
        }
    }
}
