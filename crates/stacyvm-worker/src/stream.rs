//! `worker.exec` and `worker.exec_stream`.
//!
//! With `X-Worker-Stream: ndjson`, `exec_stream` answers 200 at once and writes one line per
//! output chunk as it arrives, `{"id","worker_id","result":{"stream","data"}}`, then a final
//! `{"stream":"exit","data":"","exit_code":N}` line (DECISIONS.md). A deadline adds the stderr
//! chunk `exec timeout: <id>` and exit code 124; any other failure after the start ends the
//! stream with an `{"id","worker_id","error"}` line. The command runs in a tracked task that
//! feeds the response body; when the client goes away the body is dropped, the provider sees
//! its output receiver close and kills the command.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use stacyvm_protocol::{
    ErrorCode, ExecParams, ExecResult, ExecStreamResult, RpcFailure, RpcResponse, StreamChunk,
};
use stacyvm_provider::{ExecRequest, Provider, ProviderError};
use stacyvm_types::{CappedOutput, SandboxState, StreamKind};
use tokio::sync::{mpsc, oneshot};

use crate::error::{failed_for, provider_failure};
use crate::methods::provider_for;
use crate::rpc::Reply;
use crate::state::WorkerState;

/// Output chunks buffered between the command and the response body.
const CHUNK_BUFFER: usize = 64;

struct Prepared {
    provider: Arc<dyn Provider>,
    sandbox_id: String,
    runtime_id: String,
    req: ExecRequest,
}

fn prepare(state: &WorkerState, p: ExecParams) -> Result<Prepared, RpcFailure> {
    let provider = provider_for(state, &p.target)?;
    Ok(Prepared {
        provider,
        runtime_id: p.target.runtime().to_string(),
        sandbox_id: p.target.sandbox_id.clone().into_string(),
        req: crate::processes::exec_request(p),
    })
}

/// Runs the command to completion, keeping each stream's chunks while their raw bytes stay
/// within `cap` (the rest is drained and dropped; the flag says so).
async fn collect(
    p: Prepared,
    cap: usize,
) -> (
    Result<i32, ProviderError>,
    Vec<stacyvm_types::StreamChunk>,
    bool,
    String,
) {
    let (tx, mut rx) = mpsc::channel::<stacyvm_types::StreamChunk>(CHUNK_BUFFER);
    let exec = p.provider.exec(&p.runtime_id, p.req, tx);
    let gather = async {
        let (mut v, mut kept, mut truncated) = (Vec::new(), [0usize; 2], false);
        while let Some(mut c) = rx.recv().await {
            let kept = &mut kept[usize::from(c.stream == StreamKind::Stderr)];
            let room = cap.saturating_sub(*kept);
            if c.data.len() > room {
                truncated = true;
                c.data.truncate(room);
            }
            *kept += c.data.len();
            if !c.data.is_empty() {
                v.push(c);
            }
        }
        (v, truncated)
    };
    let (r, (chunks, truncated)) = tokio::join!(exec, gather);
    (r, chunks, truncated, p.sandbox_id)
}

/// `worker.exec`: `{sandbox_id, exit_code, stdout, stderr}`, output capped as the control
/// plane caps it (`server.max_exec_output`, on the encoded strings).
pub(crate) async fn exec(state: &WorkerState, p: ExecParams) -> Result<Reply, RpcFailure> {
    let p = prepare(state, p)?;
    let cap = state.inner.max_exec_output;
    let (r, chunks, truncated, sb) = collect(p, cap).await;
    let code = r.map_err(failed_for(&sb))?;
    let mut output = CappedOutput::new(cap);
    for c in chunks {
        output.push(c.stream, &c.data);
    }
    let out = output.finish();
    Reply::json(ExecResult {
        sandbox_id: sb,
        exit_code: i64::from(code),
        stdout: out.stdout,
        stderr: out.stderr,
        truncated: truncated || out.truncated,
    })
}

