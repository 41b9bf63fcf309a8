//! The realtime plane: channels per subscribe key, timetokens, the short replay cache, stored
//! history, long-poll wake-ups and presence.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
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
}

#[derive(Default)]
struct Channel {
    recent: VecDeque<Message>,
    stored: Vec<Message>,
}

#[derive(Default)]
struct Plane {
    last_tt: u64,
    channels: HashMap<(String, String), Channel>,
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

/// The realtime plane.
#[derive(Default)]
pub struct Realtime {
    plane: Mutex<Plane>,
    wake: Notify,
    presence: Mutex<HashMap<(String, String), Presence>>,
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
    /// window (so a reader that reconnects with its cursor after a restart catches up).
    pub fn restore(
        store: std::sync::Arc<crate::store::Store>,
        messages: Vec<crate::store::StoredMessage>,
        last_tt: u64,
    ) -> Realtime {
        let rt = Realtime {
            store: Some(store),
            ..Realtime::default()
        };
        {
            let mut p = rt.plane.lock().unwrap_or_else(|e| e.into_inner());
            let now = now_tt();
            p.last_tt = last_tt;
            for m in messages {
                let age = Duration::from_nanos(now.saturating_sub(m.tt).saturating_mul(100));
                let msg = Message {
                    tt: m.tt,
                    channel: m.channel.clone(),
                    payload: m.payload,
                    meta: m.meta,
                    publisher: m.publisher,
                    at: Instant::now().checked_sub(age).unwrap_or_else(Instant::now),
                };
                let ch = p.channels.entry((m.sub_key, m.channel)).or_default();
                if m.history {
                    ch.stored.push(msg.clone());
                }
                if age < CACHE_AGE {
                    ch.recent.push_back(msg);
                }
            }
            for (key, ch) in p.channels.iter_mut() {
                let cap = if key.1.starts_with("stream.") {
                    STREAM_CACHE_MESSAGES
                } else {
                    CACHE_MESSAGES
                };
                while ch.recent.len() > cap {
                    ch.recent.pop_front();
                }
            }
        }
        rt
    }

    /// Drop stored messages that left the replay window (history stays).
    pub fn prune_store(&self) {
        if let Some(store) = &self.store {
            if let Err(e) = store.prune_messages(Self::replay_window_start()) {
                tracing::warn!(target: "blocks::devnet", "{e}");
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

    /// Append a message; returns its timetoken and wakes long-polls.
    pub fn publish(
        &self,
        sub_key: &str,
        channel: &str,
        payload: Value,
        meta: Option<Value>,
        publisher: &str,
        store: bool,
    ) -> Message {
        let msg = {
            let mut p = self.plane.lock().unwrap_or_else(|e| e.into_inner());
            let tt = now_tt().max(p.last_tt + 1);
            p.last_tt = tt;
            let msg = Message {
                tt,
                channel: channel.to_string(),
                payload,
                meta,
                publisher: publisher.to_string(),
                at: Instant::now(),
            };
            let ch = p
                .channels
                .entry((sub_key.to_string(), channel.to_string()))
                .or_default();
            ch.recent.push_back(msg.clone());
            let cap = if channel.starts_with("stream.") {
                STREAM_CACHE_MESSAGES
            } else {
                CACHE_MESSAGES
            };
            while ch.recent.len() > cap || ch.recent.front().is_some_and(|m| m.at.elapsed() > CACHE_AGE) {
                ch.recent.pop_front();
            }
            if store {
                ch.stored.push(msg.clone());
            }
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
    pub fn poll(&self, sub_key: &str, channels: &[String], tt: u64, filter: Option<&Filter>) -> (Vec<Message>, u64) {
        let mut p = self.plane.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<Message> = Vec::new();
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
    ) -> Vec<Message> {
        let p = self.plane.lock().unwrap_or_else(|e| e.into_inner());
        let Some(ch) = p.channels.get(&(sub_key.to_string(), channel.to_string())) else {
            return Vec::new();
        };
        let eligible: Vec<&Message> = ch
            .stored
            .iter()
            .filter(|m| start.is_none_or(|s| m.tt < s) && end.is_none_or(|e| m.tt >= e))
            .collect();
        let from = eligible.len().saturating_sub(max);
        eligible[from..].iter().map(|m| (*m).clone()).collect()
    }

    /// Record a subscribe or heartbeat from `uuid` on `channels`.
    pub fn seen(&self, uuid: &str, channels: &[String], timeout: Option<Duration>, state: Option<&Value>) {
        let mut pr = self.presence.lock().unwrap_or_else(|e| e.into_inner());
        for c in channels {
            let e = pr.entry((c.clone(), uuid.to_string())).or_insert(Presence {
                last_seen: Instant::now(),
                timeout: Duration::from_secs(300),
                state: None,
            });
            e.last_seen = Instant::now();
            if let Some(t) = timeout {
                e.timeout = t;
            }
            if let Some(s) = state.and_then(|s| s.get(c)) {
                e.state = Some(s.clone());
            }
        }
    }

    /// Set presence state.
    pub fn set_state(&self, uuid: &str, channel: &str, state: Value) {
        let mut pr = self.presence.lock().unwrap_or_else(|e| e.into_inner());
        let e = pr.entry((channel.to_string(), uuid.to_string())).or_insert(Presence {
            last_seen: Instant::now(),
            timeout: Duration::from_secs(300),
            state: None,
        });
        e.last_seen = Instant::now();
        e.state = Some(state);
    }

    /// Forget `uuid` on `channels`.
    pub fn leave(&self, uuid: &str, channels: &[String]) {
        let mut pr = self.presence.lock().unwrap_or_else(|e| e.into_inner());
        for c in channels {
            pr.remove(&(c.clone(), uuid.to_string()));
        }
    }

    /// Presence of `uuid` on `channel`.
    pub fn presence_of(&self, uuid: &str, channel: &str) -> Option<Presence> {
        self.presence
            .lock()
            .unwrap_or_else(|e| e.into_inner())
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
}
