//! One logging path: engine `tracing` records are forwarded to JS (lib/log.js), which applies
//! `LOG_LEVEL`, redacts secrets and routes them to the user's logger or the console.
//!
//! What reaches JS:
//! * `blocks*` targets at or above the threshold (`LOG_LEVEL`, changed at run time by
//!   `setLogLevel`), except the **diagnostics** records (below);
//! * diagnostics: the debug records of `blocks::realtime` — per-attempt reconnect failures,
//!   publish retries, heartbeat and leave failures, i.e. the realtime plane's own chatter. They
//!   are hidden unless `BLOCKS_DEBUG_INTERNAL` lists `diagnostics` (`LOG_LEVEL=debug` alone does
//!   not show them);
//! * forward_transport: the transport library's own records (the `pubnub`, `reqwest`, `hyper`,
//!   `hyper_util` and `h2` crates, through `tracing` or the `log` facade), silent unless
//!   `BLOCKS_DEBUG_INTERNAL` lists `forward_transport`; JS prints them as `[Transport]` entries
//!   (trace maps to debug, the other levels to themselves).
//!
//! An enabled subsystem is visible at the default level: its records pass when the threshold is
//! `info` or `debug` (opting in is explicit), and `LOG_LEVEL=warn`/`error` still silence its
//! debug and info records. lib/log.js applies the same rule.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::OnceLock;

use log as logcrate;
use napi::bindgen_prelude::*;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi_derive::napi;
use tracing::field::{Field, Visit};
use tracing::subscriber::Interest;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::prelude::*;

type LogSink =
    ThreadsafeFunction<FnArgs<(String, String, String)>, (), FnArgs<(String, String, String)>, Status, false, true>;

static SINK: OnceLock<LogSink> = OnceLock::new();
/// 0 = error … 3 = debug.
static MAX_LEVEL: AtomicU8 = AtomicU8::new(2);
/// `BLOCKS_DEBUG_INTERNAL` lists `diagnostics`.
static DIAGNOSTICS: AtomicBool = AtomicBool::new(false);
/// `BLOCKS_DEBUG_INTERNAL` lists `forward_transport`.
static FORWARD_TRANSPORT: AtomicBool = AtomicBool::new(false);

/// Crates whose records are the transport library's own (`forward_transport`).
const TRANSPORT_CRATES: [&str; 5] = ["pubnub", "reqwest", "hyper", "hyper_util", "h2"];

fn rank(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 0,
        Level::WARN => 1,
        Level::INFO => 2,
        _ => 3,
    }
}

fn name(rank: u8) -> &'static str {
    match rank {
        0 => "error",
        1 => "warn",
        2 => "info",
        _ => "debug",
    }
}

fn crate_of(target: &str) -> &str {
    target.split("::").next().unwrap_or(target)
}

fn is_transport(target: &str) -> bool {
    TRANSPORT_CRATES.contains(&crate_of(target))
}

fn is_blocks(target: &str) -> bool {
    crate_of(target).starts_with("blocks")
}

fn is_diagnostics(target: &str, rank: u8) -> bool {
    rank >= 3 && (target == "blocks::realtime" || target.starts_with("blocks::realtime::"))
}

/// The threshold of an opted-in subsystem: debug while the threshold is info or debug.
fn opted_in_max(max: u8) -> u8 {
    if max >= 2 {
        3
    } else {
        max
    }
}

/// Whether a record of `target` at `rank` reaches JS now.
fn passes(target: &str, rank: u8) -> bool {
    let max = MAX_LEVEL.load(Ordering::Relaxed);
    if is_transport(target) {
        return FORWARD_TRANSPORT.load(Ordering::Relaxed) && rank <= opted_in_max(max);
    }
    if !is_blocks(target) {
        return false;
    }
    if is_diagnostics(target, rank) {
        return DIAGNOSTICS.load(Ordering::Relaxed) && rank <= opted_in_max(max);
    }
    rank <= max
}

fn send(rank: u8, target: &str, message: String) {
    if let Some(sink) = SINK.get() {
        sink.call(
            (name(rank).to_string(), target.to_string(), message).into(),
            ThreadsafeFunctionCallMode::NonBlocking,
        );
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
    fn register_callsite(&self, meta: &'static tracing::Metadata<'static>) -> Interest {
        // the threshold changes at run time (setLogLevel): ask `enabled` every time, except for
        // targets that can never pass (other crates; transport crates when not forwarded)
        let target = meta.target();
        if is_blocks(target) || (is_transport(target) && FORWARD_TRANSPORT.load(Ordering::Relaxed)) {
            Interest::sometimes()
        } else {
            Interest::never()
        }
    }

    fn enabled(&self, meta: &tracing::Metadata<'_>, _ctx: Context<'_, S>) -> bool {
        passes(meta.target(), rank(meta.level()))
    }

    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut msg = Message::default();
        event.record(&mut msg);
        let meta = event.metadata();
        send(rank(meta.level()), meta.target(), msg.0);
    }
}

/// The `log` facade (used by the `pubnub` and `reqwest` crates) into the same path, installed
/// only for `forward_transport`; without it those records are never even formatted.
struct TransportLog;

fn log_rank(level: logcrate::Level) -> u8 {
    match level {
        logcrate::Level::Error => 0,
        logcrate::Level::Warn => 1,
        logcrate::Level::Info => 2,
        _ => 3,
    }
}

impl logcrate::Log for TransportLog {
    fn enabled(&self, meta: &logcrate::Metadata<'_>) -> bool {
        is_transport(meta.target()) && passes(meta.target(), log_rank(meta.level()))
    }

    fn log(&self, record: &logcrate::Record<'_>) {
        if self.enabled(record.metadata()) {
            send(log_rank(record.level()), record.target(), record.args().to_string());
        }
    }

    fn flush(&self) {}
}

static TRANSPORT_LOG: TransportLog = TransportLog;

/// Read `BLOCKS_DEBUG_INTERNAL` (comma list, whitespace and case tolerated). Unknown tokens are
/// reported by lib/log.js, which parses the same variable.
fn read_debug_internal() {
    let raw = std::env::var("BLOCKS_DEBUG_INTERNAL").unwrap_or_default();
    for token in raw.split(',').map(|t| t.trim().to_ascii_lowercase()) {
        match token.as_str() {
            "diagnostics" => DIAGNOSTICS.store(true, Ordering::Relaxed),
            "forward_transport" => FORWARD_TRANSPORT.store(true, Ordering::Relaxed),
            _ => {}
        }
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
        read_debug_internal();
        let _ = tracing_subscriber::registry().with(JsLayer).try_init();
        if FORWARD_TRANSPORT.load(Ordering::Relaxed) && logcrate::set_logger(&TRANSPORT_LOG).is_ok() {
            logcrate::set_max_level(logcrate::LevelFilter::Trace);
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert!(is_transport("pubnub::dx::pubnub_client"));
        assert!(is_transport("reqwest::connect"));
        assert!(is_transport("hyper_util::client"));
        assert!(!is_transport("blocks::realtime"));
        assert!(is_blocks("blocks::agent") && is_blocks("blocks_devnet"));
        assert!(!is_blocks("axum::serve"));
        assert!(is_diagnostics("blocks::realtime", 3));
        assert!(!is_diagnostics("blocks::realtime", 1));
        assert!(!is_diagnostics("blocks::realtimex", 3));
        assert_eq!(
            (opted_in_max(3), opted_in_max(2), opted_in_max(1), opted_in_max(0)),
            (3, 3, 1, 0)
        );
    }
}
