//! Task sessions (consumer spec §8): history catch-up, live subscription from the history
//! high-water mark, timetoken dedup, first-terminal-wins, cancel_requested at most once.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::error::Result;
use crate::realtime::{HistoryEntry, Realtime};

/// How many timetokens the dedup set remembers.
const SEEN_CAPACITY: usize = 200;

/// Identity and RPC metadata of a session.
#[derive(Debug, Clone, Default)]
pub struct SessionInfo {
    /// Task id.
    pub task_id: String,
    /// Owner (user) id.
    pub owner_id: String,
    /// Org id (channel namespace).
    pub org_id: String,
    /// Agent the task was sent to, when known.
    pub agent_name: Option<String>,
    /// T4 read token.
    pub read_token: Option<String>,
    /// Task status channel.
    pub status_channel: String,
    /// True when an existing task was returned for the idempotency key.
    pub idempotent: bool,
    /// True when the task waits for a free agent instance.
    pub queued: bool,
    /// Push config id, if any.
    pub push_config_id: Option<String>,
}

/// The session's state as one snapshot.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Current state (`running`, `completed`, …) or `None` while unknown.
    pub state: Option<String>,
    /// The winning terminal event, if any.
    pub terminal: Option<Value>,
    /// Artifact events, in order.
    pub artifacts: Vec<Value>,
    /// The first cancel_requested event, if any.
    pub cancel_requested: Option<Value>,
    /// History events replayed to `listEvents()` (connect sessions only).
    pub events: Vec<Value>,
    /// True when the session has no live subscription (terminal, or closed).
    pub closed: bool,
}

/// Pure event bookkeeping of one session (unit-tested without a network).
#[derive(Debug, Default)]
pub struct SessionState {
    snapshot: Snapshot,
    seen: HashSet<u64>,
    seen_order: VecDeque<u64>,
}

impl SessionState {
    /// Start from an initial state.
    pub fn new(state: Option<String>) -> Self {
        SessionState {
            snapshot: Snapshot {
                state,
                ..Snapshot::default()
            },
            ..SessionState::default()
        }
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    /// True once a terminal was accepted.
    pub fn is_terminal(&self) -> bool {
        self.snapshot.terminal.is_some()
    }

    fn remember(&mut self, tt: u64) -> bool {
        if !self.seen.insert(tt) {
            return false;
        }
        self.seen_order.push_back(tt);
        if self.seen_order.len() > SEEN_CAPACITY {
            if let Some(old) = self.seen_order.pop_front() {
                self.seen.remove(&old);
            }
        }
        true
    }

    /// Apply one channel message. Returns the event to deliver to listeners, or `None` when it is a
    /// duplicate, has no `type`, is a terminal after the first, or a repeated cancel_requested.
    pub fn apply(&mut self, timetoken: Option<u64>, event: Value) -> Option<Value> {
        if self.snapshot.closed {
            return None;
        }
        let kind = event.get("type").and_then(Value::as_str)?.to_string();
        if let Some(tt) = timetoken {
            if !self.remember(tt) {
                return None;
            }
        }
        match kind.as_str() {
            "terminal" => {
                if self.snapshot.terminal.is_some() {
                    return None;
                }
                let state = event
                    .get("state")
                    .and_then(Value::as_str)
                    .filter(|s| blocks_wire::is_terminal_state(s))?;
                self.snapshot.state = Some(state.to_string());
                self.snapshot.terminal = Some(event.clone());
            }
            "cancel_requested" => {
                if self.snapshot.terminal.is_some() || self.snapshot.cancel_requested.is_some() {
                    return None;
                }
                self.snapshot.cancel_requested = Some(event.clone());
            }
            "artifact" => {
                // an artifact without `artifactRef.kind` is not one
                event.pointer("/artifactRef/kind").and_then(Value::as_str)?;
                self.snapshot.artifacts.push(event.clone());
            }
            "progress" => {
                if let Some(s) = event.get("state").and_then(Value::as_str) {
                    if self.snapshot.terminal.is_none() && !blocks_wire::is_terminal_state(s) {
                        self.snapshot.state = Some(s.to_string());
                    }
                }
            }
            _ => {}
        }
        Some(event)
    }

    /// Replay history (oldest first): effects only (state, artifacts, terminal); returns the typed
    /// events for `listEvents()`.
    pub fn apply_history(&mut self, entries: &[HistoryEntry]) -> Vec<Value> {
        entries
            .iter()
            .filter_map(|e| self.apply(Some(e.timetoken), e.message.clone()))
            .collect()
    }

    /// Mark closed: later events are ignored.
    pub fn close(&mut self) {
        self.snapshot.closed = true;
    }
}

/// One event delivered to listeners.
#[derive(Debug, Clone)]
pub struct SessionEvent {
    /// Publish timetoken (absent for synthetic events).
    pub timetoken: Option<u64>,
    /// The event object (`type`, `taskId`, …).
    pub event: Value,
}

struct Shared {
    state: Mutex<SessionState>,
    realtime: Mutex<Option<Arc<Realtime>>>,
    pump: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// A live or finished task session.
pub struct TaskSession {
    info: SessionInfo,
    initial: Snapshot,
    shared: Arc<Shared>,
    events: Mutex<Option<mpsc::UnboundedReceiver<SessionEvent>>>,
}

impl TaskSession {
    /// A session that is already finished and has no realtime client (idempotent hit on a terminal task).
    pub fn pre_closed(info: SessionInfo, state: &str) -> Self {
        let mut st = SessionState::new(Some(state.to_string()));
        st.snapshot.terminal = Some(json!({ "type": "terminal", "taskId": info.task_id, "state": state }));
        st.close();
        let initial = st.snapshot().clone();
        TaskSession {
            info,
            initial,
            shared: Arc::new(Shared {
                state: Mutex::new(st),
                realtime: Mutex::new(None),
                pump: Mutex::new(None),
            }),
            events: Mutex::new(None),
        }
    }

