//! StacyVM control plane: the service layer every transport calls, the HTTP API, and the
//! background tasks. The binary calls [`serve`] with a validated config.

mod error;
mod events;
mod http;
mod log_throttle;
mod ops;
pub mod remote;
mod run;
mod service;
mod settings;
mod tasks;

use std::time::Duration;

pub use error::ServiceError;
pub use http::router;
pub use run::{run, settings_from, worker_rpc, RunError};
pub use service::{
    Admin, AdmissionDecision, AuditQuery, Caller, Diagnostics, EventSubscription, Exec, ExecParams,
    ExecResult, ExecStream, Files, IssuedToken, OwnerUsage, PreviewHost, ProviderHealth,
    QuotaInput, QuotaSummary, Quotas, ReadyReport, Sandboxes, Service, SpawnParams, StoreHealth,
    StreamItem, System, Templates, TokenRequest, Workers,
};
pub use settings::{AuthSettings, Limits, RateKeyBy, RateLimitSettings, Settings, SpawnOverflow};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Serves the API on `listener` until `shutdown` fires, then finishes in-flight requests (up to
/// `grace`), stops background tasks and joins them.
pub async fn serve(
    listener: TcpListener,
    svc: Service,
    shutdown: CancellationToken,
    grace: Duration,
) -> std::io::Result<()> {
    svc.start().await;
    let tracker = TaskTracker::new();
    let bg = svc.background_token();
    tracker.spawn(tasks::presence(svc.clone(), bg.clone()));
    tracker.spawn(tasks::event_bridge(svc.clone(), bg.clone()));
    tracker.spawn(tasks::reaper(svc.clone(), bg.clone()));
    tracker.spawn(tasks::local_heartbeat(svc.clone(), bg.clone()));
    tracker.spawn(tasks::reconciler(svc.clone(), bg.clone()));
    tracker.close();

    let app = router(svc.clone()).into_make_service_with_connect_info::<std::net::SocketAddr>();
    let stop = shutdown.clone();
    let server = axum::serve(
        // Streams flush small chunks: without TCP_NODELAY the first one waits for a delayed ACK.
        axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        }),
        app,
    )
    .with_graceful_shutdown(async move { stop.cancelled().await });
    let result = tokio::select! {
        r = server => r,
        () = async {
            shutdown.cancelled().await;
            tokio::time::sleep(grace).await;
        } => {
            tracing::warn!("graceful shutdown timed out; closing remaining connections");
            Ok(())
        }
    };
    // Streams and background loops end with the service; then providers and leases go.
    svc.stop(&tracker).await;
    result
}
