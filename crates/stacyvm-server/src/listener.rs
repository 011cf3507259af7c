//! The control plane's accept loop. `axum::serve` has no header-read timeout and no connection
//! cap, so a few thousand half-open connections (partial headers, idle keep-alives) could hold
//! every file descriptor and starve `/health` (hardening finding 2). Here:
//! - each connection must send a request head within [`HEADER_READ_TIMEOUT`] of being ready to
//!   read one (hyper starts the timer when the connection waits for a head, so it is also the
//!   keep-alive idle timeout);
//! - a request body that stalls for [`BODY_STALL_TIMEOUT`] fails, and an answer that leaves a
//!   body unread closes its connection (see [`body_guard_layer`]);
//! - at most [`connection_cap`] connections are open; past it a new connection is closed at
//!   once (and a throttled WARN says so), leaving descriptors for the store and providers;
//! - `RLIMIT_NOFILE` is raised to its hard limit at start ([`raise_nofile_limit`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::Router;
use futures_util::StreamExt;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use stacyvm_preview::conn::{accept, serve_http1};

use crate::log_throttle::LogThrottle;

/// Time to send a request head, counted from when the connection is ready for one.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest pause between two pieces of a request body.
pub const BODY_STALL_TIMEOUT: Duration = Duration::from_secs(60);

static REFUSED_LOG: LogThrottle = LogThrottle::new(5, Duration::from_secs(60));

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; returns the soft limit now in force.
#[expect(unsafe_code, reason = "std has no getrlimit/setrlimit")]
pub fn raise_nofile_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed by pointer.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    lim.rlim_cur
}

/// Open connections allowed with `nofile` descriptors: three quarters, the rest kept for the
/// store, providers, worker RPC and preview upstreams.
pub fn connection_cap(nofile: u64) -> usize {
    usize::try_from(nofile / 4 * 3)
        .unwrap_or(usize::MAX)
        .max(16)
}

/// Serves `app` on `listener` until `graceful` fires; then lets open connections finish their
/// requests and returns once they have (the caller bounds that wait).
pub async fn serve(listener: TcpListener, app: Router, graceful: CancellationToken, cap: usize) {
    let conns = TaskTracker::new();
    let slots = Arc::new(Semaphore::new(cap));
    while let Some((tcp, peer)) = accept(&listener, &graceful).await {
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            if let Some(held_back) = REFUSED_LOG.admit() {
                tracing::warn!(%peer, cap, held_back, "connection cap reached; connection closed");
            }
            drop(tcp);
            continue;
        };
        let (app, graceful) = (app.clone(), graceful.clone());
        conns.spawn(async move {
            let _slot = slot;
            // No hard stop here: the server waits for every connection to finish.
            let hard = CancellationToken::new();
            serve_http1(tcp, app, Some(peer), HEADER_READ_TIMEOUT, graceful, hard).await;
        });
    }
    drop(listener);
    conns.close();
    conns.wait().await;
}

/// Guards request bodies:
/// - a body that sends nothing for [`BODY_STALL_TIMEOUT`] fails (the handler sees a body error:
///   a 400 for buffered bodies, an aborted upload for streamed ones);
/// - a response to a request whose body was not read to its end (an early 401, 404, 413…)
///   carries `Connection: close`. hyper closes such a connection anyway, but silently, and a
///   client that reuses it fails its next request ("server disconnected"); with the header it
///   knows (hardening finding 11). Small refused bodies are drained instead where the refusal
///   happens (`middleware::refuse`), which keeps the connection.
pub async fn body_guard_layer(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let (parts, body) = req.into_parts();
    if axum::body::HttpBody::size_hint(&body).exact() == Some(0) {
        return next
            .run(axum::extract::Request::from_parts(parts, body))
            .await;
    }
    let finished = Arc::new(AtomicBool::new(false));
    let seen_end = finished.clone();
    // The state is `None` once the stall was reported: the body ends there.
    let guarded = futures_util::stream::unfold(
        Some((body.into_data_stream(), seen_end)),
        |state| async move {
            let (mut s, seen_end) = state?;
            match tokio::time::timeout(BODY_STALL_TIMEOUT, s.next()).await {
                Ok(Some(item)) => Some((item, Some((s, seen_end)))),
                Ok(None) => {
                    seen_end.store(true, Ordering::Release);
                    None
                }
                Err(_) => Some((
                    Err(axum::Error::new(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "request body stalled",
                    ))),
                    None,
                )),
            }
        },
    );
    let mut resp = next
        .run(axum::extract::Request::from_parts(
            parts,
            Body::from_stream(guarded),
        ))
        .await;
    if !finished.load(Ordering::Acquire) && resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_leaves_a_quarter_of_the_descriptors() {
        assert_eq!(connection_cap(1024), 768);
        assert_eq!(connection_cap(1_048_576), 786_432);
        assert_eq!(connection_cap(8), 16);
    }

    #[test]
    #[expect(unsafe_code, reason = "reading the limit back")]
    fn the_limit_is_raised_to_the_hard_limit() {
        let now = raise_nofile_limit();
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: as above.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
        assert_eq!(now, lim.rlim_cur);
        assert_eq!(lim.rlim_cur, lim.rlim_max);
    }
}
