//! File storage: uploads in progress, the `uploadSessionId` sessions of consumer inputs and
//! their binding to a task, provider-output artifacts, and the index of stored files (kept in the
//! database when there is one). The endpoints that use it are in `files_api`.
//!
//! Files are streamed to disk (never held whole in memory), size-checked against the declared
//! size while they arrive, and only registered once complete: an interrupted or oversize upload
//! leaves nothing behind.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::ids::random_id;

/// Uploads not confirmed within this time are dropped with their bytes.
const UPLOAD_TTL: Duration = Duration::from_secs(3600);

/// Who an upload is for.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Role {
    ConsumerInput { session: String, part_id: String },
    ProviderOutput { task_id: String, output_id: Option<String> },
}

#[derive(Debug, Clone)]
struct Upload {
    user: String,
    role: Role,
    file_name: String,
    mime: String,
    size: u64,
    /// Where the complete bytes are, once received.
    received: Option<PathBuf>,
    confirmed: bool,
    created: Instant,
}

/// A stored file.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Blob {
    channel: String,
    file_name: String,
    path: PathBuf,
    /// Secret of the signed download URL.
    key: String,
}

/// The file store of one devnet.
pub(crate) struct Files {
    dir: PathBuf,
    /// Delete `dir` on drop (a throwaway store).
    temporary: bool,
    /// Where the index of stored files is kept (None: in memory).
    db: Option<std::sync::Arc<crate::store::Store>>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    uploads: HashMap<String, Upload>,
    /// uploadSessionId → (owner, upload ids)
    sessions: HashMap<String, (String, Vec<String>)>,
    blobs: HashMap<String, Blob>,
}

impl Files {
    /// The directory of the store (a temporary one for an in-memory devnet, removed on drop).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A store under `dir` (created), or a temporary one.
    pub fn open(dir: Option<&Path>, db: Option<std::sync::Arc<crate::store::Store>>) -> std::io::Result<Files> {
        let (dir, temporary) = match dir {
            Some(d) => (d.join("files"), false),
            None => (
                std::env::temp_dir().join(format!("blocks-devnet-{}-{}", std::process::id(), random_id(8))),
                true,
            ),
        };
        std::fs::create_dir_all(dir.join("incoming"))?;
        std::fs::create_dir_all(dir.join("blobs"))?;
        Ok(Files {
            dir,
            temporary,
            db,
            state: Mutex::new(State::default()),
        })
    }

    /// The index of stored files, as loaded from the database (files whose bytes are gone are
    /// skipped).
    pub fn restore(&self, blobs: Vec<(String, Value)>) {
        let mut s = self.state();
        for (id, data) in blobs {
            if let Some(b) = crate::store::from_json::<Blob>("file", data).filter(|b| b.path.exists()) {
                s.blobs.insert(id, b);
            }
        }
    }

