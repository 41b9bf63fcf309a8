//! The dispatcher: queued tasks go to live instances of their agent with free capacity
//! (StartTask on the control channel), task events move a task's state and free its slot,
//! StartTasks left unacknowledged are taken back and sent again, lost instances fail their tasks.

use std::time::Duration;

use serde_json::{json, Value};

use blocks_wire::control::StartTask;
use blocks_wire::{ControlMessage, TaskEvent, Terminal};

use super::{Effect, Records, Task};
use crate::access::TokenKind;
use crate::clock::{iso_now, now_ms};

/// StartTasks sent for one task before it fails with `task_not_acknowledged`.
pub const DISPATCH_ATTEMPTS: usize = 3;

impl Records {
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
            let Some(inst_id) = self.pick_instance(agent, &task_id) else {
                break;
            };
            if let Some(q) = self.queues.get_mut(agent) {
                q.pop_front();
            }
            effects.extend(self.start_task(&task_id, &inst_id, token_ttl, minute));
        }
        effects
    }

    /// The live instance of `agent` with capacity that gets `task_id`: the least loaded, the one
    /// assigned longest ago among equals; an instance that let this task's StartTask go unanswered
    /// comes last.
    fn pick_instance(&self, agent: &str, task_id: &str) -> Option<String> {
        let unacked = self.tasks.get(task_id).map(|t| t.unacked.clone()).unwrap_or_default();
        self.instances
            .values()
            .filter(|i| i.agent == agent && i.live && (i.concurrency == 0 || i.running.len() < i.concurrency))
            .min_by_key(|i| (unacked.contains(&i.id), i.running.len(), i.last_assigned))
            .map(|i| i.id.clone())
    }

    /// Give `task_id` to instance `inst_id` (its slot, the task's tokens and pipe deadline); the
    /// StartTask to publish on the instance's control channel.
    fn start_task(&mut self, task_id: &str, inst_id: &str, token_ttl: Duration, minute: Duration) -> Option<Effect> {
        self.counter += 1;
        let counter = self.counter;
        let task = self.tasks.get(task_id).cloned()?;
        let write = self.mint(
            TokenKind::Write(task.channel()),
            &task.owner,
            Some(token_ttl.max(Duration::from_secs(3600))),
            None,
        );
        let i = self.instances.get_mut(inst_id)?;
        self.dirty.instances.insert(i.id.clone());
        self.dirty.tasks.insert(task_id.to_string());
        i.running.insert(task_id.to_string());
        i.last_assigned = counter;
        let (control_channel, sub_key) = (i.control_channel.clone(), i.sub_key.clone());
        let control = self.mint(TokenKind::Control(control_channel.clone()), &task.owner, None, None);
        let expires = (task.kind == "pipe")
            .then(|| now_ms() + task.duration.unwrap_or(1).max(1) as u64 * minute.as_millis() as u64);
        if let Some(t) = self.tasks.get_mut(task_id) {
            t.instance = Some(inst_id.to_string());
            t.expires_at_ms = expires;
            t.dispatched_at_ms = Some(now_ms());
        }
        Some(Effect {
            sub_key,
            channel: control_channel,
            payload: start_task_message(&task, &write, &control, expires),
            meta: Some(json!({ "instance": inst_id })),
            store: false,
        })
    }

    /// may move on (capacity freed).
    pub fn on_task_event(&mut self, task_id: &str, event: &Value, publisher: &str) -> Option<String> {
        // any progress, artifact or terminal from the instance acknowledges the task, even a
        // malformed one; only well-formed events (the wire model's parse) change its state
        if matches!(
            event.get("type").and_then(Value::as_str),
            Some("progress" | "artifact" | "terminal")
        ) {
            self.acknowledged(task_id, publisher);
        }
        let event = TaskEvent::parse(event).ok()?;
        let task = self.tasks.get_mut(task_id)?;
        if task.is_terminal() {
            return None;
        }
        self.dirty.tasks.insert(task_id.to_string());
        match &event {
            TaskEvent::Progress(p) if p.state.as_deref() == Some("running") => {
                task.state = "running".into();
                task.updated = iso_now();
                None
            }
            TaskEvent::Terminal(t) => {
                task.state = t.state.as_str().to_string();
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
                payload: TaskEvent::from(Terminal::failed(format!(
                    "task_not_acknowledged: no instance of agent {agent:?} acknowledged the task within {} s ({tries} StartTasks sent); check that the agent is running and subscribed to its control channel",
                    bound.as_secs_f64()
                )))
                .stamped(&t.id)
                .to_value(),
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
                payload: TaskEvent::from(Terminal::failed("agent_instance_lost"))
                    .stamped(&t.id)
                    .to_value(),
                meta: None,
                store: true,
            })
            .collect()
    }
}

/// The StartTask of `task`, with its write and control tokens and the pipe deadline.
fn start_task_message(task: &Task, write: &str, control: &str, expires: Option<u64>) -> Value {
    let extra = serde_json::Map::from_iter([
        ("requestParts".to_string(), task.request_parts.clone()),
        ("callerClaims".to_string(), json!({ "sub": task.owner })),
        ("requestSummary".to_string(), json!({})),
    ]);
    ControlMessage::StartTask(Box::new(StartTask {
        task_id: task.id.clone(),
        protocol_version: Some(blocks_wire::PROTOCOL_VERSION.into()),
        agent_name: Some(task.agent.clone()),
        owner_id: Some(task.owner.clone()),
        org_id: Some(task.org.clone()),
        task_kind: Some(task.kind.clone()),
        duration: task.duration.map(|d| json!(d)),
        duration_expires_at_ms: expires.map(|e| json!(e)),
        consumer_public_key: task.consumer_public_key.clone(),
        has_stream: Some(task.has_stream),
        write_token: Some(write.into()),
        control_token: Some(control.into()),
        extra,
    }))
    .to_value()
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::state::Instance;

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
