//! File storage: the upload handshake (request-upload → storage POST → confirm-upload), the
//! `uploadSessionId` binding of consumer inputs, provider-output artifacts, and downloads through
//! the PubNub file URL (307) and the blob GET.
//!
//! Files are streamed to disk (never held whole in memory), size-checked against the declared
//! size while they arrive, and only registered once complete: an interrupted or oversize upload
//! leaves nothing behind.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{HeaderMap, Response};
use futures::StreamExt;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

use crate::ids::random_id;
use crate::net::Net;
use crate::request::{json_response, Req};

/// Uploads not confirmed within this time are dropped with their bytes.
const UPLOAD_TTL: Duration = Duration::from_secs(3600);

/// Who an upload is for.
#[derive(Debug, Clone, PartialEq)]
enum Role {
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
pub(crate) struct Blob {
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

fn err(status: u16, code: &str, message: &str) -> Response<Body> {
    json_response(status, &json!({ "error": { "code": code, "message": message } }))
}

/// The public base URL of this devnet as the client reached it: its `Host`, and the scheme a
/// local proxy in front says it was reached with (`X-Forwarded-Proto`), else the devnet's own.
fn base(net: &Net, headers: &HeaderMap) -> String {
    let own = if net.url.starts_with("https:") { "https" } else { "http" };
    let scheme = match headers.get("x-forwarded-proto").and_then(|h| h.to_str().ok()) {
        Some("http") => "http",
        Some("https") => "https",
        _ => own,
    };
    headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .map(|h| format!("{scheme}://{h}"))
        .unwrap_or_else(|| net.url.clone())
}

/// `POST /api/v1/files/request-upload`.
pub(crate) fn request_upload(net: &Net, req: &Req, user: &str) -> Response<Body> {
    let body = match req.json() {
        Ok(b) => b,
        Err(e) => return err(400, "BAD_REQUEST", &e),
    };
    let s = |k: &str| {
        body.get(k)
            .and_then(Value::as_str)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    };
    let Some(size) = body.get("fileSize").and_then(Value::as_u64) else {
        return err(400, "BAD_REQUEST", "fileSize (bytes, integer) is required");
    };
    let max = net.cfg.max_upload_bytes;
    if size > max {
        return err(
            413,
            "EntityTooLarge",
            &format!("file of {size} bytes is above this network's upload limit of {max} bytes"),
        );
    }
    let mime = s("mimeType").unwrap_or_else(|| "application/octet-stream".into());
    let role = match s("role").as_deref() {
        Some("consumer-input") => {
            let Some(part_id) = s("partId") else {
                return err(400, "BAD_REQUEST", "partId is required for consumer-input uploads");
            };
            let session = match s("uploadSessionId") {
                Some(id) => {
                    let st = net.files.state();
                    match st.sessions.get(&id) {
                        Some((owner, _)) if owner == user => id,
                        _ => return err(404, "NOT_FOUND", &format!("uploadSessionId {id:?} is unknown")),
                    }
                }
                None => {
                    let Some(agent) = s("agentName") else {
                        return err(400, "BAD_REQUEST", "agentName (or uploadSessionId) is required");
                    };
                    if !net.records().agents.contains_key(&agent) {
                        return err(
                            404,
                            "AGENT_NOT_FOUND",
                            &format!("Agent '{agent}' is not registered on this network"),
                        );
                    }
                    let id = format!("us_{}", random_id(16));
                    net.files
                        .state()
                        .sessions
                        .insert(id.clone(), (user.to_string(), Vec::new()));
                    id
                }
            };
            Role::ConsumerInput { session, part_id }
        }
        Some("provider-output") => {
            let Some(task_id) = s("taskId") else {
                return err(400, "BAD_REQUEST", "taskId is required for provider-output uploads");
            };
            let r = net.records();
            let Some(task) = r.tasks.get(&task_id) else {
                return err(404, "NOT_FOUND", &format!("task {task_id} not found"));
            };
            if r.agents.get(&task.agent).is_none_or(|a| a.owner != user) {
                return err(
                    403,
                    "FORBIDDEN",
                    &format!("task {task_id} is not a task of your agents"),
                );
            }
            if task.is_terminal() {
                return err(409, "TASK_TERMINAL", &format!("task {task_id} has already ended"));
            }
            Role::ProviderOutput {
                task_id,
                output_id: s("outputId"),
            }
        }
        other => {
            return err(
                400,
                "BAD_REQUEST",
                &format!("role must be \"consumer-input\" or \"provider-output\", got {other:?}"),
            )
        }
    };
    let file_name = s("fileName").unwrap_or_else(|| "unnamed".into());
    let upload_id = format!("up_{}", random_id(16));
    let mut st = net.files.state();
    let session = match &role {
        Role::ConsumerInput { session, .. } => {
            if let Some((_, ids)) = st.sessions.get_mut(session) {
                ids.push(upload_id.clone());
            }
            Some(session.clone())
        }
        Role::ProviderOutput { .. } => None,
    };
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
    let mut answer = json!({
        "uploadId": upload_id,
        "uploadUrl": format!("{}/storage/upload", base(net, &req.headers)),
        "formFields": [ { "key": "key", "value": upload_id }, { "key": "Content-Type", "value": st.uploads[&upload_id].mime } ],
    });
    if let Some(s) = session {
        answer["uploadSessionId"] = json!(s);
    }
    json_response(200, &answer)
}

/// Largest form field other than `file` (the `key`, policy fields): they are read whole.
const MAX_FORM_FIELD: u64 = 64 * 1024;

/// True when a multipart error is the body timeout of [`crate::http::timed_stream`].
fn timed_out(e: &multer::Error) -> bool {
    match e {
        multer::Error::StreamReadFailed(inner) => inner
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut),
        _ => false,
    }
}

fn timeout_answer(e: &multer::Error) -> Response<Body> {
    let mut r = err(408, "RequestTimeout", &format!("the upload stalled: {e}"));
    r.headers_mut()
        .insert("connection", axum::http::HeaderValue::from_static("close"));
    r
}

/// `POST /storage/upload` (multipart: form fields, then the `file` part last), streamed to disk.
/// Bounded: form fields other than `file` are at most 64 KiB, the whole form at most the upload
/// limit plus what is drained of an oversize file, and every chunk must arrive within the body
/// timeout (else 408).
pub(crate) async fn storage_upload<S>(net: &Net, headers: &HeaderMap, body: S) -> Response<Body>
where
    S: futures::Stream<Item = Result<bytes::Bytes, std::io::Error>> + Send + 'static,
{
    let ct = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("");
    let boundary = match multer::parse_boundary(ct) {
        Ok(b) => b,
        Err(e) => {
            return err(
                400,
                "MalformedPOSTRequest",
                &format!("expected multipart/form-data: {e}"),
            )
        }
    };
    let file_limit = net.cfg.max_upload_bytes.saturating_add(DRAIN_LIMIT);
    let limits = multer::SizeLimit::new()
        .whole_stream(file_limit.saturating_add(1024 * 1024))
        .per_field(MAX_FORM_FIELD)
        .for_field("file", file_limit);
    let mut form = multer::Multipart::with_constraints(body, boundary, multer::Constraints::new().size_limit(limits));
    let mut upload_id: Option<String> = None;
    loop {
        let mut field = match form.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => return err(400, "MalformedPOSTRequest", "the form has no `file` part"),
            Err(e) if timed_out(&e) => return timeout_answer(&e),
            Err(e) => return err(400, "MalformedPOSTRequest", &format!("bad multipart body: {e}")),
        };
        match field.name() {
            Some("key") => match field.text().await {
                Ok(t) => upload_id = Some(t),
                Err(e) if timed_out(&e) => return timeout_answer(&e),
                Err(e) => return err(400, "MalformedPOSTRequest", &format!("bad key field: {e}")),
            },
            Some("file") => {
                let Some(id) = upload_id.clone() else {
                    return err(400, "MalformedPOSTRequest", "the `key` field must come before `file`");
                };
                let declared = match net.files.state().uploads.get(&id) {
                    Some(u) if u.received.is_none() => u.size,
                    Some(_) => return err(409, "AlreadyUploaded", &format!("upload {id} already has its file")),
                    None => return err(403, "AccessDenied", &format!("upload {id} is unknown or expired")),
                };
                let tmp = net.files.dir.join("incoming").join(format!("{id}.{}", random_id(6)));
                let written = receive(&mut field, &tmp, declared).await;
                if !matches!(written, Ok(n) if n == declared) {
                    // read what is left of the form (bounded) before answering, so the client
                    // gets the answer rather than a reset connection
                    drop(field);
                    let mut left = DRAIN_LIMIT;
                    while let Ok(Some(mut rest)) = form.next_field().await {
                        while let Ok(Some(c)) = rest.chunk().await {
                            left = left.saturating_sub(c.len() as u64);
                            if left == 0 {
                                break;
                            }
                        }
                        if left == 0 {
                            break;
                        }
                    }
                }
                match written {
                    Ok(n) if n == declared => {}
                    Ok(n) => {
                        let _ = tokio::fs::remove_file(&tmp).await;
                        return err(
                            400,
                            "IncompleteBody",
                            &format!("received {n} bytes but the upload declared {declared}"),
                        );
                    }
                    Err(resp) => {
                        let _ = tokio::fs::remove_file(&tmp).await;
                        return *resp;
                    }
                }
                let stored = match net.files.state().uploads.get_mut(&id) {
                    Some(u) if u.received.is_none() => {
                        u.received = Some(tmp.clone());
                        true
                    }
                    _ => false,
                };
                if !stored {
                    let _ = tokio::fs::remove_file(&tmp).await;
                    return err(409, "AlreadyUploaded", &format!("upload {id} already has its file"));
                }
                return Response::builder()
                    .status(204)
                    .body(Body::empty())
                    .unwrap_or_else(|_| Response::new(Body::empty()));
            }
            _ => {
                // other policy fields are accepted and ignored
                while let Ok(Some(_)) = field.chunk().await {}
            }
        }
    }
}

