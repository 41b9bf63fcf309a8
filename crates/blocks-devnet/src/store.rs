//! Durability: the devnet's records, stored messages and file index in an embedded SQLite database
//! (`<data dir>/devnet.db`, WAL mode).
//!
//! The in-memory records stay the source of truth for reads; every change is written through
//! before the request that caused it is answered (the records guard flushes on drop, a publish is
//! inserted before its timetoken is returned). SQLite's WAL with `synchronous=NORMAL` makes a
//! committed transaction survive the process being killed (SIGKILL) at any moment; only a power
//! loss may drop the last transactions, which is the right trade for a developer's network.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension};
use serde::{de::DeserializeOwned, Serialize};
use serde_json::Value;

/// The rows to write in one transaction: per table, the key of each changed record and its new
/// row, or `None` when the record was removed (written as a delete).
#[derive(Debug, Default)]
pub struct Changes {
    /// API key → user id.
    pub api_keys: Vec<(String, Option<String>)>,
    /// Token → its stored form.
    pub tokens: Vec<(String, Option<TokenRow>)>,
    /// Agent name → the agent (JSON).
    pub agents: Vec<(String, Option<String>)>,
    /// Instance id → the instance (JSON).
    pub instances: Vec<(String, Option<String>)>,
    /// Task id → its owner, creation order and the task (JSON).
    pub tasks: Vec<(String, Option<TaskRow>)>,
}

/// A token as stored: the whole record and its expiry.
#[derive(Debug)]
pub struct TokenRow {
    /// The stored token (JSON).
    pub data: String,
    /// Expiry, milliseconds since the epoch.
    pub expires_ms: Option<u64>,
}

/// A task as stored: the indexed columns and the whole record.
#[derive(Debug)]
pub struct TaskRow {
    /// Owner user id.
    pub owner: String,
    /// Creation order.
    pub seq: u64,
    /// The task (JSON).
    pub data: String,
}

/// One stored realtime message, as loaded back.
#[derive(Debug, Clone)]
pub struct StoredMessage {
    pub sub_key: String,
    pub channel: String,
    pub tt: u64,
    pub payload: Value,
    pub meta: Option<Value>,
    pub publisher: String,
    /// Part of the channel's history (published with `store=1`).
    pub history: bool,
}

/// Everything loaded at start.
#[derive(Debug, Default)]
pub struct Loaded {
    pub api_keys: Vec<(String, String)>,
    pub tokens: Vec<(String, Value)>,
    pub agents: Vec<Value>,
    pub instances: Vec<Value>,
    pub tasks: Vec<Value>,
    pub blobs: Vec<(String, Value)>,
}

/// Errors of the store: the database file and the statement that failed.
#[derive(Debug, thiserror::Error)]
#[error("devnet database {path}: {what}: {source}")]
pub struct StoreError {
    path: String,
    what: &'static str,
    #[source]
    source: rusqlite::Error,
}

/// The database of one devnet.
pub struct Store {
    path: String,
    conn: Mutex<Connection>,
}

