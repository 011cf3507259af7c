//! HTTP(S) client for worker `/rpc`. No hidden caps: calls take the time their work needs (exec
//! is bounded by its own timeout plus a margin), streams and bodies have no size limit beyond a
//! per-line guard.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};
use serde_json::Value;
use stacyvm_protocol::ndjson::{decode_line, LineSplitter, StreamLine};
use stacyvm_protocol::{
    envelope_header_value, RpcFailure, RpcRequest, RpcResponse, ENVELOPE_HEADER, PROTOCOL_HEADER,
    PROTOCOL_VERSION, STREAM_HEADER,
};
use stacyvm_provider::{ChunkSender, ProviderError};
use stacyvm_types::{StreamChunk as Chunk, StreamKind, WorkerId};

use crate::metrics::RpcMetrics;

/// Longest NDJSON line accepted from a worker (a chunk is a few KiB; this only stops a runaway).
const MAX_LINE: usize = 64 << 20;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a worker may take to start answering a file read (as the buffered read's bound).
const STREAM_START_TIMEOUT: Duration = Duration::from_secs(600);

/// The credential presented to worker `worker_id` (per-worker token, shared token, or a
/// freshly signed `worker:rpc` token). `Ok(None)` = none configured.
pub trait RpcCredentials: Send + Sync {
    fn credential_for(&self, worker_id: &str) -> Result<Option<String>, String>;
}

/// Client side of `worker.rpc_tls`.
#[derive(Debug, Clone, Default)]
pub struct RpcTlsClient {
    pub ca_pem: Option<Vec<u8>>,
    /// Client certificate and key, PEM (mTLS).
    pub identity_pem: Option<Vec<u8>>,
    /// Expected name in the worker's certificate when it differs from the URL host.
    pub server_name: Option<String>,
    pub insecure_skip_verify: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub worker_id: WorkerId,
    pub rpc_url: String,
}

#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("worker {0} has no RPC credential configured")]
    NoCredential(String),
    #[error("worker unreachable")]
    Transport(#[source] reqwest::Error),
    /// The worker answered with a failure.
    #[error("worker RPC failed: {0}")]
    Rejected(RpcFailure),
    #[error("invalid worker RPC response")]
    Decode,
    #[error("worker did not answer within {0:?}")]
    Stalled(Duration),
    #[error("invalid worker RPC TLS configuration: {0}")]
    Tls(String),
}

impl RemoteError {
    /// The provider error the service layer already understands: a worker's answer goes
    /// through the one wire mapping (`ProviderError::from_wire`); not reaching the worker is
    /// `Unavailable`.
    pub fn into_provider(self, path: &str) -> ProviderError {
        match self {
            RemoteError::Rejected(f) => ProviderError::from_wire(&f, path),
            RemoteError::Transport(_) | RemoteError::NoCredential(_) | RemoteError::Stalled(_) => {
                ProviderError::Unavailable(self.to_string())
            }
            RemoteError::Decode | RemoteError::Tls(_) => ProviderError::internal(self.to_string()),
        }
    }
}

pub struct WorkerClient {
    tls: Option<RpcTlsClient>,
    creds: Arc<dyn RpcCredentials>,
    /// One client per worker URL (TLS server-name overrides are per host).
    clients: Mutex<HashMap<String, reqwest::Client>>,
    /// Latency by method and outcome (`stacyvm_worker_rpc_duration_seconds`).
    metrics: RpcMetrics,
}

impl WorkerClient {
    pub fn new(
        tls: Option<RpcTlsClient>,
        creds: Arc<dyn RpcCredentials>,
    ) -> Result<Self, RemoteError> {
        let c = WorkerClient {
            tls,
            creds,
            clients: Mutex::new(HashMap::new()),
            metrics: RpcMetrics::default(),
        };
        // Fail at startup, not at the first call, on bad certificates.
        c.build_client("http://127.0.0.1:1")?;
        Ok(c)
    }

    pub(crate) fn metrics(&self) -> &RpcMetrics {
        &self.metrics
    }

    pub fn has_credential(&self, worker_id: &str) -> bool {
        matches!(self.creds.credential_for(worker_id), Ok(Some(_)))
    }

    fn build_client(&self, url: &str) -> Result<reqwest::Client, RemoteError> {
        let mut b = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(60));
        if let Some(tls) = &self.tls {
            b = b
                .use_rustls_tls()
                .min_tls_version(reqwest::tls::Version::TLS_1_2);
            if let Some(ca) = &tls.ca_pem {
                for cert in reqwest::Certificate::from_pem_bundle(ca)
                    .map_err(|e| RemoteError::Tls(e.to_string()))?
                {
                    b = b.add_root_certificate(cert);
                }
                b = b.tls_built_in_root_certs(false);
            }
            if let Some(id) = &tls.identity_pem {
                b = b.identity(
                    reqwest::Identity::from_pem(id).map_err(|e| RemoteError::Tls(e.to_string()))?,
                );
            }
            if tls.insecure_skip_verify {
                b = b.danger_accept_invalid_certs(true);
            }
            if let (Some(name), Ok(u)) = (&tls.server_name, reqwest::Url::parse(url)) {
                // Connect to the URL's address but verify the certificate for `server_name`.
                if let (Some(host), Some(port)) = (u.host_str(), u.port_or_known_default()) {
                    if let Ok(mut addrs) = std::net::ToSocketAddrs::to_socket_addrs(&(host, port)) {
                        if let Some(a) = addrs.next() {
                            b = b.resolve(name, a);
                        }
                    }
                }
            }
        }
        b.build().map_err(|e| RemoteError::Tls(e.to_string()))
    }

    /// The request URL of `path` (from `/`) on a worker and the client for it (server-name
    /// override applied).
    fn target(&self, ep: &Endpoint, path: &str) -> Result<(reqwest::Client, String), RemoteError> {
        let mut url = format!("{}{path}", ep.rpc_url.trim_end_matches('/'));
        if let Some(name) = self.tls.as_ref().and_then(|t| t.server_name.clone()) {
            if let Ok(mut u) = reqwest::Url::parse(&url) {
                if u.set_host(Some(&name)).is_ok() {
                    url = u.to_string();
                }
            }
        }
        let mut map = self.clients.lock().map_err(|_| RemoteError::Decode)?;
        let client = match map.get(&ep.rpc_url) {
            Some(c) => c.clone(),
            None => {
                let c = self.build_client(&ep.rpc_url)?;
                map.insert(ep.rpc_url.clone(), c.clone());
                c
            }
        };
        Ok((client, url))
    }

    /// `POST /rpc` with `req` as its JSON body.
    fn request(
        &self,
        ep: &Endpoint,
        req: &RpcRequest,
    ) -> Result<reqwest::RequestBuilder, RemoteError> {
        Ok(self.post(ep)?.json(req))
    }

    /// `POST /rpc` with credentials, before a body is chosen.
    fn post(&self, ep: &Endpoint) -> Result<reqwest::RequestBuilder, RemoteError> {
        self.authenticated(ep, reqwest::Method::POST, "/rpc")
    }

    /// A request to `path` on the worker with the RPC's credentials and protocol header.
    pub(super) fn authenticated(
        &self,
        ep: &Endpoint,
        method: reqwest::Method,
        path: &str,
    ) -> Result<reqwest::RequestBuilder, RemoteError> {
        let token = self
            .creds
            .credential_for(&ep.worker_id)
            .map_err(|_| RemoteError::NoCredential(ep.worker_id.to_string()))?
            .ok_or_else(|| RemoteError::NoCredential(ep.worker_id.to_string()))?;
        let (client, url) = self.target(ep, path)?;
        Ok(client
            .request(method, url)
            .header("X-Worker-ID", ep.worker_id.as_str())
            .header("X-Worker-Token", token)
            .header(PROTOCOL_HEADER, PROTOCOL_VERSION.to_string()))
    }

    /// One request/response call; its `result` (absent for void methods). `timeout` bounds
    /// the whole call when given.
    pub async fn call(
        &self,
        ep: &Endpoint,
        req: &RpcRequest,
        timeout: Option<Duration>,
    ) -> Result<Option<Value>, RemoteError> {
        let mut timer = self.metrics.start(req.call.method());
        let mut rb = self.request(ep, req)?;
        if let Some(t) = timeout {
            rb = rb.timeout(t);
        }
        let resp = rb.send().await.map_err(RemoteError::Transport)?;
        let result = json_result(resp).await;
        timer.finish(&result);
        result
    }

    /// [`Self::request`] for a call answered as NDJSON lines.
    fn ndjson_request(
        &self,
        ep: &Endpoint,
        req: &RpcRequest,
    ) -> Result<reqwest::RequestBuilder, RemoteError> {
        Ok(self
            .request(ep, req)?
            .header("Accept", "application/x-ndjson"))
    }

    /// Sends a streamed call and returns its answer once the content starts. Only the start is
    /// bounded ([`STREAM_START_TIMEOUT`]) and timed: the body then flows at the reader's pace.
    /// Failures, and anything that is not raw content, are JSON envelopes, decoded here.
    async fn start_stream(
        &self,
        req: &RpcRequest,
        rb: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, RemoteError> {
        let mut timer = self.metrics.start(req.call.method());
        let (resp, is_json) = send_stream(rb).await?;
        if !resp.status().is_success() || is_json {
            let failure = json_result(resp)
                .await
                .and(Err::<reqwest::Response, _>(RemoteError::Decode));
            timer.finish(&failure);
            return failure;
        }
        timer.finish(&Ok::<(), RemoteError>(()));
        Ok(resp)
    }

    /// `worker.file_read_stream`: the file's size (when the worker knows it) and its content
    /// as it arrives. No overall timeout: a large file takes the time it takes; a dead
    /// connection ends the stream with an error. The worker must start answering within
    /// [`STREAM_START_TIMEOUT`] (a buffering backend reads the whole file first).
    pub async fn file_read_stream(
        &self,
        ep: &Endpoint,
        req: &RpcRequest,
    ) -> Result<(Option<u64>, ByteStream), RemoteError> {
        let resp = self.start_stream(req, self.request(ep, req)?).await?;
        let size = resp.content_length();
        let body = resp.bytes_stream().map_err(RemoteError::Transport).boxed();
        Ok((size, body))
    }

    /// `worker.file_write_stream`: the envelope goes in a header and `body` is sent as it is
    /// produced (reqwest pulls it, so a slow worker slows the producer). Returns the result.
    pub async fn file_write_stream<S, E>(
        &self,
        ep: &Endpoint,
        req: &RpcRequest,
        body: S,
    ) -> Result<Option<Value>, RemoteError>
    where
        S: futures_util::TryStream<Ok = bytes::Bytes, Error = E> + Send + 'static,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let mut timer = self.metrics.start(req.call.method());
        let resp = self
            .post(ep)?
            .header(ENVELOPE_HEADER, envelope_header_value(req))
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .body(reqwest::Body::wrap_stream(body))
            .send()
            .await
            .map_err(RemoteError::Transport)?;
        let result = json_result(resp).await;
        timer.finish(&result);
        result
    }

    /// `worker.exec_stream` with live NDJSON: forwards chunks to `out` as they arrive and
    /// returns the exit code from the worker's exit line.
    pub async fn exec_stream(
        &self,
        ep: &Endpoint,
        req: &RpcRequest,
        out: ChunkSender,
    ) -> Result<i32, RemoteError> {
        let mut timer = self.metrics.start(req.call.method());
        let result = self.exec_stream_inner(ep, req, out).await;
        timer.finish(&result);
        result
    }

    async fn exec_stream_inner(
        &self,
        ep: &Endpoint,
        req: &RpcRequest,
        out: ChunkSender,
    ) -> Result<i32, RemoteError> {
        let rb = self
            .request(ep, req)?
            .header(STREAM_HEADER, "ndjson")
            .header("Accept", "application/x-ndjson");
        let resp = rb.send().await.map_err(RemoteError::Transport)?;
        let status = resp.status().as_u16();
        if status >= 300 {
            let bytes = resp.bytes().await.map_err(RemoteError::Transport)?;
            return Err(rejected(status, &bytes));
        }
        let mut body = resp.bytes_stream();
        let mut lines = LineSplitter::new(MAX_LINE);
        while let Some(piece) = body.next().await {
            let piece = piece.map_err(RemoteError::Transport)?;
            for line in lines.push(&piece).map_err(|_| RemoteError::Decode)? {
                if let Some(code) = handle_line(&line, &out).await? {
                    return Ok(code);
                }
            }
        }
        if let Some(line) = lines.finish() {
            if let Some(code) = handle_line(&line, &out).await? {
                return Ok(code);
            }
        }
        // The original Go worker sends no exit line; its streams simply end.
        Ok(0)
    }
}

