//! The one mapping between [`ProviderError`] and the worker RPC's failed answers
//! (wire-reference §9.3). A worker turns a provider failure into status, code and message with
//! [`ProviderError::to_wire`]; the control plane turns the answer back with
//! [`ProviderError::from_wire`], so a remote sandbox fails the way a local one does. It lives
//! here because `stacyvm-protocol` cannot see `ProviderError`.

use stacyvm_protocol::{ErrorCode, RpcFailure};

use crate::ProviderError;

impl ProviderError {
    /// The answer a worker gives for this failure of a call about sandbox `sandbox_id` (the
    /// control plane's id, never the runtime's). Internal detail stays in `source`.
    pub fn to_wire(&self, sandbox_id: &str) -> RpcFailure {
        let (status, code, message) = match self {
            ProviderError::ProviderNotFound(n) => (
                404,
                ErrorCode::ProviderNotFound,
                format!("provider not found: {n}"),
            ),
            ProviderError::SandboxNotFound(_) => (
                404,
                ErrorCode::SandboxNotFound,
                format!("sandbox not found: {sandbox_id}"),
            ),
            ProviderError::FileNotFound(p) => {
                (404, ErrorCode::FileNotFound, format!("file not found: {p}"))
            }
            ProviderError::InvalidInput(m) => {
                (400, ErrorCode::BadRequest, format!("invalid input: {m}"))
            }
            // No code of its own: older control planes treat unknown codes as internal.
            ProviderError::ImageNotFound(m) => {
                (400, ErrorCode::BadRequest, format!("image not found: {m}"))
            }
            ProviderError::Timeout => (
                504,
                ErrorCode::Timeout,
                format!("exec timeout: {sandbox_id}"),
            ),
            ProviderError::Unavailable(m) => (
                503,
                ErrorCode::Unavailable,
                format!("provider unavailable: {m}"),
            ),
            ProviderError::ProcessNotFound(pid) => (
                404,
                ErrorCode::ProcessNotFound,
                format!("process not found: {pid}"),
            ),
            ProviderError::StdinClosed(pid) => {
                (409, ErrorCode::StdinClosed, format!("stdin closed: {pid}"))
            }
            ProviderError::ProcessExited(pid) => (
                409,
                ErrorCode::ProcessExited,
                format!("process exited: {pid}"),
            ),
            ProviderError::NotAPty(pid) => (409, ErrorCode::NotAPty, format!("not a pty: {pid}")),
            ProviderError::NotSupported(m) => {
                (409, ErrorCode::NotSupported, format!("not supported: {m}"))
            }
            ProviderError::Internal { message, .. } => (500, ErrorCode::Internal, message.clone()),
        };
        RpcFailure::new(status, Some(code), message)
    }

