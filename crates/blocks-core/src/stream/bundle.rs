//! Outbound batching of a stream writer (agent spec §9.6): writes are buffered and flushed as one
//! frame when the buffered size reaches `bundle_bytes` or `max_latency` after the first unflushed
//! write. Sequence numbers advance once per frame. Pure logic: time is passed in.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::frames::{binary_event, data_frame, end_frame, events_frame, Chunk, Format};

/// Default flush threshold (bytes).
pub const DEFAULT_BUNDLE_BYTES: usize = 4096;
/// Our default flush latency. The official SDKs wait 250 ms; we flush after 2 ms, which keeps
/// frames few under load and first-chunk latency near the network's.
pub const DEFAULT_MAX_LATENCY: Duration = Duration::from_millis(2);

/// One stream's outbound buffer.
#[derive(Debug)]
pub struct Bundler {
    stream_id: String,
    format: Format,
    seq: u64,
    bundle_bytes: usize,
    max_latency: Duration,
    chunks: Vec<Chunk>,
    events: Vec<Value>,
    size: usize,
    deadline: Option<Instant>,
}

/// A write to a stream.
#[derive(Clone, Debug)]
pub enum Write {
    /// Text (bytes streams: a utf8 chunk; events streams: refused).
    Text(String),
    /// Bytes (bytes streams: a base64 chunk; events streams: `{"$binary": …}`).
    Binary(Vec<u8>),
    /// A JSON event (events streams only).
    Event(Value),
}

impl Bundler {
    /// A writer for `stream_id`.
    pub fn new(stream_id: &str, format: Format, bundle_bytes: usize, max_latency: Duration) -> Self {
        Bundler {
            stream_id: stream_id.to_string(),
            format,
            seq: format.first_seq(),
            bundle_bytes: bundle_bytes.max(1),
            max_latency,
            chunks: Vec::new(),
            events: Vec::new(),
            size: 0,
            deadline: None,
        }
    }

    /// Next sequence number.
    pub fn next_seq(&self) -> u64 {
        self.seq
    }

    /// When the buffer must be flushed, if it holds anything.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// True when nothing is buffered.
    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty() && self.events.is_empty()
    }

    /// Buffer one write; returns a frame when the size threshold is reached.
    pub fn write(&mut self, w: Write, now: Instant, now_ms: u64) -> Result<Option<Value>, String> {
        match (self.format, w) {
            (Format::Bytes, Write::Text(t)) => {
                self.size += t.len();
                self.chunks.push(Chunk::Text(t));
            }
            (Format::Bytes, Write::Binary(b)) => {
                self.size += b.len().div_ceil(3) * 4;
                self.chunks.push(Chunk::Binary(b));
            }
            (Format::Bytes, Write::Event(v)) => {
                let t = v.to_string();
                self.size += t.len();
                self.chunks.push(Chunk::Text(t));
            }
            (Format::Events, Write::Text(_)) => {
                return Err(
                    "write() does not accept raw strings in format: \"events\" (pass an object, or use a bytes stream)"
                        .into(),
                )
            }
            (Format::Events, Write::Binary(b)) => {
                self.size += b.len().div_ceil(3) * 4 + 20;
                self.events.push(binary_event(&b));
            }
            (Format::Events, Write::Event(v)) => {
                self.size += v.to_string().len();
                self.events.push(v);
            }
        }
        if self.deadline.is_none() {
            self.deadline = Some(now + self.max_latency);
        }
        if self.size >= self.bundle_bytes {
            return Ok(self.flush(now_ms));
        }
        Ok(None)
    }

    /// Flush the buffer into one frame (None when empty).
    pub fn flush(&mut self, now_ms: u64) -> Option<Value> {
        self.deadline = None;
        self.size = 0;
        let frame = match self.format {
            Format::Bytes if !self.chunks.is_empty() => {
                data_frame(&self.stream_id, self.seq, now_ms, &std::mem::take(&mut self.chunks))
            }
            Format::Events if !self.events.is_empty() => {
                events_frame(&self.stream_id, self.seq, now_ms, std::mem::take(&mut self.events))
            }
            _ => return None,
        };
        self.seq += 1;
        Some(frame)
    }

    /// The `stream_end` marker (after a final flush).
    pub fn end_marker(&self, now_ms: u64) -> Value {
        end_frame(&self.stream_id, self.seq, now_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    // STRM-09 STRM-10: writes are batched and flushed by size; seq increments per flush
    #[test]
    fn flushes_by_size_and_numbers_frames() {
        let t = Instant::now();
        let mut b = Bundler::new("s", Format::Bytes, 8, Duration::from_millis(250));
        assert!(b.write(Write::Text("abc".into()), t, 1).unwrap().is_none());
        assert!(b.deadline().is_some());
        let f = b
            .write(Write::Text("defgh".into()), t, 1)
            .unwrap()
            .expect("size reached");
        assert_eq!(f["seq"], 0);
        assert_eq!(f["chunks"], json!(["abc", "defgh"]));
        assert!(b.deadline().is_none());
        b.write(Write::Text("x".into()), t, 2).unwrap();
        assert_eq!(b.flush(2).unwrap()["seq"], 1);
        assert!(b.flush(3).is_none());
        assert_eq!(b.end_marker(4)["seq"], 2);
    }

    // STRM-09: events streams refuse raw strings and wrap binary as {$binary}
    #[test]
    fn events_streams_refuse_raw_strings_and_wrap_binary() {
        let t = Instant::now();
        let mut b = Bundler::new("s", Format::Events, 4096, DEFAULT_MAX_LATENCY);
        assert!(b
            .write(Write::Text("x".into()), t, 1)
            .unwrap_err()
            .contains("raw strings"));
        b.write(Write::Event(json!({"a": 1})), t, 1).unwrap();
        b.write(Write::Binary(vec![1, 2]), t, 1).unwrap();
        let f = b.flush(1).unwrap();
        assert_eq!(f["seq"], 1, "events streams start at 1");
        assert_eq!(f["events"], json!([{"a": 1}, {"$binary": "AQI="}]));
    }
}
