//! The Connect protocol with the JSON codec, as much of it as E2B's SDKs use (e2b-wire.md
//! §2.1): unary calls (bare JSON both ways, errors as `{"code","message"}` with an HTTP
//! status), and server-streaming calls (one request envelope, response envelopes, then an
//! end-stream envelope that carries the error, if any, under HTTP 200). Envelopes are
//! `[flags u8][len u32 BE][json]`; compression is never negotiated (identity only).

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::{BufMut, Bytes, BytesMut};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::ServiceError;

/// Envelope flag: the payload is compressed (never sent by us; refused when received).
const FLAG_COMPRESSED: u8 = 0x01;
/// Envelope flag: the end-of-stream message.
const FLAG_END_STREAM: u8 = 0x02;
/// Largest request message accepted (the SDK's biggest requests are stdin chunks).
pub const MAX_REQUEST: usize = 16 << 20;

pub const CONTENT_TYPE_STREAM: &str = "application/connect+json";

/// Connect error codes (the subset with a meaning here).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    InvalidArgument,
    DeadlineExceeded,
    NotFound,
    AlreadyExists,
    PermissionDenied,
    ResourceExhausted,
    FailedPrecondition,
    Unimplemented,
    Internal,
    Unavailable,
    Unauthenticated,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Code::InvalidArgument => "invalid_argument",
            Code::DeadlineExceeded => "deadline_exceeded",
            Code::NotFound => "not_found",
            Code::AlreadyExists => "already_exists",
            Code::PermissionDenied => "permission_denied",
            Code::ResourceExhausted => "resource_exhausted",
            Code::FailedPrecondition => "failed_precondition",
            Code::Unimplemented => "unimplemented",
            Code::Internal => "internal",
            Code::Unavailable => "unavailable",
            Code::Unauthenticated => "unauthenticated",
        }
    }

    /// The HTTP status of a unary error (the Connect protocol's table).
    pub fn http_status(self) -> StatusCode {
        match self {
            Code::InvalidArgument | Code::FailedPrecondition => StatusCode::BAD_REQUEST,
            Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
            Code::NotFound | Code::Unimplemented => StatusCode::NOT_FOUND,
            Code::AlreadyExists => StatusCode::CONFLICT,
            Code::PermissionDenied => StatusCode::FORBIDDEN,
            Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
            Code::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        }
    }
}

/// An error answered to a Connect call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectError {
    pub code: Code,
    pub message: String,
}

#[derive(Serialize)]
struct ErrorJson<'a> {
    code: &'static str,
    message: &'a str,
}

impl ConnectError {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        ConnectError {
            code,
            message: message.into(),
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(Code::InvalidArgument, message)
    }

    /// A method of `service` that we do not serve.
    pub fn unimplemented(service: &str, method: &str) -> Self {
        Self::new(
            Code::Unimplemented,
            format!("{service}/{method} is not implemented"),
        )
    }

    fn json(&self) -> Vec<u8> {
        serde_json::to_vec(&ErrorJson {
            code: self.code.as_str(),
            message: &self.message,
        })
        .unwrap_or_else(|_| b"{}".to_vec())
    }

    /// The error as a unary response.
    pub fn unary(&self) -> Response {
        (
            self.code.http_status(),
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            self.json(),
        )
            .into_response()
    }

    /// The end-stream envelope of a stream that failed.
    pub fn end_stream(&self) -> Bytes {
        let mut body = br#"{"error":"#.to_vec();
        body.extend_from_slice(&self.json());
        body.push(b'}');
        envelope(FLAG_END_STREAM, &body)
    }
}