/// `worker.exec_stream`: live NDJSON with the header, else `{sandbox_id, chunks}` at the end.
pub(crate) async fn exec_stream(
    state: &WorkerState,
    id: &str,
    p: ExecParams,
    ndjson: bool,
) -> Result<Reply, RpcFailure> {
    let p = prepare(state, p)?;
    if ndjson {
        return live(state, id.to_string(), p).await;
    }
    let cap = state.inner.max_exec_output;
    let (r, chunks, mut truncated, sb) = collect(p, cap).await;
    let code = r.map_err(failed_for(&sb))?;
    let mut text = Decoder::default();
    let mut list: Vec<StreamChunk> = chunks
        .into_iter()
        .filter_map(|c| text.push(c.stream, &c.data))
        .collect();
    list.extend(text.finish());
    // The encoded chunks stay within the cap: escapes can make them longer than the raw bytes.
    let mut used = 0usize;
    list.retain(|c| {
        used += stacyvm_types::json_len(&c.data);
        let keep = used <= cap;
        truncated |= !keep;
        keep
    });
    list.push(exit_chunk(i64::from(code)));
    Reply::json(ExecStreamResult {
        sandbox_id: sb,
        chunks: list,
        truncated,
    })
}

fn exit_chunk(code: i64) -> StreamChunk {
    StreamChunk {
        stream: "exit".into(),
        data: String::new(),
        exit_code: Some(code),
    }
}

async fn live(state: &WorkerState, id: String, p: Prepared) -> Result<Reply, RpcFailure> {
    // Fail before the 200 when the sandbox is not there, so the caller gets a real status.
    match p.provider.status(&p.runtime_id).await {
        Ok(SandboxState::Destroyed) => {
            return Err(provider_failure(
                ProviderError::SandboxNotFound(p.runtime_id.clone()),
                &p.sandbox_id,
            ))
        }
        Ok(_) => {}
        Err(e) => return Err(provider_failure(e, &p.sandbox_id)),
    }
    let (tx, rx) = mpsc::channel(CHUNK_BUFFER);
    let (done_tx, done_rx) = oneshot::channel();
    let stop = state.inner.stop.clone();
    let Prepared {
        provider,
        sandbox_id,
        runtime_id,
        req,
    } = p;
    state.inner.tasks.spawn(async move {
        let r = tokio::select! {
            r = provider.exec(&runtime_id, req, tx) => r,
            () = stop.cancelled() => Err(ProviderError::Unavailable("worker is shutting down".into())),
        };
        // The body may be gone already (client disconnected); nothing to tell then.
        let _ = done_tx.send(r);
    });
    let lines = Lines {
        rx,
        done: Some(done_rx),
        pending: VecDeque::new(),
        text: Decoder::default(),
        id,
        worker_id: state.inner.id.clone(),
        sandbox_id,
        finished: false,
    };
    let body = Body::from_stream(futures_util::stream::unfold(lines, Lines::next));
    let mut resp = Response::new(body);
    *resp.status_mut() = StatusCode::OK;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(Reply::Raw(resp))
}

/// The NDJSON body of one live exec.
struct Lines {
    rx: mpsc::Receiver<stacyvm_types::StreamChunk>,
    done: Option<oneshot::Receiver<Result<i32, ProviderError>>>,
    pending: VecDeque<Bytes>,
    text: Decoder,
    id: String,
    worker_id: String,
    sandbox_id: String,
    finished: bool,
}

impl Lines {
    async fn next(mut self) -> Option<(Result<Bytes, Infallible>, Lines)> {
        loop {
            if let Some(line) = self.pending.pop_front() {
                return Some((Ok(line), self));
            }
            if self.finished {
                return None;
            }
            match self.rx.recv().await {
                Some(c) => {
                    if let Some(chunk) = self.text.push(c.stream, &c.data) {
                        self.result(chunk);
                    }
                }
                None => self.end().await,
            }
        }
    }

    fn line(&mut self, r: RpcResponse) {
        // Serialising strings and integers cannot fail; an empty line would be skipped.
        let mut v = serde_json::to_vec(&r).unwrap_or_default();
        v.push(b'\n');
        self.pending.push_back(Bytes::from(v));
    }

    fn result(&mut self, chunk: StreamChunk) {
        let r = RpcResponse::ok(
            self.id.clone(),
            self.worker_id.clone(),
            serde_json::to_value(chunk).ok(),
        );
        self.line(r);
    }

