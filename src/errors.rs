//! Engine errors → instances of the JS error classes in `lib/errors.js`. JS registers one factory
//! at load time; Rust calls it on the JS thread and rejects with the returned object, so
//! `instanceof RpcError` holds on every async path.

use std::sync::OnceLock;

use blocks_core::{Error as EngineError, ErrorCode};
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

type SyncFactory = FunctionRef<FnArgs<(String, String, String)>, Unknown<'static>>;

thread_local! {
    /// The same factory for synchronous calls, held on the JS thread that registered it (with
    /// its env): a sync call throws the class instance directly.
    static SYNC_FACTORY: std::cell::RefCell<Option<(napi::sys::napi_env, SyncFactory)>> = const { std::cell::RefCell::new(None) };
}

/// Internal: registers the JS error factory for synchronous calls (called once by `index.js`).
#[napi]
pub fn register_sync_error_factory(
    env: Env,
    #[napi(ts_arg_type = "(kind: string, message: string, propsJson: string) => Error")] factory: Function<
        FnArgs<(String, String, String)>,
        Unknown<'static>,
    >,
) -> Result<()> {
    let r = factory.create_ref()?;
    SYNC_FACTORY.with(|f| *f.borrow_mut() = Some((env.raw(), r)));
    Ok(())
}

/// An engine error as the JS class instance, for a synchronous call on the JS thread (a plain
/// Error with the class name in its message where no factory is registered).
pub(crate) fn thrown(e: EngineError) -> napi::Error {
    let (kind, msg, props) = error_parts(&e);
    SYNC_FACTORY.with(|f| {
        let f = f.borrow();
        let Some((raw, factory)) = f.as_ref() else {
            return napi::Error::new(Status::GenericFailure, format!("{kind}: {msg}"));
        };
        let env = Env::from_raw(*raw);
        match factory
            .borrow_back(&env)
            .and_then(|func| func.call((kind, msg.clone(), props).into()))
        {
            Ok(obj) => napi::Error::from(obj),
            Err(_) => napi::Error::new(Status::GenericFailure, msg),
        }
    })
}

/// Internal: registers the JS error factory (called once by `index.js`).
#[napi]
pub fn register_error_factory(
    #[napi(ts_arg_type = "(kind: string, message: string, propsJson: string) => Error")] factory: ErrFactory,
) {
    let _ = ERR_FACTORY.set(factory);
}

/// The one table from an engine error code to the JS class (lib/errors.js) it becomes.
pub(crate) fn js_class(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::InvalidArgument => "InvalidArgumentError",
        ErrorCode::Config => "ConfigError",
        ErrorCode::Rpc => "RpcError",
        ErrorCode::BillingModeMismatch => "BillingModeMismatchError",
        ErrorCode::Http | ErrorCode::Transport | ErrorCode::Realtime | ErrorCode::Protocol => "TransportError",
        ErrorCode::AuthRefreshFailed => "AuthRefreshFailedError",
        ErrorCode::AgentAuthFatal => "AgentAuthFatalError",
        ErrorCode::AnonTaskAccessDenied => "AnonTaskAccessDeniedError",
        ErrorCode::StreamUnavailable => "StreamUnavailableError",
        ErrorCode::FileUpload => "FileUploadError",
        ErrorCode::Timeout => "TimeoutError",
        ErrorCode::Closed => "ClosedError",
    }
}

/// `(class, message, props JSON)`: what the JS factory builds an error from.
pub(crate) fn error_parts(e: &EngineError) -> (String, String, String) {
    (js_class(e.code()).to_string(), e.to_string(), e.props().to_string())
}

/// Every class the table names, for the test that checks lib/errors.js defines them all.
#[napi]
pub fn error_classes() -> Vec<String> {
    let mut out: Vec<String> = ErrorCode::ALL.iter().map(|c| js_class(*c).to_string()).collect();
    out.sort();
    out.dedup();
    out
}

/// Convert an engine error to the JS error object (falls back to a plain Error).
pub(crate) async fn js_error(e: EngineError) -> napi::Error {
    let (kind, msg, props) = error_parts(&e);
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
        let (kind, message, props_json) = error_parts(&e);
        NativeErrorInfo {
            kind,
            message,
            props_json,
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
