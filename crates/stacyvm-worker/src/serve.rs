//! The RPC listener: one task per connection (TLS handshake included, so a slow handshake
//! never blocks accepting), HTTP/1.1 via hyper, graceful stop on request and a hard stop after.
//! There is no write or body timeout: a stream lasts as long as its command. Only reading a
//! request head and the TLS handshake are bounded.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause after a failed accept (e.g. out of file descriptors) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// A running listener. Dropping it leaves it running; call [`Server::shutdown`].
pub(crate) struct Server {
    graceful: CancellationToken,
    hard: CancellationToken,
    conns: TaskTracker,
}

impl Server {
    pub(crate) fn spawn(
        listener: TcpListener,
        router: Router,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> Server {
        let s = Server {
            graceful: CancellationToken::new(),
            hard: CancellationToken::new(),
            conns: TaskTracker::new(),
        };
        let acceptor = tls.map(TlsAcceptor::from);
        s.conns.spawn(accept_loop(
            listener,
            router,
            acceptor,
            s.graceful.clone(),
            s.hard.clone(),
            s.conns.clone(),
        ));
        s
    }

    /// Stops accepting, lets each connection finish its current request (streams included)
    /// for up to `timeout`, then drops whatever is left. True when everything finished.
    pub(crate) async fn shutdown(self, timeout: Duration) -> bool {
        self.graceful.cancel();
        let clean = crate::drain::wait_idle(&self.conns, timeout).await;
        self.hard.cancel();
        // Cut connections return at once; this wait is only for their tasks to unwind.
        let _ = tokio::time::timeout(Duration::from_secs(5), self.conns.wait()).await;
        clean
    }
}

async fn accept_loop(
    listener: TcpListener,
    router: Router,
    tls: Option<TlsAcceptor>,
    graceful: CancellationToken,
    hard: CancellationToken,
    conns: TaskTracker,
) {
    loop {
        let accepted = tokio::select! {
            () = graceful.cancelled() => return,
            r = listener.accept() => r,
        };
        let (tcp, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "accepting an RPC connection failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let (router, graceful, hard, tls) =
            (router.clone(), graceful.clone(), hard.clone(), tls.clone());
        conns.spawn(async move {
            match tls {
                None => serve_conn(tcp, router, graceful, hard).await,
                Some(acceptor) => {
                    let hs = tokio::select! {
                        () = hard.cancelled() => return,
                        r = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)) => r,
                    };
                    match hs {
                        Ok(Ok(stream)) => serve_conn(stream, router, graceful, hard).await,
                        Ok(Err(e)) => {
                            let hint = crate::tls::handshake_hint(&e.to_string());
                            tracing::info!(%peer, error = %e, hint, "RPC TLS handshake failed");
                        }
                        Err(_) => tracing::info!(%peer, "RPC TLS handshake timed out"),
                    }
                }
            }
        });
    }
}

async fn serve_conn<I>(io: I, router: Router, graceful: CancellationToken, hard: CancellationToken)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        router.clone().oneshot(req.map(Body::new))
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(TokioIo::new(io), svc)
        // Previews pass WebSocket and other upgrades through.
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(error = %e, "RPC connection ended with an error");
            }
            return;
        }
        () = graceful.cancelled() => conn.as_mut().graceful_shutdown(),
        () = hard.cancelled() => return,
    }
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(error = %e, "RPC connection ended with an error");
            }
        }
        () = hard.cancelled() => {}
    }
}
