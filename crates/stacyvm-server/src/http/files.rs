//! The file operations: the original's eight, plus the streamed raw-body upload (`PUT`) and
//! the directory watch (NDJSON).

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue};
use axum::response::Response;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use stacyvm_provider::ProviderError;
use stacyvm_types::{FileInfo, WatchKind};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;

use super::error::ApiError;
use super::extract::{query_flag, JsonBody};
use super::openapi::{FileNotFound, SandboxIdParam, SandboxPaused, Unavailable, WatchConflict};
use super::views::Status;
use super::{ok, AppState, Reply, SbId, St};

pub fn routes() -> OpenApiRouter<AppState> {
    api_routes![write, upload, read, delete; list; stat; glob; move_file; chmod; watch]
}

type Q = Query<HashMap<String, String>>;

fn required<'a>(q: &'a HashMap<String, String>, key: &str) -> Result<&'a str, ApiError> {
    q.get(key)
        .map(String::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError::bad_request(format!("{key} query parameter required")))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[schema(as = WriteFileRequest)]
#[serde(default)]
struct WriteBody {
    #[schema(required = true)]
    path: String,
    /// Text, written as UTF-8
    content: String,
    /// Octal (`0644`, `755`) or `executable`
    #[schema(default = "0644")]
    mode: Option<String>,
}

/// Write a file
#[utoipa::path(post, path = "/sandboxes/{id}/files", operation_id = "writeFile", tag = "files",
    params(SandboxIdParam),
    request_body(content = WriteBody,
        example = json!({"path": "/workspace/hello.txt", "content": "hello"})),
    responses(
        (status = 409, response = SandboxPaused),
        (status = 200, description = "`written`", body = Status),
        (status = 404, response = FileNotFound), (status = 503, response = Unavailable),
    ))]
async fn write(State(st): St, Path(id): SbId, JsonBody(b): JsonBody<WriteBody>) -> Reply {
    st.svc
        .files()
        .write(
            &id,
            &b.path,
            b.content.into_bytes().into(),
            b.mode.as_deref(),
        )
        .await?;
    Ok(ok(&Status { status: "written" }))
}

/// The answer of the raw-body upload.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct Written {
    /// Bytes written.
    size: u64,
    /// `written`
    status: &'static str,
}

/// Write a file from the raw request body (streamed)
///
/// Streams the request body into the file, chunk by chunk, through to the sandbox (also on
/// remote workers), so memory stays bounded whatever the size. `server.max_body_bytes` does not
/// apply, except to providers without a streaming file path (docker, microvm), which buffer the
/// upload: 413 beyond it. The file is replaced only when the whole body arrived. Not used by the
/// official SDKs, which keep using the JSON `POST`.
#[utoipa::path(put, path = "/sandboxes/{id}/files", operation_id = "uploadFile", tag = "files",
    params(SandboxIdParam,
        ("path" = String, Query,
            description = "Path inside the sandbox; may not escape it. Parent directories are created."),
        ("mode" = Option<String>, Query,
            description = "Octal mode text (`0644`, `0755`) or `executable`, as in the JSON write.")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses(
        (status = 409, response = SandboxPaused),
        (status = 200, description = "OK", body = inline(Written)),
        (status = 400, response = super::openapi::BadRequest),
        (status = 404, response = FileNotFound),
        (status = 413, response = super::openapi::PayloadTooLarge),
        (status = 503, response = Unavailable),
    ))]
async fn upload(State(st): St, Path(id): SbId, Query(q): Q, body: Body) -> Reply {
    let path = required(&q, "path")?;
    let stream = body
        .into_data_stream()
        .map(|r| r.map_err(|e| ProviderError::InvalidInput(format!("upload body failed: {e}"))))
        .boxed();
    let mode = q.get("mode").map(String::as_str);
    let size = st.svc.files().write_stream(&id, path, stream, mode).await?;
    Ok(ok(&Written {
        size,
        status: "written",
    }))
}

/// Read a file (raw bytes)
///
/// Streams the file: `Content-Length` is set when the size is known up front; a failure after
/// the first byte cuts the body short.
#[utoipa::path(get, path = "/sandboxes/{id}/files", operation_id = "readFile", tag = "files",
    params(SandboxIdParam,
        ("path" = String, Query, description = "Path inside the sandbox; may not escape it.")),
    responses(
        (status = 409, response = SandboxPaused),
        (status = 200, description = "File content", body = Vec<u8>,
            content_type = "application/octet-stream"),
        (status = 400, response = super::openapi::BadRequest),
        (status = 404, response = FileNotFound), (status = 503, response = Unavailable),
    ))]
