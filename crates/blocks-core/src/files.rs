//! Files: the three-step upload handshake (consumer inputs and provider outputs) and downloads
//! through the PubNub file URL. Uploads from a path and downloads to a path are streamed, so a
//! file of any size costs a few buffers of memory.

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

use crate::error::{Error, Result};
use crate::http::HttpClient;
use crate::realtime::{encode_path, RealtimeConfig};

/// Timeout of the storage POST (spec: 120 s), scaled up for large files on slow links.
const STORAGE_TIMEOUT: Duration = Duration::from_secs(120);

/// Where the bytes of an upload come from.
#[derive(Debug, Clone)]
pub enum FileSource {
    /// In memory.
    Bytes(bytes::Bytes),
    /// A file on disk, streamed.
    Path(PathBuf),
}

/// One file to upload.
#[derive(Debug, Clone)]
pub struct FileUpload {
    /// The bytes.
    pub source: FileSource,
    /// File name sent to storage.
    pub file_name: String,
    /// MIME type.
    pub mime_type: String,
    /// Size in bytes (must match the source).
    pub size: u64,
}

impl FileUpload {
    /// Size check against `max` (before any byte is sent).
    pub fn check_size(&self, max: u64) -> Result<()> {
        if self.size > max {
            return Err(Error::InvalidArgument(format!(
                "file {:?} is {} bytes, above the upload limit of {max} bytes (BLOCKS_MAX_UPLOAD_BYTES); \
                 send a smaller file or raise maxUploadBytes if your network accepts more",
                self.file_name, self.size
            )));
        }
        Ok(())
    }
}

/// A backend that can make authenticated JSON POSTs (consumer JWT or agent JWT, each with its own
/// refresh-on-401).
#[async_trait::async_trait]
pub trait AuthedPost: Send + Sync {
    /// POST `body` to `path`; `context` prefixes errors.
    async fn post(&self, path: &str, body: &Value, context: &str) -> Result<Value>;
}

#[async_trait::async_trait]
impl AuthedPost for crate::backend::Backend {
    async fn post(&self, path: &str, body: &Value, context: &str) -> Result<Value> {
        self.post_authed(path, body, context).await
    }
}

fn upload_error(e: Error, step: &str) -> Error {
    match e {
        Error::Http { status, body, .. } => Error::FileUpload {
            message: format!(
                "{step} failed: HTTP {status}{}",
                if body.is_empty() {
                    String::new()
                } else {
                    format!(" {body}")
                }
            ),
            status: Some(status),
        },
        Error::Transport { chain, code, .. } => Error::FileUpload {
            message: format!("{step} failed: {chain} ({code})"),
            status: None,
        },
        other => other,
    }
}

/// Run request-upload → storage POST → confirm-upload. `request` carries the role fields
/// (`role`, `partId`, `agentName`/`uploadSessionId`, or `taskId`/`outputId`); the file fields are
/// added here. Returns (request-upload answer, confirm-upload answer).
pub async fn upload(
    backend: &dyn AuthedPost,
    http: &HttpClient,
    mut request: Value,
    file: &FileUpload,
) -> Result<(Value, Value)> {
    if let Some(o) = request.as_object_mut() {
        o.insert("fileName".into(), json!(file.file_name));
        o.insert("fileSize".into(), json!(file.size));
        o.insert("mimeType".into(), json!(file.mime_type));
    }
    let answer = backend
        .post("/api/v1/files/request-upload", &request, "request-upload")
        .await
        .map_err(|e| upload_error(e, "request-upload"))?;
    if answer.get("error").is_some_and(|e| !e.is_null()) {
        return Err(Error::FileUpload {
            message: format!("request-upload failed: {}", answer["error"]),
            status: None,
        });
    }
    let (Some(url), Some(upload_id)) = (
        answer.get("uploadUrl").and_then(Value::as_str),
        answer.get("uploadId").and_then(Value::as_str),
    ) else {
        return Err(Error::FileUpload {
            message: format!("request-upload failed: the answer lacks uploadUrl or uploadId: {answer}"),
            status: None,
        });
    };
    let mut form = reqwest::multipart::Form::new();
    for f in answer.get("formFields").and_then(Value::as_array).into_iter().flatten() {
        let key = f.get("key").or_else(|| f.get("name")).and_then(Value::as_str);
        let value = f.get("value").map(|v| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        });
        if let (Some(k), Some(v)) = (key, value) {
            form = form.text(k.to_string(), v);
        }
    }
    let part = match &file.source {
        FileSource::Bytes(b) => reqwest::multipart::Part::stream_with_length(b.clone(), file.size),
        FileSource::Path(p) => {
            let f = tokio::fs::File::open(p).await.map_err(|e| Error::FileUpload {
                message: format!("cannot read {}: {e}", p.display()),
                status: None,
            })?;
            let stream = tokio_util::io::ReaderStream::with_capacity(f, 256 * 1024);
            reqwest::multipart::Part::stream_with_length(reqwest::Body::wrap_stream(stream), file.size)
        }
    };
    let part = part
        .file_name(file.file_name.clone())
        .mime_str(&file.mime_type)
        .map_err(|e| Error::InvalidArgument(format!("bad contentType {:?}: {e}", file.mime_type)))?;
    form = form.part("file", part);
    // 120 s, plus one second per 4 MiB for big files
    let timeout = STORAGE_TIMEOUT + Duration::from_secs(file.size / (4 << 20));
    let resp = http
        .inner()
        .post(url)
        .multipart(form)
        .timeout(timeout)
        .send()
        .await
        .map_err(|e| Error::FileUpload {
            message: format!("S3 upload failed: {}", e.without_url()),
            status: None,
        })?;
    let status = resp.status().as_u16();
    if !(200..300).contains(&status) {
        let body = crate::http::error_body(resp).await;
        return Err(Error::FileUpload {
            message: format!("S3 upload failed: HTTP {status} {body}"),
            status: Some(status),
        });
    }
    let confirm = backend
        .post(
            "/api/v1/files/confirm-upload",
            &json!({ "uploadId": upload_id }),
            "confirm-upload",
        )
        .await
        .map_err(|e| upload_error(e, "confirm-upload"))?;
    Ok((answer, confirm))
}

