//! The RPC transport: `POST /rpc` and `/health` (wire-reference §9.1–9.2), and the preview
//! route (`preview.rs`).
//!
//! Order of checks on `/rpc`, each failing in the REST error shape `{code, message}`:
//! method (405), credentials (401), JSON (400), envelope `worker_id` (403). After that every
//! answer is an `RpcResponse`: envelope validation (400), then the method itself. A request
//! with an `X-StacyVM-RPC` header is a streamed upload: the envelope comes from the header and
//! the body goes, unread, to `worker.file_write_stream`.

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use stacyvm_protocol::{
    method, ErrorCode, RpcCall, RpcEnvelope, RpcFailure, RpcRequest, RpcResponse, ENVELOPE_HEADER,
    PREVIEW_ROUTE, PROTOCOL_HEADER, PROTOCOL_VERSION,
};

use crate::state::WorkerState;
use crate::{files_stream, methods};

/// Largest JSON `/rpc` body. Far above any command or control message; `worker.file_write`
/// carries its file base64 inside one JSON body, so this bounds that method; the streamed
/// upload has no limit unless its provider buffers uploads, which it then caps at this size.
pub const MAX_RPC_BODY: usize = 256 << 20;

/// The worker's HTTP surface, ready to serve.
pub fn rpc_router(state: WorkerState) -> Router {
    Router::new()
        .route("/rpc", post(rpc).fallback(method_not_allowed))
        .route("/health", any(health))
        .route(
            &format!("{PREVIEW_ROUTE}/{{sandbox}}/{{port}}"),
            any(crate::preview::serve),
        )
        .layer(DefaultBodyLimit::max(MAX_RPC_BODY))
        .with_state(state)
}

async fn health(State(state): State<WorkerState>) -> Response {
    Json(json!({"status": "ok", "worker_id": state.inner.id})).into_response()
}

async fn method_not_allowed() -> Response {
    rest_error(
        StatusCode::METHOD_NOT_ALLOWED,
        "BAD_REQUEST",
        "method not allowed",
    )
}

pub(crate) fn rest_error(status: StatusCode, code: &str, message: &str) -> Response {
    let mut r = (status, Json(json!({"code": code, "message": message}))).into_response();
    r.headers_mut()
        .insert(PROTOCOL_HEADER, HeaderValue::from(PROTOCOL_VERSION));
    r
}

/// What a method returns on success.
pub(crate) enum Reply {
    /// `result` (absent for void methods).
    Result(Option<Value>),
    /// A ready response (live NDJSON).
    Raw(Response),
}

impl Reply {
    pub(crate) fn void() -> Result<Reply, RpcFailure> {
        Ok(Reply::Result(None))
    }

    /// `result` as a JSON value (keys sorted, as the answers have always been).
    pub(crate) fn json(v: impl serde::Serialize) -> Result<Reply, RpcFailure> {
        serde_json::to_value(v)
            .map(|v| Reply::Result(Some(v)))
            .map_err(|e| RpcFailure::new(500, Some(ErrorCode::Internal), e.to_string()))
    }
}

async fn rpc(State(state): State<WorkerState>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let headers = parts.headers.clone();
    if let Err(e) = state.inner.auth.check(&headers) {
        tracing::debug!(error = %e, "worker RPC credentials refused");
        return rest_error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "invalid or missing worker RPC credentials",
        );
    }
    // A streamed upload: the envelope is in a header and the body is the file, read as a
    // stream by the method (never buffered here).
    if let Some(envelope) = headers.get(ENVELOPE_HEADER) {
        let Some(env) = envelope
            .to_str()
            .ok()
            .and_then(|s| serde_json::from_str::<RpcEnvelope>(s).ok())
        else {
            return invalid_request();
        };
        let id = env.id.clone();
        return match admit_envelope(&state, env) {
            Err(r) => r,
            Ok(RpcRequest {
                call: RpcCall::FileWriteStream(p),
                ..
            }) => {
                let outcome = files_stream::write(&state, p, body).await;
                log_failure(method::FILE_WRITE_STREAM, &outcome);
                respond(&state, &id, outcome)
            }
            Ok(_) => respond(
                &state,
                &id,
                Err(RpcFailure::bad_request(format!(
                    "only {} takes its envelope in the {ENVELOPE_HEADER} header",
                    method::FILE_WRITE_STREAM
                ))),
            ),
        };
    }
    // Everything else is a JSON envelope, bounded by `MAX_RPC_BODY`.
    let body = match Bytes::from_request(Request::from_parts(parts, body), &state).await {
        Ok(b) => b,
        Err(rejection) => return rejection.into_response(),
    };
    let Ok(env) = serde_json::from_slice::<RpcEnvelope>(&body) else {
        return invalid_request();
    };
    drop(body);
    let req = match admit_envelope(&state, env) {
        Ok(req) => req,
        Err(r) => return r,
    };
    let wants_ndjson = headers
        .get(stacyvm_protocol::STREAM_HEADER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("ndjson"));
    let id = req.id.clone();
    let method = req.call.method();
    let outcome = methods::dispatch(&state, req, wants_ndjson).await;
    log_failure(method, &outcome);
    respond(&state, &id, outcome)
}

fn invalid_request() -> Response {
    rest_error(
        StatusCode::BAD_REQUEST,
        "BAD_REQUEST",
        "invalid worker RPC request",
    )
}

/// The envelope's target worker (403 in the REST shape), then its decoding into a typed
/// request (400 `RpcResponse`): the worker's whole validation of a call.
#[expect(clippy::result_large_err, reason = "the error is the ready response")]
fn admit_envelope(state: &WorkerState, env: RpcEnvelope) -> Result<RpcRequest, Response> {
    if !env.worker_id.trim().is_empty() && env.worker_id != state.inner.id {
        return Err(rest_error(
            StatusCode::FORBIDDEN,
            "UNAUTHORIZED",
            "worker RPC request targets a different worker",
        ));
    }
    let id = env.id.clone();
    env.decode().map_err(|f| respond(state, &id, Err(f)))
}

fn log_failure(method: &str, outcome: &Result<Reply, RpcFailure>) {
    if let Err(f) = outcome {
        tracing::debug!(method, status = f.status, error = %f.message, "worker RPC failed");
    }
}

fn respond(state: &WorkerState, id: &str, outcome: Result<Reply, RpcFailure>) -> Response {
    let (status, body) = match outcome {
        Ok(Reply::Raw(mut r)) => {
            r.headers_mut()
                .insert(PROTOCOL_HEADER, HeaderValue::from(PROTOCOL_VERSION));
            return r;
        }
        Ok(Reply::Result(result)) => (
            StatusCode::OK,
            RpcResponse::ok(id, state.inner.id.clone(), result),
        ),
        Err(f) => (
            StatusCode::from_u16(f.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            RpcResponse::failed(id, state.inner.id.clone(), &f),
        ),
    };
    let mut r = (status, Json(body)).into_response();
    r.headers_mut()
        .insert(PROTOCOL_HEADER, HeaderValue::from(PROTOCOL_VERSION));
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}
