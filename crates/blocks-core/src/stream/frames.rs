//! Stream wire frames (consumer spec §9.3, agent spec §9.6): building outbound frames, splitting
//! large ones into multipart messages, reassembling multipart groups and normalising inbound
//! frames. Pure logic: no I/O, time is passed in.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Map, Value};

/// Stream payload format (the wire model's).
pub use blocks_wire::event::StreamFormat as Format;

/// Default largest serialized message before multipart splitting.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 16_384;
/// Multipart groups expire after this long.
pub const MULTIPART_TTL: Duration = Duration::from_secs(30);
/// At most this many incomplete multipart groups are kept.
pub const MULTIPART_MAX_GROUPS: usize = 64;

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

/// One written chunk of a bytes stream.
#[derive(Clone, Debug, PartialEq)]
pub enum Chunk {
    /// UTF-8 text (travels as-is).
    Text(String),
    /// Binary (travels as base64).
    Binary(Vec<u8>),
}

/// Build a `stream_data` frame. Unlike the official SDKs, a bundle that mixes text and binary
/// chunks encodes every chunk as base64, so a reader never mis-decodes the text ones.
pub fn data_frame(stream_id: &str, seq: u64, ts: u64, chunks: &[Chunk]) -> Value {
    let binary = chunks.iter().any(|c| matches!(c, Chunk::Binary(_)));
    let encoded: Vec<Value> = chunks
        .iter()
        .map(|c| match (c, binary) {
            (Chunk::Text(t), false) => json!(t),
            (Chunk::Text(t), true) => json!(b64().encode(t.as_bytes())),
            (Chunk::Binary(b), _) => json!(b64().encode(b)),
        })
        .collect();
    json!({
        "type": "stream_data", "protocolVersion": blocks_wire::PROTOCOL_VERSION, "streamId": stream_id,
        "seq": seq, "ts": ts, "encoding": if binary { "base64" } else { "utf8" }, "chunks": encoded,
    })
}

/// Build a `stream_events` frame.
pub fn events_frame(stream_id: &str, seq: u64, ts: u64, events: Vec<Value>) -> Value {
    json!({
        "type": "stream_events", "protocolVersion": blocks_wire::PROTOCOL_VERSION, "streamId": stream_id,
        "seq": seq, "ts": ts, "encoding": "utf8", "events": events,
    })
}

/// Build a `stream_end` marker.
pub fn end_frame(stream_id: &str, seq: u64, ts: u64) -> Value {
    json!({ "type": "stream_end", "protocolVersion": blocks_wire::PROTOCOL_VERSION, "streamId": stream_id, "seq": seq, "ts": ts })
}

/// Split a frame whose JSON exceeds `max_message_size` into multipart messages; a frame that
/// fits is returned alone. `max_message_size` must be above 512.
pub fn split_multipart(frame: &Value, max_message_size: usize, now_ms: u64) -> Vec<Value> {
    let text = frame.to_string();
    if text.len() <= max_message_size || max_message_size <= 512 {
        return vec![frame.clone()];
    }
    let slice = ((max_message_size - 512) * 3 / 4).max(1);
    let bytes = text.as_bytes();
    let total = bytes.len().div_ceil(slice);
    let seq = frame.get("seq").cloned().unwrap_or(Value::Null);
    let id = format!("mp-{now_ms}-{}", seq.as_u64().unwrap_or(0));
    bytes
        .chunks(slice)
        .enumerate()
        .map(|(i, part)| {
            json!({
                "type": frame.get("type").cloned().unwrap_or(Value::Null),
                "protocolVersion": blocks_wire::PROTOCOL_VERSION,
                "streamId": frame.get("streamId").cloned().unwrap_or(Value::Null),
                "seq": seq, "ts": frame.get("ts").cloned().unwrap_or(Value::Null),
                "multipart": { "id": id, "part": i + 1, "total": total },
                "data": b64().encode(part),
            })
        })
        .collect()
}

struct Group {
    total: u64,
    seq: Value,
    kind: Value,
    stream_id: Value,
    parts: HashMap<u64, String>,
    created: Instant,
}

/// Reassembles multipart groups (any arrival order; identical duplicates ignored; a conflicting
/// duplicate or inconsistent header drops the group; groups expire; bounded count).
#[derive(Default)]
pub struct Reassembler {
    groups: HashMap<String, Group>,
    order: Vec<String>,
}

