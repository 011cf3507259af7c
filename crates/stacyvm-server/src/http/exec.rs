//! Exec: JSON result, NDJSON stream (ending with an exit line), and WebSocket.

use std::borrow::Cow;
use std::collections::BTreeMap;

use axum::body::Body;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;
use stacyvm_types::{GoDuration, SandboxId, StreamKind};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;

use super::error::ApiError;
use super::extract::{parse_json, JsonBody};
use super::openapi::{
    NotFound, ResourceLimit, SandboxIdParam, SandboxPaused, Timeout, Unavailable,
};
use super::{ok, AppState, Reply, SbId, St};
use crate::error::ServiceError;
use crate::service::{ExecParams, ExecStream, StreamItem};

pub fn routes() -> OpenApiRouter<AppState> {
    api_routes![exec; exec_ws; history]
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[schema(as = ExecRequest)]
#[serde(default)]
pub struct ExecBody {
    /// Shell mode: run via `sh -c`; argv mode: the program
    #[schema(required = true)]
    command: String,
    /// Shell mode: single-quoted and appended; argv mode: literal argv
    args: Vec<String>,
    /// `""` or `shell` (the default), or `argv`
    #[schema(default = "shell", schema_with = super::openapi::exec_modes)]
    mode: String,
    env: BTreeMap<String, String>,
    workdir: String,
    /// Empty = default exec timeout; above the max → 429; negative → 400
    #[schema(value_type = GoDuration)]
    timeout: String,
    /// true → NDJSON response
    #[schema(default = false)]
    stream: bool,
    /// Ours: the sandbox account to run as (a user name or a uid); default: the sandbox's
    /// default user. 400 for an account the sandbox does not have; 409 `NOT_SUPPORTED` where
    /// the provider cannot switch users.
    user: String,
}

impl ExecBody {
    fn params(self) -> ExecParams {
        ExecParams {
            command: self.command,
            args: self.args,
            mode: self.mode,
            env: self.env,
            workdir: self.workdir,
            timeout: self.timeout,
            user: self.user,
        }
    }
}

fn stream_name(k: StreamKind) -> &'static str {
    match k {
        StreamKind::Stdout => "stdout",
        StreamKind::Stderr => "stderr",
    }
}

/// One line of an exec stream (NDJSON line or WebSocket message; keys in alphabetical order).
#[derive(Serialize, ToSchema)]
#[schema(as = ExecStreamLine)]
#[serde(untagged)]
enum ItemView<'a> {
    Chunk(ChunkView<'a>),
    Exit(ExitView<'a>),
}

/// Output of the command.
#[derive(Serialize, ToSchema)]
#[schema(as = ExecStreamChunk)]
#[serde(deny_unknown_fields)]
struct ChunkView<'a> {
    #[schema(value_type = String)]
    data: Cow<'a, str>,
    #[schema(schema_with = super::openapi::output_streams)]
    stream: &'static str,
}

/// Always the last line of a stream. `exit_code` 124 after a timeout, -1 when the command could
/// not finish.
#[derive(Serialize, ToSchema)]
#[schema(as = ExecStreamExit)]
#[serde(deny_unknown_fields)]
struct ExitView<'a> {
    #[schema(schema_with = super::openapi::empty)]
    data: &'static str,
    #[schema(value_type = GoDuration)]
    duration: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
    exit_code: i32,
    #[schema(schema_with = super::openapi::exit_stream)]
    stream: &'static str,
}

fn item_view(item: &StreamItem) -> ItemView<'_> {
    match item {
        StreamItem::Chunk(c) => ItemView::Chunk(ChunkView {
            data: String::from_utf8_lossy(&c.data),
            stream: stream_name(c.stream),
        }),
        StreamItem::Exit {
            exit_code,
            duration,
            error,
        } => ItemView::Exit(ExitView {
            data: "",
            duration: duration.to_string(),
            error: error.as_deref(),
            exit_code: *exit_code,
            stream: "exit",
        }),
    }
}

