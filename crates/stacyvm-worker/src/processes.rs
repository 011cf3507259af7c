//! The `worker.process_*` methods: background processes of this worker's sandboxes. The
//! process registry lives with the sandbox (its agent); the worker only routes, as the control
//! plane does for local sandboxes.
//!
//! `worker.process_output` answers 200 with live NDJSON once the read is open (unknown pids
//! and sandboxes fail before, as JSON answers): one `{"id","worker_id","result": RecordLine}`
//! line per record; a failure later ends the body with an `{"id","worker_id","error"}` line.
//! A closed connection drops the read, never the process.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use futures_util::StreamExt;
use stacyvm_protocol::{
    ErrorCode, ExecParams, ProcessListResult, ProcessOutputParams, ProcessParams,
    ProcessResizeParams, ProcessResult, ProcessSignalParams, ProcessStartParams,
    ProcessStdinParams, ProcessStdinResult, RecordLine, RpcFailure, RpcResponse, Target,
};
use stacyvm_provider::{ExecRequest, ProcessSpec, ProviderError};
use stacyvm_types::PtySize;

use crate::error::provider_failure;
use crate::methods::provider_for;
use crate::rpc::Reply;
use crate::state::WorkerState;

fn fail(t: &Target) -> impl Fn(ProviderError) -> RpcFailure + '_ {
    move |e| provider_failure(e, &t.sandbox_id)
}

/// The provider's request for `p` (an empty field means "not given"; zero means no limit,
/// as the control plane's default does; decoding refused negative ones).
pub(crate) fn exec_request(p: ExecParams) -> ExecRequest {
    ExecRequest {
        command: p.command,
        args: p.args,
        mode: p.mode,
        env: p.env,
        workdir: Some(p.workdir).filter(|w| !w.trim().is_empty()),
        timeout: p.timeout.and_then(|t| t.to_std()).filter(|d| !d.is_zero()),
        user: Some(p.user).filter(|u| !u.trim().is_empty()),
    }
}

pub(crate) async fn start(
    state: &WorkerState,
    id: &str,
    p: ProcessStartParams,
) -> Result<Reply, RpcFailure> {
    let t = p.exec.target.clone();
    let provider = provider_for(state, &t)?;
    if let Some(size) = p.pty {
        if !size.valid() {
            return Err(RpcFailure::bad_request(
                "invalid input: pty size out of range",
            ));
        }
    }
    let spec = ProcessSpec {
        exec: exec_request(p.exec),
        tag: p.tag,
        stdin: p.stdin,
        pty: p.pty,
        output_buffer: p.output_buffer,
        retain_exited: p.retain_exited_ms.map(Duration::from_millis),
    };
    if p.follow {
        let (process, records) = provider
            .process_start_follow(t.runtime(), spec)
            .await
            .map_err(fail(&t))?;
        let first = ProcessResult {
            sandbox_id: t.sandbox_id.to_string(),
            process,
        };
        let first = RpcResponse::ok(id, state.inner.id.clone(), serde_json::to_value(first).ok());
        return Ok(stream_records(state, id, &t, Some(first), records));
    }
    let process = provider
        .process_start(t.runtime(), spec)
        .await
        .map_err(fail(&t))?;
    Reply::json(ProcessResult {
        sandbox_id: t.sandbox_id.into_string(),
        process,
    })
}

pub(crate) async fn list(state: &WorkerState, t: Target) -> Result<Reply, RpcFailure> {
    let provider = provider_for(state, &t)?;
    let processes = provider.process_list(t.runtime()).await.map_err(fail(&t))?;
    Reply::json(ProcessListResult {
        sandbox_id: t.sandbox_id.into_string(),
        processes,
    })
}

pub(crate) async fn get(state: &WorkerState, p: ProcessParams) -> Result<Reply, RpcFailure> {
    let t = &p.target;
    let provider = provider_for(state, t)?;
    let process = provider
        .process_get(t.runtime(), p.pid)
        .await
        .map_err(fail(t))?;
    Reply::json(ProcessResult {
        sandbox_id: t.sandbox_id.to_string(),
        process,
    })
}

