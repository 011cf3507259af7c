//! Background processes (sandbox-model.md §1): start, list, get, output (NDJSON), stdin,
//! signal, resize, and the attach WebSocket.

use std::collections::{BTreeMap, HashMap};

use axum::body::Body;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::json;
use stacyvm_provider::RecordStream;
use stacyvm_types::{format_rfc3339_go, Pid, ProcessInfo, PtySize, SandboxId};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;

use super::error::ApiError;
use super::extract::{query_flag, JsonBody, RawBody};
use super::openapi::{
    BadRequest, NotFound, ProcessConflict, ProcessNotFound, SandboxPaused, Unavailable,
};
use super::output::{record_line, Encoding, TextDecoder};
use super::views::Status;
use super::{json_response, ok, AppState, Reply, SbId, SbPid, St};
use crate::service::{ExecParams, ProcessParams};

pub fn routes() -> OpenApiRouter<AppState> {
    api_routes![start, list; get; output; stdin; signal; resize; attach]
}

/// `{id}` and `{pid}`.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[expect(dead_code, reason = "a parameter description, never built")]
struct ProcessPath {
    #[param(pattern = r"^sb-[0-9a-f]{8}$", example = "sb-0123abcd")]
    id: String,
    /// The process id within its sandbox.
    pid: u32,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[schema(as = StartProcessRequest)]
#[serde(default, deny_unknown_fields)]
pub struct StartBody {
    /// Shell mode: run via `sh -c`; argv mode: the program
    #[schema(required = true)]
    command: String,
    args: Vec<String>,
    /// `shell` (the default) or `argv`
    #[schema(default = "shell", schema_with = super::openapi::exec_modes)]
    mode: String,
    env: BTreeMap<String, String>,
    /// Default `/workspace`
    workdir: String,
    /// Go duration; `""` or `"0s"` = none. On expiry the process exits with 124.
    #[schema(value_type = String)]
    timeout: String,
    /// Free text (≤128 bytes) to find the process by
    tag: String,
    /// Keep a stdin pipe open for `…/stdin` and attach
    stdin: bool,
    /// Run in a terminal of this size
    pty: Option<PtySize>,
    /// Ours: the sandbox account to run as (a user name or a uid); default: the sandbox's
    /// default user. 400 for an account the sandbox does not have; 409 `NOT_SUPPORTED` where
    /// the provider cannot switch users.
    user: String,
}

/// The Process object.
#[derive(Serialize, ToSchema)]
#[schema(as = Process)]
pub struct ProcessView<'a> {
    pid: Pid,
    tag: &'a str,
    command: &'a str,
    args: &'a [String],
    pty: bool,
    stdin: bool,
    /// `running` or `exited`
    state: &'static str,
    exit_code: Option<i32>,
    /// Signal name without `SIG` when the process died of one
    signal: Option<&'static str>,
    #[schema(format = DateTime)]
    started_at: String,
    #[schema(format = DateTime)]
    ended_at: Option<String>,
    /// The `seq` the next output record will carry
    next_seq: u64,
}

fn rfc3339_ms(ms: i64) -> String {
    let t = chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default();
    format_rfc3339_go(&t)
}

