//! The file endpoints: the upload handshake (request-upload → storage POST → confirm-upload),
//! provider-output artifacts announced on their task channel, and downloads through the PubNub
//! file URL (307) and the blob GET. What they keep is in the file store (`files`).

use std::path::Path;

use axum::body::Body;
use axum::http::{HeaderMap, Response};
use futures::StreamExt;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

use crate::files::{Confirmed, Pending, Refusal, Role};
use crate::net::Net;
use crate::request::{json_response, Req};

fn err(status: u16, code: &str, message: &str) -> Response<Body> {
    json_response(status, &json!({ "error": { "code": code, "message": message } }))
}

fn refused(r: Refusal) -> Response<Body> {
    err(r.status, r.code, &r.message)
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
    let role = match upload_role(net, user, &s) {
        Ok(r) => r,
        Err(resp) => return *resp,
    };
    let file_name = s("fileName").unwrap_or_else(|| "unnamed".into());
    let session = match &role {
        Role::ConsumerInput { session, .. } => Some(session.clone()),
        Role::ProviderOutput { .. } => None,
    };
    let upload_id = net.files.add_upload(user, role, file_name, mime.clone(), size);
    let mut answer = json!({
        "uploadId": upload_id,
        "uploadUrl": format!("{}/storage/upload", base(net, &req.headers)),
        "formFields": [ { "key": "key", "value": upload_id }, { "key": "Content-Type", "value": mime } ],
    });
    if let Some(s) = session {
        answer["uploadSessionId"] = json!(s);
    }
    json_response(200, &answer)
}

/// Who a requested upload is for (the body's `role` and what it needs), or the error answer.
fn upload_role(net: &Net, user: &str, s: &impl Fn(&str) -> Option<String>) -> Result<Role, Box<Response<Body>>> {
    match s("role").as_deref() {
        Some("consumer-input") => {
            let Some(part_id) = s("partId") else {
                return Err(Box::new(err(
                    400,
                    "BAD_REQUEST",
                    "partId is required for consumer-input uploads",
                )));
            };
            let session = input_session(net, user, s)?;
            Ok(Role::ConsumerInput { session, part_id })
        }
        Some("provider-output") => {
            let Some(task_id) = s("taskId") else {
                return Err(Box::new(err(
                    400,
                    "BAD_REQUEST",
                    "taskId is required for provider-output uploads",
                )));
            };
            check_output_task(net, user, &task_id)?;
            Ok(Role::ProviderOutput {
                task_id,
                output_id: s("outputId"),
            })
        }
        other => Err(Box::new(err(
            400,
            "BAD_REQUEST",
            &format!("role must be \"consumer-input\" or \"provider-output\", got {other:?}"),
        ))),
    }
}

/// The upload session a consumer input joins: the given one (the caller's), or a new one for a
/// registered agent.
fn input_session(net: &Net, user: &str, s: &impl Fn(&str) -> Option<String>) -> Result<String, Box<Response<Body>>> {
    if let Some(id) = s("uploadSessionId") {
        if !net.files.owns_session(&id, user) {
            return Err(Box::new(err(
                404,
                "NOT_FOUND",
                &format!("uploadSessionId {id:?} is unknown"),
            )));
        }
        return Ok(id);
    }
    let Some(agent) = s("agentName") else {
        return Err(Box::new(err(
            400,
            "BAD_REQUEST",
            "agentName (or uploadSessionId) is required",
        )));
    };
    if !net.records().agents.contains_key(&agent) {
        return Err(Box::new(err(
            404,
            "AGENT_NOT_FOUND",
            &format!("Agent '{agent}' is not registered on this network"),
        )));
    }
    Ok(net.files.new_session(user))
}

/// A provider output needs a running task of one of the user's agents.
fn check_output_task(net: &Net, user: &str, task_id: &str) -> Result<(), Box<Response<Body>>> {
    let r = net.records();
    let Some(task) = r.tasks.get(task_id) else {
        return Err(Box::new(err(404, "NOT_FOUND", &format!("task {task_id} not found"))));
    };
    if r.agents.get(&task.agent).is_none_or(|a| a.owner != user) {
        return Err(Box::new(err(
            403,
            "FORBIDDEN",
            &format!("task {task_id} is not a task of your agents"),
        )));
    }
    if task.is_terminal() {
        return Err(Box::new(err(
            409,
            "TASK_TERMINAL",
            &format!("task {task_id} has already ended"),
        )));
    }
    Ok(())
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
                return upload_file(net, &mut form, field, &id).await;
            }
            _ => {
                // other policy fields are accepted and ignored
                while let Ok(Some(_)) = field.chunk().await {}
            }
        }
    }
}

/// The `file` part of upload `id`: its bytes to disk, then registered with the upload.
async fn upload_file(
    net: &Net,
    form: &mut multer::Multipart<'static>,
    mut field: multer::Field<'static>,
    id: &str,
) -> Response<Body> {
    let declared = match net.files.pending(id) {
        Pending::File(size) => size,
        Pending::HasFile => return err(409, "AlreadyUploaded", &format!("upload {id} already has its file")),
        Pending::Unknown => return err(403, "AccessDenied", &format!("upload {id} is unknown or expired")),
    };
    let tmp = net.files.incoming_path(id);
    let written = receive(&mut field, &tmp, declared).await;
    if !matches!(written, Ok(n) if n == declared) {
        // read what is left of the form (bounded) before answering, so the client gets the
        // answer rather than a reset connection
        drop(field);
        drain_form(form).await;
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
    if !net.files.received(id, &tmp) {
        let _ = tokio::fs::remove_file(&tmp).await;
        return err(409, "AlreadyUploaded", &format!("upload {id} already has its file"));
    }
    Response::builder()
        .status(204)
        .body(Body::empty())
        .unwrap_or_else(|_| Response::new(Body::empty()))
}

/// Read (and drop) at most [`DRAIN_LIMIT`] bytes of what is left of a form.
async fn drain_form(form: &mut multer::Multipart<'static>) {
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
    let confirmed = net.files.confirm(id, user, |task_id| {
        let r = net.records();
        match r.tasks.get(task_id) {
            Some(t) if !t.is_terminal() => Some((t.channel(), (t.sub_key.clone(), t.agent.clone()))),
            _ => None,
        }
    });
    match confirmed {
        Err(r) => refused(r),
        Ok(Confirmed::Input) => json_response(200, &json!({ "uploadId": id })),
        Ok(Confirmed::Output {
            task_id,
            output_id,
            channel,
            artifact_ref: r,
            target: (sub_key, agent),
        }) => {
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
    match net.files.download_key(id, channel, name) {
        Some(key) => {
            let location = format!(
                "{}/storage/blob/{id}/{}?key={key}",
                base(net, &req.headers),
                crate::request::encode(name),
            );
            Response::builder()
                .status(307)
                .header("location", location)
                .body(Body::empty())
                .unwrap_or_else(|_| Response::new(Body::empty()))
        }
        None => json_response(
            404,
            &json!({ "status": 404, "error": true, "message": "File not found", "service": "Files" }),
        ),
    }
}

/// `GET /storage/blob/{id}/{name}?key=…`: the bytes, streamed from disk.
pub(crate) async fn blob(net: &Net, id: &str, key: &str) -> Response<Body> {
    let Some(path) = net.files.blob_path(id, key) else {
        return err(403, "AccessDenied", "unknown file or bad signature");
    };
    let file = match tokio::fs::File::open(&path).await {
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