/// Service errors as Connect codes. The message never carries internal detail (the service's
/// messages are written for clients).
impl From<ServiceError> for ConnectError {
    fn from(e: ServiceError) -> Self {
        let code = match &e {
            ServiceError::BadRequest(_) | ServiceError::PayloadTooLarge(_) => Code::InvalidArgument,
            ServiceError::SandboxNotFound(_)
            | ServiceError::FileNotFound(_)
            | ServiceError::NotFound(_)
            | ServiceError::ProcessNotFound(_) => Code::NotFound,
            ServiceError::Conflict(_) => Code::AlreadyExists,
            ServiceError::Timeout(_) => Code::DeadlineExceeded,
            ServiceError::ResourceLimit(_) => Code::ResourceExhausted,
            ServiceError::Forbidden(_) => Code::PermissionDenied,
            ServiceError::Unauthorized(_) => Code::Unauthenticated,
            ServiceError::StdinClosed(_)
            | ServiceError::ProcessExited(_)
            | ServiceError::NotAPty(_) => Code::FailedPrecondition,
            ServiceError::NotSupported(_) => Code::Unimplemented,
            ServiceError::SandboxPaused(_) | ServiceError::Unavailable(_) => Code::Unavailable,
            _ => Code::Internal,
        };
        let message = match code {
            Code::Internal => "internal error".to_string(),
            _ => e.to_string(),
        };
        ConnectError::new(code, message)
    }
}

/// One envelope.
pub fn envelope(flags: u8, payload: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(5 + payload.len());
    b.put_u8(flags);
    b.put_u32(u32::try_from(payload.len()).unwrap_or(u32::MAX));
    b.put_slice(payload);
    b.freeze()
}

/// A message envelope of a server stream.
pub fn message<T: Serialize>(msg: &T) -> Bytes {
    envelope(
        0,
        &serde_json::to_vec(msg).unwrap_or_else(|_| b"{}".to_vec()),
    )
}

/// The end-stream envelope of a stream that succeeded.
pub fn end_ok() -> Bytes {
    envelope(FLAG_END_STREAM, b"{}")
}

/// Whether the request is a streaming call (`application/connect+json`).
pub fn is_streaming(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().starts_with(CONTENT_TYPE_STREAM))
}

/// Decodes a request: the bare JSON body of a unary call, or the single envelope of a
/// streaming one. Unknown fields are ignored (the SDK's codec does the same), an empty unary
/// body is `{}`.
pub fn decode<T: DeserializeOwned>(headers: &HeaderMap, body: &[u8]) -> Result<T, ConnectError> {
    let json = if is_streaming(headers) {
        unframe(body)?
    } else {
        body
    };
    let json = if json.iter().all(u8::is_ascii_whitespace) {
        &b"{}"[..]
    } else {
        json
    };
    serde_json::from_slice(json)
        .map_err(|e| ConnectError::invalid(format!("invalid request message: {e}")))
}

/// The payload of a request that must be exactly one uncompressed envelope.
fn unframe(body: &[u8]) -> Result<&[u8], ConnectError> {
    let Some((head, rest)) = body.split_first_chunk::<5>() else {
        return Err(ConnectError::invalid("request envelope is truncated"));
    };
    if head[0] & FLAG_COMPRESSED != 0 {
        return Err(ConnectError::new(
            Code::Unimplemented,
            "compressed messages are not supported (send identity)",
        ));
    }
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    if rest.len() != len {
        return Err(ConnectError::invalid(format!(
            "request envelope says {len} bytes but {} follow",
            rest.len()
        )));
    }
    Ok(rest)
}

/// A unary success.
pub fn unary_ok<T: Serialize>(msg: &T) -> Response {
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        serde_json::to_vec(msg).unwrap_or_else(|_| b"{}".to_vec()),
    )
        .into_response()
}

/// A server-stream response whose envelopes come from `body`.
pub fn stream_response(body: Body) -> Response {
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(CONTENT_TYPE_STREAM),
        )],
        body,
    )
        .into_response()
}

/// A stream that fails before its first message: still HTTP 200, the error in the end-stream
/// envelope (what the SDK's stream reader expects).
pub fn stream_error(e: &ConnectError) -> Response {
    stream_response(Body::from(e.end_stream()))
}