pub fn process_view(p: &ProcessInfo) -> ProcessView<'_> {
    ProcessView {
        pid: p.pid,
        tag: &p.tag,
        command: &p.command,
        args: &p.args,
        pty: p.pty,
        stdin: p.stdin,
        state: match p.state {
            stacyvm_types::ProcessState::Running => "running",
            stacyvm_types::ProcessState::Exited => "exited",
        },
        exit_code: p.exit_code,
        signal: p.signal.map(stacyvm_types::Signal::as_str),
        started_at: rfc3339_ms(p.started_at_ms),
        ended_at: p.ended_at_ms.map(rfc3339_ms),
        next_seq: p.next_seq,
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[expect(dead_code, reason = "a parameter description; parsed by hand")]
struct StartQuery {
    /// Ours: answer NDJSON instead: the Process object as the first line, then its output
    /// records from `seq` 0 as `…/output?follow=true` sends them (start and read in one
    /// request). Closing the connection ends the read, never the process.
    follow: Option<bool>,
    /// With `follow`: `text` (the default) or `base64`
    #[param(value_type = Option<String>)]
    encoding: Option<String>,
}

/// Start a background process
///
/// The process belongs to the sandbox: it keeps running when this request, any client or the
/// control plane goes away; its output is retained (`processes.output_buffer`) for any client
/// to read from any `seq`.
#[utoipa::path(post, path = "/sandboxes/{id}/processes", operation_id = "startProcess",
    tag = "processes", params(super::openapi::SandboxIdParam, StartQuery),
    request_body(content = StartBody,
        // A command that ends: the schema fuzzer starts the example with `follow=true` too,
        // and a server that never exits would stream until its read times out.
        example = json!({"command": "for i in 1 2 3; do echo tick $i; sleep 1; done", "tag": "ticker"})),
    responses(
        (status = 409, response = SandboxPaused),
        (status = 201, description = "Started: the Process; with `follow=true` NDJSON, the \
            Process then its output records",
            content(
                (ProcessView = "application/json"),
                (String = "application/x-ndjson",
                    example = "{\"pid\":7,\"state\":\"running\"}\n{\"seq\":0,\"stream\":\"stdout\",\"data\":\"hi\\n\"}\n{\"seq\":3,\"stream\":\"exit\",\"exit_code\":0,\"signal\":null}\n"),
            )),
        (status = 400, response = BadRequest), (status = 404, response = NotFound),
        (status = 503, response = Unavailable),
    ))]
async fn start(
    State(st): St,
    Path(id): SbId,
    Query(q): Query<HashMap<String, String>>,
    JsonBody(b): JsonBody<StartBody>,
) -> Reply {
    // Checked before anything starts.
    let follow = query_flag(&q, "follow", false)?;
    let encoding = parse_encoding(&q)?;
    let params = ProcessParams {
        exec: ExecParams {
            command: b.command,
            args: b.args,
            mode: b.mode,
            env: b.env,
            workdir: b.workdir,
            timeout: b.timeout,
            user: b.user,
        },
        tag: b.tag,
        stdin: b.stdin,
        pty: b.pty,
    };
    if !follow {
        let p = st.svc.processes().start(&id, params).await?;
        return Ok(json_response(StatusCode::CREATED, &process_view(&p)));
    }
    let (p, stream) = st.svc.processes().start_following(&id, params).await?;
    let mut head = serde_json::to_vec(&process_view(&p)).unwrap_or_default();
    head.push(b'\n');
    Ok(ndjson(StatusCode::CREATED, head, stream, encoding))
}

/// List processes
///
/// Running processes and exited ones still retained (`processes.retain_exited`), newest first.
#[utoipa::path(get, path = "/sandboxes/{id}/processes", operation_id = "listProcesses",
    tag = "processes", params(super::openapi::SandboxIdParam),
    responses(
        (status = 409, response = SandboxPaused),
        (status = 200, description = "Processes", body = [ProcessView]),
        (status = 404, response = NotFound), (status = 503, response = Unavailable),
    ))]
async fn list(State(st): St, Path(id): SbId) -> Reply {
    let list = st.svc.processes().list(&id).await?;
    let views: Vec<_> = list.iter().map(process_view).collect();
    Ok(ok(&views))
}

/// Get a process
#[utoipa::path(get, path = "/sandboxes/{id}/processes/{pid}", operation_id = "getProcess",
    tag = "processes", params(ProcessPath),
    responses(
        (status = 409, response = SandboxPaused),
        (status = 200, description = "The process", body = ProcessView),
        (status = 400, response = BadRequest), (status = 404, response = ProcessNotFound),
    ))]
