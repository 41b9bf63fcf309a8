//! The backend's records: users, tokens, agents, instances, tasks; and the dispatcher that hands
//! tasks to live instances with free capacity.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::access::{Grants, StoredToken, Token, TokenKind};
use crate::clock::{iso_now, now_ms};
use crate::ids::random_id;
use crate::store::{from_json, to_json, Changes, Loaded, TaskRow};

/// Ids of records changed since the last flush (a removed record is written as a delete).
#[derive(Debug, Default)]
pub struct Dirty {
    pub api_keys: HashSet<String>,
    pub tokens: HashSet<String>,
    pub agents: HashSet<String>,
    pub instances: HashSet<String>,
    pub tasks: HashSet<String>,
}

impl Dirty {
    pub fn is_empty(&self) -> bool {
        self.api_keys.is_empty()
            && self.tokens.is_empty()
            && self.agents.is_empty()
            && self.instances.is_empty()
            && self.tasks.is_empty()
    }
}

/// A registered agent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Agent {
    /// Name.
    pub name: String,
    /// Owner user id.
    pub owner: String,
    /// `free` or `paid`.
    pub billing: String,
    /// Stable id (`agt_…`).
    pub agent_id: String,
    /// `private` or `public`.
    pub listing: String,
    /// ISO-8601 registration time.
    pub registered_at: String,
}

/// A connected agent instance.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Instance {
    /// Instance id (its realtime uuid).
    pub id: String,
    /// Agent name.
    pub agent: String,
    /// The user that registered it (empty in records written before this was kept: the agent's
    /// owner then). An instance id belongs to that user and agent: nobody else can register it.
    #[serde(default)]
    pub owner: String,
    /// Tasks at once (0 = unlimited).
    pub concurrency: usize,
    /// Tasks it runs now.
    pub running: HashSet<String>,
    /// True once its control subscription is live.
    pub live: bool,
    /// Control channel.
    pub control_channel: String,
    /// Subscribe key of its environment.
    pub sub_key: String,
    /// Round-robin tie breaker.
    pub last_assigned: u64,
    /// When the instance left its control channel (graceful stop: it may still finish tasks).
    #[serde(skip)]
    pub left_at: Option<std::time::Instant>,
}

/// A task.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Task {
    /// Id.
    pub id: String,
    /// Agent.
    pub agent: String,
    /// Owner.
    pub owner: String,
    /// Org (channel namespace).
    pub org: String,
    /// State.
    pub state: String,
    /// ISO created.
    pub created: String,
    /// ISO updated.
    pub updated: String,
    /// Creation order.
    pub seq: u64,
    /// `request` or `pipe`.
    pub kind: String,
    /// Pipe duration (minutes).
    pub duration: Option<i64>,
    /// Pipe deadline.
    pub expires_at_ms: Option<u64>,
    /// ExpireTask already sent.
    pub expire_sent: bool,
    /// Request parts.
    pub request_parts: Value,
    /// Streaming negotiated.
    pub has_stream: bool,
    /// Caller public key.
    pub consumer_public_key: Option<String>,
    /// Instance running it.
    pub instance: Option<String>,
    /// Keyset (sub key) of the agent.
    pub sub_key: String,
    /// The caller's idempotency key, if it sent one.
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// When the last StartTask went out (epoch ms), until the instance acknowledges the task
    /// (its first `progress`, `artifact` or `terminal` on the task channel).
    #[serde(default)]
    pub dispatched_at_ms: Option<u64>,
    /// StartTasks sent for this task that were not acknowledged in time.
    #[serde(default)]
    pub unacked: Vec<String>,
}

impl Task {
    /// The task channel.
    pub fn channel(&self) -> String {
        blocks_wire::task_channel(&self.org, &self.id)
    }
    /// GetTask/ListTasks shape.
    pub fn info(&self) -> Value {
        json!({
            "taskId": self.id, "agentName": self.agent, "owner": self.owner, "state": self.state,
            "createdTime": self.created, "updatedTime": self.updated, "taskKind": self.kind,
            "instance": self.instance,
        })
    }
    /// True once terminal.
    pub fn is_terminal(&self) -> bool {
        blocks_wire::is_terminal_state(&self.state)
    }
}

/// StartTasks sent for one task before it fails with `task_not_acknowledged`.
pub const DISPATCH_ATTEMPTS: usize = 3;