/// Result of offering one message to the reassembler.
#[derive(Debug, PartialEq)]
pub enum Offer {
    /// Not a multipart message: use it as is.
    Whole(Value),
    /// A complete frame was rebuilt.
    Complete(Value),
    /// Stored (incomplete group) or dropped (invalid).
    Pending,
    /// Invalid part, dropped.
    Invalid(String),
}

impl Reassembler {
    /// Offer one inbound message.
    pub fn offer(&mut self, msg: Value, now: Instant) -> Offer {
        self.expire(now);
        let Some(mp) = msg.get("multipart") else {
            return Offer::Whole(msg);
        };
        let id = mp.get("id").and_then(Value::as_str).filter(|s| !s.is_empty());
        let part = mp.get("part").and_then(Value::as_u64);
        let total = mp.get("total").and_then(Value::as_u64);
        let data = msg.get("data").and_then(Value::as_str);
        let (Some(id), Some(part), Some(total), Some(data)) = (id, part, total, data) else {
            return Offer::Invalid("multipart part without id/part/total/data".into());
        };
        if total < 2 || part < 1 || part > total {
            return Offer::Invalid(format!("multipart part {part}/{total} out of range"));
        }
        let id = id.to_string();
        let seq = msg.get("seq").cloned().unwrap_or(Value::Null);
        let kind = msg.get("type").cloned().unwrap_or(Value::Null);
        let stream_id = msg.get("streamId").cloned().unwrap_or(Value::Null);
        if !self.groups.contains_key(&id) {
            if self.groups.len() >= MULTIPART_MAX_GROUPS {
                if let Some(oldest) = self.order.first().cloned() {
                    self.drop_group(&oldest);
                }
            }
            self.groups.insert(
                id.clone(),
                Group {
                    total,
                    seq: seq.clone(),
                    kind: kind.clone(),
                    stream_id: stream_id.clone(),
                    parts: HashMap::new(),
                    created: now,
                },
            );
            self.order.push(id.clone());
        }
        let consistent = self
            .groups
            .get(&id)
            .is_some_and(|g| g.total == total && g.seq == seq && g.kind == kind && g.stream_id == stream_id);
        if !consistent {
            self.drop_group(&id);
            return Offer::Invalid(format!("multipart group {id} has inconsistent parts"));
        }
        let Some(group) = self.groups.get_mut(&id) else {
            return Offer::Pending;
        };
        match group.parts.get(&part) {
            Some(existing) if existing == data => return Offer::Pending,
            Some(_) => {
                self.drop_group(&id);
                return Offer::Invalid(format!("multipart group {id} got a conflicting duplicate part"));
            }
            None => {
                group.parts.insert(part, data.to_string());
            }
        }
        if group.parts.len() as u64 != group.total {
            return Offer::Pending;
        }
        let mut bytes = Vec::new();
        for i in 1..=group.total {
            let Some(p) = group.parts.get(&i) else {
                return Offer::Pending;
            };
            match b64().decode(p) {
                Ok(b) => bytes.extend(b),
                Err(_) => {
                    self.drop_group(&id);
                    return Offer::Invalid(format!("multipart group {id} has a part that is not base64"));
                }
            }
        }
        self.drop_group(&id);
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(v) if v.is_object() => Offer::Complete(v),
            _ => Offer::Invalid(format!("multipart group {id} did not reassemble into a JSON object")),
        }
    }

    fn drop_group(&mut self, id: &str) {
        self.groups.remove(id);
        self.order.retain(|x| x != id);
    }

    fn expire(&mut self, now: Instant) {
        let old: Vec<String> = self
            .groups
            .iter()
            .filter(|(_, g)| now.duration_since(g.created) > MULTIPART_TTL)
            .map(|(k, _)| k.clone())
            .collect();
        for id in old {
            self.drop_group(&id);
        }
    }

    /// Incomplete groups held now.
    pub fn pending_groups(&self) -> usize {
        self.groups.len()
    }
}