async fn get(State(st): St, Path((id, pid)): SbPid) -> Reply {
    let pid = parse_pid(&pid)?;
    let p = st.svc.processes().get(&id, pid).await?;
    Ok(ok(&process_view(&p)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[expect(dead_code, reason = "a parameter description; parsed by hand")]
struct OutputQuery {
    /// First `seq` wanted (inclusive); default 0. A reader that saw record `n` resumes with
    /// `n + 1`.
    since: Option<u64>,
    /// Stay open until the process exits (default true)
    follow: Option<bool>,
    /// `text` (invalid UTF-8 replaced, the default) or `base64` (exact bytes)
    #[param(value_type = Option<String>)]
    encoding: Option<String>,
}

/// Read a process's output
///
/// NDJSON of output records in `seq` order: `{"seq","stream","data"}` (`stream` `stdout`,
/// `stderr` or `pty`). When `since` is older than the oldest retained byte, the first line is
/// `{"seq","stream":"gap","dropped_bytes"}`; the last line of an exited process is
/// `{"seq","stream":"exit","exit_code","signal"}`. Closing the connection ends the read, never
/// the process.
#[utoipa::path(get, path = "/sandboxes/{id}/processes/{pid}/output",
    operation_id = "processOutput", tag = "processes", params(ProcessPath, OutputQuery),
    responses(
        (status = 409, response = SandboxPaused),
        (status = 200, description = "NDJSON output records",
            content_type = "application/x-ndjson", body = String,
            example = "{\"seq\":0,\"stream\":\"stdout\",\"data\":\"hi\\n\"}\n{\"seq\":3,\"stream\":\"exit\",\"exit_code\":0,\"signal\":null}\n"),
        (status = 400, response = BadRequest),
        (status = 404, response = ProcessNotFound),
    ))]
async fn output(
    State(st): St,
    Path((id, pid)): SbPid,
    Query(q): Query<HashMap<String, String>>,
) -> Reply {
    let pid = parse_pid(&pid)?;
    let since = parse_since(&q)?;
    let follow = query_flag(&q, "follow", true)?;
    let encoding = parse_encoding(&q)?;
    let stream = st.svc.processes().output(&id, pid, since, follow).await?;
    Ok(ndjson(StatusCode::OK, Vec::new(), stream, encoding))
}

fn parse_encoding(q: &HashMap<String, String>) -> Result<Encoding, ApiError> {
    match q.get("encoding").map(String::as_str) {
        None | Some("") | Some("text") => Ok(Encoding::Text),
        Some("base64") => Ok(Encoding::Base64),
        Some(other) => Err(ApiError::bad_request(format!(
            "encoding must be text or base64, not {other:?}"
        ))),
    }
}

/// A pid from the path; anything else is a JSON 400 (not axum's text rejection).
fn parse_pid(s: &str) -> Result<Pid, ApiError> {
    s.parse()
        .map_err(|_| ApiError::bad_request(format!("pid must be a process id, not {s:?}")))
}

fn parse_since(q: &HashMap<String, String>) -> Result<u64, ApiError> {
    match q.get("since").map(String::as_str) {
        None | Some("") => Ok(0),
        Some(s) => s
            .parse()
            .map_err(|_| ApiError::bad_request(format!("since must be a seq (≥ 0), not {s:?}"))),
    }
}

/// `head` then the records as NDJSON lines; a failure after the start ends the body (the
/// client sees no exit record and resumes from its last `seq`).
fn ndjson(status: StatusCode, head: Vec<u8>, stream: RecordStream, encoding: Encoding) -> Response {
    let head = futures_util::stream::iter(
        (!head.is_empty()).then_some(Ok::<_, std::convert::Infallible>(head)),
    );
    let state = (stream, TextDecoder::default(), false);
    let body = futures_util::stream::unfold(state, move |(mut s, mut dec, done)| async move {
        if done {
            return None;
        }
        let mut out = Vec::new();
        match s.next().await {
            Some(Ok(rec)) => {
                for r in dec.push(rec, encoding) {
                    record_line(&r, &mut out);
                }
                Some((Ok::<_, std::convert::Infallible>(out), (s, dec, false)))
            }
            end => {
                if let Some(Err(e)) = end {
                    tracing::debug!(error = %e, "process output ended with an error");
                }
                if let Some(r) = dec.finish() {
                    record_line(&r, &mut out);
                }
                Some((Ok(out), (s, dec, true)))
            }
        }
    });
    (
        status,
        [
            (header::CONTENT_TYPE, "application/x-ndjson"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(head.chain(body)),
    )
        .into_response()
}

/// `{"written": n}`.
#[derive(Serialize, ToSchema)]
#[schema(as = StdinWritten)]
struct Written {
    /// Bytes appended to the process's input
    written: u64,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct StdinQuery {
    /// Close stdin after these bytes (the process reads EOF)
    #[expect(dead_code, reason = "a parameter description; parsed by hand")]
    close: Option<bool>,
}

/// Write to a process's stdin
///
/// The raw body is appended to the process's input, in order (for a PTY process, typed into its
/// terminal: `\u0003` is Ctrl-C).
#[utoipa::path(post, path = "/sandboxes/{id}/processes/{pid}/stdin",
    operation_id = "processStdin", tag = "processes", params(ProcessPath, StdinQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses(
        (status = 200, description = "Written", body = Written),
        (status = 404, response = ProcessNotFound),
        (status = 400, response = BadRequest), (status = 409, response = ProcessConflict),
        (status = 413, response = super::openapi::PayloadTooLarge),
    ))]
async fn stdin(
    State(st): St,
    Path((id, pid)): SbPid,
    Query(q): Query<HashMap<String, String>>,
    req: Request,
) -> Reply {
    let pid = parse_pid(&pid)?;
    let close = query_flag(&q, "close", false)?;
    // Read after the pid and flag are checked, so a bad one is 400 before any body is read.
    let RawBody(data) = RawBody::from_request(req, &st).await?;
    let written = st.svc.processes().stdin(&id, pid, data, close).await?;
    Ok(ok(&Written { written }))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[schema(as = SignalRequest)]
#[serde(default)]
struct SignalBody {
    /// `TERM`, `KILL`, `INT`, `HUP`, `QUIT`, `USR1`, `USR2`, `STOP` or `CONT`, with or without
    /// `SIG`
    #[schema(required = true, example = "TERM")]
    signal: String,
}

/// Signal a process
#[utoipa::path(post, path = "/sandboxes/{id}/processes/{pid}/signal",
    operation_id = "signalProcess", tag = "processes", params(ProcessPath),
    request_body(content = SignalBody, example = json!({"signal": "TERM"})),
    responses(
        (status = 200, description = "The process after the signal was sent", body = ProcessView),
        (status = 400, response = BadRequest),
        (status = 404, response = ProcessNotFound),
        (status = 409, response = ProcessConflict),
    ))]
async fn signal(State(st): St, Path((id, pid)): SbPid, JsonBody(b): JsonBody<SignalBody>) -> Reply {
    let pid = parse_pid(&pid)?;
    let p = st.svc.processes().signal(&id, pid, &b.signal).await?;
    Ok(ok(&process_view(&p)))
}

/// Resize a process's terminal
#[utoipa::path(post, path = "/sandboxes/{id}/processes/{pid}/resize",
    operation_id = "resizeProcess", tag = "processes", params(ProcessPath),
    request_body(content = PtySize, example = json!({"cols": 120, "rows": 40})),
    responses(
        (status = 200, description = "`resized`", body = Status),
        (status = 400, response = BadRequest),
        (status = 404, response = ProcessNotFound),
        (status = 409, response = ProcessConflict),
    ))]