/// What a download needs: the realtime origin and keys, and a token that may read the channel.
#[derive(Debug, Clone)]
pub struct FileAccess {
    /// Realtime origin.
    pub origin: String,
    /// Subscribe key.
    pub subscribe_key: String,
    /// Client uuid.
    pub user_id: String,
    /// Token (`auth=`).
    pub token: Option<String>,
}

impl From<&RealtimeConfig> for FileAccess {
    fn from(c: &RealtimeConfig) -> Self {
        FileAccess {
            origin: c.origin.clone(),
            subscribe_key: c.subscribe_key.clone(),
            user_id: c.user_id.clone(),
            token: c.token.clone(),
        }
    }
}

/// The three fields of a file ref, or an error naming what is missing.
fn file_fields(r: &Value) -> Result<(&str, &str, &str)> {
    match (
        r.get("channel").and_then(Value::as_str),
        r.get("fileId").and_then(Value::as_str),
        r.get("fileName").and_then(Value::as_str),
    ) {
        (Some(c), Some(i), Some(n)) => Ok((c, i, n)),
        _ => Err(Error::InvalidArgument(
            "file artifactRef is missing required fields (channel, fileId, fileName)".into(),
        )),
    }
}

/// The download URL of a file ref (the realtime plane's file endpoint, with the token as `auth=`).
pub fn download_url(access: &FileAccess, r: &Value) -> Result<String> {
    let (channel, id, name) = file_fields(r)?;
    let mut url = reqwest::Url::parse(&format!(
        "{}/v1/files/{}/channels/{}/files/{}/{}",
        access.origin.trim_end_matches('/'),
        access.subscribe_key,
        encode_path(channel),
        encode_path(id),
        encode_path(name)
    ))
    .map_err(|e| Error::Config(format!("bad realtime origin {:?}: {e}", access.origin)))?;
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("uuid", &access.user_id);
        q.append_pair("pnsdk", concat!("Blocks-Rust/", env!("CARGO_PKG_VERSION")));
        if let Some(t) = &access.token {
            q.append_pair("auth", t);
        }
    }
    Ok(url.into())
}

/// GET the PubNub file URL (307 → storage) and return the storage response.
async fn open_download(http: &HttpClient, access: &FileAccess, r: &Value) -> Result<reqwest::Response> {
    let (_, _, name) = file_fields(r)?;
    let url = download_url(access, r)?;
    let context = format!("download of {name}");
    // reqwest follows the 307 itself, without our query (the Location carries its own)
    let resp = http
        .inner()
        .get(&url)
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .map_err(|e| Error::transport(context.clone(), e))?;
    let status = resp.status().as_u16();
    if status != 200 {
        let body = crate::http::error_body(resp).await;
        return Err(Error::Http { context, status, body });
    }
    Ok(resp)
}

/// Download a file artifact into memory.
pub async fn download(http: &HttpClient, access: &FileAccess, r: &Value) -> Result<Vec<u8>> {
    let mut resp = open_download(http, access, r).await?;
    let mut out = Vec::with_capacity(r.get("size").and_then(Value::as_u64).unwrap_or(0).min(1 << 30) as usize);
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| Error::transport("download interrupted", e))?
    {
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// Download a file artifact to `path` (streamed; written to a temporary name and renamed, so a
/// failed download leaves no partial file). Returns the byte count.
pub async fn download_to(http: &HttpClient, access: &FileAccess, r: &Value, path: &Path) -> Result<u64> {
    let resp = open_download(http, access, r).await?;
    let tmp = path.with_extension(format!("part-{}", std::process::id()));
    let io = |e: std::io::Error| Error::Config(format!("writing {}: {e}", path.display()));
    let result: Result<u64> = async {
        // a new file only: never written through a symlink or over something that is there
        let mut f = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .await
            .map_err(io)?;
        let mut n = 0u64;
        let mut body = resp.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| Error::transport("download interrupted", e))?;
            n += chunk.len() as u64;
            f.write_all(&chunk).await.map_err(io)?;
        }
        f.flush().await.map_err(io)?;
        Ok(n)
    }
    .await;
    match result {
        Ok(n) => {
            tokio::fs::rename(&tmp, path).await.map_err(io)?;
            Ok(n)
        }
        Err(e) => {
            let _ = tokio::fs::remove_file(&tmp).await;
            Err(e)
        }
    }
}