/// One normalised inbound item.
#[derive(Clone, Debug, PartialEq)]
pub enum Item {
    /// Decoded chunks of a `stream_data` frame.
    Bytes {
        /// Sequence number.
        seq: u64,
        /// Decoded chunks.
        chunks: Vec<Vec<u8>>,
        /// Wire encoding (`utf8` or `base64`).
        encoding: String,
    },
    /// Events of a `stream_events` frame.
    Events {
        /// Sequence number.
        seq: u64,
        /// The events.
        events: Vec<Value>,
    },
    /// Any other message with an integer `seq`.
    Raw {
        /// Sequence number.
        seq: u64,
        /// The message.
        value: Value,
    },
}

impl Item {
    /// Sequence number.
    pub fn seq(&self) -> u64 {
        match self {
            Item::Bytes { seq, .. } | Item::Events { seq, .. } | Item::Raw { seq, .. } => *seq,
        }
    }
}

/// What one inbound frame is.
#[derive(Clone, Debug, PartialEq)]
pub enum Inbound {
    /// A data item.
    Item(Item),
    /// `stream_end` with its seq (None when the seq is missing or not an integer).
    End(Option<u64>),
    /// Not a valid frame (with the reason).
    Invalid(String),
}

/// Normalise one (reassembled) frame.
pub fn normalise(v: &Value) -> Inbound {
    let Some(o) = v.as_object() else {
        return Inbound::Invalid("stream message is not an object".into());
    };
    let seq = o.get("seq").and_then(Value::as_u64);
    match o.get("type").and_then(Value::as_str) {
        Some("stream_end") => Inbound::End(seq),
        Some("stream_data") => {
            let Some(seq) = seq else {
                return Inbound::Invalid("stream_data without an integer seq".into());
            };
            let encoding = o.get("encoding").and_then(Value::as_str).unwrap_or("utf8");
            let Some(chunks) = o.get("chunks").and_then(Value::as_array).filter(|c| !c.is_empty()) else {
                return Inbound::Invalid(format!("stream_data seq {seq} has no chunks"));
            };
            let mut out = Vec::with_capacity(chunks.len());
            for c in chunks {
                let Some(s) = c.as_str() else {
                    return Inbound::Invalid(format!("stream_data seq {seq} has a non-string chunk"));
                };
                match encoding {
                    "utf8" => out.push(s.as_bytes().to_vec()),
                    "base64" => match b64().decode(s) {
                        Ok(b) => out.push(b),
                        Err(_) => {
                            return Inbound::Invalid(format!("stream_data seq {seq} has a chunk that is not base64"))
                        }
                    },
                    other => return Inbound::Invalid(format!("stream_data seq {seq} has unknown encoding {other:?}")),
                }
            }
            Inbound::Item(Item::Bytes {
                seq,
                chunks: out,
                encoding: encoding.to_string(),
            })
        }
        Some("stream_events") => {
            let Some(seq) = seq else {
                return Inbound::Invalid("stream_events without an integer seq".into());
            };
            match o.get("events").and_then(Value::as_array).filter(|e| !e.is_empty()) {
                Some(events) => Inbound::Item(Item::Events {
                    seq,
                    events: events.clone(),
                }),
                None => Inbound::Invalid(format!("stream_events seq {seq} has no events")),
            }
        }
        _ => match seq {
            Some(seq) => Inbound::Item(Item::Raw {
                seq,
                value: Value::Object(o.clone()),
            }),
            None => Inbound::Invalid("stream message without type or integer seq".into()),
        },
    }
}