async fn resize(State(st): St, Path((id, pid)): SbPid, JsonBody(size): JsonBody<PtySize>) -> Reply {
    let pid = parse_pid(&pid)?;
    st.svc.processes().resize(&id, pid, size).await?;
    Ok(ok(&Status { status: "resized" }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct AttachQuery {
    /// First output `seq` sent (default 0)
    #[expect(dead_code, reason = "a parameter description; parsed by hand")]
    since: Option<u64>,
}

/// Attach to a process (WebSocket)
///
/// Client binary frames go to the process's stdin (or its terminal); a client text frame
/// `{"type":"resize","cols":c,"rows":r}` resizes the terminal. Server binary frames are the
/// process's output (stdout and stderr, or the terminal) from `since` on; the last server frame
/// is the text `{"type":"exit","exit_code":N}`, then close 1000. Closing the socket detaches;
/// the process keeps running. An unknown pid answers 404 before the upgrade.
///
/// Browsers, which cannot set `X-API-Key` on a WebSocket, offer the subprotocols
/// `stacyvm.attach` and `stacyvm.key.<the key's UTF-8 bytes in hex>`; the answer selects
/// `stacyvm.attach`.
#[utoipa::path(get, path = "/sandboxes/{id}/processes/{pid}/attach",
    operation_id = "attachProcess", tag = "processes", params(ProcessPath, AttachQuery),
    responses(
        (status = 409, response = SandboxPaused),
        (status = 101, description = "Switching protocols"),
        (status = 400, response = BadRequest),
        (status = 404, response = ProcessNotFound),
    ))]
async fn attach(
    State(st): St,
    Path((id, pid)): SbPid,
    Query(q): Query<HashMap<String, String>>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Reply {
    let pid = parse_pid(&pid)?;
    let since = parse_since(&q)?;
    // Unknown sandboxes and pids fail here, with a normal JSON error.
    let stream = st.svc.processes().output(&id, pid, since, true).await?;
    let ws = ws.map_err(|r| {
        ApiError::bad_request(format!(
            "a WebSocket upgrade is required: {}",
            r.body_text()
        ))
    })?;
    // A browser that sent its key as a subprotocol (`stacyvm.key.<hex>`, see
    // `middleware::presented_keys`) also offers `stacyvm.attach` and needs it chosen, or it
    // fails the connection; other clients offer none and get none.
    Ok(ws
        .protocols([ATTACH_PROTOCOL])
        .on_upgrade(move |socket| attach_session(st, id, pid, stream, socket)))
}

/// The subprotocol the attach WebSocket answers when the client offers it.
const ATTACH_PROTOCOL: &str = "stacyvm.attach";

#[derive(Deserialize)]
struct ControlFrame {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    cols: u16,
    #[serde(default)]
    rows: u16,
}

async fn close(socket: &mut WebSocket, code: u16, reason: &'static str) {
    let _ = socket
        .send(Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        })))
        .await;
}