/// How much of an oversize upload is still read (and dropped) before it is refused.
const DRAIN_LIMIT: u64 = 8 * 1024 * 1024;

/// Stream one multipart field to `path`, refusing more than `limit` bytes.
async fn receive(field: &mut multer::Field<'_>, path: &Path, limit: u64) -> Result<u64, Box<Response<Body>>> {
    let io = |e: std::io::Error| Box::new(err(500, "InternalError", &format!("storing the upload: {e}")));
    let mut file = tokio::fs::File::create(path).await.map_err(io)?;
    let mut n: u64 = 0;
    loop {
        match field.chunk().await {
            Ok(Some(chunk)) => {
                n += chunk.len() as u64;
                if n > limit {
                    // read (and drop) a bounded rest of the body first: answering while the
                    // client still sends makes the kernel reset the connection, and the client
                    // sees "connection reset" instead of this answer
                    let mut extra = 0u64;
                    while extra < DRAIN_LIMIT {
                        match field.chunk().await {
                            Ok(Some(c)) => extra += c.len() as u64,
                            _ => break,
                        }
                    }
                    return Err(Box::new(err(
                        400,
                        "EntityTooLarge",
                        &format!("the file is larger than the {limit} bytes the upload declared"),
                    )));
                }
                file.write_all(&chunk).await.map_err(io)?;
            }
            Ok(None) => break,
            Err(e) if timed_out(&e) => return Err(Box::new(timeout_answer(&e))),
            Err(e) => {
                return Err(Box::new(err(
                    400,
                    "IncompleteBody",
                    &format!("the upload was interrupted: {e}"),
                )))
            }
        }
    }
    file.flush().await.map_err(io)?;
    Ok(n)
}

