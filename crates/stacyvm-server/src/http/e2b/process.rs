//! `process.Process` (e2b-wire.md §2.2) over the native process model: a process started
//! here is an ordinary sandbox process, listed and attachable through `/api/v1` too.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::body::Body;
use axum::http::HeaderMap;
use axum::response::Response;
use bytes::Bytes;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use stacyvm_provider::RecordStream;
use stacyvm_types::{OutputRecord, OutputStream, Pid, ProcessState, PtySize, Signal};

use super::connect::{self, Code, ConnectError};
use super::Call;
use crate::service::{ExecParams, ProcessParams};

#[derive(Deserialize, Default)]
#[serde(default)]
struct ProcessConfig {
    cmd: String,
    args: Vec<String>,
    envs: BTreeMap<String, String>,
    cwd: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Size {
    cols: u32,
    rows: u32,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Pty {
    size: Option<Size>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct StartRequest {
    process: ProcessConfig,
    pty: Option<Pty>,
    tag: Option<String>,
    stdin: Option<bool>,
}

/// `{pid}` or `{tag}` (a protobuf oneof).
#[derive(Deserialize, Default)]
#[serde(default)]
struct Selector {
    pid: Option<Pid>,
    tag: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct SelectRequest {
    process: Selector,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Input {
    stdin: Option<String>,
    pty: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct SendInputRequest {
    process: Selector,
    input: Input,
}

/// Enum values arrive as their names (`SIGNAL_SIGKILL`); protobuf JSON also allows numbers.
#[derive(Deserialize)]
#[serde(untagged)]
enum SignalValue {
    Name(String),
    Number(i32),
}

#[derive(Deserialize)]
struct SendSignalRequest {
    #[serde(default)]
    process: Selector,
    signal: SignalValue,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct UpdateRequest {
    process: Selector,
    pty: Option<Pty>,
}

#[derive(Serialize)]
struct Empty {}

/// Dispatches one `process.Process` method.
pub async fn call(c: &Call<'_>, method: &str) -> Response {
    let res = match method {
        "Start" => start(c).await,
        "Connect" => attach(c).await,
        "List" => list(c).await,
        "SendInput" => send_input(c).await,
        "SendSignal" => send_signal(c).await,
        "CloseStdin" => close_stdin(c).await,
        "Update" => update(c).await,
        _ => Err(ConnectError::unimplemented("process.Process", method)),
    };
    c.answer(res)
}

fn pty_size(p: &Pty) -> Result<Option<PtySize>, ConnectError> {
    let Some(s) = &p.size else { return Ok(None) };
    let (Ok(cols), Ok(rows)) = (u16::try_from(s.cols), u16::try_from(s.rows)) else {
        return Err(ConnectError::invalid("pty size is out of range"));
    };
    Ok(Some(PtySize { cols, rows }))
}

async fn start(c: &Call<'_>) -> Result<Response, ConnectError> {
    let req: StartRequest = c.decode()?;
    if req.process.cmd.is_empty() {
        return Err(ConnectError::invalid("process.cmd is required"));
    }
    // A PTY without a size gets the SDK's default terminal.
    let pty = req
        .pty
        .as_ref()
        .map(pty_size)
        .transpose()?
        .map(|s| s.unwrap_or(PtySize { cols: 80, rows: 24 }));
    // The sandbox's environment (the create's `envVars`), then the request's.
    let mut env = c.t.env();
    env.extend(req.process.envs);
    let params = ProcessParams {
        exec: ExecParams {
            command: req.process.cmd,
            args: req.process.args,
            mode: "argv".into(),
            env,
            workdir: c.t.resolve(req.process.cwd.as_deref().unwrap_or("")),
            // envd runs the process for as long as the call's deadline (e2b-wire.md §2.1).
            timeout: connect::timeout_ms(c.h).map_or_else(String::new, |ms| format!("{ms}ms")),
            user: c.t.user.clone().unwrap_or_default(),
        },
        tag: req.tag.unwrap_or_default(),
        stdin: req.stdin.unwrap_or(false) || pty.is_some(),
        pty,
    };
    let (info, records) =
        c.st.svc
            .processes()
            .start_following(&c.t.id, params)
            .await?;
    Ok(events(info.pid, records, c.h))
}

async fn attach(c: &Call<'_>) -> Result<Response, ConnectError> {
    let req: SelectRequest = c.decode()?;
    let pid = select(c, &req.process).await?;
    let procs = c.st.svc.processes();
    let p = procs.get(&c.t.id, pid).await?;
    // From now on, as envd's Connect; an exited process answers its end at once.
    let from = match p.state {
        ProcessState::Running => p.next_seq,
        ProcessState::Exited => p.next_seq.saturating_sub(1),
    };
    let records = procs.output(&c.t.id, pid, from, true).await?;
    Ok(events(pid, records, c.h))
}

/// The pid a selector names; a tag names the newest running process carrying it.
async fn select(c: &Call<'_>, s: &Selector) -> Result<Pid, ConnectError> {
    if let Some(pid) = s.pid {
        return Ok(pid);
    }
    let Some(tag) = s.tag.as_deref().filter(|t| !t.is_empty()) else {
        return Err(ConnectError::invalid(
            "process selector needs a pid or a tag",
        ));
    };
    let procs = c.st.svc.processes().list(&c.t.id).await?;
    procs
        .iter()
        .find(|p| p.tag == tag && p.state == ProcessState::Running)
        .map(|p| p.pid)
        .ok_or_else(|| {
            ConnectError::new(
                Code::NotFound,
                format!("process with tag {tag:?} not found"),
            )
        })
}

#[derive(Serialize)]
struct Event<T: Serialize> {
    event: T,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
enum ProcessEvent {
    Start { pid: Pid },
    Data(Data),
    End(End),
    Keepalive {},
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
enum Data {
    Stdout(String),
    Stderr(String),
    Pty(String),
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct End {
    exit_code: i32,
    exited: bool,
    status: String,
}

fn frame(ev: ProcessEvent) -> Bytes {
    connect::message(&Event { event: ev })
}

/// How a process ended, as envd reports it: a signal is exit code -1, `exited: false`.
fn end_event(exit_code: i32, signal: Option<Signal>) -> ProcessEvent {
    match signal {
        Some(sig) => ProcessEvent::End(End {
            exit_code: -1,
            exited: false,
            status: format!("signal: {}", signal_words(sig)),
        }),
        None => ProcessEvent::End(End {
            exit_code,
            exited: true,
            status: format!("exit status {exit_code}"),
        }),
    }
}

/// Go's `syscall.Signal.String()` words, which envd's status carries.
fn signal_words(sig: Signal) -> &'static str {
    match sig.as_str() {
        "KILL" => "killed",
        "TERM" => "terminated",
        "INT" => "interrupt",
        "HUP" => "hangup",
        "QUIT" => "quit",
        "USR1" => "user defined signal 1",
        "USR2" => "user defined signal 2",
        "STOP" => "stopped (signal)",
        _ => "continued",
    }
}

/// The response stream: `start`, the output, keepalives while idle, `end`, end-of-stream. A
/// client that goes away drops the stream, never the process.
fn events(pid: Pid, records: RecordStream, h: &HeaderMap) -> Response {
    let idle = Duration::from_secs(connect::keepalive_secs(h));
    struct S {
        records: RecordStream,
        started: bool,
        done: bool,
    }
    let state = S {
        records,
        started: false,
        done: false,
    };
    let stream = futures_util::stream::unfold(state, move |mut s| async move {
        if s.done {
            return None;
        }
        if !s.started {
            s.started = true;
            return Some((
                Ok::<_, std::convert::Infallible>(frame(ProcessEvent::Start { pid })),
                s,
            ));
        }
        loop {
            let next = tokio::time::timeout(idle, s.records.next()).await;
            let rec = match next {
                Err(_) => return Some((Ok(frame(ProcessEvent::Keepalive {})), s)),
                Ok(r) => r,
            };
            let out = match rec {
                Some(Ok(OutputRecord::Data { stream, data, .. })) => {
                    let b = stacyvm_protocol::base64::encode(&data);
                    frame(ProcessEvent::Data(match stream {
                        OutputStream::Stdout => Data::Stdout(b),
                        OutputStream::Stderr => Data::Stderr(b),
                        OutputStream::Pty => Data::Pty(b),
                    }))
                }
                // Output older than the buffer is gone; envd has no way to say so.
                Some(Ok(OutputRecord::Gap { .. })) => continue,
                Some(Ok(OutputRecord::Exit {
                    exit_code, signal, ..
                })) => {
                    s.done = true;
                    let mut b = frame(end_event(exit_code, signal)).to_vec();
                    b.extend_from_slice(&connect::end_ok());
                    Bytes::from(b)
                }
                Some(Err(e)) => {
                    s.done = true;
                    let e = ConnectError::from(crate::error::ServiceError::from(e));
                    e.end_stream()
                }
                None => {
                    s.done = true;
                    ConnectError::new(Code::Unavailable, "the process's output ended early")
                        .end_stream()
                }
            };
            return Some((Ok(out), s));
        }
    });
    connect::stream_response(Body::from_stream(stream))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ListedConfig<'a> {
    cmd: &'a str,
    args: &'a [String],
    envs: BTreeMap<String, String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Listed<'a> {
    config: ListedConfig<'a>,
    pid: Pid,
    #[serde(skip_serializing_if = "str::is_empty")]
    tag: &'a str,
}

#[derive(Serialize)]
struct ListResponse<'a> {
    processes: Vec<Listed<'a>>,
}

/// Running processes (envd lists no exited ones).
async fn list(c: &Call<'_>) -> Result<Response, ConnectError> {
    let procs = c.st.svc.processes().list(&c.t.id).await?;
    let processes = procs
        .iter()
        .filter(|p| p.state == ProcessState::Running)
        .map(|p| Listed {
            config: ListedConfig {
                cmd: &p.command,
                args: &p.args,
                envs: BTreeMap::new(),
            },
            pid: p.pid,
            tag: &p.tag,
        })
        .collect();
    Ok(connect::unary_ok(&ListResponse { processes }))
}

/// Writes to the selected process's stdin (`close` closes it after).
async fn write_stdin(
    c: &Call<'_>,
    s: &Selector,
    data: Bytes,
    close: bool,
) -> Result<Response, ConnectError> {
    let pid = select(c, s).await?;
    c.st.svc
        .processes()
        .stdin(&c.t.id, pid, data, close)
        .await?;
    Ok(connect::unary_ok(&Empty {}))
}

async fn send_input(c: &Call<'_>) -> Result<Response, ConnectError> {
    let req: SendInputRequest = c.decode()?;
    let b64 = req.input.stdin.or(req.input.pty).unwrap_or_default();
    let data = stacyvm_protocol::base64::decode(&b64)
        .ok_or_else(|| ConnectError::invalid("input is not valid base64"))?;
    write_stdin(c, &req.process, Bytes::from(data), false).await
}

async fn close_stdin(c: &Call<'_>) -> Result<Response, ConnectError> {
    let req: SelectRequest = c.decode()?;
    write_stdin(c, &req.process, Bytes::new(), true).await
}

async fn send_signal(c: &Call<'_>) -> Result<Response, ConnectError> {
    let req: SendSignalRequest = c.decode()?;
    let pid = select(c, &req.process).await?;
    let sig = match req.signal {
        // The proto's enum: SIGNAL_SIGTERM = 15, SIGNAL_SIGKILL = 9.
        SignalValue::Name(n) => n.trim_start_matches("SIGNAL_").to_string(),
        SignalValue::Number(n) => Signal::ALL
            .into_iter()
            .find(|g| g.number() == n)
            .map(|g| g.as_str().to_string())
            .ok_or_else(|| ConnectError::invalid(format!("unknown signal {n}")))?,
    };
    c.st.svc.processes().signal(&c.t.id, pid, &sig).await?;
    Ok(connect::unary_ok(&Empty {}))
}

async fn update(c: &Call<'_>) -> Result<Response, ConnectError> {
    let req: UpdateRequest = c.decode()?;
    let pid = select(c, &req.process).await?;
    if let Some(size) = req.pty.as_ref().map(pty_size).transpose()?.flatten() {
        c.st.svc.processes().resize(&c.t.id, pid, size).await?;
    }
    Ok(connect::unary_ok(&Empty {}))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn events_are_envds_json() {
        let j = |e| String::from_utf8(frame(e)[5..].to_vec()).unwrap();
        assert_eq!(
            j(ProcessEvent::Start { pid: 42 }),
            r#"{"event":{"start":{"pid":42}}}"#
        );
        assert_eq!(
            j(ProcessEvent::Data(Data::Stdout("aGkK".into()))),
            r#"{"event":{"data":{"stdout":"aGkK"}}}"#
        );
        assert_eq!(
            j(ProcessEvent::Keepalive {}),
            r#"{"event":{"keepalive":{}}}"#
        );
        assert_eq!(
            j(end_event(0, None)),
            r#"{"event":{"end":{"exitCode":0,"exited":true,"status":"exit status 0"}}}"#
        );
        assert_eq!(
            j(end_event(137, Some(Signal::parse("KILL").unwrap()))),
            r#"{"event":{"end":{"exitCode":-1,"exited":false,"status":"signal: killed"}}}"#
        );
    }

    #[test]
    fn requests_decode_from_the_sdks_json() {
        let h = HeaderMap::new();
        let r: SendSignalRequest =
            connect::decode(&h, br#"{"process":{"pid":7},"signal":"SIGNAL_SIGKILL"}"#).unwrap();
        assert_eq!(r.process.pid, Some(7));
        assert!(matches!(r.signal, SignalValue::Name(ref n) if n == "SIGNAL_SIGKILL"));
        let r: SendInputRequest =
            connect::decode(&h, br#"{"process":{"tag":"t"},"input":{"pty":"AA=="}}"#).unwrap();
        assert_eq!(r.process.tag.as_deref(), Some("t"));
        assert_eq!(r.input.pty.as_deref(), Some("AA=="));
        let r: StartRequest = connect::decode(
            &h,
            br#"{"process":{"cmd":"/bin/bash","args":["-l"],"envs":{"A":"1"},"cwd":"/tmp"},"pty":{"size":{"cols":100,"rows":30}},"tag":"x","stdin":true,"unknownField":1}"#,
        )
        .unwrap();
        assert_eq!(r.process.envs["A"], "1");
        assert_eq!(
            pty_size(r.pty.as_ref().unwrap()).unwrap(),
            Some(PtySize {
                cols: 100,
                rows: 30
            })
        );
    }
}