async fn attach_session(
    st: AppState,
    id: SandboxId,
    pid: Pid,
    mut output: RecordStream,
    mut socket: WebSocket,
) {
    use stacyvm_types::OutputRecord;
    loop {
        tokio::select! {
            rec = output.next() => match rec {
                Some(Ok(OutputRecord::Data { data, .. })) => {
                    if socket.send(Message::Binary(data.into())).await.is_err() {
                        return;
                    }
                }
                // Binary frames carry bytes only; what was dropped is simply not sent.
                Some(Ok(OutputRecord::Gap { .. })) => {}
                Some(Ok(OutputRecord::Exit { exit_code, .. })) => {
                    let msg = json!({"type": "exit", "exit_code": exit_code}).to_string();
                    let _ = socket.send(Message::Text(msg.into())).await;
                    close(&mut socket, 1000, "").await;
                    return;
                }
                Some(Err(e)) => {
                    tracing::debug!(sandbox_id = %id, pid, error = %e, "attach output failed");
                    close(&mut socket, 1011, "output failed").await;
                    return;
                }
                None => {
                    close(&mut socket, 1011, "output ended").await;
                    return;
                }
            },
            msg = socket.recv() => match msg {
                Some(Ok(Message::Binary(data))) => {
                    if let Err(e) = st.svc.processes().stdin(&id, pid, data, false).await {
                        // Typing into a process that takes no input (or has exited) is not
                        // fatal to the session: the output (and its exit frame) still come.
                        tracing::debug!(sandbox_id = %id, pid, error = %e, "attach input dropped");
                    }
                }
                Some(Ok(Message::Text(t))) => {
                    let Ok(c) = serde_json::from_str::<ControlFrame>(t.as_str()) else {
                        continue;
                    };
                    if c.kind == "resize" {
                        let size = PtySize { cols: c.cols, rows: c.rows };
                        if let Err(e) = st.svc.processes().resize(&id, pid, size).await {
                            tracing::debug!(sandbox_id = %id, pid, error = %e, "attach resize refused");
                        }
                    }
                }
                Some(Ok(_)) => {}
                // Detached: the process keeps running.
                Some(Err(_)) | None => return,
            },
        }
    }
}
