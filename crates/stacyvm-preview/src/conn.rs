//! Serving one accepted HTTP/1.1 connection: the same loop for the control plane's listener
//! and the worker's RPC listener, so both bound request heads and stop alike.

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// Pause after a failed accept (out of file descriptors): retrying at once would spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The next connection on `listener`, `None` once `stop` fires. Failed accepts are logged and
/// retried after [`ACCEPT_BACKOFF`]. `TCP_NODELAY` is set: streams flush small chunks, and
/// without it the first one waits for a delayed ACK.
pub async fn accept(
    listener: &TcpListener,
    stop: &CancellationToken,
) -> Option<(TcpStream, SocketAddr)> {
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => return None,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((tcp, peer)) => {
                let _ = tcp.set_nodelay(true);
                return Some((tcp, peer));
            }
            Err(e) => {
                tracing::warn!(error = %e, "accepting a connection failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

/// Serves `io` with `app` until the client closes it. A request head must arrive within
/// `header_read_timeout` (hyper starts the timer when the connection waits for one, so it is
/// also the keep-alive idle timeout). Upgrades (WebSocket) pass through. `graceful` lets the
/// request in flight finish and then closes; `hard` drops the connection at once. `peer`, when
/// known, reaches handlers as `ConnectInfo`.
pub async fn serve_http1<I>(
    io: I,
    app: Router,
    peer: Option<SocketAddr>,
    header_read_timeout: Duration,
    graceful: CancellationToken,
    hard: CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        if let Some(peer) = peer {
            req.extensions_mut().insert(ConnectInfo(peer));
        }
        app.clone().oneshot(req.map(Body::new))
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .serve_connection(TokioIo::new(io), svc)
        .with_upgrades();
    tokio::pin!(conn);
    let ended = tokio::select! {
        r = conn.as_mut() => Some(r),
        () = graceful.cancelled() => {
            conn.as_mut().graceful_shutdown();
            None
        }
        () = hard.cancelled() => return,
    };
    let ended = match ended {
        Some(r) => r,
        None => tokio::select! {
            r = conn.as_mut() => r,
            () = hard.cancelled() => return,
        },
    };
    if let Err(e) = ended {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}