/// A publish the caller must perform after releasing the records lock.
#[derive(Debug, Clone)]
pub struct Effect {
    /// Subscribe key.
    pub sub_key: String,
    /// Channel.
    pub channel: String,
    /// Payload.
    pub payload: Value,
    /// Meta.
    pub meta: Option<Value>,
    /// Stored in history.
    pub store: bool,
}

/// All records.
#[derive(Default)]
pub struct Records {
    /// API key → user id.
    pub api_keys: HashMap<String, String>,
    /// Token → grant.
    pub tokens: HashMap<String, Token>,
    /// Agent name → agent.
    pub agents: HashMap<String, Agent>,
    /// Instance id → instance.
    pub instances: HashMap<String, Instance>,
    /// Task id → task.
    pub tasks: HashMap<String, Task>,
    /// (user, idempotency key) → task id.
    pub idempotency: HashMap<(String, String), String>,
    /// Agent → queued task ids.
    pub queues: HashMap<String, VecDeque<String>>,
    /// Owner → task ids in creation order (ListTasks).
    pub by_owner: HashMap<String, Vec<String>>,
    /// (owner, agent) → task ids in creation order (ListTasks with an agent filter).
    pub by_owner_agent: HashMap<(String, String), Vec<String>>,
    /// Changed since the last write to the database.
    pub dirty: Dirty,
    counter: u64,
}

impl Records {
    /// Records loaded from the database: tokens that expired are dropped, pending tasks queue
    /// again in creation order, instances that had left get a fresh grace period.
    pub fn from_loaded(l: Loaded) -> Records {
        let mut r = Records::default();
        r.api_keys.extend(l.api_keys);
        for (t, data) in l.tokens {
            if let Some(tok) = from_json::<StoredToken>("token", data).and_then(Token::from_stored) {
                r.tokens.insert(t, tok);
            }
        }
        for a in l.agents.into_iter().filter_map(|a| from_json::<Agent>("agent", a)) {
            r.agents.insert(a.name.clone(), a);
        }
        for mut i in l
            .instances
            .into_iter()
            .filter_map(|i| from_json::<Instance>("instance", i))
        {
            r.counter = r.counter.max(i.last_assigned);
            if !i.live && !i.running.is_empty() {
                i.left_at = Some(Instant::now());
            }
            r.instances.insert(i.id.clone(), i);
        }
        let now = now_ms();
        for mut t in l.tasks.into_iter().filter_map(|t| from_json::<Task>("task", t)) {
            r.counter = r.counter.max(t.seq);
            // the downtime does not count against the acknowledgement bound: an instance gets the
            // whole bound again once the network is back
            if t.dispatched_at_ms.is_some() {
                t.dispatched_at_ms = Some(now);
            }
            if let Some(k) = &t.idempotency_key {
                r.idempotency.insert((t.owner.clone(), k.clone()), t.id.clone());
            }
            if !t.is_terminal() && t.instance.is_none() {
                r.queues.entry(t.agent.clone()).or_default().push_back(t.id.clone());
            }
            r.by_owner.entry(t.owner.clone()).or_default().push(t.id.clone());
            r.by_owner_agent
                .entry((t.owner.clone(), t.agent.clone()))
                .or_default()
                .push(t.id.clone());
            r.tasks.insert(t.id.clone(), t);
        }
        r
    }

    /// The rows of the `dirty` records as they are now, for the database.
    pub fn changes(&self, dirty: &Dirty) -> Changes {
        Changes {
            api_keys: dirty
                .api_keys
                .iter()
                .map(|k| (k.clone(), self.api_keys.get(k).cloned()))
                .collect(),
            tokens: dirty
                .tokens
                .iter()
                .map(|t| {
                    let row = self.tokens.get(t).map(|tok| {
                        let data = tok.to_stored();
                        (to_json(&data), data.expires_ms)
                    });
                    (t.clone(), row)
                })
                .collect(),
            agents: dirty
                .agents
                .iter()
                .map(|a| (a.clone(), self.agents.get(a).map(to_json)))
                .collect(),
            instances: dirty
                .instances
                .iter()
                .map(|i| (i.clone(), self.instances.get(i).map(to_json)))
                .collect(),
            tasks: dirty
                .tasks
                .iter()
                .map(|t| {
                    let row = self.tasks.get(t).map(|task| TaskRow {
                        owner: task.owner.clone(),
                        seq: task.seq,
                        data: to_json(task),
                    });
                    (t.clone(), row)
                })
                .collect(),
        }
    }