    /// Register a complete file (written to the database first when there is one).
    fn add_blob(&self, s: &mut State, id: String, blob: Blob) -> Result<(), String> {
        if let Some(db) = &self.db {
            db.put_blob(&id, &serde_json::to_value(&blob).unwrap_or(Value::Null))
                .map_err(|e| e.to_string())?;
        }
        s.blobs.insert(id, blob);
        Ok(())
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Drop uploads never confirmed (and their bytes).
    pub fn sweep(&self) {
        let stale: Vec<Upload> = {
            let mut s = self.state();
            let ids: Vec<String> = s
                .uploads
                .iter()
                .filter(|(_, u)| u.created.elapsed() > UPLOAD_TTL)
                .map(|(k, _)| k.clone())
                .collect();
            ids.iter().filter_map(|id| s.uploads.remove(id)).collect()
        };
        for u in stale {
            if let Some(p) = u.received {
                let _ = std::fs::remove_file(p);
            }
        }
    }

    /// Bind the confirmed consumer-input uploads of `session` to a new task: each becomes a file
    /// on the task channel and the matching part (by `partId`) gets its `artifactRef`.
    /// Check, without changing anything, that [`Files::bind_session`] would succeed.
    pub fn check_session(&self, user: &str, session: &str) -> Result<(), String> {
        self.bind_session(user, session, "", &mut json!([]), true)
    }

    /// Bind (see above); `dry_run` only validates.
    pub fn bind_session(
        &self,
        user: &str,
        session: &str,
        channel: &str,
        parts: &mut Value,
        dry_run: bool,
    ) -> Result<(), String> {
        let mut s = self.state();
        let ids = match s.sessions.get(session) {
            Some((owner, ids)) if owner == user => ids.clone(),
            _ => {
                return Err(format!(
                    "uploadSessionId {session:?} is unknown (request-upload returns it)"
                ))
            }
        };
        let mut refs = Vec::new();
        for id in &ids {
            let Some(u) = s.uploads.get(id) else {
                return Err(format!(
                    "upload {id} of session {session} expired; upload the file again"
                ));
            };
            let (true, Some(path), Role::ConsumerInput { part_id, .. }) = (u.confirmed, &u.received, &u.role) else {
                return Err(format!(
                    "upload {id} ({}) was not completed and confirmed (confirm-upload)",
                    u.file_name
                ));
            };
            refs.push((id.clone(), part_id.clone(), u.clone(), path.clone()));
        }
        if dry_run {
            return Ok(());
        }
        let arr = parts.as_array_mut().ok_or("requestParts must be an array")?;
        for (id, part_id, u, path) in refs {
            let file_id = format!("f_{}", random_id(16));
            let dest = self.dir.join("blobs").join(&file_id);
            std::fs::rename(&path, &dest).map_err(|e| format!("storing upload {id}: {e}"))?;
            s.uploads.remove(&id);
            let r = file_ref(channel, &file_id, &u);
            self.add_blob(
                &mut s,
                file_id.clone(),
                Blob {
                    channel: channel.to_string(),
                    file_name: u.file_name.clone(),
                    path: dest,
                    key: random_id(24),
                },
            )?;
            match arr
                .iter_mut()
                .find(|p| p.get("partId").and_then(Value::as_str) == Some(&part_id) && p.get("artifactRef").is_none())
            {
                Some(p) => p["artifactRef"] = r,
                None => arr.push(json!({ "partId": part_id, "contentType": u.mime, "artifactRef": r })),
            }
        }
        s.sessions.remove(session);
        Ok(())
    }

    /// True when `session` is an upload session of `user`.
    pub fn owns_session(&self, session: &str, user: &str) -> bool {
        matches!(self.state().sessions.get(session), Some((owner, _)) if owner == user)
    }

    /// A new upload session of `user`; returns its id.
    pub fn new_session(&self, user: &str) -> String {
        let id = format!("us_{}", random_id(16));
        self.state().sessions.insert(id.clone(), (user.to_string(), Vec::new()));
        id
    }

    /// Register an upload (a consumer input joins its session); returns its id.
    pub fn add_upload(&self, user: &str, role: Role, file_name: String, mime: String, size: u64) -> String {
        let upload_id = format!("up_{}", random_id(16));
        let mut st = self.state();
        if let Role::ConsumerInput { session, .. } = &role {
            if let Some((_, ids)) = st.sessions.get_mut(session) {
                ids.push(upload_id.clone());
            }
        }
        st.uploads.insert(
            upload_id.clone(),
            Upload {
                user: user.to_string(),
                role,
                file_name,
                mime,
                size,
                received: None,
                confirmed: false,
                created: Instant::now(),
            },
        );
        upload_id
    }

    /// Whether upload `id` waits for its file, and of what size.
    pub fn pending(&self, id: &str) -> Pending {
        match self.state().uploads.get(id) {
            Some(u) if u.received.is_none() => Pending::File(u.size),
            Some(_) => Pending::HasFile,
            None => Pending::Unknown,
        }
    }

    /// A fresh path for the incoming bytes of upload `id`.
    pub fn incoming_path(&self, id: &str) -> PathBuf {
        self.dir.join("incoming").join(format!("{id}.{}", random_id(6)))
    }

    /// The complete bytes of upload `id` are at `path`; false when it is gone or already has them.
    pub fn received(&self, id: &str, path: &Path) -> bool {
        match self.state().uploads.get_mut(id) {
            Some(u) if u.received.is_none() => {
                u.received = Some(path.to_path_buf());
                true
            }
            _ => false,
        }
    }

    /// Confirm upload `id` of `user`. A consumer input is marked confirmed (a task binds it later);
    /// a provider output becomes a stored file on its task's channel, which `task` gives (with what
    /// the caller needs to announce it) while the task has not ended.
    pub fn confirm<T>(
        &self,
        id: &str,
        user: &str,
        task: impl FnOnce(&str) -> Option<(String, T)>,
    ) -> Result<Confirmed<T>, Refusal> {
        let mut st = self.state();
        let u = match st.uploads.get_mut(id) {
            Some(u) if u.user == user => u,
            _ => return Err(Refusal::new(404, "NOT_FOUND", format!("upload {id} is unknown"))),
        };
        let Some(path) = u.received.clone() else {
            return Err(Refusal::new(
                409,
                "UPLOAD_INCOMPLETE",
                format!("upload {id} has no file yet: POST the file to the uploadUrl first"),
            ));
        };
        let (task_id, output_id) = match u.role.clone() {
            Role::ConsumerInput { .. } => {
                u.confirmed = true;
                return Ok(Confirmed::Input);
            }
            Role::ProviderOutput { task_id, output_id } => (task_id, output_id),
        };
        let u = u.clone();
        let Some((channel, target)) = task(&task_id) else {
            return Err(Refusal::new(
                409,
                "TASK_TERMINAL",
                format!("task {task_id} has already ended"),
            ));
        };
        let file_id = format!("f_{}", random_id(16));
        let dest = self.dir.join("blobs").join(&file_id);
        if let Err(e) = std::fs::rename(&path, &dest) {
            return Err(Refusal::new(500, "InternalError", format!("storing upload {id}: {e}")));
        }
        st.uploads.remove(id);
        let artifact_ref = file_ref(&channel, &file_id, &u);
        let blob = Blob {
            channel: channel.clone(),
            file_name: u.file_name.clone(),
            path: dest,
            key: random_id(24),
        };
        if let Err(e) = self.add_blob(&mut st, file_id, blob) {
            return Err(Refusal::new(
                500,
                "InternalError",
                format!("registering upload {id}: {e}"),
            ));
        }
        Ok(Confirmed::Output {
            task_id,
            output_id,
            channel,
            artifact_ref,
            target,
        })
    }

    /// The secret of the signed download URL of file `id`, when it is `name` on `channel`.
    pub fn download_key(&self, id: &str, channel: &str, name: &str) -> Option<String> {
        let blob = self.state().blobs.get(id).cloned();
        blob.filter(|b| b.channel == channel && b.file_name == name)
            .map(|b| b.key)
    }

    /// Where the bytes of file `id` are, when `key` is its download secret.
    pub fn blob_path(&self, id: &str, key: &str) -> Option<PathBuf> {
        let blob = self.state().blobs.get(id).cloned();
        blob.filter(|b| b.key == key).map(|b| b.path)
    }
}

/// Whether an upload waits for its file.
pub(crate) enum Pending {
    /// It does, of this many bytes.
    File(u64),
    /// It has its file already.
    HasFile,
    /// No such upload (or it expired).
    Unknown,
}

/// A confirmed upload.
pub(crate) enum Confirmed<T> {
    /// A consumer input, waiting for its task.
    Input,
    /// A provider output, stored on its task's channel.
    Output {
        /// The task.
        task_id: String,
        /// The output it answers, when the agent named one.
        output_id: Option<String>,
        /// The task channel.
        channel: String,
        /// The file's reference (`kind: "file"`).
        artifact_ref: Value,
        /// What the task lookup gave besides the channel.
        target: T,
    },
}

/// A refused request of the file store: its status, code and message.
#[derive(Debug)]
pub(crate) struct Refusal {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

impl Refusal {
    fn new(status: u16, code: &'static str, message: String) -> Refusal {
        Refusal { status, code, message }
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        if self.temporary {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn file_ref(channel: &str, file_id: &str, u: &Upload) -> Value {
    json!({
        "kind": "file", "channel": channel, "fileId": file_id, "fileName": u.file_name,
        "mimeType": u.mime, "size": u.size,
    })
}
