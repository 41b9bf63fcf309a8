//! The realtime plane: channels per subscribe key, timetokens, the short replay cache, stored
//! history, long-poll wake-ups and presence.
//!
//! Memory is bounded (issue 20): anyone may publish to an open channel, so what the plane keeps
//! is capped per channel and network-wide, oldest dropped first. Sizes are estimates of the
//! memory a message takes (its parsed JSON, not its text: `[0,0,…]` takes 16 times its text).
//!
//! | what | limit |
//! |---|---|
//! | one message (publish) | 32 KiB of JSON text, message and meta (`request::MAX_MESSAGE_BYTES`) |
//! | replay cache of a channel | 10,000 messages (stream channels 20,000), 16 MiB (stream channels 32 MiB), 10 minutes |
//! | history of a channel | 10,000 messages, 16 MiB |
//! | everything the plane keeps | 128 MiB ([`RETAINED_BYTES`]): past it the oldest messages of the whole network go first |
//! | presence | an entry expires 10 s after its timeout (≤ 300 s); all entries together ≤ 32 MiB, least recently seen dropped first |
//!
//! History dropped by these limits is deleted from the database as well (at the next prune),
//! so a restart does not load it back.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tokio::sync::Notify;

use crate::filter::Filter;

/// Messages kept per channel for `tt`-based replay. Readers catch up from this cache after each
/// long-poll, so it must cover the largest lag of a busy reader (a control channel at over a
/// thousand StartTasks per second evicted unread messages when this was 100).
const CACHE_MESSAGES: usize = 10_000;
/// Stream channels keep more: a reader that falls behind a fast writer must not lose frames.
const STREAM_CACHE_MESSAGES: usize = 20_000;
/// Age limit of the replay cache.
const CACHE_AGE: Duration = Duration::from_secs(600);
/// Memory limit of one channel's replay cache.
const CACHE_BYTES: usize = 16 * 1024 * 1024;
/// Memory limit of one stream channel's replay cache.
const STREAM_CACHE_BYTES: usize = 32 * 1024 * 1024;
/// Messages kept in one channel's history.
const HISTORY_MESSAGES: usize = 10_000;
/// Memory limit of one channel's history.
const HISTORY_BYTES: usize = 16 * 1024 * 1024;
/// Memory limit of everything the plane keeps (caches and history of every channel; a message
/// in both counts twice).
pub const RETAINED_BYTES: usize = 128 * 1024 * 1024;
/// What a channel costs besides its messages (its key twice, the record).
const CHANNEL_OVERHEAD: usize = 256;
/// Memory limit of the presence table.
const PRESENCE_BYTES: usize = 32 * 1024 * 1024;
/// A presence entry is dropped this long after its timeout passed (the instance liveness check
/// in `Net::tick` looks at timeout + 5 s, before the entry goes).
const PRESENCE_GRACE: Duration = Duration::from_secs(10);

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
    fn new(tt: u64, channel: String, payload: Value, meta: Option<Value>, publisher: String, at: Instant) -> Message {
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

type Key = (String, String);

#[derive(Default)]
struct Channel {
    recent: VecDeque<Arc<Message>>,
    stored: VecDeque<Arc<Message>>,
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
struct Plane {
    last_tt: u64,
    channels: HashMap<Key, Channel>,
    /// Estimated memory of everything kept.
    bytes: usize,
    /// Every channel by the timetoken of its oldest message: where the network-wide limit drops
    /// messages first (timetokens are unique across the plane).
    oldest: BTreeMap<u64, Key>,
    /// History dropped since the last database prune: per channel, the newest dropped timetoken.
    trimmed: HashMap<Key, u64>,
}

impl Plane {
    /// Keep `msg` (in the cache and/or the history), then apply every limit.
    fn keep(&mut self, key: Key, msg: Arc<Message>, cache: bool, history: bool) {
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
    fn expire(&mut self) {
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

/// Presence of one uuid on one channel.
#[derive(Debug, Clone)]
pub struct Presence {
    /// Last subscribe or heartbeat.
    pub last_seen: Instant,
    /// Presence timeout announced by the client.
    pub timeout: Duration,
    /// State set by the client.
    pub state: Option<Value>,
}

impl Presence {
    fn expired(&self) -> bool {
        self.last_seen.elapsed() > self.timeout + PRESENCE_GRACE
    }
}

#[derive(Default)]
struct PresenceTable {
    entries: HashMap<Key, Presence>,
    /// Estimated memory of the entries.
    bytes: usize,
}

impl PresenceTable {
    fn entry_size(key: &Key, p: &Presence) -> usize {
        160 + key.0.len() + key.1.len() + p.state.as_ref().map_or(0, json_heap_size)
    }

    /// Update (or create) the entry of `key`; the table's size follows.
    fn update(&mut self, key: Key, f: impl FnOnce(&mut Presence)) {
        let before = self.entries.get(&key).map(|p| Self::entry_size(&key, p));
        let size_key = key.clone();
        let e = self.entries.entry(key).or_insert(Presence {
            last_seen: Instant::now(),
            timeout: Duration::from_secs(300),
            state: None,
        });
        f(e);
        let after = Self::entry_size(&size_key, e);
        self.bytes = self.bytes.saturating_sub(before.unwrap_or(0)) + after;
        if self.bytes > PRESENCE_BYTES {
            self.shrink();
        }
    }

    fn remove(&mut self, key: &Key) {
        if let Some(p) = self.entries.remove(key) {
            self.bytes = self.bytes.saturating_sub(Self::entry_size(key, &p));
        }
    }

    /// Drop expired entries.
    fn expire(&mut self) {
        let dead: Vec<Key> = self
            .entries
            .iter()
            .filter(|(_, p)| p.expired())
            .map(|(k, _)| k.clone())
            .collect();
        for k in dead {
            self.remove(&k);
        }
    }

    /// Over the memory limit: expired entries go, then the least recently seen until the table
    /// is at three quarters of the limit (so this runs rarely, not on every update).
    fn shrink(&mut self) {
        self.expire();
        if self.bytes <= PRESENCE_BYTES {
            return;
        }
        let mut by_age: Vec<(Instant, Key)> = self.entries.iter().map(|(k, p)| (p.last_seen, k.clone())).collect();
        by_age.sort_by_key(|(seen, _)| *seen);
        tracing::warn!(target: "blocks::devnet", "presence table over {PRESENCE_BYTES} bytes: dropping the least recently seen entries");
        for (_, k) in by_age {
            if self.bytes <= PRESENCE_BYTES / 4 * 3 {
                break;
            }
            self.remove(&k);
        }
    }
}

/// The realtime plane.
#[derive(Default)]
pub struct Realtime {
    plane: Mutex<Plane>,
    wake: Notify,
    presence: Mutex<PresenceTable>,
    /// Long-polls waiting for a message right now.
    pub held: std::sync::atomic::AtomicUsize,
    /// Where every message is written before its timetoken is returned (None: in memory only).
    store: Option<std::sync::Arc<crate::store::Store>>,
}

fn now_tt() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| (d.as_nanos() / 100) as u64)
        .unwrap_or(0)
}

impl Realtime {
    /// A plane backed by `store`, holding the stored messages again: history, and the replay
    /// window (so a reader that reconnects with its cursor after a restart catches up). The
    /// messages are read one by one and kept within the same limits as when they were published.
    pub fn restore(
        store: std::sync::Arc<crate::store::Store>,
        since_tt: u64,
        last_tt: u64,
    ) -> Result<Realtime, crate::store::StoreError> {
        let rt = Realtime {
            store: Some(store.clone()),
            ..Realtime::default()
        };
        {
            let mut p = rt.plane.lock().unwrap_or_else(|e| e.into_inner());
            let now = now_tt();
            p.last_tt = last_tt;
            store.for_each_message(since_tt, |m| {
                let age = Duration::from_nanos(now.saturating_sub(m.tt).saturating_mul(100));
                let at = Instant::now().checked_sub(age).unwrap_or_else(Instant::now);
                let msg = Arc::new(Message::new(
                    m.tt,
                    m.channel.clone(),
                    m.payload,
                    m.meta,
                    m.publisher,
                    at,
                ));
                p.keep((m.sub_key, m.channel), msg, age < CACHE_AGE, m.history);
            })?;
        }
        Ok(rt)
    }

    /// Housekeeping: drop cached messages that left the replay window, delete them from the
    /// database, and delete the history the limits dropped.
    pub fn prune_store(&self) {
        let trimmed = {
            let mut p = self.plane.lock().unwrap_or_else(|e| e.into_inner());
            p.expire();
            std::mem::take(&mut p.trimmed)
        };
        if let Some(store) = &self.store {
            if let Err(e) = store.prune_messages(Self::replay_window_start()) {
                tracing::warn!(target: "blocks::devnet", "{e}");
            }
            for ((sub_key, channel), tt) in trimmed {
                if let Err(e) = store.trim_history(&sub_key, &channel, tt) {
                    tracing::warn!(target: "blocks::devnet", "{e}");
                }
            }
        }
    }

    /// The oldest timetoken still in the replay window.
    pub fn replay_window_start() -> u64 {
        now_tt().saturating_sub((CACHE_AGE.as_nanos() / 100) as u64)
    }

    /// The latest timetoken handed out (or now, if larger).
    pub fn current_tt(&self) -> u64 {
        let mut p = self.plane.lock().unwrap_or_else(|e| e.into_inner());
        let tt = now_tt().max(p.last_tt);
        p.last_tt = tt;
        tt
    }

    /// Estimated memory of the messages kept (caches and history).
    pub fn retained_bytes(&self) -> usize {
        self.plane.lock().unwrap_or_else(|e| e.into_inner()).bytes
    }

    /// Append a message; returns it (with its timetoken) and wakes long-polls.
    pub fn publish(
        &self,
        sub_key: &str,
        channel: &str,
        payload: Value,
        meta: Option<Value>,
        publisher: &str,
        store: bool,
    ) -> Arc<Message> {
        let msg = {
            let mut p = self.plane.lock().unwrap_or_else(|e| e.into_inner());
            let tt = now_tt().max(p.last_tt + 1);
            p.last_tt = tt;
            let msg = Arc::new(Message::new(
                tt,
                channel.to_string(),
                payload,
                meta,
                publisher.to_string(),
                Instant::now(),
            ));
            p.keep((sub_key.to_string(), channel.to_string()), msg.clone(), true, store);
            // durable before anyone learns the timetoken (still under the plane lock, so the
            // database holds messages in timetoken order)
            if let Some(db) = &self.store {
                if let Err(e) = db.put_message(sub_key, channel, tt, &msg.payload, msg.meta.as_ref(), publisher, store)
                {
                    tracing::error!(target: "blocks::devnet", "{e}");
                }
            }
            msg
        };
        self.wake.notify_waiters();
        msg
    }

    /// Messages newer than `tt` on `channels` passing `filter`, and the cursor to return.
    pub fn poll(
        &self,
        sub_key: &str,
        channels: &[String],
        tt: u64,
        filter: Option<&Filter>,
    ) -> (Vec<Arc<Message>>, u64) {
        let mut p = self.plane.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<Arc<Message>> = Vec::new();
        for c in channels {
            if let Some(ch) = p.channels.get(&(sub_key.to_string(), c.clone())) {
                out.extend(
                    ch.recent
                        .iter()
                        .filter(|m| m.tt > tt && filter.is_none_or(|f| f.matches(m.meta.as_ref())))
                        .cloned(),
                );
            }
        }
        out.sort_by_key(|m| m.tt);
        let cursor = match out.last() {
            Some(m) => m.tt,
            None => {
                let now = now_tt().max(p.last_tt);
                p.last_tt = now;
                now.max(tt)
            }
        };
        (out, cursor)
    }

    /// A future that completes on the next publish (create it before polling to avoid a race).
    pub fn notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.wake.notified()
    }

    /// Wake every held long-poll (shutdown).
    pub fn wake_all(&self) {
        self.wake.notify_waiters();
    }

    /// Stored history: without `start`, the newest `max`; with `start`, the newest `max` older than it.
    pub fn history(
        &self,
        sub_key: &str,
        channel: &str,
        max: usize,
        start: Option<u64>,
        end: Option<u64>,
    ) -> Vec<Arc<Message>> {
        let p = self.plane.lock().unwrap_or_else(|e| e.into_inner());
        let Some(ch) = p.channels.get(&(sub_key.to_string(), channel.to_string())) else {
            return Vec::new();
        };
        let eligible: Vec<&Arc<Message>> = ch
            .stored
            .iter()
            .filter(|m| start.is_none_or(|s| m.tt < s) && end.is_none_or(|e| m.tt >= e))
            .collect();
        let from = eligible.len().saturating_sub(max);
        eligible[from..].iter().map(|m| Arc::clone(m)).collect()
    }

    fn presence_table(&self) -> std::sync::MutexGuard<'_, PresenceTable> {
        self.presence.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Record a subscribe or heartbeat from `uuid` on `channels`.
    pub fn seen(&self, uuid: &str, channels: &[String], timeout: Option<Duration>, state: Option<&Value>) {
        let mut pr = self.presence_table();
        for c in channels {
            pr.update((c.clone(), uuid.to_string()), |e| {
                e.last_seen = Instant::now();
                if let Some(t) = timeout {
                    e.timeout = t;
                }
                if let Some(s) = state.and_then(|s| s.get(c)) {
                    e.state = Some(s.clone());
                }
            });
        }
    }

    /// Set presence state.
    pub fn set_state(&self, uuid: &str, channel: &str, state: Value) {
        self.presence_table()
            .update((channel.to_string(), uuid.to_string()), |e| {
                e.last_seen = Instant::now();
                e.state = Some(state);
            });
    }

    /// Forget `uuid` on `channels`.
    pub fn leave(&self, uuid: &str, channels: &[String]) {
        let mut pr = self.presence_table();
        for c in channels {
            pr.remove(&(c.clone(), uuid.to_string()));
        }
    }

    /// Drop presence entries whose timeout passed (plus a grace).
    pub fn expire_presence(&self) {
        self.presence_table().expire();
    }

    /// Presence entries held now.
    pub fn presence_entries(&self) -> usize {
        self.presence_table().entries.len()
    }

    /// Presence of `uuid` on `channel`.
    pub fn presence_of(&self, uuid: &str, channel: &str) -> Option<Presence> {
        self.presence_table()
            .entries
            .get(&(channel.to_string(), uuid.to_string()))
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn timetokens_increase_and_poll_is_stateless() {
        let rt = Realtime::default();
        let a = rt.publish("s", "c", json!(1), None, "u", true);
        let b = rt.publish("s", "c", json!(2), None, "u", false);
        assert!(b.tt > a.tt);
        let (m1, cur) = rt.poll("s", &["c".into()], a.tt - 1, None);
        let (m2, _) = rt.poll("s", &["c".into()], a.tt - 1, None);
        assert_eq!(m1.len(), 2);
        assert_eq!(m2.len(), 2);
        assert_eq!(cur, b.tt);
        assert_eq!(rt.history("s", "c", 100, None, None).len(), 1, "store=0 is not history");
        assert!(
            rt.poll("other", &["c".into()], 0, None).0.is_empty(),
            "sub keys are namespaces"
        );
        let (none, cur2) = rt.poll("s", &["c".into()], b.tt, None);
        assert!(none.is_empty());
        assert!(cur2 >= b.tt);
    }

    #[test]
    fn history_pages() {
        let rt = Realtime::default();
        let tts: Vec<u64> = (0..5)
            .map(|i| rt.publish("s", "c", json!(i), None, "u", true).tt)
            .collect();
        let newest = rt.history("s", "c", 2, None, None);
        assert_eq!(newest.iter().map(|m| m.tt).collect::<Vec<_>>(), tts[3..].to_vec());
        let older = rt.history("s", "c", 2, Some(tts[3]), None);
        assert_eq!(older.iter().map(|m| m.tt).collect::<Vec<_>>(), tts[1..3].to_vec());
    }

    #[test]
    fn history_is_capped_per_channel_oldest_first() {
        let rt = Realtime::default();
        let first = rt.publish("s", "h", json!(0), None, "u", true).tt;
        for i in 1..=HISTORY_MESSAGES {
            rt.publish("s", "h", json!(i), None, "u", true);
        }
        let all = rt.history("s", "h", usize::MAX, None, None);
        assert_eq!(all.len(), HISTORY_MESSAGES);
        assert!(all[0].tt > first, "the oldest went");
        assert_eq!(all.last().map(|m| m.payload.clone()), Some(json!(HISTORY_MESSAGES)));
        let trimmed = rt.plane.lock().unwrap().trimmed.clone();
        assert_eq!(trimmed.get(&("s".to_string(), "h".to_string())), Some(&first));
    }

    #[test]
    fn the_whole_plane_stays_within_its_budget() {
        let rt = Realtime::default();
        // each message is 4,096 zeros: about 128 KiB of parsed JSON, a fifth of it as text
        let dense = Value::Array(vec![json!(0); 4096]);
        let mut first = None;
        for i in 0..2_000 {
            let m = rt.publish("s", &format!("open.{i}"), dense.clone(), None, "u", true);
            first.get_or_insert(m.tt);
            assert!(rt.retained_bytes() <= RETAINED_BYTES);
        }
        assert!(rt.retained_bytes() > RETAINED_BYTES / 2, "{}", rt.retained_bytes());
        // the oldest channels went entirely, the newest is whole
        assert!(rt.history("s", "open.0", 100, None, None).is_empty());
        assert!(rt.poll("s", &["open.0".into()], 0, None).0.is_empty());
        assert_eq!(rt.history("s", "open.1999", 100, None, None).len(), 1);
        let p = rt.plane.lock().unwrap();
        assert_eq!(p.oldest.len(), p.channels.len());
        assert!(p.channels.len() < 2_000);
    }

    #[test]
    fn presence_entries_expire_after_their_timeout() {
        let rt = Realtime::default();
        rt.seen("u1", &["c".into()], Some(Duration::from_secs(0)), None);
        rt.seen("u2", &["c".into()], Some(Duration::from_secs(300)), None);
        // backdate u1 past its timeout and the grace
        rt.presence_table()
            .entries
            .get_mut(&("c".to_string(), "u1".to_string()))
            .unwrap()
            .last_seen = Instant::now() - PRESENCE_GRACE - Duration::from_secs(1);
        rt.expire_presence();
        assert!(rt.presence_of("u1", "c").is_none());
        assert!(rt.presence_of("u2", "c").is_some());
        assert_eq!(rt.presence_entries(), 1);
    }

    #[test]
    fn json_heap_size_counts_parsed_values() {
        let v: Value = serde_json::from_str(&format!("[{}0]", "0,".repeat(999))).unwrap();
        assert!(json_heap_size(&v) >= 1000 * std::mem::size_of::<Value>());
        let deep: Value = serde_json::from_str(&format!("{}1{}", "[".repeat(120), "]".repeat(120))).unwrap();
        assert!(json_heap_size(&deep) > 0);
    }
}
