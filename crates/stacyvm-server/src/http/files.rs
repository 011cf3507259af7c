//! The file operations: the original's eight, plus the streamed raw-body upload (`PUT`).

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::json;
use stacyvm_provider::ProviderError;

use super::error::ApiError;
use super::extract::JsonBody;
use super::{ok, AppState};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/sandboxes/{id}/files",
            post(write).put(upload).get(read).delete(delete),
        )
        .route("/sandboxes/{id}/files/list", get(list))
        .route("/sandboxes/{id}/files/stat", get(stat))
        .route("/sandboxes/{id}/files/glob", get(glob))
        .route("/sandboxes/{id}/files/move", post(move_file))
        .route("/sandboxes/{id}/files/chmod", post(chmod))
}

type Q = Query<HashMap<String, String>>;

fn required<'a>(q: &'a HashMap<String, String>, key: &str) -> Result<&'a str, ApiError> {
    q.get(key)
        .map(String::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError::bad_request(format!("{key} query parameter required")))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct WriteBody {
    path: String,
    content: String,
    mode: Option<String>,
}

async fn write(
    State(st): State<AppState>,
    Path(id): Path<String>,
    JsonBody(b): JsonBody<WriteBody>,
) -> Result<Response, ApiError> {
    st.svc
        .files()
        .write(
            &id,
            &b.path,
            b.content.into_bytes().into(),
            b.mode.as_deref(),
        )
        .await?;
    Ok(ok(&json!({"status": "written"})))
}

/// The raw body is the file, streamed to the provider as it arrives: no `max_body_bytes`
/// limit applies (the JSON write above keeps it).
async fn upload(
    State(st): State<AppState>,
    Path(id): Path<String>,
    Query(q): Q,
    body: Body,
) -> Result<Response, ApiError> {
    let path = required(&q, "path")?;
    let stream = body
        .into_data_stream()
        .map(|r| r.map_err(|e| ProviderError::InvalidInput(format!("upload body failed: {e}"))))
        .boxed();
    let mode = q.get("mode").map(String::as_str);
    let size = st.svc.files().write_stream(&id, path, stream, mode).await?;
    Ok(ok(&json!({"status": "written", "size": size})))
}

/// Streams the file out; `Content-Length` when the provider knows the size.
async fn read(
    State(st): State<AppState>,
    Path(id): Path<String>,
    Query(q): Q,
) -> Result<Response, ApiError> {
    let path = required(&q, "path")?;
    let file = st.svc.files().read(&id, path).await?;
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
    *resp.status_mut() = StatusCode::OK;
    Ok(resp)
}

async fn delete(
    State(st): State<AppState>,
    Path(id): Path<String>,
    Query(q): Q,
) -> Result<Response, ApiError> {
    let path = required(&q, "path")?;
    let recursive = q.get("recursive").map(String::as_str) == Some("true");
    st.svc.files().delete(&id, path, recursive).await?;
    Ok(ok(&json!({"status": "deleted"})))
}

async fn list(
    State(st): State<AppState>,
    Path(id): Path<String>,
    Query(q): Q,
) -> Result<Response, ApiError> {
    let path = q.get("path").map(String::as_str).unwrap_or("/");
    Ok(ok(&st.svc.files().list(&id, path).await?))
}

async fn stat(
    State(st): State<AppState>,
    Path(id): Path<String>,
    Query(q): Q,
) -> Result<Response, ApiError> {
    let path = required(&q, "path")?;
    Ok(ok(&st.svc.files().stat(&id, path).await?))
}

async fn glob(
    State(st): State<AppState>,
    Path(id): Path<String>,
    Query(q): Q,
) -> Result<Response, ApiError> {
    let pattern = required(&q, "pattern")?;
    Ok(ok(&st.svc.files().glob(&id, pattern).await?))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct MoveBody {
    old_path: String,
    new_path: String,
}

async fn move_file(
    State(st): State<AppState>,
    Path(id): Path<String>,
    JsonBody(b): JsonBody<MoveBody>,
) -> Result<Response, ApiError> {
    st.svc.files().rename(&id, &b.old_path, &b.new_path).await?;
    Ok(ok(&json!({"status": "moved"})))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ChmodBody {
    path: String,
    mode: String,
}

async fn chmod(
    State(st): State<AppState>,
    Path(id): Path<String>,
    JsonBody(b): JsonBody<ChmodBody>,
) -> Result<Response, ApiError> {
    st.svc.files().chmod(&id, &b.path, &b.mode).await?;
    Ok(ok(&json!({"status": "chmod applied"})))
}
