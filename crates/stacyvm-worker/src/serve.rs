//! The RPC listener: one task per connection (TLS handshake included, so a slow handshake
//! never blocks accepting), HTTP/1.1 via hyper, graceful stop on request and a hard stop after.
//! There is no write or body timeout: a stream lasts as long as its command. Only reading a
//! request head and the TLS handshake are bounded.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use stacyvm_preview::conn::{accept, serve_http1};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

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
    while let Some((tcp, peer)) = accept(&listener, &graceful).await {
        let (router, graceful, hard, tls) =
            (router.clone(), graceful.clone(), hard.clone(), tls.clone());
        conns.spawn(async move {
            match tls {
                None => serve_http1(tcp, router, None, HEADER_READ_TIMEOUT, graceful, hard).await,
                Some(acceptor) => {
                    let hs = tokio::select! {
                        () = hard.cancelled() => return,
                        r = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)) => r,
                    };
                    match hs {
                        Ok(Ok(stream)) => {
                            serve_http1(stream, router, None, HEADER_READ_TIMEOUT, graceful, hard)
                                .await
                        }
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
