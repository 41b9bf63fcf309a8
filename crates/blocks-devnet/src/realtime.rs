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

mod plane;
mod presence;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tokio::sync::Notify;

use crate::filter::Filter;
pub use plane::{Message, RETAINED_BYTES};
use plane::{Plane, CACHE_AGE};
use presence::PresenceTable;

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
}

#[cfg(test)]
mod tests {
    use super::plane::HISTORY_MESSAGES;
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
}