    /// Mark a task changed (it is written to the database when the records lock is released).
    pub fn touch_task(&mut self, id: &str) {
        self.dirty.tasks.insert(id.to_string());
    }

    /// Mark an instance changed.
    pub fn touch_instance(&mut self, id: &str) {
        self.dirty.instances.insert(id.to_string());
    }

    /// Remove a token.
    pub fn revoke(&mut self, token: &str) {
        self.tokens.remove(token);
        self.dirty.tokens.insert(token.to_string());
    }

    /// Mint a token.
    pub fn mint(&mut self, kind: TokenKind, user_id: &str, ttl: Option<Duration>, api_key: Option<&str>) -> String {
        let t = format!("tok_{}", random_id(32));
        self.dirty.tokens.insert(t.clone());
        self.tokens.insert(
            t.clone(),
            Token {
                kind,
                user_id: user_id.to_string(),
                api_key: api_key.map(str::to_string),
                expires: ttl.map(|d| Instant::now() + d),
            },
        );
        t
    }

    /// A valid (unexpired) token.
    pub fn token(&self, t: &str) -> Option<&Token> {
        self.tokens
            .get(t)
            .filter(|tok| tok.expires.is_none_or(|e| e > Instant::now()))
    }

    /// Register an agent for `owner` unless it exists.
    pub fn ensure_agent(&mut self, name: &str, owner: &str, paid: bool) -> Agent {
        if let Some(a) = self.agents.get(name) {
            return a.clone();
        }
        let a = Agent {
            name: name.to_string(),
            owner: owner.to_string(),
            billing: if paid { "paid" } else { "free" }.to_string(),
            agent_id: format!("agt_{}", random_id(12)),
            listing: "private".into(),
            registered_at: iso_now(),
        };
        self.agents.insert(name.to_string(), a.clone());
        self.dirty.agents.insert(name.to_string());
        a
    }

    /// Create a task record.
    #[allow(clippy::too_many_arguments)]
    pub fn create_task(
        &mut self,
        agent: &str,
        owner: &str,
        kind: &str,
        duration: Option<i64>,
        parts: Value,
        has_stream: bool,
        cpk: Option<String>,
        sub_key: &str,
    ) -> Task {
        self.counter += 1;
        let now = iso_now();
        let t = Task {
            id: format!("t_{}", random_id(16)),
            agent: agent.to_string(),
            owner: owner.to_string(),
            org: owner.to_string(),
            state: "pending".into(),
            created: now.clone(),
            updated: now,
            seq: self.counter,
            kind: kind.to_string(),
            duration,
            expires_at_ms: None,
            expire_sent: false,
            request_parts: parts,
            has_stream,
            consumer_public_key: cpk,
            instance: None,
            sub_key: sub_key.to_string(),
            idempotency_key: None,
            dispatched_at_ms: None,
            unacked: Vec::new(),
        };
        self.dirty.tasks.insert(t.id.clone());
        self.tasks.insert(t.id.clone(), t.clone());
        self.by_owner.entry(t.owner.clone()).or_default().push(t.id.clone());
        self.by_owner_agent
            .entry((t.owner.clone(), t.agent.clone()))
            .or_default()
            .push(t.id.clone());
        self.queues
            .entry(agent.to_string())
            .or_default()
            .push_back(t.id.clone());
        t
    }