impl WorkerClient {
    /// `worker.process_output`: the records as they arrive. Failures before the first line are
    /// JSON answers; a failure line or a broken connection ends the stream with an error item.
    /// Dropping the stream closes the connection (the worker then drops its read).
    pub async fn process_output(
        &self,
        ep: &Endpoint,
        req: &RpcRequest,
    ) -> Result<RecordStream, RemoteError> {
        let rb = self.ndjson_request(ep, req)?;
        let resp = self.start_stream(req, rb).await?;
        Ok(records(Lines::new(resp)))
    }

    /// `worker.process_start` with `follow`: the started process, and its records from 0 as
    /// they arrive. A worker that does not follow in the start answers plain JSON: then the
    /// records are `None` and the caller reads them with `worker.process_output`.
    pub async fn process_start_follow(
        &self,
        ep: &Endpoint,
        req: &RpcRequest,
    ) -> Result<(Value, Option<RecordStream>), RemoteError> {
        let rb = self.ndjson_request(ep, req)?;
        let mut timer = self.metrics.start(req.call.method());
        let (resp, is_json) = send_stream(rb).await?;
        if !resp.status().is_success() || is_json {
            let r = json_result(resp).await;
            timer.finish(&r);
            return Ok((r?.ok_or(RemoteError::Decode)?, None));
        }
        let mut lines = Lines::new(resp);
        let first = tokio::time::timeout(STREAM_START_TIMEOUT, lines.next_line())
            .await
            .map_err(|_| RemoteError::Stalled(STREAM_START_TIMEOUT))
            .and_then(|l| l.and_then(|l| l.ok_or(RemoteError::Decode)))
            .and_then(|line| {
                let r: RpcResponse =
                    serde_json::from_slice(&line).map_err(|_| RemoteError::Decode)?;
                if let Some(f) = r.failure(200) {
                    return Err(RemoteError::Rejected(f));
                }
                r.result.ok_or(RemoteError::Decode)
            });
        timer.finish(&first);
        Ok((first?, Some(records(lines))))
    }

