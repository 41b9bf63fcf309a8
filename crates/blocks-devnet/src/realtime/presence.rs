//! Presence on the realtime plane: who is subscribed to or heartbeating on which channel, with
//! what state, until its timeout passes; bounded in memory.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::plane::{json_heap_size, Key};
use super::Realtime;

/// Memory limit of the presence table.
const PRESENCE_BYTES: usize = 32 * 1024 * 1024;
/// A presence entry is dropped this long after its timeout passed (the instance liveness check
/// in `Net::tick` looks at timeout + 5 s, before the entry goes).
const PRESENCE_GRACE: Duration = Duration::from_secs(10);

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
pub(super) struct PresenceTable {
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

impl Realtime {
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
}