    /// The command finished (its sender is gone): flush text, then the exit or error line.
    async fn end(&mut self) {
        self.finished = true;
        for c in self.text.finish() {
            self.result(c);
        }
        let outcome = match self.done.take() {
            Some(rx) => rx
                .await
                .unwrap_or_else(|_| Err(ProviderError::internal("exec task ended early"))),
            None => Err(ProviderError::internal("exec outcome missing")),
        };
        match outcome {
            Ok(code) => self.result(exit_chunk(i64::from(code))),
            Err(ProviderError::Timeout) => {
                self.result(StreamChunk {
                    stream: "stderr".into(),
                    data: format!("exec timeout: {}", self.sandbox_id),
                    exit_code: None,
                });
                self.result(exit_chunk(i64::from(stacyvm_types::TIMEOUT_EXIT_CODE)));
            }
            Err(e) => {
                let mut f = provider_failure(e, &self.sandbox_id);
                f.code = f.code.or(Some(ErrorCode::Internal));
                let r = RpcResponse::failed(self.id.clone(), self.worker_id.clone(), &f);
                self.line(r);
            }
        }
    }
}

/// Turns raw output slices into text chunks without splitting a UTF-8 character across two
/// chunks (a split one would turn into two replacement characters). Invalid bytes become
/// U+FFFD, as the original's JSON encoding does.
#[derive(Default)]
struct Decoder {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

impl Decoder {
    fn push(&mut self, kind: StreamKind, data: &[u8]) -> Option<StreamChunk> {
        let buf = match kind {
            StreamKind::Stdout => &mut self.stdout,
            StreamKind::Stderr => &mut self.stderr,
        };
        buf.extend_from_slice(data);
        let cut = buf.len() - incomplete_tail(buf);
        if cut == 0 {
            return None;
        }
        let text = String::from_utf8_lossy(&buf[..cut]).into_owned();
        buf.drain(..cut);
        Some(chunk(kind, text))
    }

    /// Whatever is left (an incomplete character at the very end), lossily.
    fn finish(&mut self) -> Vec<StreamChunk> {
        let mut out = Vec::new();
        for (kind, buf) in [
            (StreamKind::Stdout, &mut self.stdout),
            (StreamKind::Stderr, &mut self.stderr),
        ] {
            if !buf.is_empty() {
                out.push(chunk(kind, String::from_utf8_lossy(buf).into_owned()));
                buf.clear();
            }
        }
        out
    }
}

fn chunk(kind: StreamKind, data: String) -> StreamChunk {
    let stream = match kind {
        StreamKind::Stdout => "stdout",
        StreamKind::Stderr => "stderr",
    };
    StreamChunk {
        stream: stream.into(),
        data,
        exit_code: None,
    }
}

/// Length of a trailing, possibly valid but unfinished UTF-8 sequence (0–3 bytes).
fn incomplete_tail(b: &[u8]) -> usize {
    for back in 1..=b.len().min(3) {
        let c = b[b.len() - back];
        if c & 0xC0 == 0x80 {
            continue;
        }
        let need = match c {
            0xF0..=0xF7 => 4,
            0xE0..=0xEF => 3,
            0xC0..=0xDF => 2,
            _ => 1,
        };
        return if need > back { back } else { 0 };
    }
    0
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn utf8_split_across_chunks_is_kept_whole() {
        let euro = "€".as_bytes(); // 3 bytes
        let mut d = Decoder::default();
        let a = d.push(StreamKind::Stdout, &[b'a', euro[0]]).unwrap();
        assert_eq!(a.data, "a");
        assert!(d.push(StreamKind::Stdout, &euro[1..2]).is_none());
        let b = d.push(StreamKind::Stdout, &[euro[2], b'b']).unwrap();
        assert_eq!(b.data, "€b");
        assert!(d.finish().is_empty());
    }

    #[test]
    fn invalid_bytes_become_replacement_chars() {
        let mut d = Decoder::default();
        let c = d.push(StreamKind::Stderr, &[0xFF, b'x']).unwrap();
        assert_eq!(c.data, "\u{FFFD}x");
        assert_eq!(c.stream, "stderr");
        // A dangling lead byte is flushed at the end.
        assert!(d.push(StreamKind::Stderr, &[0xE2]).is_none());
        let rest = d.finish();
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].data, "\u{FFFD}");
    }

    #[test]
    fn tails() {
        assert_eq!(incomplete_tail(b""), 0);
        assert_eq!(incomplete_tail(b"abc"), 0);
        assert_eq!(incomplete_tail("é".as_bytes()), 0);
        assert_eq!(incomplete_tail(&"😀".as_bytes()[..3]), 3);
        assert_eq!(incomplete_tail(&"😀".as_bytes()[..1]), 1);
    }
}