/// `POST /api/v1/files/confirm-upload`.
pub(crate) fn confirm_upload(net: &Net, req: &Req, user: &str) -> Response<Body> {
    let body = match req.json() {
        Ok(b) => b,
        Err(e) => return err(400, "BAD_REQUEST", &e),
    };
    let Some(id) = body.get("uploadId").and_then(Value::as_str) else {
        return err(400, "BAD_REQUEST", "uploadId is required");
    };
    let mut st = net.files.state();
    let u = match st.uploads.get_mut(id) {
        Some(u) if u.user == user => u,
        _ => return err(404, "NOT_FOUND", &format!("upload {id} is unknown")),
    };
    let Some(path) = u.received.clone() else {
        return err(
            409,
            "UPLOAD_INCOMPLETE",
            &format!("upload {id} has no file yet: POST the file to the uploadUrl first"),
        );
    };
    match u.role.clone() {
        Role::ConsumerInput { .. } => {
            u.confirmed = true;
            json_response(200, &json!({ "uploadId": id }))
        }
        Role::ProviderOutput { task_id, output_id } => {
            let u = u.clone();
            let (channel, sub_key, agent) = {
                let r = net.records();
                match r.tasks.get(&task_id) {
                    Some(t) if !t.is_terminal() => (t.channel(), t.sub_key.clone(), t.agent.clone()),
                    _ => return err(409, "TASK_TERMINAL", &format!("task {task_id} has already ended")),
                }
            };
            let file_id = format!("f_{}", random_id(16));
            let dest = net.files.dir.join("blobs").join(&file_id);
            if let Err(e) = std::fs::rename(&path, &dest) {
                return err(500, "InternalError", &format!("storing upload {id}: {e}"));
            }
            st.uploads.remove(id);
            let r = file_ref(&channel, &file_id, &u);
            let blob = Blob {
                channel: channel.clone(),
                file_name: u.file_name.clone(),
                path: dest,
                key: random_id(24),
            };
            if let Err(e) = net.files.add_blob(&mut st, file_id.clone(), blob) {
                return err(500, "InternalError", &format!("registering upload {id}: {e}"));
            }
            drop(st);
            let mut event = json!({
                "type": "artifact", "taskId": task_id, "artifactRef": r,
                "protocolVersion": blocks_wire::PROTOCOL_VERSION,
            });
            if let Some(o) = output_id {
                event["outputId"] = json!(o);
            }
            let meta =
                json!({ "agentName": agent, "taskId": task_id, "protocolVersion": blocks_wire::PROTOCOL_VERSION });
            net.publish(&sub_key, &channel, event, Some(meta), "blocks-devnet", true);
            json_response(200, &json!({ "uploadId": id, "artifactRef": r }))
        }
    }
}