/// The answer of a collected exec.
#[derive(Serialize, ToSchema)]
#[schema(as = ExecResult)]
#[serde(deny_unknown_fields)]
struct ExecResultView<'a> {
    #[schema(value_type = GoDuration)]
    duration: String,
    exit_code: i32,
    stderr: &'a str,
    stdout: &'a str,
    /// Present (and true) only when output past `server.max_exec_output` was left out.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    truncated: bool,
}

/// Run a command
///
/// A non-zero exit code is a result, not an error. Sync exec past its timeout → 408 `TIMEOUT`;
/// a stream instead ends with a stderr chunk `exec timeout: <id>` and an exit line with
/// `exit_code` 124. `timeout` above the max exec timeout → 429.
#[utoipa::path(post, path = "/sandboxes/{id}/exec", operation_id = "execCommand", tag = "exec",
    params(SandboxIdParam),
    request_body(content = ExecBody, example = json!({"command": "echo hi"})),
    responses(
        (status = 409, response = SandboxPaused),
        (status = 200,
            description = "With `stream: false`: the collected result. With `stream: true`: \
                NDJSON, one `ExecStreamLine` per line, ending with exactly one \
                `{\"stream\":\"exit\",...}` line.",
            content(
                (ExecResultView = "application/json"),
                (ItemView = "application/x-ndjson",
                    example = "{\"stream\":\"stdout\",\"data\":\"hi\\n\"}\n{\"stream\":\"exit\",\"data\":\"\",\"exit_code\":0,\"duration\":\"3.1ms\"}\n"),
            )),
        (status = 404, response = NotFound), (status = 408, response = Timeout),
        (status = 429, response = ResourceLimit), (status = 503, response = Unavailable),
    ))]
async fn exec(State(st): St, Path(id): SbId, JsonBody(body): JsonBody<ExecBody>) -> Reply {
    if body.stream {
        let stream = st.svc.exec().stream(&id, body.params()).await?;
        return Ok(ndjson(stream));
    }
    let r = st.svc.exec().run(&id, body.params()).await?;
    Ok(ok(&ExecResultView {
        duration: r.duration.to_string(),
        exit_code: r.exit_code,
        stderr: &r.stderr,
        stdout: &r.stdout,
        truncated: r.truncated,
    }))
}

/// One row of a sandbox's exec log.
#[derive(Serialize, ToSchema)]
#[schema(as = ExecLogEntry)]
pub struct ExecLogView<'a> {
    /// The argv as run, joined with spaces (`sh -c …` in shell mode)
    command: &'a str,
    /// `-1` for a process start (the process's own record has its end)
    exit_code: i64,
    /// At most 64 KiB each
    stdout: &'a str,
    stderr: &'a str,
    #[schema(value_type = GoDuration)]
    duration: String,
    duration_ms: i64,
    #[schema(format = DateTime)]
    created_at: String,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // documents the query; parsed by hand for our 400
struct HistoryQuery {
    /// Rows, newest first: 1..=500, default 50
    limit: Option<usize>,
}

/// A sandbox's exec history
///
/// Ours: the exec log the server keeps (sync execs with their exit code, duration and
/// output; process starts with exit code -1), newest first. Kept for destroyed sandboxes
/// until their record is purged.
#[utoipa::path(get, path = "/sandboxes/{id}/execs", operation_id = "listExecs", tag = "exec",
    params(SandboxIdParam, HistoryQuery),
    responses(
        (status = 200, description = "Newest first", body = [ExecLogView]),
        (status = 400, response = super::openapi::BadRequest), (status = 404, response = NotFound),
    ))]
