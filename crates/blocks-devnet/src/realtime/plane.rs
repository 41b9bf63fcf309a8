//! The messages of the realtime plane: per channel, the replay cache and the stored history,
//! and the limits that keep them (and the whole plane) within their memory budget.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Messages kept per channel for `tt`-based replay. Readers catch up from this cache after each
/// long-poll, so it must cover the largest lag of a busy reader (a control channel at over a
/// thousand StartTasks per second evicted unread messages when this was 100).
const CACHE_MESSAGES: usize = 10_000;
/// Stream channels keep more: a reader that falls behind a fast writer must not lose frames.
const STREAM_CACHE_MESSAGES: usize = 20_000;
/// Age limit of the replay cache.
pub(super) const CACHE_AGE: Duration = Duration::from_secs(600);
/// Memory limit of one channel's replay cache.
const CACHE_BYTES: usize = 16 * 1024 * 1024;
/// Memory limit of one stream channel's replay cache.
const STREAM_CACHE_BYTES: usize = 32 * 1024 * 1024;
/// Messages kept in one channel's history.
pub(super) const HISTORY_MESSAGES: usize = 10_000;
/// Memory limit of one channel's history.
const HISTORY_BYTES: usize = 16 * 1024 * 1024;
/// Memory limit of everything the plane keeps (caches and history of every channel; a message
/// in both counts twice).
pub const RETAINED_BYTES: usize = 128 * 1024 * 1024;
/// What a channel costs besides its messages (its key twice, the record).
const CHANNEL_OVERHEAD: usize = 256;

/// One published message.
#[derive(Debug, Clone)]
pub struct Message {
    /// Timetoken.
    pub tt: u64,
    /// Channel.
    pub channel: String,
    /// Payload.
    pub payload: Value,
    /// Publish meta.
    pub meta: Option<Value>,
    /// Publisher uuid.
    pub publisher: String,
    /// When it was published (for cache expiry).
    pub at: Instant,
    /// Estimated memory it takes.
    pub size: usize,
}

/// Estimated heap memory of a JSON value (without the value itself), computed without recursion.
pub fn json_heap_size(v: &Value) -> usize {
    const NODE: usize = std::mem::size_of::<Value>();
    let mut total = 0;
    let mut stack: Vec<&Value> = vec![v];
    while let Some(v) = stack.pop() {
        match v {
            Value::String(s) => total += s.capacity(),
            Value::Array(a) => {
                total += a.capacity() * NODE;
                stack.extend(a.iter());
            }
            Value::Object(o) => {
                // key, value and a share of the B-tree node per entry
                for (k, child) in o {
                    total += k.capacity() + std::mem::size_of::<String>() + NODE + 16;
                    stack.push(child);
                }
            }
            _ => {}
        }
    }
    total
}

impl Message {
    pub(super) fn new(
        tt: u64,
        channel: String,
        payload: Value,
        meta: Option<Value>,
        publisher: String,
        at: Instant,
    ) -> Message {
        let size = std::mem::size_of::<Message>()
            + 64 // the Arc and the queue slots
            + channel.capacity()
            + publisher.capacity()
            + json_heap_size(&payload)
            + meta.as_ref().map_or(0, json_heap_size);
        Message {
            tt,
            channel,
            payload,
            meta,
            publisher,
            at,
            size,
        }
    }
}

/// A channel of a keyset: (subscribe key, channel).
pub(super) type Key = (String, String);

#[derive(Default)]
pub(super) struct Channel {
    pub(super) recent: VecDeque<Arc<Message>>,
    pub(super) stored: VecDeque<Arc<Message>>,
    recent_bytes: usize,
    stored_bytes: usize,
    /// The timetoken this channel is filed under in `Plane::oldest`.
    filed: Option<u64>,
}

impl Channel {
    fn oldest(&self) -> Option<u64> {
        match (self.recent.front(), self.stored.front()) {
            (Some(a), Some(b)) => Some(a.tt.min(b.tt)),
            (Some(a), None) => Some(a.tt),
            (None, Some(b)) => Some(b.tt),
            (None, None) => None,
        }
    }
}

#[derive(Default)]
pub(super) struct Plane {
    pub(super) last_tt: u64,
    pub(super) channels: HashMap<Key, Channel>,
    /// Estimated memory of everything kept.
    pub(super) bytes: usize,
    /// Every channel by the timetoken of its oldest message: where the network-wide limit drops
    /// messages first (timetokens are unique across the plane).
    pub(super) oldest: BTreeMap<u64, Key>,
    /// History dropped since the last database prune: per channel, the newest dropped timetoken.
    pub(super) trimmed: HashMap<Key, u64>,
}

