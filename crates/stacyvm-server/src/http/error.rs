//! The one place errors become HTTP: status, stable upper-case `code`, and a message that
//! never carries internal detail.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::json_response;
use crate::error::ServiceError;

/// The stable error body: `{"code", "message"}`.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = Error)]
#[serde(deny_unknown_fields)]
pub(super) struct ErrorBody {
    #[schema(schema_with = code_schema)]
    code: &'static str,
    message: String,
}

/// Every `code` an error body can carry (the OpenAPI `Error.code` enum; `tests/openapi.rs`
/// checks the sources emit no other).
pub const ERROR_CODES: &[&str] = &[
    "BAD_REQUEST",
    "UNAUTHORIZED",
    "FORBIDDEN",
    "NOT_FOUND",
    "FILE_NOT_FOUND",
    "CONFLICT",
    "TIMEOUT",
    "RESOURCE_LIMIT",
    "UNAVAILABLE",
    "INTERNAL_ERROR",
    "PAYLOAD_TOO_LARGE",
    "PREVIEW_NOT_AVAILABLE",
    "PREVIEW_REMOTE_UNSUPPORTED",
    "PREVIEW_UPSTREAM_UNREACHABLE",
    "PREVIEW_LOOP",
    "PREVIEW_TOKEN_REQUIRED",
    "PREVIEW_TOKEN_INVALID",
    "PROCESS_NOT_FOUND",
    "STDIN_CLOSED",
    "PROCESS_EXITED",
    "NOT_A_PTY",
    "SANDBOX_PAUSED",
    "NOT_SUPPORTED",
    "SNAPSHOT_NOT_FOUND",
    "VOLUME_IN_USE",
    "WORKER_UNAVAILABLE",
];

fn code_schema() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .enum_values(Some(ERROR_CODES.iter().copied()))
        .build()
}

#[derive(Debug)]
pub enum ApiError {
    Service(ServiceError),
    /// Transport-level errors (auth, body decoding) with an explicit status and code.
    Plain {
        status: StatusCode,
        code: &'static str,
        message: String,
    },
}

impl ApiError {
    pub fn plain(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError::Plain {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::plain(StatusCode::BAD_REQUEST, "BAD_REQUEST", message)
    }

    /// The preview proxy reached no server on the sandbox's port (refused, unreachable, timed
    /// out, or it broke the exchange). The message names no address.
    pub fn preview_upstream(port: u16) -> Self {
        Self::plain(
            StatusCode::BAD_GATEWAY,
            "PREVIEW_UPSTREAM_UNREACHABLE",
            format!("nothing answered on port {port} of the sandbox"),
        )
    }

    /// A preview request that came back through the proxy (a sandbox server proxying to a
    /// preview URL of the control plane): refused instead of looping.
    pub fn preview_loop() -> Self {
        Self::plain(
            StatusCode::LOOP_DETECTED,
            "PREVIEW_LOOP",
            "preview request already passed through the preview proxy",
        )
    }

    pub fn status_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::Plain { status, code, .. } => (*status, code),
            ApiError::Service(e) => service_status(e),
        }
    }
}

