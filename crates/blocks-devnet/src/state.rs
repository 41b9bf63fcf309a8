//! The backend's records: users, tokens, agents, instances, tasks; and the dispatcher that hands
//! tasks to live instances with free capacity.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::access::{Grants, StoredToken, Token, TokenKind};
use crate::clock::{iso_now, now_ms};
use crate::ids::random_id;
use crate::store::{from_json, to_json, Changes, Loaded, TaskRow, TokenRow};

mod dispatch;

pub use dispatch::DISPATCH_ATTEMPTS;

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
                        TokenRow {
                            data: to_json(&data),
                            expires_ms: data.expires_ms,
                        }
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