    /// The provider error for a worker's failed answer to a call about file `path` (empty when
    /// the call names none). Not-found and bad-input answers give back what the worker's
    /// message names; the worker's own failures keep `worker RPC failed: HTTP …` for context.
    pub fn from_wire(f: &RpcFailure, path: &str) -> ProviderError {
        use ErrorCode as C;
        let subject = |prefix: &str| {
            f.message
                .strip_prefix(prefix)
                .unwrap_or(&f.message)
                .to_string()
        };
        let context = || format!("worker RPC failed: {f}");
        // The pid a process answer names (`process not found: 7`), 0 when unreadable.
        let pid = || {
            f.message
                .rsplit(": ")
                .next()
                .and_then(|p| p.trim().parse().ok())
                .unwrap_or(0)
        };
        match (f.code, f.status) {
            (Some(C::ProcessNotFound), _) => ProviderError::ProcessNotFound(pid()),
            (Some(C::StdinClosed), _) => ProviderError::StdinClosed(pid()),
            (Some(C::ProcessExited), _) => ProviderError::ProcessExited(pid()),
            (Some(C::NotAPty), _) => ProviderError::NotAPty(pid()),
            (Some(C::NotSupported), _) => ProviderError::NotSupported(subject("not supported: ")),
            (Some(C::SandboxNotFound), _) => {
                ProviderError::SandboxNotFound(subject("sandbox not found: "))
            }
            (Some(C::FileNotFound), _) => ProviderError::FileNotFound(path.to_string()),
            (Some(C::ProviderNotFound), _) => {
                ProviderError::ProviderNotFound(subject("provider not found: "))
            }
            // A worker older than the method (the original Go worker has no process methods):
            // the caller did nothing wrong, the worker cannot do it.
            (_, 400) if f.message.starts_with("unknown worker method: ") => {
                ProviderError::Unavailable(format!(
                    "the worker does not support {} (an older worker version; upgrade it)",
                    subject("unknown worker method: ")
                ))
            }
            (Some(C::BadRequest), _) | (None, 400) => {
                ProviderError::InvalidInput(subject("invalid input: "))
            }
            (Some(C::Timeout), _) | (None, 408 | 504) => ProviderError::Timeout,
            // The original Go worker sends no code; its only not-found answer we can act on is
            // `sandbox not found: <id>` (an unknown provider is 404 too and stays internal).
            (None, 404) if f.message.contains("sandbox not found") => {
                ProviderError::SandboxNotFound(subject("sandbox not found: "))
            }
            (Some(C::Draining | C::Unavailable | C::LeaseRejected), _) | (None, 503) => {
                ProviderError::Unavailable(context())
            }
            _ => ProviderError::internal(context()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(e: &ProviderError) -> String {
        format!("{e:?}")
    }

    /// Every provider error, through the worker's answer and back.
    #[test]
    fn provider_errors_round_trip() {
        let cases = [
            (
                ProviderError::ProviderNotFound("x".into()),
                404,
                C::ProviderNotFound,
                ProviderError::ProviderNotFound("x".into()),
            ),
            (
                ProviderError::SandboxNotFound("rt-9".into()),
                404,
                C::SandboxNotFound,
                ProviderError::SandboxNotFound("sb-1".into()),
            ),
            (
                ProviderError::FileNotFound("/a".into()),
                404,
                C::FileNotFound,
                ProviderError::FileNotFound("/a".into()),
            ),
            (
                ProviderError::InvalidInput("bad".into()),
                400,
                C::BadRequest,
                ProviderError::InvalidInput("bad".into()),
            ),
            // Same message and class for the service: "invalid input: image not found: img".
            (
                ProviderError::ImageNotFound("img".into()),
                400,
                C::BadRequest,
                ProviderError::InvalidInput("image not found: img".into()),
            ),
            (
                ProviderError::Timeout,
                504,
                C::Timeout,
                ProviderError::Timeout,
            ),
            (
                ProviderError::Unavailable("down".into()),
                503,
                C::Unavailable,
                ProviderError::Unavailable(
                    "worker RPC failed: HTTP 503: provider unavailable: down".into(),
                ),
            ),
            (
                ProviderError::ProcessNotFound(7),
                404,
                C::ProcessNotFound,
                ProviderError::ProcessNotFound(7),
            ),
            (
                ProviderError::StdinClosed(8),
                409,
                C::StdinClosed,
                ProviderError::StdinClosed(8),
            ),
            (
                ProviderError::ProcessExited(9),
                409,
                C::ProcessExited,
                ProviderError::ProcessExited(9),
            ),
            (
                ProviderError::NotAPty(10),
                409,
                C::NotAPty,
                ProviderError::NotAPty(10),
            ),
            (
                ProviderError::NotSupported("no freezer".into()),
                409,
                C::NotSupported,
                ProviderError::NotSupported("no freezer".into()),
            ),
            (
                ProviderError::internal("boom"),
                500,
                C::Internal,
                ProviderError::internal("worker RPC failed: HTTP 500: boom"),
            ),
        ];
        for (e, status, code, back) in cases {
            let f = e.to_wire("sb-1");
            assert_eq!((f.status, f.code), (status, Some(code)), "{e:?}");
            assert_eq!(
                kind(&ProviderError::from_wire(&f, "/a")),
                kind(&back),
                "{f:?}"
            );
        }
        assert_eq!(
            ProviderError::SandboxNotFound("rt-9".into())
                .to_wire("sb-1")
                .message,
            "sandbox not found: sb-1"
        );
        assert_eq!(
            ProviderError::Timeout.to_wire("sb-1").message,
            "exec timeout: sb-1"
        );
    }

    use ErrorCode as C;

    /// Every code a worker may send, including the worker's own (lease, drain), and the
    /// original worker's codeless answers.
    #[test]
    fn answers_map_to_provider_errors() {
        let of = |status, code, message: &str| {
            kind(&ProviderError::from_wire(
                &RpcFailure::new(status, code, message),
                "/p",
            ))
        };
        let cases = [
            (
                404,
                Some(C::SandboxNotFound),
                "sandbox not found: sb-1",
                ProviderError::SandboxNotFound("sb-1".into()),
            ),
            (
                404,
                Some(C::FileNotFound),
                "file not found: /x",
                ProviderError::FileNotFound("/p".into()),
            ),
            (
                404,
                Some(C::ProviderNotFound),
                "provider not found: q",
                ProviderError::ProviderNotFound("q".into()),
            ),
            (
                400,
                None,
                "unknown worker method: worker.process_start",
                ProviderError::Unavailable(
                    "the worker does not support worker.process_start (an older worker \
                     version; upgrade it)"
                        .into(),
                ),
            ),
            (
                400,
                Some(C::BadRequest),
                "params are required for worker.status",
                ProviderError::InvalidInput("params are required for worker.status".into()),
            ),
            (
                413,
                Some(C::BadRequest),
                "invalid input: too big",
                ProviderError::InvalidInput("too big".into()),
            ),
            (
                504,
                Some(C::Timeout),
                "exec timeout: sb-1",
                ProviderError::Timeout,
            ),
            (
                403,
                Some(C::LeaseRejected),
                "lease rejected: stale",
                ProviderError::Unavailable(
                    "worker RPC failed: HTTP 403: lease rejected: stale".into(),
                ),
            ),
            (
                503,
                Some(C::Draining),
                "worker is draining",
                ProviderError::Unavailable(
                    "worker RPC failed: HTTP 503: worker is draining".into(),
                ),
            ),
            (
                503,
                Some(C::Unavailable),
                "provider unavailable: x",
                ProviderError::Unavailable(
                    "worker RPC failed: HTTP 503: provider unavailable: x".into(),
                ),
            ),
            (
                500,
                Some(C::Internal),
                "boom",
                ProviderError::internal("worker RPC failed: HTTP 500: boom"),
            ),
            // The original worker: no codes.
            (
                400,
                None,
                "invalid input: x",
                ProviderError::InvalidInput("x".into()),
            ),
            (
                404,
                None,
                "sandbox not found: sb-1",
                ProviderError::SandboxNotFound("sb-1".into()),
            ),
            (
                404,
                None,
                "provider not found: q",
                ProviderError::internal("worker RPC failed: HTTP 404: provider not found: q"),
            ),
            (408, None, "", ProviderError::Timeout),
            (
                504,
                None,
                "context deadline exceeded",
                ProviderError::Timeout,
            ),
            (
                503,
                None,
                "worker is draining",
                ProviderError::Unavailable(
                    "worker RPC failed: HTTP 503: worker is draining".into(),
                ),
            ),
            (
                403,
                None,
                "lease rejected",
                ProviderError::internal("worker RPC failed: HTTP 403: lease rejected"),
            ),
            (
                404,
                Some(C::ProcessNotFound),
                "process not found: 12",
                ProviderError::ProcessNotFound(12),
            ),
            (
                409,
                Some(C::StdinClosed),
                "stdin closed: 12",
                ProviderError::StdinClosed(12),
            ),
            (
                409,
                Some(C::ProcessExited),
                "process exited: 12",
                ProviderError::ProcessExited(12),
            ),
            (
                409,
                Some(C::NotAPty),
                "not a pty: 12",
                ProviderError::NotAPty(12),
            ),
            (
                409,
                Some(C::NotSupported),
                "not supported: the bwrap provider has no cgroup freezer",
                ProviderError::NotSupported("the bwrap provider has no cgroup freezer".into()),
            ),
            (
                501,
                None,
                "not implemented",
                ProviderError::internal("worker RPC failed: HTTP 501: not implemented"),
            ),
        ];
        let covered: std::collections::HashSet<C> = cases.iter().filter_map(|c| c.1).collect();
        assert_eq!(covered.len(), C::ALL.len(), "every code has a case");
        for (status, code, message, want) in cases {
            assert_eq!(
                of(status, code, message),
                kind(&want),
                "{status} {code:?} {message}"
            );
        }
    }
}