    /// Open a session: read server time and the full history, then (unless the task is already
    /// terminal) subscribe from the history high-water mark so nothing published in between is lost.
    /// `keep_history_events` fills `listEvents()` (connect sessions).
    pub async fn open(
        info: SessionInfo,
        realtime: Arc<Realtime>,
        initial_state: Option<String>,
        keep_history_events: bool,
    ) -> Result<Self> {
        let server_time = realtime.time().await?;
        let history = realtime.history(&info.status_channel).await?;
        let mut st = SessionState::new(initial_state);
        let events = st.apply_history(&history);
        if keep_history_events {
            st.snapshot.events = events;
        }
        let cursor = history.iter().map(|e| e.timetoken).max().unwrap_or(server_time);
        let (tx, rx) = mpsc::unbounded_channel();
        let terminal = st.is_terminal();
        let initial = st.snapshot().clone();
        let shared = Arc::new(Shared {
            state: Mutex::new(st),
            realtime: Mutex::new(Some(realtime.clone())),
            pump: Mutex::new(None),
        });
        if !terminal {
            let stream = realtime.subscribe(std::slice::from_ref(&info.status_channel), Some(cursor));
            let channel = info.status_channel.clone();
            let weak = Arc::downgrade(&shared);
            let pump = tokio::spawn(async move {
                let mut stream = Box::pin(stream);
                while let Some(msg) = stream.next().await {
                    if msg.channel != channel || msg.timetoken <= cursor {
                        continue;
                    }
                    let Some(shared) = weak.upgrade() else { return };
                    let (delivered, done) = {
                        let Ok(mut st) = shared.state.lock() else { return };
                        let d = st.apply(Some(msg.timetoken), msg.payload);
                        (d, st.is_terminal())
                    };
                    if let Some(event) = delivered {
                        if tx
                            .send(SessionEvent {
                                timetoken: Some(msg.timetoken),
                                event,
                            })
                            .is_err()
                        {
                            // nobody listens any more; keep state current until terminal
                        }
                    }
                    if done {
                        shared.finish();
                        return;
                    }
                }
            });
            if let Ok(mut p) = shared.pump.lock() {
                *p = Some(pump);
            }
        } else {
            drop(tx);
        }
        Ok(TaskSession {
            info,
            initial,
            shared,
            events: Mutex::new(Some(rx)),
        })
    }

    /// Identity and RPC metadata.
    pub fn info(&self) -> &SessionInfo {
        &self.info
    }

    /// The state when the session was handed to the caller (history effects included).
    pub fn initial(&self) -> &Snapshot {
        &self.initial
    }

