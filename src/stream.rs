//! `NativeStream`: one open stream (agent or caller side), read with `next()` and written with
//! `writeBytes` / `writeText` / `writeEvent`. The JS StreamHandle (lib/stream.js) builds the
//! iterators (`bytes()`, `events()`, `inbound`), `readable()` and callbacks on top.

use std::sync::Arc;

use blocks_core::agent::StreamLease;
use blocks_core::stream::io::{ReaderEvent, Stream};
use blocks_core::stream::{Item, Write};
use napi::bindgen_prelude::*;
use napi_derive::napi;
use serde_json::Value;

use crate::errors::OrJs;

/// One inbound item or error.
#[napi(object)]
pub struct StreamItem {
    /// `bytes`, `events`, `raw` or `error`.
    pub kind: String,
    pub seq: Option<i64>,
    /// Wire encoding of a bytes frame.
    pub encoding: Option<String>,
    /// Decoded chunks of a bytes frame.
    pub chunks: Option<Vec<Buffer>>,
    /// Events of an events frame, or the raw message.
    #[napi(ts_type = "any")]
    pub data: Option<Value>,
    /// Error category (`malformed_response`, `access_denied`, …).
    pub category: Option<String>,
    pub message: Option<String>,
    pub fatal: Option<bool>,
}

/// Internal: an open stream.
#[napi]
pub struct NativeStream {
    inner: Arc<Stream>,
    /// Agent side: the task's hold on the stream (`end()` releases it; a shared stream goes on
    /// for the other tasks that hold it).
    lease: Option<Arc<StreamLease>>,
}

impl NativeStream {
    pub fn new(inner: Arc<Stream>) -> Self {
        NativeStream { inner, lease: None }
    }

    pub fn leased(inner: Arc<Stream>, lease: Arc<StreamLease>) -> Self {
        NativeStream {
            inner,
            lease: Some(lease),
        }
    }
}

/// Internal: an external stream (agent side): the SDK did the handshake; another process writes
/// with `token`.
#[napi]
pub struct NativeExternalStream {
    lease: Arc<StreamLease>,
}

impl NativeExternalStream {
    pub fn new(lease: Arc<StreamLease>) -> Self {
        NativeExternalStream { lease }
    }
}

#[napi]
impl NativeExternalStream {
    #[napi(getter)]
    pub fn stream_id(&self) -> String {
        self.lease.stream_id.clone()
    }
    #[napi(getter)]
    pub fn channel(&self) -> String {
        self.lease.channel.clone()
    }
    /// The writer's token (T7a).
    #[napi(getter)]
    pub fn token(&self) -> Option<String> {
        self.lease.token.clone()
    }
    /// Complete the handshake: the network announces the stream to the caller.
    #[napi(ts_args_type = "metadata?: any")]
    pub async fn activate(&self, metadata: Option<Value>) -> Result<()> {
        self.lease
            .activate(metadata.filter(|m| !m.is_null()))
            .await
            .or_js()
            .await
    }
    /// Release the task's hold (idempotent).
    #[napi]
    pub async fn end(&self) -> Result<()> {
        self.lease.release().await;
        Ok(())
    }
}

#[napi]
impl NativeStream {
    #[napi(getter)]
    pub fn stream_id(&self) -> String {
        self.inner.stream_id.clone()
    }
    #[napi(getter)]
    pub fn channel(&self) -> String {
        self.inner.channel.clone()
    }
    #[napi(getter)]
    pub fn uuid(&self) -> String {
        self.inner.uuid.clone()
    }
    #[napi(getter)]
    pub fn format(&self) -> String {
        self.inner.format.as_str().to_string()
    }
    /// Direction from this holder's point of view.
    #[napi(getter)]
    pub fn direction(&self) -> String {
        self.inner.direction.clone()
    }
    #[napi(getter)]
    pub fn is_active(&self) -> bool {
        self.inner.is_active() && !self.lease.as_ref().is_some_and(|l| l.is_released())
    }

    /// Queue bytes (base64 on the wire; `{"$binary"}` on events streams).
    #[napi]
    pub fn write_bytes(&self, data: Buffer) -> Result<()> {
        self.inner
            .write(Write::Binary(data.to_vec()))
            .map_err(crate::errors::thrown)
    }
    /// Queue text (bytes streams).
    #[napi]
    pub fn write_text(&self, text: String) -> Result<()> {
        self.inner.write(Write::Text(text)).map_err(crate::errors::thrown)
    }
    /// Queue a JSON event (events streams; JSON text on bytes streams).
    #[napi(ts_args_type = "event: any")]
    pub fn write_event(&self, event: Value) -> Result<()> {
        self.inner.write(Write::Event(event)).map_err(crate::errors::thrown)
    }
    /// Publish what is buffered now.
    #[napi]
    pub async fn flush(&self) -> Result<()> {
        self.inner.flush().await.or_js().await
    }
    /// The next inbound item, in sequence order; null when the stream ended.
    #[napi]
    pub async fn next(&self) -> Result<Option<StreamItem>> {
        let ev = self.inner.next().await.or_js().await?;
        Ok(ev.map(|e| match e {
            ReaderEvent::Item(Item::Bytes { seq, chunks, encoding }) => StreamItem {
                kind: "bytes".into(),
                seq: Some(seq as i64),
                encoding: Some(encoding),
                chunks: Some(chunks.into_iter().map(Buffer::from).collect()),
                data: None,
                category: None,
                message: None,
                fatal: None,
            },
            ReaderEvent::Item(Item::Events { seq, events }) => StreamItem {
                kind: "events".into(),
                seq: Some(seq as i64),
                encoding: Some("utf8".into()),
                chunks: None,
                data: Some(Value::Array(events)),
                category: None,
                message: None,
                fatal: None,
            },
            ReaderEvent::Item(Item::Raw { seq, value }) => StreamItem {
                kind: "raw".into(),
                seq: Some(seq as i64),
                encoding: None,
                chunks: None,
                data: Some(value),
                category: None,
                message: None,
                fatal: None,
            },
            ReaderEvent::Error {
                category,
                message,
                fatal,
            } => StreamItem {
                kind: "error".into(),
                seq: None,
                encoding: None,
                chunks: None,
                data: None,
                category: Some(category),
                message: Some(message),
                fatal: Some(fatal),
            },
        }))
    }
    /// Flush, publish the end marker where due, stop reading. Idempotent. On the agent side this
    /// releases the task's hold: a shared stream ends with its last holder.
    #[napi]
    pub async fn end(&self) -> Result<()> {
        match &self.lease {
            Some(l) => l.release().await,
            None => self.inner.end().await,
        }
        Ok(())
    }

    /// `dedicated` or `shared` (agent side; caller side: `dedicated`).
    #[napi(getter)]
    pub fn affinity(&self) -> String {
        self.lease
            .as_ref()
            .map(|l| l.affinity.clone())
            .unwrap_or_else(|| "dedicated".into())
    }
}