    /// `worker.watch_dir`: the changes as they arrive, once the worker has the watch in place
    /// (failures before are JSON answers). A failure line or a broken connection ends the
    /// stream with an error item; dropping it closes the connection, which ends the watch.
    pub async fn watch_dir(
        &self,
        ep: &Endpoint,
        req: &RpcRequest,
    ) -> Result<WatchEvents, RemoteError> {
        let rb = self.ndjson_request(ep, req)?;
        let resp = self.start_stream(req, rb).await?;
        Ok(results(Lines::new(resp), |v| {
            serde_json::from_value(v).ok()
        }))
    }
}

/// The non-empty lines of an NDJSON body, as they arrive.
struct Lines {
    body: futures_util::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    split: LineSplitter,
    lines: VecDeque<Vec<u8>>,
    done: bool,
}

impl Lines {
    fn new(resp: reqwest::Response) -> Self {
        Lines {
            body: resp.bytes_stream().boxed(),
            split: LineSplitter::new(MAX_LINE),
            lines: VecDeque::new(),
            done: false,
        }
    }

    /// The next non-empty line; `None` at the end of the body.
    async fn next_line(&mut self) -> Result<Option<Vec<u8>>, RemoteError> {
        loop {
            if let Some(line) = self.lines.pop_front() {
                if line.trim_ascii().is_empty() {
                    continue;
                }
                return Ok(Some(line));
            }
            if self.done {
                return Ok(None);
            }
            match self.body.next().await {
                Some(Ok(piece)) => match self.split.push(&piece) {
                    Ok(l) => self.lines.extend(l),
                    Err(_) => {
                        self.done = true;
                        return Err(RemoteError::Decode);
                    }
                },
                Some(Err(e)) => {
                    self.done = true;
                    return Err(RemoteError::Transport(e));
                }
                None => {
                    self.done = true;
                    let rest = std::mem::replace(&mut self.split, LineSplitter::new(MAX_LINE));
                    self.lines.extend(rest.finish());
                }
            }
        }
    }
}