const SCHEMA: &str = "
PRAGMA journal_mode = WAL;
PRAGMA synchronous = NORMAL;
CREATE TABLE IF NOT EXISTS api_keys (key TEXT PRIMARY KEY, user_id TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tokens (token TEXT PRIMARY KEY, data TEXT NOT NULL, expires_ms INTEGER);
CREATE TABLE IF NOT EXISTS agents (name TEXT PRIMARY KEY, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS instances (id TEXT PRIMARY KEY, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tasks (id TEXT PRIMARY KEY, owner TEXT NOT NULL, seq INTEGER NOT NULL, data TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS tasks_by_owner ON tasks (owner, seq);
CREATE TABLE IF NOT EXISTS messages (
  id INTEGER PRIMARY KEY, sub_key TEXT NOT NULL, channel TEXT NOT NULL, tt INTEGER NOT NULL,
  payload TEXT NOT NULL, meta TEXT, publisher TEXT NOT NULL, history INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS messages_by_tt ON messages (history, tt);
CREATE INDEX IF NOT EXISTS messages_by_channel ON messages (sub_key, channel, tt);
CREATE TABLE IF NOT EXISTS blobs (id TEXT PRIMARY KEY, data TEXT NOT NULL);
";

/// A value as a JSON column.
pub fn to_json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

/// Decode a stored JSON column; a row that no longer decodes is skipped with a warning.
pub fn from_json<T: DeserializeOwned>(what: &str, v: Value) -> Option<T> {
    match serde_json::from_value(v) {
        Ok(t) => Some(t),
        Err(e) => {
            tracing::warn!(target: "blocks::devnet", "skipping a stored {what} that does not decode: {e}");
            None
        }
    }
}

impl Store {
    /// Open (or create) `<dir>/devnet.db`.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        let path = dir.join("devnet.db");
        let shown = path.display().to_string();
        let err = |what| {
            let shown = shown.clone();
            move |source| StoreError {
                path: shown,
                what,
                source,
            }
        };
        let conn = Connection::open(&path).map_err(err("cannot open"))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(err("cannot set the busy timeout"))?;
        conn.execute_batch(SCHEMA).map_err(err("cannot create the schema"))?;
        Ok(Store {
            path: shown,
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn fail(&self, what: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError + '_ {
        move |source| StoreError {
            path: self.path.clone(),
            what,
            source,
        }
    }

    /// Everything but the messages.
    pub fn load(&self) -> Result<Loaded, StoreError> {
        let conn = self.conn();
        let mut out = Loaded::default();
        let pairs = |sql: &str| -> Result<Vec<(String, String)>, rusqlite::Error> {
            let mut st = conn.prepare(sql)?;
            let rows = st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
            rows.collect()
        };
        let json = |s: String| serde_json::from_str::<Value>(&s).unwrap_or(Value::Null);
        out.api_keys = pairs("SELECT key, user_id FROM api_keys").map_err(self.fail("reading api_keys"))?;
        out.tokens = pairs("SELECT token, data FROM tokens")
            .map_err(self.fail("reading tokens"))?
            .into_iter()
            .map(|(k, d)| (k, json(d)))
            .collect();
        out.agents = pairs("SELECT name, data FROM agents")
            .map_err(self.fail("reading agents"))?
            .into_iter()
            .map(|(_, d)| json(d))
            .collect();
        out.instances = pairs("SELECT id, data FROM instances")
            .map_err(self.fail("reading instances"))?
            .into_iter()
            .map(|(_, d)| json(d))
            .collect();
        out.tasks = pairs("SELECT id, data FROM tasks ORDER BY seq")
            .map_err(self.fail("reading tasks"))?
            .into_iter()
            .map(|(_, d)| json(d))
            .collect();
        out.blobs = pairs("SELECT id, data FROM blobs")
            .map_err(self.fail("reading blobs"))?
            .into_iter()
            .map(|(k, d)| (k, json(d)))
            .collect();
        Ok(out)
    }

    /// Messages that are history, or newer than `since_tt` (the replay window), oldest first,
    /// handed to `each` one at a time (never all held at once).
    pub fn for_each_message(&self, since_tt: u64, mut each: impl FnMut(StoredMessage)) -> Result<(), StoreError> {
        let conn = self.conn();
        let mut st = conn
            .prepare(
                "SELECT sub_key, channel, tt, payload, meta, publisher, history FROM messages
                 WHERE history = 1 OR tt > ?1 ORDER BY tt",
            )
            .map_err(self.fail("reading messages"))?;
        let rows = st
            .query_map([since_tt as i64], |r| {
                Ok(StoredMessage {
                    sub_key: r.get(0)?,
                    channel: r.get(1)?,
                    tt: r.get::<_, i64>(2)? as u64,
                    payload: serde_json::from_str(&r.get::<_, String>(3)?).unwrap_or(Value::Null),
                    meta: r
                        .get::<_, Option<String>>(4)?
                        .and_then(|m| serde_json::from_str(&m).ok()),
                    publisher: r.get(5)?,
                    history: r.get::<_, i64>(6)? != 0,
                })
            })
            .map_err(self.fail("reading messages"))?;
        for row in rows {
            each(row.map_err(self.fail("reading messages"))?);
        }
        Ok(())
    }

    /// Messages that are history, or newer than `since_tt`, oldest first.
    #[cfg(test)]
    pub fn load_messages(&self, since_tt: u64) -> Result<Vec<StoredMessage>, StoreError> {
        let mut out = Vec::new();
        self.for_each_message(since_tt, |m| out.push(m))?;
        Ok(out)
    }

    /// Delete the history of one channel up to `up_to_tt` (dropped by the memory limits).
    pub fn trim_history(&self, sub_key: &str, channel: &str, up_to_tt: u64) -> Result<usize, StoreError> {
        self.conn()
            .execute(
                "DELETE FROM messages WHERE sub_key = ?1 AND channel = ?2 AND history = 1 AND tt <= ?3",
                params![sub_key, channel, up_to_tt as i64],
            )
            .map_err(self.fail("trimming history"))
    }

    /// The newest timetoken ever handed out (timetokens keep increasing across restarts).
    pub fn last_tt(&self) -> Result<u64, StoreError> {
        self.conn()
            .query_row("SELECT MAX(tt) FROM messages", [], |r| r.get::<_, Option<i64>>(0))
            .optional()
            .map(|v| v.flatten().unwrap_or(0) as u64)
            .map_err(self.fail("reading the last timetoken"))
    }

    /// Store one published message.
    #[allow(clippy::too_many_arguments)]
    pub fn put_message(
        &self,
        sub_key: &str,
        channel: &str,
        tt: u64,
        payload: &Value,
        meta: Option<&Value>,
        publisher: &str,
        history: bool,
    ) -> Result<(), StoreError> {
        let conn = self.conn();
        let mut st = conn
            .prepare_cached(
                "INSERT INTO messages (sub_key, channel, tt, payload, meta, publisher, history)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )
            .map_err(self.fail("storing a message"))?;
        st.execute(params![
            sub_key,
            channel,
            tt as i64,
            to_json(payload),
            meta.map(to_json),
            publisher,
            history as i64
        ])
        .map(|_| ())
        .map_err(self.fail("storing a message"))
    }

    /// Drop messages outside history older than `before_tt` (they left the replay window).
    pub fn prune_messages(&self, before_tt: u64) -> Result<usize, StoreError> {
        self.conn()
            .execute("DELETE FROM messages WHERE history = 0 AND tt < ?1", [before_tt as i64])
            .map_err(self.fail("pruning messages"))
    }

    /// Write `changes` in one transaction.
    pub fn flush(&self, changes: &Changes) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(self.fail("starting a transaction"))?;
        for (k, user) in &changes.api_keys {
            match user {
                Some(u) => tx.execute(
                    "INSERT OR REPLACE INTO api_keys (key, user_id) VALUES (?1, ?2)",
                    params![k, u],
                ),
                None => tx.execute("DELETE FROM api_keys WHERE key = ?1", [k]),
            }
            .map_err(self.fail("writing an API key"))?;
        }
        for (t, row) in &changes.tokens {
            match row {
                Some(row) => tx.execute(
                    "INSERT OR REPLACE INTO tokens (token, data, expires_ms) VALUES (?1, ?2, ?3)",
                    params![t, row.data, row.expires_ms.map(|e| e as i64)],
                ),
                None => tx.execute("DELETE FROM tokens WHERE token = ?1", [t]),
            }
            .map_err(self.fail("writing a token"))?;
        }
        for (a, data) in &changes.agents {
            match data {
                Some(agent) => tx.execute(
                    "INSERT OR REPLACE INTO agents (name, data) VALUES (?1, ?2)",
                    params![a, agent],
                ),
                None => tx.execute("DELETE FROM agents WHERE name = ?1", [a]),
            }
            .map_err(self.fail("writing an agent"))?;
        }
        for (i, data) in &changes.instances {
            match data {
                Some(inst) => tx.execute(
                    "INSERT OR REPLACE INTO instances (id, data) VALUES (?1, ?2)",
                    params![i, inst],
                ),
                None => tx.execute("DELETE FROM instances WHERE id = ?1", [i]),
            }
            .map_err(self.fail("writing an instance"))?;
        }
        for (t, row) in &changes.tasks {
            match row {
                Some(task) => tx.execute(
                    "INSERT OR REPLACE INTO tasks (id, owner, seq, data) VALUES (?1, ?2, ?3, ?4)",
                    params![t, task.owner, task.seq as i64, task.data],
                ),
                None => tx.execute("DELETE FROM tasks WHERE id = ?1", [t]),
            }
            .map_err(self.fail("writing a task"))?;
        }
        tx.commit().map_err(self.fail("committing"))
    }

    /// Drop tokens that expired before `now_ms`.
    pub fn prune_tokens(&self, now_ms: u64) -> Result<usize, StoreError> {
        self.conn()
            .execute(
                "DELETE FROM tokens WHERE expires_ms IS NOT NULL AND expires_ms < ?1",
                [now_ms as i64],
            )
            .map_err(self.fail("pruning tokens"))
    }

    /// Register a stored file.
    pub fn put_blob(&self, id: &str, data: &Value) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "INSERT OR REPLACE INTO blobs (id, data) VALUES (?1, ?2)",
                params![id, to_json(data)],
            )
            .map(|_| ())
            .map_err(self.fail("registering a file"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn messages_survive_reopen_and_prune_keeps_history() {
        let dir = std::env::temp_dir().join(format!("blocks-store-test-{}", crate::ids::random_id(8)));
        std::fs::create_dir_all(&dir).expect("temp dir");
        {
            let s = Store::open(&dir).expect("open");
            s.put_message("s", "c", 10, &json!({"a": 1}), None, "p", true)
                .expect("put");
            s.put_message("s", "c", 20, &json!("x"), Some(&json!({"m": 1})), "p", false)
                .expect("put");
        }
        let s = Store::open(&dir).expect("reopen");
        assert_eq!(s.last_tt().expect("tt"), 20);
        let all = s.load_messages(0).expect("load");
        assert_eq!(all.len(), 2);
        assert_eq!(all[1].meta, Some(json!({"m": 1})));
        assert_eq!(
            s.prune_messages(30).expect("prune"),
            1,
            "only the non-history message goes"
        );
        let left = s.load_messages(0).expect("load");
        assert_eq!(left.len(), 1);
        assert!(left[0].history);
        assert_eq!(s.trim_history("s", "c", 10).expect("trim"), 1);
        assert!(s.load_messages(0).expect("load").is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