    /// Hand queued tasks of `agent` to live instances with capacity.
    pub fn dispatch(&mut self, agent: &str, token_ttl: Duration, minute: Duration) -> Vec<Effect> {
        let mut effects = Vec::new();
        while let Some(task_id) = self.queues.get(agent).and_then(|q| q.front().cloned()) {
            let still_pending = self
                .tasks
                .get(&task_id)
                .is_some_and(|t| !t.is_terminal() && t.instance.is_none());
            if !still_pending {
                if let Some(q) = self.queues.get_mut(agent) {
                    q.pop_front();
                }
                continue;
            }
            let unacked = self.tasks.get(&task_id).map(|t| t.unacked.clone()).unwrap_or_default();
            // an instance that let this task's StartTask go unanswered comes last
            let pick = self
                .instances
                .values()
                .filter(|i| i.agent == agent && i.live && (i.concurrency == 0 || i.running.len() < i.concurrency))
                .min_by_key(|i| (unacked.contains(&i.id), i.running.len(), i.last_assigned))
                .map(|i| i.id.clone());
            let Some(inst_id) = pick else { break };
            if let Some(q) = self.queues.get_mut(agent) {
                q.pop_front();
            }
            self.counter += 1;
            let counter = self.counter;
            let Some(task) = self.tasks.get(&task_id).cloned() else {
                continue;
            };
            let write = self.mint(
                TokenKind::Write(task.channel()),
                &task.owner,
                Some(token_ttl.max(Duration::from_secs(3600))),
                None,
            );
            let (control_channel, sub_key) = match self.instances.get_mut(&inst_id) {
                Some(i) => {
                    self.dirty.instances.insert(i.id.clone());
                    self.dirty.tasks.insert(task_id.clone());
                    i.running.insert(task_id.clone());
                    i.last_assigned = counter;
                    (i.control_channel.clone(), i.sub_key.clone())
                }
                None => continue,
            };
            let control = self.mint(TokenKind::Control(control_channel.clone()), &task.owner, None, None);
            let expires = (task.kind == "pipe")
                .then(|| now_ms() + task.duration.unwrap_or(1).max(1) as u64 * minute.as_millis() as u64);
            if let Some(t) = self.tasks.get_mut(&task_id) {
                t.instance = Some(inst_id.clone());
                t.expires_at_ms = expires;
                t.dispatched_at_ms = Some(now_ms());
            }
            let mut start = json!({
                "type": "StartTask", "taskId": task.id, "protocolVersion": blocks_wire::PROTOCOL_VERSION,
                "agentName": task.agent, "ownerId": task.owner, "orgId": task.org,
                "requestParts": task.request_parts, "callerClaims": { "sub": task.owner },
                "requestSummary": {}, "taskKind": task.kind, "hasStream": task.has_stream,
                "writeToken": write, "controlToken": control,
            });
            if let Some(d) = task.duration {
                start["duration"] = json!(d);
            }
            if let Some(e) = expires {
                start["durationExpiresAtMs"] = json!(e);
            }
            if let Some(k) = &task.consumer_public_key {
                start["consumerPublicKey"] = json!(k);
            }
            effects.push(Effect {
                sub_key,
                channel: control_channel,
                payload: start,
                meta: Some(json!({ "instance": inst_id })),
                store: false,
            });
        }
        effects
    }

    /// A task-channel event was published: follow the task's state. Returns the agent whose queue
    /// may move on (capacity freed).
    pub fn on_task_event(&mut self, task_id: &str, event: &Value, publisher: &str) -> Option<String> {
        let kind = event.get("type").and_then(Value::as_str);
        if matches!(kind, Some("progress" | "artifact" | "terminal")) {
            self.acknowledged(task_id, publisher);
        }
        let task = self.tasks.get_mut(task_id)?;
        if task.is_terminal() {
            return None;
        }
        self.dirty.tasks.insert(task_id.to_string());
        match kind {
            Some("progress") if event.get("state").and_then(Value::as_str) == Some("running") => {
                task.state = "running".into();
                task.updated = iso_now();
                None
            }
            Some("terminal") => {
                let state = event
                    .get("state")
                    .and_then(Value::as_str)
                    .filter(|s| blocks_wire::is_terminal_state(s))?;
                task.state = state.to_string();
                task.updated = iso_now();
                let inst = task.instance.clone();
                let agent = task.agent.clone();
                if let Some(i) = inst.and_then(|i| self.instances.get_mut(&i)) {
                    i.running.remove(task_id);
                    self.dirty.instances.insert(i.id.clone());
                }
                Some(agent)
            }
            _ => None,
        }
    }

    /// An event of the task from `publisher` (the instance's realtime uuid; events the backend
    /// itself publishes do not count): the instance the task was sent to has it. A task that was
    /// taken back (not acknowledged in time) and waits in the queue is given to the instance of
    /// its agent that turns out to run it after all, rather than sent again.
    fn acknowledged(&mut self, task_id: &str, publisher: &str) {
        let Some(task) = self.tasks.get(task_id).filter(|t| !t.is_terminal()) else {
            return;
        };
        match task.instance.as_deref() {
            Some(i) if i == publisher => {
                if let Some(t) = self.tasks.get_mut(task_id) {
                    t.dispatched_at_ms = None;
                }
            }
            None if task.unacked.iter().any(|u| u == publisher) => {
                let agent = task.agent.clone();
                let Some(inst) = self.instances.get_mut(publisher).filter(|i| i.agent == agent) else {
                    return;
                };
                inst.running.insert(task_id.to_string());
                self.dirty.instances.insert(publisher.to_string());
                if let Some(t) = self.tasks.get_mut(task_id) {
                    t.instance = Some(publisher.to_string());
                    t.dispatched_at_ms = None;
                }
                if let Some(q) = self.queues.get_mut(&agent) {
                    q.retain(|id| id != task_id);
                }
            }
            // another instance than the one it was sent to: it is not this dispatch's answer
            _ => {}
        }
    }