/// Every service error variant and its HTTP status and code.
pub fn service_status(e: &ServiceError) -> (StatusCode, &'static str) {
    match e {
        ServiceError::BadRequest(_) => (StatusCode::BAD_REQUEST, "BAD_REQUEST"),
        ServiceError::SandboxNotFound(_)
        | ServiceError::ProviderNotFound(_)
        | ServiceError::NotFound(_) => (StatusCode::NOT_FOUND, "NOT_FOUND"),
        ServiceError::FileNotFound(_) => (StatusCode::NOT_FOUND, "FILE_NOT_FOUND"),
        ServiceError::Conflict(_) => (StatusCode::CONFLICT, "CONFLICT"),
        ServiceError::Timeout(_) => (StatusCode::REQUEST_TIMEOUT, "TIMEOUT"),
        ServiceError::ResourceLimit(_) => (StatusCode::TOO_MANY_REQUESTS, "RESOURCE_LIMIT"),
        ServiceError::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE"),
        ServiceError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE"),
        ServiceError::Forbidden(_) => (StatusCode::FORBIDDEN, "FORBIDDEN"),
        ServiceError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "UNAUTHORIZED"),
        ServiceError::NotConfigured(_) => (StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE"),
        ServiceError::PreviewUnavailable(_) => (StatusCode::NOT_FOUND, "PREVIEW_NOT_AVAILABLE"),
        ServiceError::PreviewRemote(_) => {
            (StatusCode::NOT_IMPLEMENTED, "PREVIEW_REMOTE_UNSUPPORTED")
        }
        ServiceError::PreviewTokenRequired(_) => {
            (StatusCode::UNAUTHORIZED, "PREVIEW_TOKEN_REQUIRED")
        }
        ServiceError::PreviewTokenInvalid(_) => (StatusCode::FORBIDDEN, "PREVIEW_TOKEN_INVALID"),
        ServiceError::PreviewUpstream(_) => {
            (StatusCode::BAD_GATEWAY, "PREVIEW_UPSTREAM_UNREACHABLE")
        }
        ServiceError::ProcessNotFound(_) => (StatusCode::NOT_FOUND, "PROCESS_NOT_FOUND"),
        ServiceError::StdinClosed(_) => (StatusCode::CONFLICT, "STDIN_CLOSED"),
        ServiceError::ProcessExited(_) => (StatusCode::CONFLICT, "PROCESS_EXITED"),
        ServiceError::NotAPty(_) => (StatusCode::CONFLICT, "NOT_A_PTY"),
        ServiceError::SandboxPaused(_) => (StatusCode::CONFLICT, "SANDBOX_PAUSED"),
        ServiceError::NotSupported(_) => (StatusCode::CONFLICT, "NOT_SUPPORTED"),
        ServiceError::SnapshotNotFound(_) => (StatusCode::NOT_FOUND, "SNAPSHOT_NOT_FOUND"),
        ServiceError::VolumeInUse(_) => (StatusCode::CONFLICT, "VOLUME_IN_USE"),
        ServiceError::WorkerUnavailable(_) => (StatusCode::CONFLICT, "WORKER_UNAVAILABLE"),
        ServiceError::Internal { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR"),
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        ApiError::Service(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_code();
        let message = match &self {
            ApiError::Plain { message, .. } => message.clone(),
            ApiError::Service(e @ ServiceError::Internal { source, .. }) => {
                // Detail goes to the log only.
                tracing::error!(error = %e, source = ?source, "internal error");
                e.to_string()
            }
            ApiError::Service(e) => e.to_string(),
        };
        json_response(status, &ErrorBody { code, message })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_has_its_status() {
        let cases: Vec<(ServiceError, u16, &str)> = vec![
            (ServiceError::bad_request("x"), 400, "BAD_REQUEST"),
            (ServiceError::SandboxNotFound("sb".into()), 404, "NOT_FOUND"),
            (ServiceError::ProviderNotFound("p".into()), 404, "NOT_FOUND"),
            (ServiceError::NotFound("t".into()), 404, "NOT_FOUND"),
            (
                ServiceError::FileNotFound("/x".into()),
                404,
                "FILE_NOT_FOUND",
            ),
            (ServiceError::Conflict("c".into()), 409, "CONFLICT"),
            (ServiceError::ProcessNotFound(3), 404, "PROCESS_NOT_FOUND"),
            (ServiceError::StdinClosed(3), 409, "STDIN_CLOSED"),
            (ServiceError::ProcessExited(3), 409, "PROCESS_EXITED"),
            (ServiceError::NotAPty(3), 409, "NOT_A_PTY"),
            (
                ServiceError::SandboxPaused("sb".into()),
                409,
                "SANDBOX_PAUSED",
            ),
            (ServiceError::NotSupported("p".into()), 409, "NOT_SUPPORTED"),
            (ServiceError::VolumeInUse("v".into()), 409, "VOLUME_IN_USE"),
            (
                ServiceError::SnapshotNotFound("s".into()),
                404,
                "SNAPSHOT_NOT_FOUND",
            ),
            (
                ServiceError::WorkerUnavailable("w".into()),
                409,
                "WORKER_UNAVAILABLE",
            ),
            (ServiceError::Timeout("sb".into()), 408, "TIMEOUT"),
            (
                ServiceError::ResourceLimit("r".into()),
                429,
                "RESOURCE_LIMIT",
            ),
            (
                ServiceError::PayloadTooLarge("p".into()),
                413,
                "PAYLOAD_TOO_LARGE",
            ),
            (ServiceError::Unavailable("u".into()), 503, "UNAVAILABLE"),
            (ServiceError::Forbidden("f".into()), 403, "FORBIDDEN"),
            (ServiceError::Unauthorized("u".into()), 401, "UNAUTHORIZED"),
            (ServiceError::NotConfigured("n".into()), 503, "UNAVAILABLE"),
            (
                ServiceError::PreviewUnavailable("p".into()),
                404,
                "PREVIEW_NOT_AVAILABLE",
            ),
            (
                ServiceError::PreviewRemote("r".into()),
                501,
                "PREVIEW_REMOTE_UNSUPPORTED",
            ),
            (
                ServiceError::PreviewTokenRequired("t".into()),
                401,
                "PREVIEW_TOKEN_REQUIRED",
            ),
            (
                ServiceError::PreviewTokenInvalid("t".into()),
                403,
                "PREVIEW_TOKEN_INVALID",
            ),
            (
                ServiceError::PreviewUpstream("u".into()),
                502,
                "PREVIEW_UPSTREAM_UNREACHABLE",
            ),
            (ServiceError::internal("boom"), 500, "INTERNAL_ERROR"),
        ];
        for (e, status, code) in cases {
            let (s, c) = service_status(&e);
            assert_eq!((s.as_u16(), c), (status, code), "{e:?}");
        }
    }

    #[test]
    fn preview_transport_errors() {
        assert_eq!(
            ApiError::preview_upstream(3000).status_code(),
            (StatusCode::BAD_GATEWAY, "PREVIEW_UPSTREAM_UNREACHABLE")
        );
        assert_eq!(
            ApiError::preview_loop().status_code(),
            (StatusCode::LOOP_DETECTED, "PREVIEW_LOOP")
        );
    }

    #[test]
    fn missing_target_maps_to_not_found() {
        let e: ServiceError = stacyvm_store::StoreError::not_found("template", "x").into();
        assert_eq!(service_status(&e).0, StatusCode::NOT_FOUND);
        assert_eq!(e.to_string(), "not found: template \"x\"");
    }
}
