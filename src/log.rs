//! One logging path: engine `tracing` records are forwarded to JS (lib/log.js), which applies
//! `LOG_LEVEL` and routes them to the user's logger or the console.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::OnceLock;

use napi::bindgen_prelude::*;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi_derive::napi;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::prelude::*;

type LogSink =
    ThreadsafeFunction<FnArgs<(String, String, String)>, (), FnArgs<(String, String, String)>, Status, false, true>;

static SINK: OnceLock<LogSink> = OnceLock::new();
/// 0 = error … 3 = debug.
static MAX_LEVEL: AtomicU8 = AtomicU8::new(2);

fn rank(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 0,
        Level::WARN => 1,
        Level::INFO => 2,
        _ => 3,
    }
}

fn name(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "error",
        Level::WARN => "warn",
        Level::INFO => "info",
        _ => "debug",
    }
}

#[derive(Default)]
struct Message(String);

impl Visit for Message {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0.push_str(value);
        } else {
            self.0.push_str(&format!(" {}={value}", field.name()));
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0.push_str(&format!("{value:?}"));
        } else {
            self.0.push_str(&format!(" {}={value:?}", field.name()));
        }
    }
}

struct JsLayer;

impl<S: Subscriber> Layer<S> for JsLayer {
    fn enabled(&self, meta: &tracing::Metadata<'_>, _ctx: Context<'_, S>) -> bool {
        meta.target().starts_with("blocks") && rank(meta.level()) <= MAX_LEVEL.load(Ordering::Relaxed)
    }

    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let Some(sink) = SINK.get() else { return };
        let mut msg = Message::default();
        event.record(&mut msg);
        let meta = event.metadata();
        sink.call(
            (name(meta.level()).to_string(), meta.target().to_string(), msg.0).into(),
            ThreadsafeFunctionCallMode::NonBlocking,
        );
    }
}

/// Internal: route engine logs to `sink(level, target, message)`; `level` is the threshold.
#[napi]
pub fn register_log_sink(
    #[napi(ts_arg_type = "(level: string, target: string, message: string) => void")] sink: LogSink,
    level: String,
) {
    set_log_level(level);
    if SINK.set(sink).is_ok() {
        let _ = tracing_subscriber::registry().with(JsLayer).try_init();
    }
}

/// Internal: change the threshold (`error`, `warn`, `info`, `debug`).
#[napi]
pub fn set_log_level(level: String) {
    let r = match level.to_ascii_lowercase().as_str() {
        "error" => 0,
        "warn" => 1,
        "debug" => 3,
        _ => 2,
    };
    MAX_LEVEL.store(r, Ordering::Relaxed);
}