/// `Connect-Timeout-Ms`, when sent and positive.
pub fn timeout_ms(headers: &HeaderMap) -> Option<u64> {
    headers
        .get("connect-timeout-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|ms| *ms > 0)
}

/// `Keepalive-Ping-Interval` in seconds (the SDK sends 50), within 1..=600; default 50.
pub fn keepalive_secs(headers: &HeaderMap) -> u64 {
    headers
        .get("keepalive-ping-interval")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(50, |s| s.clamp(1, 600))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The request bytes the SDK sent for `commands.run("echo hi")` (e2b-wire.md §2.8).
    const START: &[u8] =
        b"\x00\x00\x00\x00\x52{\"process\": {\"cmd\": \"/bin/bash\", \"args\": [\"-l\", \"-c\", \"echo hi\"]}, \"stdin\": false}";

    #[derive(serde::Deserialize, Debug)]
    struct Start {
        process: Proc,
        stdin: bool,
    }
    #[derive(serde::Deserialize, Debug)]
    struct Proc {
        cmd: String,
        args: Vec<String>,
    }

    fn stream_headers() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(CONTENT_TYPE_STREAM),
        );
        h
    }

    #[test]
    fn decodes_the_sdks_start_envelope() {
        let s: Start = decode(&stream_headers(), START).unwrap();
        assert_eq!(s.process.cmd, "/bin/bash");
        assert_eq!(s.process.args, ["-l", "-c", "echo hi"]);
        assert!(!s.stdin);
    }

    #[test]
    fn refuses_bad_envelopes() {
        let h = stream_headers();
        assert_eq!(
            decode::<serde_json::Value>(&h, b"\x00\x00\x00")
                .unwrap_err()
                .code,
            Code::InvalidArgument
        );
        assert_eq!(
            decode::<serde_json::Value>(&h, b"\x00\x00\x00\x00\x05{}")
                .unwrap_err()
                .code,
            Code::InvalidArgument
        );
        assert_eq!(
            decode::<serde_json::Value>(&h, b"\x01\x00\x00\x00\x02{}")
                .unwrap_err()
                .code,
            Code::Unimplemented
        );
    }

    #[test]
    fn unary_bodies_are_bare_json_and_empty_is_an_empty_message() {
        let v: serde_json::Value = decode(&HeaderMap::new(), b"{\"path\":\"/tmp\"}").unwrap();
        assert_eq!(v["path"], "/tmp");
        let v: serde_json::Value = decode(&HeaderMap::new(), b"").unwrap();
        assert_eq!(v, serde_json::json!({}));
    }

    #[test]
    fn frames_are_byte_exact() {
        #[derive(Serialize)]
        struct Ev {
            event: serde_json::Value,
        }
        let start = message(&Ev {
            event: serde_json::json!({"start": {"pid": 42}}),
        });
        assert_eq!(
            &start[..],
            b"\x00\x00\x00\x00\x1e{\"event\":{\"start\":{\"pid\":42}}}"
        );
        assert_eq!(&end_ok()[..], b"\x02\x00\x00\x00\x02{}");
        let e = ConnectError::new(Code::NotFound, "process 7 not found").end_stream();
        assert_eq!(
            &e[..],
            &b"\x02\x00\x00\x00\x3e{\"error\":{\"code\":\"not_found\",\"message\":\"process 7 not found\"}}"[..]
        );
    }

    #[test]
    fn service_errors_map_to_codes_without_internal_detail() {
        let e = ConnectError::from(ServiceError::ProcessNotFound(7));
        assert_eq!(e.code, Code::NotFound);
        assert_eq!(e.code.http_status(), StatusCode::NOT_FOUND);
        let e = ConnectError::from(ServiceError::internal("/var/lib/x: EIO"));
        assert_eq!(e.code, Code::Internal);
        assert!(!e.message.contains("/var"));
    }

    #[test]
    fn headers() {
        let mut h = HeaderMap::new();
        assert_eq!(timeout_ms(&h), None);
        assert_eq!(keepalive_secs(&h), 50);
        h.insert("connect-timeout-ms", HeaderValue::from_static("60000"));
        h.insert("keepalive-ping-interval", HeaderValue::from_static("0"));
        assert_eq!(timeout_ms(&h), Some(60000));
        assert_eq!(keepalive_secs(&h), 1);
        h.insert("connect-timeout-ms", HeaderValue::from_static("0"));
        assert_eq!(timeout_ms(&h), None);
    }
}