    /// Control message for a task's instance (None when the task is not on an instance).
    pub fn control_for(&self, task_id: &str, payload: Value) -> Option<Effect> {
        let task = self.tasks.get(task_id)?;
        let inst = self.instances.get(task.instance.as_ref()?)?;
        Some(Effect {
            sub_key: inst.sub_key.clone(),
            channel: inst.control_channel.clone(),
            payload,
            meta: Some(json!({ "instance": inst.id })),
            store: false,
        })
    }

    /// Tasks whose StartTask went unacknowledged for `bound`: each leaves its instance (which
    /// keeps the slot no longer) and queues again at the front, to be sent to another instance if
    /// there is one; after `attempts` StartTasks it fails with `task_not_acknowledged`. Returns the
    /// terminals to publish and the agents whose queues moved.
    pub fn unacknowledged(&mut self, bound: Duration, attempts: usize) -> (Vec<Effect>, Vec<String>) {
        let now = now_ms();
        let late: Vec<String> = self
            .tasks
            .values()
            .filter(|t| {
                !t.is_terminal()
                    && t.dispatched_at_ms
                        .is_some_and(|at| now.saturating_sub(at) >= bound.as_millis() as u64)
            })
            .map(|t| t.id.clone())
            .collect();
        let (mut effects, mut agents) = (Vec::new(), Vec::new());
        for id in late {
            let Some(t) = self.tasks.get_mut(&id) else { continue };
            t.dispatched_at_ms = None;
            let inst = t.instance.take();
            if let Some(i) = &inst {
                t.unacked.push(i.clone());
            }
            let (agent, tries) = (t.agent.clone(), t.unacked.len());
            let terminal = (tries >= attempts).then(|| Effect {
                sub_key: t.sub_key.clone(),
                channel: t.channel(),
                payload: json!({
                    "type": "terminal", "taskId": t.id, "state": "failed",
                    "error": format!(
                        "task_not_acknowledged: no instance of agent {agent:?} acknowledged the task within {} s ({tries} StartTasks sent); check that the agent is running and subscribed to its control channel",
                        bound.as_secs_f64()
                    ),
                    "protocolVersion": blocks_wire::PROTOCOL_VERSION,
                }),
                meta: None,
                store: true,
            });
            self.dirty.tasks.insert(id.clone());
            if let Some(i) = inst.and_then(|i| self.instances.get_mut(&i)) {
                i.running.remove(&id);
                self.dirty.instances.insert(i.id.clone());
            }
            tracing::warn!(
                target: "blocks::devnet",
                "task {id} of agent {agent}: StartTask not acknowledged within {bound:?} ({tries} of {attempts}); {}",
                if terminal.is_some() { "it fails" } else { "it is sent again" }
            );
            match terminal {
                Some(e) => effects.push(e),
                None => self.queues.entry(agent.clone()).or_default().push_front(id),
            }
            if !agents.contains(&agent) {
                agents.push(agent);
            }
        }
        (effects, agents)
    }

    /// Instances that stopped being live: their tasks get a failed terminal.
    pub fn drop_instance(&mut self, inst_id: &str) -> Vec<Effect> {
        let Some(inst) = self.instances.get_mut(inst_id) else {
            return Vec::new();
        };
        inst.live = false;
        self.dirty.instances.insert(inst_id.to_string());
        let running: Vec<String> = inst.running.drain().collect();
        running
            .into_iter()
            .filter_map(|t| self.tasks.get(&t))
            .filter(|t| !t.is_terminal())
            .map(|t| Effect {
                sub_key: t.sub_key.clone(),
                channel: t.channel(),
                payload: json!({ "type": "terminal", "taskId": t.id, "state": "failed", "error": "agent_instance_lost", "protocolVersion": blocks_wire::PROTOCOL_VERSION }),
                meta: None,
                store: true,
            })
            .collect()
    }
}

impl Grants for Records {
    fn grant(&self, token: &str) -> Option<&TokenKind> {
        self.token(token).map(|t| &t.kind)
    }