async fn read(State(st): St, Path(id): SbId, Query(q): Q) -> Reply {
    let path = required(&q, "path")?;
    let file = st.svc.files().read(&id, path).await?;
    Ok(download(file))
}

/// A file's bytes as a streamed 200 (the native and the E2B download).
pub(super) fn download(file: stacyvm_provider::FileStream) -> Response {
    let body = file.body.map(|r| {
        // Headers are gone by now: cutting the body short is how the client learns.
        r.inspect_err(|e| tracing::warn!(error = %e, "file download failed mid-stream"))
    });
    let mut resp = Response::new(Body::from_stream(body));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Some(n) = file.size {
        resp.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(n));
    }
    resp
}

/// Delete a file or directory
#[utoipa::path(delete, path = "/sandboxes/{id}/files", operation_id = "deleteFile", tag = "files",
    params(SandboxIdParam,
        ("path" = String, Query, description = "Path inside the sandbox; may not escape it."),
        ("recursive" = Option<bool>, Query, description = "`true` deletes a directory with its contents.")),
    responses(
        (status = 409, response = SandboxPaused),
        (status = 200, description = "`deleted`", body = Status),
        (status = 400, response = super::openapi::BadRequest),
        (status = 404, response = FileNotFound), (status = 503, response = Unavailable),
    ))]
async fn delete(State(st): St, Path(id): SbId, Query(q): Q) -> Reply {
    let path = required(&q, "path")?;
    let recursive = q.get("recursive").map(String::as_str) == Some("true");
    st.svc.files().delete(&id, path, recursive).await?;
    Ok(ok(&Status { status: "deleted" }))
}

/// List a directory
#[utoipa::path(get, path = "/sandboxes/{id}/files/list", operation_id = "listFiles", tag = "files",
    params(SandboxIdParam,
        ("path" = Option<String>, Query, description = "Directory (default `/`).")),
    responses(
        (status = 409, response = SandboxPaused),
        (status = 200, description = "OK", body = Vec<FileInfo>),
        (status = 400, response = super::openapi::BadRequest),
        (status = 404, response = FileNotFound), (status = 503, response = Unavailable),
    ))]
async fn list(State(st): St, Path(id): SbId, Query(q): Q) -> Reply {
    let path = q.get("path").map(String::as_str).unwrap_or("/");
    Ok(ok(&st.svc.files().list(&id, path).await?))
}

/// Stat a path
#[utoipa::path(get, path = "/sandboxes/{id}/files/stat", operation_id = "statFile", tag = "files",
    params(SandboxIdParam, ("path" = String, Query, description = "Path inside the sandbox.")),
    responses(
        (status = 409, response = SandboxPaused),
        (status = 200, description = "OK", body = FileInfo),
        (status = 400, response = super::openapi::BadRequest),
        (status = 404, response = FileNotFound), (status = 503, response = Unavailable),
    ))]
async fn stat(State(st): St, Path(id): SbId, Query(q): Q) -> Reply {
    let path = required(&q, "path")?;
    Ok(ok(&st.svc.files().stat(&id, path).await?))
}

/// Shell glob (no `**`)
#[utoipa::path(get, path = "/sandboxes/{id}/files/glob", operation_id = "globFiles", tag = "files",
    params(SandboxIdParam, ("pattern" = String, Query, description = "Glob, e.g. `/workspace/*.py`.")),
    responses(
        (status = 409, response = SandboxPaused),
        (status = 200, description = "Matching paths", body = Vec<String>),
        (status = 400, response = super::openapi::BadRequest),
        (status = 404, response = FileNotFound), (status = 503, response = Unavailable),
    ))]
