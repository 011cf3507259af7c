//! Reaching a port inside a sandbox for its preview URL (docs/preview.md): the outcome of
//! [`crate::Provider::preview_connect`] and the default way to get it, a TCP connection to the
//! address [`crate::Provider::preview_target`] names.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;

/// How long opening a connection to a sandbox's port may take.
pub const PREVIEW_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A preview connection attempt.
#[derive(Debug)]
pub enum PreviewConn {
    /// Connected to the port inside the sandbox.
    Open(TcpStream),
    /// The backend offers no way to that port (no network, port not reachable by design).
    NotExposed,
    /// The way exists but nothing answered: connection refused, unreachable, or no answer
    /// within [`PREVIEW_CONNECT_TIMEOUT`]. Usually no server listens on the port yet.
    Unreachable(std::io::Error),
}

/// Connects to `addr` within [`PREVIEW_CONNECT_TIMEOUT`].
pub async fn connect_addr(addr: SocketAddr) -> PreviewConn {
    match tokio::time::timeout(PREVIEW_CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => {
            let _ = s.set_nodelay(true);
            PreviewConn::Open(s)
        }
        Ok(Err(e)) => PreviewConn::Unreachable(e),
        Err(_) => PreviewConn::Unreachable(std::io::ErrorKind::TimedOut.into()),
    }
}
