//! `worker.file_read_stream` and `worker.file_write_stream`: file content travels as the raw
//! HTTP body, in chunks, so a file of any size passes with a few chunks in memory. Same
//! credentials as every RPC; like the buffered file methods they carry no lease.
//!
//! - read: the envelope is the ordinary JSON body; success is 200
//!   `application/octet-stream` with `Content-Length` when the provider knows the size. A
//!   failure after the first byte cuts the body short, which the caller sees as a transport
//!   error (never as a complete file).
//! - write: the envelope travels in `X-StacyVM-RPC` and the body is the content; the result is
//!   `{sandbox_id, size}`. Path checks run before the body is read. A provider without a
//!   streaming path (it buffers the upload) takes at most `MAX_RPC_BODY` bytes (413).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use futures_util::StreamExt;
use stacyvm_protocol::{ErrorCode, FilePathParams, FileUploadParams, FileWriteResult, RpcFailure};
use stacyvm_provider::{limited, ProviderError};

use crate::error::failed_for;
use crate::methods::provider_for;
use crate::rpc::{Reply, MAX_RPC_BODY};
use crate::state::WorkerState;

pub(crate) async fn read(state: &WorkerState, p: FilePathParams) -> Result<Reply, RpcFailure> {
    let provider = provider_for(state, &p.target)?;
    let sb = p.target.sandbox_id.to_string();
    let file = provider
        .read_file_stream(p.target.runtime(), &p.path)
        .await
        .map_err(failed_for(&sb))?;
    let body = file.body.map(move |r| {
        r.inspect_err(|e| tracing::warn!(sandbox_id = %sb, error = %e, "file stream failed"))
    });
    let mut resp = Response::new(Body::from_stream(body));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(n) = file.size {
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
    }
    *resp.status_mut() = StatusCode::OK;
    Ok(Reply::Raw(resp))
}

pub(crate) async fn write(
    state: &WorkerState,
    p: FileUploadParams,
    body: Body,
) -> Result<Reply, RpcFailure> {
    let provider = provider_for(state, &p.target)?;
    let sb = p.target.sandbox_id.as_str();
    let mode = Some(p.mode.as_str()).filter(|m| !m.trim().is_empty());
    let mut stream = body
        .into_data_stream()
        .map(|r| r.map_err(|e| ProviderError::InvalidInput(format!("upload body failed: {e}"))))
        .boxed();
    // A provider that buffers uploads whole is held to the buffered method's limit.
    let tripped = Arc::new(AtomicBool::new(false));
    if !provider.streams_files() {
        stream = limited(stream, MAX_RPC_BODY as u64, tripped.clone());
    }
    let res = provider
        .write_file_stream(p.target.runtime(), &p.path, stream, mode)
        .await;
    if tripped.load(Ordering::SeqCst) {
        return Err(RpcFailure::new(
            413,
            Some(ErrorCode::BadRequest),
            format!(
                "invalid input: the {} provider takes files of at most {MAX_RPC_BODY} bytes",
                provider.name()
            ),
        ));
    }
    let size = res.map_err(failed_for(sb))?;
    Reply::json(FileWriteResult {
        sandbox_id: sb.to_string(),
        size,
    })
}