/// Convert an events-stream write: JSON values pass through; bytes become `{"$binary": base64}`.
pub fn binary_event(bytes: &[u8]) -> Value {
    let mut m = Map::new();
    m.insert("$binary".into(), json!(b64().encode(bytes)));
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_have_the_wire_shape() {
        let f = data_frame("t-1", 0, 5, &[Chunk::Text("hi".into())]);
        assert_eq!(f["type"], "stream_data");
        assert_eq!(f["encoding"], "utf8");
        assert_eq!(f["chunks"], json!(["hi"]));
        let f = data_frame("t-1", 1, 5, &[Chunk::Text("hi".into()), Chunk::Binary(vec![0, 255])]);
        assert_eq!(f["encoding"], "base64");
        assert_eq!(
            f["chunks"],
            json!(["aGk=", "AP8="]),
            "text chunks are re-encoded in a base64 frame"
        );
        assert_eq!(end_frame("s", 3, 1)["seq"], 3);
        assert_eq!(
            events_frame("s", 1, 1, vec![json!({"a": 1})])["events"],
            json!([{"a": 1}])
        );
    }

    // STRM-14: a message above maxMessageSize is split into parts sharing one seq and reassembled in any order
    #[test]
    fn multipart_round_trip_in_any_order_with_duplicates() {
        let big = "x".repeat(50_000);
        let frame = data_frame("s", 7, 9, &[Chunk::Text(big.clone())]);
        let mut parts = split_multipart(&frame, 16_384, 1);
        assert!(parts.len() >= 4);
        for p in &parts {
            assert!(p.to_string().len() <= 16_384);
            assert_eq!(p["seq"], 7);
        }
        parts.reverse();
        let dup = parts[1].clone();
        parts.insert(2, dup);
        let mut r = Reassembler::default();
        let now = Instant::now();
        let mut out = None;
        for p in parts {
            if let Offer::Complete(v) = r.offer(p, now) {
                out = Some(v);
            }
        }
        assert_eq!(out, Some(frame));
        assert_eq!(r.pending_groups(), 0);
    }

    // STRM-14: invalid parts are dropped, incomplete groups expire
    #[test]
    fn invalid_and_conflicting_parts_are_dropped() {
        let mut r = Reassembler::default();
        let now = Instant::now();
        let part = |n: u64, total: u64, data: &str| json!({"type": "stream_data", "seq": 1, "streamId": "s", "multipart": {"id": "m", "part": n, "total": total}, "data": data});
        assert!(matches!(r.offer(part(0, 2, "AA=="), now), Offer::Invalid(_)));
        assert!(matches!(r.offer(part(3, 2, "AA=="), now), Offer::Invalid(_)));
        assert!(matches!(r.offer(part(1, 1, "AA=="), now), Offer::Invalid(_)));
        assert_eq!(r.offer(part(1, 2, "AA=="), now), Offer::Pending);
        assert!(
            matches!(r.offer(part(1, 2, "AQ=="), now), Offer::Invalid(_)),
            "conflicting duplicate drops the group"
        );
        assert_eq!(r.pending_groups(), 0);
        assert_eq!(r.offer(part(1, 2, "AA=="), now), Offer::Pending);
        assert!(
            matches!(r.offer(part(2, 3, "AA=="), now), Offer::Invalid(_)),
            "inconsistent total"
        );
        assert_eq!(r.offer(part(1, 2, "AA=="), now), Offer::Pending);
        r.offer(json!({"seq": 1}), now + MULTIPART_TTL + Duration::from_secs(1));
        assert_eq!(r.pending_groups(), 0, "expired");
        for i in 0..(MULTIPART_MAX_GROUPS + 5) {
            let p = json!({"type": "x", "seq": 1, "multipart": {"id": format!("g{i}"), "part": 1, "total": 2}, "data": "AA=="});
            r.offer(p, now);
        }
        assert_eq!(r.pending_groups(), MULTIPART_MAX_GROUPS);
    }

    #[test]
    fn normalise_frames() {
        assert_eq!(
            normalise(&json!({"type": "stream_data", "seq": 0, "encoding": "base64", "chunks": ["AP8="]})),
            Inbound::Item(Item::Bytes {
                seq: 0,
                chunks: vec![vec![0, 255]],
                encoding: "base64".into()
            })
        );
        assert_eq!(
            normalise(&json!({"type": "stream_end", "seq": 4})),
            Inbound::End(Some(4))
        );
        assert_eq!(normalise(&json!({"type": "stream_end"})), Inbound::End(None));
        assert!(matches!(
            normalise(&json!({"type": "stream_data", "seq": 0, "chunks": []})),
            Inbound::Invalid(_)
        ));
        assert!(matches!(
            normalise(&json!({"type": "stream_events", "seq": "1", "events": [1]})),
            Inbound::Invalid(_)
        ));
        assert!(matches!(
            normalise(&json!({"type": "other", "seq": 3})),
            Inbound::Item(Item::Raw { seq: 3, .. })
        ));
        assert!(matches!(normalise(&json!("str")), Inbound::Invalid(_)));
        assert!(matches!(
            normalise(&json!({"type": "stream_data", "seq": 0, "encoding": "base64", "chunks": ["!!"]})),
            Inbound::Invalid(_)
        ));
    }
}