async fn history(
    State(st): St,
    Path(id): SbId,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> Reply {
    let limit = match q.get("limit").map(|v| v.trim()) {
        None | Some("") => 50,
        Some(v) => v.parse::<usize>().map_err(|_| {
            ApiError::from(ServiceError::bad_request(format!("invalid limit {v:?}")))
        })?,
    };
    let rows = st.svc.exec().history(&id, limit).await?;
    let views: Vec<_> = rows
        .iter()
        .map(|r| ExecLogView {
            command: &r.command,
            exit_code: r.exit_code,
            stdout: &r.stdout,
            stderr: &r.stderr,
            duration: GoDuration::from_std(std::time::Duration::from_millis(
                u64::try_from(r.duration_ms).unwrap_or(0),
            ))
            .to_string(),
            duration_ms: r.duration_ms,
            created_at: stacyvm_types::format_rfc3339_go(&r.created_at),
        })
        .collect();
    Ok(ok(&views))
}

fn ndjson(stream: ExecStream) -> Response {
    let body = futures_util::stream::unfold(stream, |mut s| async move {
        let item = s.next().await?;
        let mut line = serde_json::to_vec(&item_view(&item)).unwrap_or_default();
        line.push(b'\n');
        Some((Ok::<_, std::convert::Infallible>(line), s))
    });
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/x-ndjson"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(body),
    )
        .into_response()
}

/// Run a command over a WebSocket
#[utoipa::path(get, path = "/sandboxes/{id}/exec/ws", operation_id = "execWebSocket",
    tag = "exec", params(SandboxIdParam),
    responses(
        (status = 409, response = SandboxPaused),
        (status = 101, description = "Switching protocols. Client sends one text message (an \
            `ExecRequest`); the server sends `ExecStreamLine` messages (chunks, then the exit \
            line), then `{\"type\":\"done\"}` and closes (1000). Unreadable request → close \
            1007; exec failure → `{\"error\":...}` then close 1011."),
        (status = 400, response = super::openapi::BadRequest),
        (status = 404, response = NotFound),
    ))]
async fn exec_ws(
    State(st): St,
    Path(id): SbId,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Reply {
    // Unknown sandboxes fail before the upgrade, with a normal JSON error.
    st.svc.sandboxes().get(&id).await?;
    // A plain request (no upgrade headers) gets the API's JSON error, not axum's text.
    let ws = ws.map_err(|r| {
        ApiError::bad_request(format!(
            "a WebSocket upgrade is required: {}",
            r.body_text()
        ))
    })?;
    Ok(ws.on_upgrade(move |socket| ws_session(st, id, socket)))
}

async fn close(socket: &mut WebSocket, code: u16, reason: &'static str) {
    let _ = socket
        .send(Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        })))
        .await;
}

async fn ws_session(st: AppState, id: SandboxId, mut socket: WebSocket) {
    // Protocol: one text message with the exec request, then chunks, then `{"type":"done"}`.
    let first = tokio::time::timeout(std::time::Duration::from_secs(30), socket.recv()).await;
    let body: Option<ExecBody> = match first {
        Ok(Some(Ok(Message::Text(t)))) => parse_json(t.as_bytes()).ok(),
        Ok(Some(Ok(Message::Binary(b)))) => parse_json(&b).ok(),
        _ => None,
    };
    let Some(body) = body else {
        close(&mut socket, 1007, "invalid request").await;
        return;
    };
    let mut stream = match st.svc.exec().stream(&id, body.params()).await {
        Ok(s) => s,
        Err(e) => {
            let msg = json!({"error": e.to_string()}).to_string();
            let _ = socket.send(Message::Text(msg.into())).await;
            close(&mut socket, 1011, "exec failed").await;
            return;
        }
    };
    // Chunks, then the exit message (DECISIONS: streams end with an exit line), then done.
    while let Some(item) = stream.next().await {
        let is_exit = matches!(item, StreamItem::Exit { .. });
        let msg = serde_json::to_string(&item_view(&item)).unwrap_or_default();
        if socket.send(Message::Text(msg.into())).await.is_err() {
            return;
        }
        if is_exit {
            break;
        }
    }
    let done = json!({"type": "done"}).to_string();
    let _ = socket.send(Message::Text(done.into())).await;
    close(&mut socket, 1000, "").await;
}