impl Plane {
    /// Keep `msg` (in the cache and/or the history), then apply every limit.
    pub(super) fn keep(&mut self, key: Key, msg: Arc<Message>, cache: bool, history: bool) {
        if !self.channels.contains_key(&key) {
            self.bytes += CHANNEL_OVERHEAD + 2 * (key.0.len() + key.1.len());
        }
        let stream = key.1.starts_with("stream.");
        let ch = self.channels.entry(key.clone()).or_default();
        if cache {
            ch.recent_bytes += msg.size;
            self.bytes += msg.size;
            ch.recent.push_back(msg.clone());
        }
        if history {
            ch.stored_bytes += msg.size;
            self.bytes += msg.size;
            ch.stored.push_back(msg);
        }
        let (cap, cap_bytes) = if stream {
            (STREAM_CACHE_MESSAGES, STREAM_CACHE_BYTES)
        } else {
            (CACHE_MESSAGES, CACHE_BYTES)
        };
        while ch.recent.len() > cap
            || ch.recent_bytes > cap_bytes
            || ch.recent.front().is_some_and(|m| m.at.elapsed() > CACHE_AGE)
        {
            let Some(m) = ch.recent.pop_front() else { break };
            ch.recent_bytes -= m.size;
            self.bytes -= m.size;
        }
        while ch.stored.len() > HISTORY_MESSAGES || ch.stored_bytes > HISTORY_BYTES {
            let Some(m) = ch.stored.pop_front() else { break };
            ch.stored_bytes -= m.size;
            self.bytes -= m.size;
            let t = self.trimmed.entry(key.clone()).or_default();
            *t = (*t).max(m.tt);
        }
        self.refile(&key);
        while self.bytes > RETAINED_BYTES {
            if !self.drop_oldest() {
                break;
            }
        }
    }

    /// Re-file a channel under its oldest message (or forget it once it is empty).
    fn refile(&mut self, key: &Key) {
        let Some(ch) = self.channels.get_mut(key) else { return };
        let now = ch.oldest();
        if now == ch.filed {
            return;
        }
        if let Some(old) = ch.filed.take() {
            self.oldest.remove(&old);
        }
        match now {
            Some(tt) => {
                ch.filed = Some(tt);
                self.oldest.insert(tt, key.clone());
            }
            None => {
                self.channels.remove(key);
                self.bytes = self
                    .bytes
                    .saturating_sub(CHANNEL_OVERHEAD + 2 * (key.0.len() + key.1.len()));
            }
        }
    }

    /// Drop the oldest message of the whole plane; false when there is none.
    fn drop_oldest(&mut self) -> bool {
        let Some((&tt, key)) = self.oldest.iter().next() else {
            return false;
        };
        let key = key.clone();
        if let Some(ch) = self.channels.get_mut(&key) {
            if ch.recent.front().is_some_and(|m| m.tt == tt) {
                if let Some(m) = ch.recent.pop_front() {
                    ch.recent_bytes -= m.size;
                    self.bytes -= m.size;
                }
            }
            if ch.stored.front().is_some_and(|m| m.tt == tt) {
                if let Some(m) = ch.stored.pop_front() {
                    ch.stored_bytes -= m.size;
                    self.bytes -= m.size;
                    let t = self.trimmed.entry(key.clone()).or_default();
                    *t = (*t).max(m.tt);
                }
            }
        } else {
            self.oldest.remove(&tt);
            return true;
        }
        self.refile(&key);
        true
    }

    /// Drop cached messages older than the replay window on every channel.
    pub(super) fn expire(&mut self) {
        let keys: Vec<Key> = self
            .channels
            .iter()
            .filter(|(_, ch)| ch.recent.front().is_some_and(|m| m.at.elapsed() > CACHE_AGE))
            .map(|(k, _)| k.clone())
            .collect();
        for key in keys {
            if let Some(ch) = self.channels.get_mut(&key) {
                while ch.recent.front().is_some_and(|m| m.at.elapsed() > CACHE_AGE) {
                    if let Some(m) = ch.recent.pop_front() {
                        ch.recent_bytes -= m.size;
                        self.bytes -= m.size;
                    }
                }
            }
            self.refile(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_heap_size_counts_parsed_values() {
        let v: Value = serde_json::from_str(&format!("[{}0]", "0,".repeat(999))).unwrap();
        assert!(json_heap_size(&v) >= 1000 * std::mem::size_of::<Value>());
        let deep: Value = serde_json::from_str(&format!("{}1{}", "[".repeat(120), "]".repeat(120))).unwrap();
        assert!(json_heap_size(&deep) > 0);
    }
}