pub(crate) async fn stdin(state: &WorkerState, p: ProcessStdinParams) -> Result<Reply, RpcFailure> {
    let t = &p.target;
    let provider = provider_for(state, t)?;
    let written = provider
        .process_stdin(t.runtime(), p.pid, Bytes::from(p.data), p.close)
        .await
        .map_err(fail(t))?;
    Reply::json(ProcessStdinResult {
        sandbox_id: t.sandbox_id.to_string(),
        written,
    })
}

pub(crate) async fn signal(
    state: &WorkerState,
    p: ProcessSignalParams,
) -> Result<Reply, RpcFailure> {
    let t = &p.target;
    let provider = provider_for(state, t)?;
    let process = provider
        .process_signal(t.runtime(), p.pid, p.signal)
        .await
        .map_err(fail(t))?;
    Reply::json(ProcessResult {
        sandbox_id: t.sandbox_id.to_string(),
        process,
    })
}

pub(crate) async fn resize(
    state: &WorkerState,
    p: ProcessResizeParams,
) -> Result<Reply, RpcFailure> {
    let t = &p.target;
    let size = PtySize {
        cols: p.cols,
        rows: p.rows,
    };
    if !size.valid() {
        return Err(RpcFailure::bad_request(
            "invalid input: pty size out of range",
        ));
    }
    let provider = provider_for(state, t)?;
    provider
        .process_resize(t.runtime(), p.pid, size)
        .await
        .map_err(fail(t))?;
    Reply::void()
}

pub(crate) async fn output(
    state: &WorkerState,
    id: &str,
    p: ProcessOutputParams,
) -> Result<Reply, RpcFailure> {
    let t = p.target;
    let provider = provider_for(state, &t)?;
    let records = provider
        .process_output(t.runtime(), p.pid, p.since, p.follow)
        .await
        .map_err(fail(&t))?;
    Ok(stream_records(state, id, &t, None, records))
}

/// The live NDJSON answer of a read: `first` (the started process), then one line per record;
/// a failure ends it with an error line.
fn stream_records(
    state: &WorkerState,
    id: &str,
    t: &Target,
    first: Option<RpcResponse>,
    records: stacyvm_provider::RecordStream,
) -> Reply {
    ndjson_results(state, id, t, first, records, |r| {
        serde_json::to_value(RecordLine::from(r)).ok()
    })
}

/// A live NDJSON answer: `first`, then one `{"id","worker_id","result"}` line per item
/// (`encode` gives the result); a failure ends it with an error line, a stopping worker ends it
/// (what it streams lives on with the sandbox).
pub(crate) fn ndjson_results<T: Send + 'static>(
    state: &WorkerState,
    id: &str,
    t: &Target,
    first: Option<RpcResponse>,
    items: futures_util::stream::BoxStream<'static, Result<T, ProviderError>>,
    encode: fn(&T) -> Option<serde_json::Value>,
) -> Reply {
    let (id, worker_id, sandbox_id) = (
        id.to_string(),
        state.inner.id.clone(),
        t.sandbox_id.to_string(),
    );
    let line = |r: &RpcResponse| {
        let mut v = serde_json::to_vec(r).unwrap_or_default();
        v.push(b'\n');
        Ok::<_, Infallible>(Bytes::from(v))
    };
    // A stopping worker ends the reads it serves (the processes stay with their sandboxes).
    let stop = state.inner.stop.clone();
    let head = futures_util::stream::iter(first.as_ref().map(line));
    let body = items
        .take_until(async move { stop.cancelled().await })
        .scan(false, move |failed, item| {
            if *failed {
                return std::future::ready(None);
            }
            let r = match item {
                Ok(item) => RpcResponse::ok(id.clone(), worker_id.clone(), encode(&item)),
                Err(e) => {
                    *failed = true;
                    let mut f = provider_failure(e, &sandbox_id);
                    f.code = f.code.or(Some(ErrorCode::Internal));
                    RpcResponse::failed(id.clone(), worker_id.clone(), &f)
                }
            };
            std::future::ready(Some(line(&r)))
        });
    let mut resp = Response::new(Body::from_stream(head.chain(body)));
    *resp.status_mut() = StatusCode::OK;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Reply::Raw(resp)
}
