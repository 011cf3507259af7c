//! The RPC transport: `POST /rpc` and `/health` (wire-reference §9.1–9.2).
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
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use stacyvm_protocol::{
    method, RpcRequest, RpcResponse, ENVELOPE_HEADER, PROTOCOL_HEADER, PROTOCOL_VERSION,
};

use crate::error::RpcError;
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

fn rest_error(status: StatusCode, code: &str, message: &str) -> Response {
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
    pub(crate) fn void() -> Result<Reply, RpcError> {
        Ok(Reply::Result(None))
    }

    pub(crate) fn json(v: impl serde::Serialize) -> Result<Reply, RpcError> {
        serde_json::to_value(v)
            .map(|v| Reply::Result(Some(v)))
            .map_err(|e| {
                RpcError::new(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL", e.to_string())
            })
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
        let Some(req) = envelope
            .to_str()
            .ok()
            .and_then(|s| serde_json::from_str::<RpcRequest>(s).ok())
        else {
            return invalid_request();
        };
        return match admit_envelope(&state, &req) {
            Err(r) => r,
            Ok(()) if req.method != method::FILE_WRITE_STREAM => respond(
                &state,
                &req.id,
                Err(RpcError::bad_request(format!(
                    "only {} takes its envelope in the {ENVELOPE_HEADER} header",
                    method::FILE_WRITE_STREAM
                ))),
            ),
            Ok(()) => {
                let outcome = files_stream::write(&state, &req, body).await;
                log_failure(&req.method, &outcome);
                respond(&state, &req.id, outcome)
            }
        };
    }
    // Everything else is a JSON envelope, bounded by `MAX_RPC_BODY`.
    let body = match Bytes::from_request(Request::from_parts(parts, body), &state).await {
        Ok(b) => b,
        Err(rejection) => return rejection.into_response(),
    };
    let Ok(req) = serde_json::from_slice::<RpcRequest>(&body) else {
        return invalid_request();
    };
    drop(body);
    if let Err(r) = admit_envelope(&state, &req) {
        return r;
    }
    let wants_ndjson = headers
        .get(stacyvm_protocol::STREAM_HEADER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("ndjson"));
    let id = req.id.clone();
    let method = req.method.clone();
    let outcome = methods::dispatch(&state, req, wants_ndjson).await;
    log_failure(&method, &outcome);
    respond(&state, &id, outcome)
}

fn invalid_request() -> Response {
    rest_error(
        StatusCode::BAD_REQUEST,
        "BAD_REQUEST",
        "invalid worker RPC request",
    )
}

/// The envelope's target worker (403 in the REST shape) and its validity (400 `RpcResponse`).
#[expect(clippy::result_large_err, reason = "the error is the ready response")]
fn admit_envelope(state: &WorkerState, req: &RpcRequest) -> Result<(), Response> {
    if !req.worker_id.trim().is_empty() && req.worker_id != state.inner.id {
        return Err(rest_error(
            StatusCode::FORBIDDEN,
            "UNAUTHORIZED",
            "worker RPC request targets a different worker",
        ));
    }
    validate(req).map_err(|e| respond(state, &req.id, Err(e)))
}

fn log_failure(method: &str, outcome: &Result<Reply, RpcError>) {
    if let Err(e) = outcome {
        tracing::debug!(method, status = e.status.as_u16(), error = %e.message, "worker RPC failed");
    }
}

/// Envelope rules (§9.2); failures are 400 responses carrying `error`.
fn validate(req: &RpcRequest) -> Result<(), RpcError> {
    if req.id.trim().is_empty() {
        return Err(RpcError::bad_request("request id is required"));
    }
    if req.worker_id.trim().is_empty() {
        return Err(RpcError::bad_request("worker_id is required"));
    }
    if !method::ALL.contains(&req.method.as_str()) {
        return Err(RpcError::bad_request(format!(
            "unknown worker method: {}",
            req.method
        )));
    }
    if req.method != method::SHUTDOWN && req.params.as_ref().is_none_or(Value::is_null) {
        return Err(RpcError::bad_request(format!(
            "params are required for {}",
            req.method
        )));
    }
    if method::needs_lease(&req.method) && req.lease.is_none() {
        return Err(RpcError::bad_request(format!(
            "lease is required for {}",
            req.method
        )));
    }
    Ok(())
}

/// Decodes `params` into the method's type.
pub(crate) fn params<T: DeserializeOwned>(req: &RpcRequest) -> Result<T, RpcError> {
    let v = req.params.clone().unwrap_or(Value::Null);
    serde_json::from_value(v).map_err(|e| RpcError::bad_request(format!("invalid params: {e}")))
}

fn respond(state: &WorkerState, id: &str, outcome: Result<Reply, RpcError>) -> Response {
    let (status, body) = match outcome {
        Ok(Reply::Raw(mut r)) => {
            r.headers_mut()
                .insert(PROTOCOL_HEADER, HeaderValue::from(PROTOCOL_VERSION));
            return r;
        }
        Ok(Reply::Result(result)) => (
            StatusCode::OK,
            RpcResponse {
                id: id.to_string(),
                worker_id: state.inner.id.clone(),
                error: None,
                code: None,
                result,
            },
        ),
        Err(e) => (
            e.status,
            RpcResponse {
                id: id.to_string(),
                worker_id: state.inner.id.clone(),
                error: Some(e.message),
                code: e.code.map(str::to_string),
                result: None,
            },
        ),
    };
    let mut r = (status, Json(body)).into_response();
    r.headers_mut()
        .insert(PROTOCOL_HEADER, HeaderValue::from(PROTOCOL_VERSION));
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn req(method: &str, params: Option<Value>) -> RpcRequest {
        RpcRequest {
            id: "r1".into(),
            method: method.into(),
            worker_id: "w".into(),
            lease: None,
            params,
        }
    }

    #[test]
    fn envelope_rules() {
        let p = Some(json!({"sandbox_id": "sb-1", "provider": "mock"}));
        assert!(validate(&req(method::STATUS, p.clone())).is_ok());
        assert!(validate(&req(method::SHUTDOWN, None)).is_ok());
        let e = validate(&req("worker.nope", p.clone())).unwrap_err();
        assert_eq!(e.message, "unknown worker method: worker.nope");
        assert!(validate(&req(method::STATUS, None)).is_err());
        assert!(validate(&req(method::STATUS, Some(Value::Null))).is_err());
        let e = validate(&req(method::SPAWN, p.clone())).unwrap_err();
        assert!(e.message.contains("lease is required"), "{}", e.message);
        let mut r = req(method::STATUS, p);
        r.id = " ".into();
        assert!(validate(&r).is_err());
    }
}
