//! The shared state of a running devnet ([`Net`]): its settings, the realtime plane, the records
//! and the database, the file store; publishing into the realtime plane with the task hooks, and
//! the periodic work (instance liveness, pipe expiry, unacknowledged tasks).

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::Notify;

use crate::clock::now_ms;
use crate::config::DevnetConfig;
use crate::realtime::Realtime;
use crate::state::{Effect, Records, DISPATCH_ATTEMPTS};
use crate::{files, store};

/// How long an instance that left its control channel may still finish its tasks.
const LEAVE_GRACE: Duration = Duration::from_secs(30);

/// Keys of the two keysets.
pub const FREE_KEYS: (&str, &str) = ("pub-c-devnet-free", "sub-c-devnet-free");
/// Keys of the two keysets.
pub const PAID_KEYS: (&str, &str) = ("pub-c-devnet-paid", "sub-c-devnet-paid");

/// A message held back by the chaos knob (`streams::chaotic_publish`): (payload, meta, publisher).
pub(crate) type Held = (Value, Option<Value>, String);
/// Per stream channel: the held message and a publish counter.
pub(crate) type ChaosSlot = (Option<Held>, u64);

/// Shared state of a running devnet.
pub(crate) struct Net {
    pub cfg: DevnetConfig,
    /// Per stream channel: a message held back by the chaos knob, and a counter.
    /// A weak handle to itself, for background work started from request handlers.
    pub me: std::sync::Weak<Net>,
    pub chaos: Mutex<std::collections::HashMap<String, ChaosSlot>>,
    pub url: String,
    pub rt: Realtime,
    pub records: Mutex<Records>,
    pub stopped: AtomicBool,
    pub stop_notify: Notify,
    pub files: files::Files,
    pub service_token: String,
    /// The database (None: an in-memory network).
    pub store: Option<Arc<store::Store>>,
    /// Connections open now.
    pub open_connections: std::sync::atomic::AtomicUsize,
}

/// The records, locked; changes made through it are written to the database when it is dropped
/// (before the request that made them is answered).
pub(crate) struct RecordsGuard<'a> {
    guard: std::sync::MutexGuard<'a, Records>,
    store: Option<&'a store::Store>,
}

impl std::ops::Deref for RecordsGuard<'_> {
    type Target = Records;
    fn deref(&self) -> &Records {
        &self.guard
    }
}

impl std::ops::DerefMut for RecordsGuard<'_> {
    fn deref_mut(&mut self) -> &mut Records {
        &mut self.guard
    }
}

impl Drop for RecordsGuard<'_> {
    fn drop(&mut self) {
        if self.guard.dirty.is_empty() {
            return;
        }
        let dirty = std::mem::take(&mut self.guard.dirty);
        if let Some(store) = self.store {
            if let Err(e) = store.flush(&self.guard.changes(&dirty)) {
                tracing::error!(target: "blocks::devnet", "{e}");
            }
        }
    }
}

impl Net {
    pub fn records(&self) -> RecordsGuard<'_> {
        RecordsGuard {
            guard: self.records.lock().unwrap_or_else(|e| e.into_inner()),
            store: self.store.as_deref(),
        }
    }

    /// Keys (publish, subscribe) of a billing mode.
    pub fn keys(billing: &str) -> (&'static str, &'static str) {
        if billing == "paid" {
            PAID_KEYS
        } else {
            FREE_KEYS
        }
    }

    pub fn is_known_sub_key(sub: &str) -> bool {
        sub == FREE_KEYS.1 || sub == PAID_KEYS.1
    }

    /// Publish into the realtime plane and run the hooks (task state, dispatch).
    pub fn publish(
        &self,
        sub_key: &str,
        channel: &str,
        payload: Value,
        meta: Option<Value>,
        publisher: &str,
        store: bool,
    ) -> u64 {
        // the task's state changes before anyone can see the event: a caller that reacts to a
        // terminal with an RPC (retry, GetTask) must find the backend agreeing with it
        let agent = channel
            .strip_prefix("u.")
            .and_then(|rest| rest.split('.').nth(1))
            .and_then(|task_id| self.records().on_task_event(task_id, &payload, publisher));
        let msg = self.rt.publish(sub_key, channel, payload, meta, publisher, store);
        if let Some(agent) = agent {
            self.dispatch(&agent);
        }
        msg.tt
    }

    pub fn run(&self, effects: Vec<Effect>) {
        for e in effects {
            self.publish(&e.sub_key, &e.channel, e.payload, e.meta, "blocks-devnet", e.store);
        }
    }

    pub fn dispatch(&self, agent: &str) {
        let effects = self.records().dispatch(agent, self.cfg.token_ttl, self.cfg.minute);
        self.run(effects);
    }

    /// Housekeeping: messages that left the replay window or were dropped by the memory limits
    /// (in memory and in the database), expired tokens in the database.
    pub fn prune(&self) {
        self.rt.prune_store();
        if let Some(db) = &self.store {
            if let Err(e) = db.prune_tokens(now_ms()) {
                tracing::warn!(target: "blocks::devnet", "{e}");
            }
        }
    }

    /// Periodic work: instance liveness, pipe expiry.
    pub fn tick(&self) {
        self.files.sweep();
        let (dead, expire): (Vec<String>, Vec<Effect>) = {
            let r = self.records();
            // live instances that stopped heartbeating, and instances that left but still hold
            // tasks after the grace period, lose their tasks
            let dead = r
                .instances
                .values()
                .filter(|i| match i.left_at {
                    Some(at) => !i.running.is_empty() && at.elapsed() > LEAVE_GRACE,
                    None => {
                        i.live
                            && match self.rt.presence_of(&i.id, &i.control_channel) {
                                Some(p) => p.last_seen.elapsed() > p.timeout + Duration::from_secs(5),
                                None => true,
                            }
                    }
                })
                .map(|i| i.id.clone())
                .collect();
            let now = now_ms();
            let expire = r
                .tasks
                .values()
                .filter(|t| !t.is_terminal() && !t.expire_sent && t.expires_at_ms.is_some_and(|e| e <= now))
                .filter_map(|t| r.control_for(&t.id, expire_task(&t.id, &t.agent)))
                .collect();
            (dead, expire)
        };
        {
            let mut r = self.records();
            for e in &expire {
                if let Some(id) = e.payload.get("taskId").and_then(Value::as_str) {
                    if let Some(t) = r.tasks.get_mut(id) {
                        t.expire_sent = true;
                    }
                    r.touch_task(id);
                }
            }
        }
        self.run(expire);
        for id in dead {
            tracing::info!(target: "blocks::devnet", "instance {id} stopped heartbeating; its tasks fail");
            let (effects, agent) = {
                let mut r = self.records();
                let agent = r.instances.get(&id).map(|i| i.agent.clone());
                (r.drop_instance(&id), agent)
            };
            self.run(effects);
            if let Some(a) = agent {
                self.dispatch(&a);
            }
        }
        // after the dead instances are gone: what is taken back goes to a live one
        let (failed, moved) = self.records().unacknowledged(self.cfg.ack_timeout, DISPATCH_ATTEMPTS);
        self.run(failed);
        for a in moved {
            self.dispatch(&a);
        }
    }
}

/// `ExpireTask` for a pipe task whose duration ran out.
fn expire_task(task_id: &str, agent: &str) -> Value {
    let mut m = blocks_wire::ControlMessage::signal("ExpireTask", task_id, None)
        .map(|m| m.to_value())
        .unwrap_or_default();
    m["agentName"] = Value::String(agent.into());
    m
}