/// `GET /v1/files/{sub}/channels/{channel}/files/{id}/{name}` → 307 to the signed blob URL.
pub(crate) fn file_url(net: &Net, req: &Req, channel: &str, id: &str, name: &str) -> Response<Body> {
    let auth = req.q("auth").unwrap_or("");
    if !crate::access::allowed(&*net.records(), auth, channel, crate::access::Op::Read) {
        return json_response(
            403,
            &json!({ "status": 403, "error": true, "message": "Forbidden", "service": "Access Manager" }),
        );
    }
    let blob = net.files.state().blobs.get(id).cloned();
    match blob {
        Some(b) if b.channel == channel && b.file_name == name => {
            let location = format!(
                "{}/storage/blob/{id}/{}?key={}",
                base(net, &req.headers),
                crate::request::encode(name),
                b.key
            );
            Response::builder()
                .status(307)
                .header("location", location)
                .body(Body::empty())
                .unwrap_or_else(|_| Response::new(Body::empty()))
        }
        _ => json_response(
            404,
            &json!({ "status": 404, "error": true, "message": "File not found", "service": "Files" }),
        ),
    }
}

/// `GET /storage/blob/{id}/{name}?key=…`: the bytes, streamed from disk.
pub(crate) async fn blob(net: &Net, id: &str, key: &str) -> Response<Body> {
    let blob = net.files.state().blobs.get(id).cloned();
    let Some(b) = blob.filter(|b| b.key == key) else {
        return err(403, "AccessDenied", "unknown file or bad signature");
    };
    let file = match tokio::fs::File::open(&b.path).await {
        Ok(f) => f,
        Err(e) => return err(404, "NoSuchKey", &format!("file {id} is gone: {e}")),
    };
    let len = file.metadata().await.map(|m| m.len()).unwrap_or(0);
    let stream = tokio_util::io::ReaderStream::with_capacity(file, 64 * 1024).map(|r| r.map_err(axum::Error::new));
    Response::builder()
        .status(200)
        .header("content-type", "application/octet-stream")
        .header("content-length", len)
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| Response::new(Body::empty()))
}