/// The record lines of a read; the first failure (a failure line, a broken or garbled body)
/// is the last item.
fn records(lines: Lines) -> RecordStream {
    results(lines, |v| {
        serde_json::from_value::<stacyvm_protocol::RecordLine>(v)
            .ok()?
            .into_record()
    })
}

/// The `result`s of a live NDJSON answer, each read by `decode` (`None`: not a valid one); the
/// first failure (a failure line, a broken or garbled body) is the last item.
fn results<T: Send + 'static>(
    lines: Lines,
    decode: fn(Value) -> Option<T>,
) -> futures_util::stream::BoxStream<'static, Result<T, RemoteError>> {
    futures_util::stream::unfold(Some(lines), move |lines| async move {
        let mut lines = lines?;
        loop {
            match lines.next_line().await {
                Ok(None) => return None,
                Ok(Some(line)) => match result(&line) {
                    Ok(None) => continue,
                    Ok(Some(v)) => match decode(v) {
                        Some(item) => return Some((Ok(item), Some(lines))),
                        None => return Some((Err(RemoteError::Decode), None)),
                    },
                    Err(e) => return Some((Err(e), None)),
                },
                Err(e) => return Some((Err(e), None)),
            }
        }
    })
    .boxed()
}

/// Output records of a remote process; transport failures end it with an error item.
pub type RecordStream =
    futures_util::stream::BoxStream<'static, Result<stacyvm_types::OutputRecord, RemoteError>>;