    fn controls_task(&self, control_channel: &str, task_id: Option<&str>) -> bool {
        match task_id.and_then(|id| self.tasks.get(id)) {
            Some(t) => self
                .instances
                .values()
                .any(|i| i.control_channel == control_channel && i.agent == t.agent),
            None => self.instances.values().any(|i| i.control_channel == control_channel),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live_instance(r: &mut Records, id: &str, agent: &str, concurrency: usize) {
        r.instances.insert(
            id.into(),
            Instance {
                id: id.into(),
                agent: agent.into(),
                owner: "u".into(),
                concurrency,
                running: HashSet::new(),
                live: true,
                control_channel: format!("agent.{agent}.control"),
                sub_key: "s".into(),
                last_assigned: 0,
                left_at: None,
            },
        );
    }

    #[test]
    fn dispatch_respects_capacity_and_queues() {
        let mut r = Records::default();
        live_instance(&mut r, "i1", "a", 1);
        let t1 = r.create_task("a", "u", "request", None, json!([]), false, None, "s");
        let t2 = r.create_task("a", "u", "request", None, json!([]), false, None, "s");
        let e = r.dispatch("a", Duration::from_secs(60), Duration::from_secs(60));
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].payload["taskId"], json!(t1.id));
        assert_eq!(e[0].meta, Some(json!({"instance": "i1"})));
        assert!(
            r.dispatch("a", Duration::from_secs(60), Duration::from_secs(60))
                .is_empty(),
            "busy"
        );
        assert_eq!(
            r.on_task_event(&t1.id, &json!({"type": "terminal", "state": "completed"}), "i1"),
            Some("a".into())
        );
        let e = r.dispatch("a", Duration::from_secs(60), Duration::from_secs(60));
        assert_eq!(e[0].payload["taskId"], json!(t2.id));
    }

    #[test]
    fn an_unacknowledged_task_is_taken_back_and_only_its_instance_acknowledges_it() {
        let mut r = Records::default();
        live_instance(&mut r, "i1", "a", 1);
        let t = r.create_task("a", "u", "request", None, json!([]), false, None, "s");
        let minute = Duration::from_secs(60);
        assert_eq!(r.dispatch("a", minute, minute).len(), 1);
        // an event from another uuid is not this dispatch's answer
        r.on_task_event(&t.id, &json!({"type": "progress", "state": "running"}), "someone");
        assert!(r.tasks[&t.id].dispatched_at_ms.is_some());
        // not acknowledged within the bound: taken back, the slot freed, queued again
        let (failed, moved) = r.unacknowledged(Duration::ZERO, 3);
        assert!(failed.is_empty());
        assert_eq!(moved, ["a"]);
        assert_eq!(r.tasks[&t.id].instance, None);
        assert!(r.instances["i1"].running.is_empty());
        // the instance it was sent to turns out to run it: it keeps it, nothing is sent again
        r.on_task_event(&t.id, &json!({"type": "progress", "state": "running"}), "i1");
        assert_eq!(r.tasks[&t.id].instance.as_deref(), Some("i1"));
        assert!(r.instances["i1"].running.contains(&t.id));
        assert!(r.dispatch("a", minute, minute).is_empty(), "not dispatched twice");
        // three unanswered sends fail it
        let t2 = r.create_task("a", "u", "request", None, json!([]), false, None, "s");
        live_instance(&mut r, "i2", "a", 1);
        for _ in 0..3 {
            assert_eq!(r.dispatch("a", minute, minute).len(), 1);
            let (failed, _) = r.unacknowledged(Duration::ZERO, 3);
            if r.tasks[&t2.id].unacked.len() == 3 {
                assert_eq!(failed.len(), 1);
                assert!(failed[0].payload["error"]
                    .as_str()
                    .is_some_and(|e| e.starts_with("task_not_acknowledged")));
            }
        }
    }

    #[test]
    fn load_is_shared_by_capacity() {
        let mut r = Records::default();
        live_instance(&mut r, "i1", "a", 2);
        live_instance(&mut r, "i2", "a", 2);
        for _ in 0..4 {
            r.create_task("a", "u", "request", None, json!([]), false, None, "s");
        }
        let e = r.dispatch("a", Duration::from_secs(60), Duration::from_secs(60));
        assert_eq!(e.len(), 4);
        let to_i1 = e.iter().filter(|x| x.meta == Some(json!({"instance": "i1"}))).count();
        assert_eq!(to_i1, 2);
    }
}
