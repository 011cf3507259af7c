//! Exec: JSON result, NDJSON stream (ending with an exit line), and WebSocket.

use std::borrow::Cow;
use std::collections::BTreeMap;

use axum::body::Body;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::{Deserialize, Serialize};
use serde_json::json;
use stacyvm_types::StreamKind;

use super::error::ApiError;
use super::extract::{parse_json, JsonBody};
use super::{ok, AppState};
use crate::service::{ExecParams, ExecStream, StreamItem};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/sandboxes/{id}/exec", post(exec))
        .route("/sandboxes/{id}/exec/ws", get(exec_ws))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ExecBody {
    command: String,
    args: Vec<String>,
    mode: String,
    env: BTreeMap<String, String>,
    workdir: String,
    timeout: String,
    stream: bool,
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
        }
    }
}

fn stream_name(k: StreamKind) -> &'static str {
    match k {
        StreamKind::Stdout => "stdout",
        StreamKind::Stderr => "stderr",
    }
}

/// One stream item as both NDJSON and WebSocket carry it (keys in alphabetical order).
#[derive(Serialize)]
#[serde(untagged)]
enum ItemView<'a> {
    Chunk {
        data: Cow<'a, str>,
        stream: &'static str,
    },
    Exit {
        data: &'static str,
        duration: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<&'a str>,
        exit_code: i32,
        stream: &'static str,
    },
}

fn item_view(item: &StreamItem) -> ItemView<'_> {
    match item {
        StreamItem::Chunk(c) => ItemView::Chunk {
            data: String::from_utf8_lossy(&c.data),
            stream: stream_name(c.stream),
        },
        StreamItem::Exit {
            exit_code,
            duration,
            error,
        } => ItemView::Exit {
            data: "",
            duration: duration.to_string(),
            error: error.as_deref(),
            exit_code: *exit_code,
            stream: "exit",
        },
    }
}

/// The answer of a collected exec.
#[derive(Serialize)]
struct ExecResultView<'a> {
    duration: String,
    exit_code: i32,
    stderr: &'a str,
    stdout: &'a str,
}

async fn exec(
    State(st): State<AppState>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<ExecBody>,
) -> Result<Response, ApiError> {
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
    }))
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

async fn exec_ws(
    State(st): State<AppState>,
    Path(id): Path<String>,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    // Unknown sandboxes fail before the upgrade, with a normal JSON error.
    st.svc.sandboxes().get(&id).await?;
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

async fn ws_session(st: AppState, id: String, mut socket: WebSocket) {
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