async fn glob(State(st): St, Path(id): SbId, Query(q): Q) -> Reply {
    let pattern = required(&q, "pattern")?;
    Ok(ok(&st.svc.files().glob(&id, pattern).await?))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[schema(as = MoveRequest)]
#[serde(default)]
struct MoveBody {
    #[schema(required = true)]
    old_path: String,
    #[schema(required = true)]
    new_path: String,
}

/// Move or rename
#[utoipa::path(post, path = "/sandboxes/{id}/files/move", operation_id = "moveFile", tag = "files",
    params(SandboxIdParam), request_body = MoveBody,
    responses(
        (status = 409, response = SandboxPaused),
        (status = 200, description = "`moved`", body = Status),
        (status = 404, response = FileNotFound), (status = 503, response = Unavailable),
    ))]
async fn move_file(State(st): St, Path(id): SbId, JsonBody(b): JsonBody<MoveBody>) -> Reply {
    st.svc.files().rename(&id, &b.old_path, &b.new_path).await?;
    Ok(ok(&Status { status: "moved" }))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[schema(as = ChmodRequest)]
#[serde(default)]
struct ChmodBody {
    #[schema(required = true)]
    path: String,
    /// Octal
    #[schema(required = true)]
    mode: String,
}

/// Change mode
#[utoipa::path(post, path = "/sandboxes/{id}/files/chmod", operation_id = "chmodFile", tag = "files",
    params(SandboxIdParam), request_body = ChmodBody,
    responses(
        (status = 409, response = SandboxPaused),
        (status = 200, description = "`chmod applied`", body = Status),
        (status = 404, response = FileNotFound), (status = 503, response = Unavailable),
    ))]
async fn chmod(State(st): St, Path(id): SbId, JsonBody(b): JsonBody<ChmodBody>) -> Reply {
    st.svc.files().chmod(&id, &b.path, &b.mode).await?;
    Ok(ok(&Status {
        status: "chmod applied",
    }))
}

/// One line of `…/files/watch`.
#[derive(Serialize, ToSchema)]
#[schema(as = WatchEvent)]
#[serde(deny_unknown_fields)]
struct WatchLine<'a> {
    /// What happened: `rename` is the old name of a rename (the new one is a `create`);
    /// `chmod` is any metadata change.
    kind: WatchKind,
    /// Path relative to the watched directory (`a.txt`, `sub/b.txt`).
    name: &'a str,
}

/// Watch a directory (NDJSON)
///
/// Streams the changes below a directory as they happen, one JSON object per line:
/// `{"kind","name"}`. The answer starts once the watch is in place, so a change made after the
/// headers arrived is reported. With `recursive=true` directories below it are watched too,
/// including ones created later (their entries made before their watch was in place are
/// reported as `create`); symlinks are never followed. The stream ends when the directory is
/// removed or the server shuts down, and is cut short when the watch breaks (the sandbox went
/// away, the kernel dropped events); closing the connection ends the watch.
#[utoipa::path(get, path = "/sandboxes/{id}/files/watch", operation_id = "watchFiles", tag = "files",
    params(SandboxIdParam,
        ("path" = String, Query, description = "Directory inside the sandbox; may not escape it."),
        ("recursive" = Option<bool>, Query,
            description = "`true` watches every directory below it too (default `false`).")),
    responses(
        (status = 200, description = "NDJSON of changes, one `WatchEvent` per line",
            content_type = "application/x-ndjson", body = WatchLine,
            example = "{\"kind\":\"create\",\"name\":\"a.txt\"}\n{\"kind\":\"write\",\"name\":\"a.txt\"}\n"),
        (status = 400, response = super::openapi::BadRequest),
        (status = 404, response = FileNotFound),
        (status = 409, response = WatchConflict),
        (status = 503, response = Unavailable),
    ))]
async fn watch(State(st): St, Path(id): SbId, Query(q): Q) -> Reply {
    let path = required(&q, "path")?;
    let recursive = query_flag(&q, "recursive", false)?;
    let events = st.svc.files().watch(&id, path, recursive).await?;
    // The headers go now: the client knows the watch is in place before any change happens.
    let body = events.scan((), |(), item| {
        std::future::ready(match item {
            Ok(e) => {
                let line = WatchLine {
                    kind: e.kind,
                    name: &e.name,
                };
                let mut out = serde_json::to_vec(&line).unwrap_or_default();
                out.push(b'\n');
                Some(Ok::<_, std::convert::Infallible>(out))
            }
            Err(e) => {
                // Headers are gone: ending the body is how the client learns.
                tracing::debug!(error = %e, "directory watch ended with an error");
                None
            }
        })
    });
    let mut resp = Response::new(Body::from_stream(body));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(resp)
}