    /// The current state.
    pub fn snapshot(&self) -> Snapshot {
        self.shared
            .state
            .lock()
            .map(|s| s.snapshot().clone())
            .unwrap_or_default()
    }

    /// The live events after [`TaskSession::initial`], once. The channel ends after the terminal or `close()`.
    pub fn take_events(&self) -> Option<mpsc::UnboundedReceiver<SessionEvent>> {
        self.events.lock().ok().and_then(|mut e| e.take())
    }

    /// Stop the subscription and release the realtime client. Idempotent.
    pub fn close(&self) {
        self.shared.finish();
        if let Ok(mut st) = self.shared.state.lock() {
            st.close();
        }
    }

    /// The session's realtime client, while it has one.
    pub fn realtime(&self) -> Option<Arc<Realtime>> {
        self.shared.realtime.lock().ok().and_then(|r| r.clone())
    }
}

impl Shared {
    /// End the live subscription (terminal reached or closed).
    fn finish(&self) {
        if let Ok(mut p) = self.pump.lock() {
            if let Some(h) = p.take() {
                h.abort();
            }
        }
        let rt = self.realtime.lock().ok().and_then(|r| r.clone());
        if let Some(rt) = rt {
            rt.close();
        }
    }
}

impl Drop for TaskSession {
    fn drop(&mut self) {
        self.shared.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(kind: &str) -> Value {
        json!({ "type": kind, "taskId": "t" })
    }

    #[test]
    fn duplicates_by_timetoken_are_dropped() {
        let mut s = SessionState::new(None);
        assert!(s.apply(Some(1), ev("progress")).is_some());
        assert!(s.apply(Some(1), ev("progress")).is_none());
        assert!(s.apply(None, ev("progress")).is_some());
        assert!(s.apply(None, ev("progress")).is_some());
        assert!(s.apply(Some(2), json!({"no": "type"})).is_none());
    }

    #[test]
    fn seen_set_is_bounded() {
        let mut s = SessionState::new(None);
        for tt in 0..(SEEN_CAPACITY as u64 + 1) {
            assert!(s.apply(Some(tt), ev("progress")).is_some());
        }
        // the oldest was evicted, so it is delivered again
        assert!(s.apply(Some(0), ev("progress")).is_some());
        assert!(s.apply(Some(SEEN_CAPACITY as u64), ev("progress")).is_none());
    }

    #[test]
    fn first_terminal_wins_and_sets_state() {
        let mut s = SessionState::new(None);
        let t1 = json!({"type": "terminal", "taskId": "t", "state": "canceled"});
        let t2 = json!({"type": "terminal", "taskId": "t", "state": "completed"});
        assert!(s.apply(Some(1), t1).is_some());
        assert_eq!(s.snapshot().state.as_deref(), Some("canceled"));
        assert!(s.apply(Some(2), t2).is_none());
        assert_eq!(
            s.snapshot().terminal.as_ref().and_then(|t| t["state"].as_str()),
            Some("canceled")
        );
    }

    #[test]
    fn cancel_requested_once_and_not_after_terminal() {
        let mut s = SessionState::new(None);
        assert!(s.apply(Some(1), ev("cancel_requested")).is_some());
        assert!(s.apply(Some(2), ev("cancel_requested")).is_none());
        let mut s = SessionState::new(None);
        s.apply(Some(1), json!({"type": "terminal", "state": "completed"}));
        assert!(s.apply(Some(2), ev("cancel_requested")).is_none());
    }

    #[test]
    fn artifacts_accumulate_and_need_a_kind() {
        let mut s = SessionState::new(None);
        s.apply(
            Some(1),
            json!({"type": "artifact", "artifactRef": {"kind": "inline", "data": "aGk="}}),
        );
        assert!(s
            .apply(Some(2), json!({"type": "artifact", "artifactRef": {}}))
            .is_none());
        assert_eq!(s.snapshot().artifacts.len(), 1);
    }

    #[test]
    fn invalid_terminal_state_is_ignored() {
        let mut s = SessionState::new(None);
        assert!(s
            .apply(Some(1), json!({"type": "terminal", "state": "exploded"}))
            .is_none());
        assert!(!s.is_terminal());
    }
}
