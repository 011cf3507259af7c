//! Answers: the response envelope, the stable error codes, and [`RpcFailure`], a failed call as
//! it travels (status, code, message). How provider errors map onto codes and back lives in one
//! place, `stacyvm_provider::wire` (this crate cannot see `ProviderError`).

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// Error classes a worker reports in [`RpcResponse::code`] (our addition: the original Go
/// worker sends none, so the control plane must also cope without one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    SandboxNotFound,
    FileNotFound,
    ProviderNotFound,
    BadRequest,
    Timeout,
    LeaseRejected,
    Draining,
    Unavailable,
    Internal,
    ProcessNotFound,
    StdinClosed,
    ProcessExited,
    NotAPty,
    /// The worker's provider cannot do this (pause without a freezer); 409.
    NotSupported,
}

impl ErrorCode {
    /// Every code, append-only.
    pub const ALL: [ErrorCode; 14] = [
        ErrorCode::SandboxNotFound,
        ErrorCode::FileNotFound,
        ErrorCode::ProviderNotFound,
        ErrorCode::BadRequest,
        ErrorCode::Timeout,
        ErrorCode::LeaseRejected,
        ErrorCode::Draining,
        ErrorCode::Unavailable,
        ErrorCode::Internal,
        ErrorCode::ProcessNotFound,
        ErrorCode::StdinClosed,
        ErrorCode::ProcessExited,
        ErrorCode::NotAPty,
        ErrorCode::NotSupported,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::SandboxNotFound => "SANDBOX_NOT_FOUND",
            ErrorCode::FileNotFound => "FILE_NOT_FOUND",
            ErrorCode::ProviderNotFound => "PROVIDER_NOT_FOUND",
            ErrorCode::BadRequest => "BAD_REQUEST",
            ErrorCode::Timeout => "TIMEOUT",
            ErrorCode::LeaseRejected => "LEASE_REJECTED",
            ErrorCode::Draining => "DRAINING",
            ErrorCode::Unavailable => "UNAVAILABLE",
            ErrorCode::Internal => "INTERNAL",
            ErrorCode::ProcessNotFound => "PROCESS_NOT_FOUND",
            ErrorCode::StdinClosed => "STDIN_CLOSED",
            ErrorCode::ProcessExited => "PROCESS_EXITED",
            ErrorCode::NotAPty => "NOT_A_PTY",
            ErrorCode::NotSupported => "NOT_SUPPORTED",
        }
    }

    /// `None` for a code this side does not know (a newer peer's).
    pub fn parse(s: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// An unknown code reads as no code: the caller then judges by the HTTP status, as it does
/// for the original worker.
fn lenient_code<'de, D: Deserializer<'de>>(d: D) -> Result<Option<ErrorCode>, D::Error> {
    Ok(Option::<String>::deserialize(d)?.and_then(|s| ErrorCode::parse(&s)))
}

/// The answer to one call: `result` on success (absent for void methods), else `error` (and,
/// from our workers, `code`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RpcResponse {
    pub id: String,
    pub worker_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_code"
    )]
    pub code: Option<ErrorCode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
}

impl RpcResponse {
    pub fn ok(id: impl Into<String>, worker_id: impl Into<String>, result: Option<Value>) -> Self {
        RpcResponse {
            id: id.into(),
            worker_id: worker_id.into(),
            error: None,
            code: None,
            result,
        }
    }

    pub fn failed(id: impl Into<String>, worker_id: impl Into<String>, f: &RpcFailure) -> Self {
        RpcResponse {
            id: id.into(),
            worker_id: worker_id.into(),
            error: Some(f.message.clone()),
            code: f.code,
            result: None,
        }
    }

    /// The failure this answer reports, if any, given its HTTP `status`. Like the original
    /// control plane, a 2xx answer with a non-empty `error` is a failure too (reported as 500).
    pub fn failure(&self, status: u16) -> Option<RpcFailure> {
        let error = self.error.as_deref().unwrap_or_default();
        if status >= 300 {
            return Some(RpcFailure::new(status, self.code, error));
        }
        (!error.is_empty()).then(|| RpcFailure::new(500, self.code, error))
    }
}

/// A failed call: the HTTP status the worker answers with, the stable code (absent from the
/// original worker and from a few of our own answers such as 501) and a caller-safe message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcFailure {
    pub status: u16,
    pub code: Option<ErrorCode>,
    pub message: String,
}

impl RpcFailure {
    pub fn new(status: u16, code: Option<ErrorCode>, message: impl Into<String>) -> Self {
        RpcFailure {
            status,
            code,
            message: message.into(),
        }
    }

    /// 400 `BAD_REQUEST`: the call itself is wrong.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, Some(ErrorCode::BadRequest), message)
    }
}

impl fmt::Display for RpcFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HTTP {}: {}", self.status, self.message)
    }
}

impl std::error::Error for RpcFailure {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_through_text_and_json() {
        for c in ErrorCode::ALL {
            assert_eq!(ErrorCode::parse(c.as_str()), Some(c));
            let r = RpcResponse::failed("x", "w", &RpcFailure::new(500, Some(c), "m"));
            let back: RpcResponse =
                serde_json::from_str(&serde_json::to_string(&r).expect("json")).expect("decode");
            assert_eq!(back.code, Some(c));
        }
        let r: RpcResponse =
            serde_json::from_str(r#"{"id":"x","worker_id":"w","error":"e","code":"NEWER"}"#)
                .expect("unknown codes decode");
        assert_eq!(r.code, None);
    }

    #[test]
    fn failure_of_an_answer() {
        let ok = RpcResponse::ok("x", "w", None);
        assert_eq!(ok.failure(200), None);
        let f = ok.failure(404).expect("a status of 300 or more fails");
        assert_eq!((f.status, f.code, f.message.as_str()), (404, None, ""));
        let mut err = RpcResponse::failed("x", "w", &RpcFailure::bad_request("bad"));
        assert_eq!(
            err.failure(200),
            Some(RpcFailure::new(500, Some(ErrorCode::BadRequest), "bad"))
        );
        err.error = Some(String::new());
        assert_eq!(err.failure(200), None);
    }
}