/// Changes seen by a remote watch; transport failures end it with an error item.
pub type WatchEvents =
    futures_util::stream::BoxStream<'static, Result<stacyvm_types::WatchEvent, RemoteError>>;

/// One line of a live NDJSON answer: its `result`, nothing (blank, or no result), or the
/// failure it reports.
fn result(line: &[u8]) -> Result<Option<Value>, RemoteError> {
    let text = line.trim_ascii();
    if text.is_empty() {
        return Ok(None);
    }
    let r: RpcResponse = serde_json::from_slice(text).map_err(|_| RemoteError::Decode)?;
    if let Some(f) = r.failure(200) {
        return Err(RemoteError::Rejected(f));
    }
    Ok(r.result)
}

/// A worker's content stream; transport failures end it with an error item.
pub type ByteStream = futures_util::stream::BoxStream<'static, Result<bytes::Bytes, RemoteError>>;

/// Reads a JSON `RpcResponse` (or, before dispatch, the REST error shape) into the call's
/// `result` or a [`RemoteError`].
async fn json_result(resp: reqwest::Response) -> Result<Option<Value>, RemoteError> {
    let status = resp.status().as_u16();
    let bytes = resp.bytes().await.map_err(RemoteError::Transport)?;
    match serde_json::from_slice::<RpcResponse>(&bytes) {
        Ok(r) => match r.failure(status) {
            Some(f) => Err(RemoteError::Rejected(f)),
            None => Ok(r.result),
        },
        Err(_) if status >= 300 => Err(rejected(status, &bytes)),
        Err(_) => Err(RemoteError::Decode),
    }
}

/// A failed answer (`status` ≥ 300): an `RpcResponse`, or before dispatch the REST error shape
/// `{code, message}`, or whatever a proxy in between said.
fn rejected(status: u16, bytes: &[u8]) -> RemoteError {
    if let Some(f) = serde_json::from_slice::<RpcResponse>(bytes)
        .ok()
        .and_then(|r| r.failure(status))
    {
        return RemoteError::Rejected(f);
    }
    let v: Value = serde_json::from_slice(bytes).unwrap_or(Value::Null);
    let message = v["message"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| {
            String::from_utf8_lossy(bytes)
                .trim()
                .chars()
                .take(512)
                .collect()
        });
    RemoteError::Rejected(RpcFailure::new(status, None, message))
}

/// Processes one NDJSON line; `Some(code)` on the exit line.
async fn handle_line(line: &[u8], out: &ChunkSender) -> Result<Option<i32>, RemoteError> {
    let chunk = match decode_line(line).map_err(|_| RemoteError::Decode)? {
        StreamLine::Nothing => return Ok(None),
        StreamLine::Failed(f) => return Err(RemoteError::Rejected(f)),
        StreamLine::Chunk(c) => c,
    };
    let stream = match chunk.stream.as_str() {
        "exit" => {
            return Ok(Some(
                chunk
                    .exit_code
                    .and_then(|c| i32::try_from(c).ok())
                    .unwrap_or(-1),
            ))
        }
        "stderr" => StreamKind::Stderr,
        _ => StreamKind::Stdout,
    };
    if out
        .send(Chunk {
            stream,
            data: chunk.data.into_bytes(),
        })
        .await
        .is_err()
    {
        // The caller went away; dropping the response closes the connection and the worker
        // kills the command.
        return Ok(Some(-1));
    }
    Ok(None)
}

impl RpcCredentials for stacyvm_auth::WorkerAuthenticator {
    fn credential_for(&self, worker_id: &str) -> Result<Option<String>, String> {
        self.rpc_credential_for(worker_id, chrono::Utc::now().timestamp())
            .map_err(|e| e.to_string())
    }
}

/// Sends a streamed call, waiting at most [`STREAM_START_TIMEOUT`] for the answer's head;
/// also says whether the answer is a JSON envelope rather than the stream.
async fn send_stream(
    rb: reqwest::RequestBuilder,
) -> Result<(reqwest::Response, bool), RemoteError> {
    let resp = tokio::time::timeout(STREAM_START_TIMEOUT, rb.send())
        .await
        .map_err(|_| RemoteError::Stalled(STREAM_START_TIMEOUT))?
        .map_err(RemoteError::Transport)?;
    let is_json = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    Ok((resp, is_json))
}
