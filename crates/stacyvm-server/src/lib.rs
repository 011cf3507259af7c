//! StacyVM control plane: the service layer every transport calls, the HTTP API, and the
//! background tasks. The binary calls [`serve`] with a validated config.

mod creating;
mod error;
mod events;
mod http;
mod ops;
mod reconcile;
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
    AdmissionDecision, Caller, ExecParams, ExecResult, ExecStream, OwnerUsage, PreviewHost,
    ProviderHealth, QuotaInput, QuotaSummary, ReadyReport, Service, SpawnParams, StreamItem,
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
    if let Err(e) = svc.heartbeat_local().await {
        tracing::warn!(error = %e, "initial local worker registration failed");
    }
    let tick = svc
        .settings()
        .reaper_interval
        .max(Duration::from_millis(50));
    tasks::leader::renew_presence(&*svc.store, &svc.instance_id, tick).await;
    reconcile::startup(&svc).await;
    let tracker = TaskTracker::new();
    let bg = svc.shutdown.child_token();
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
    // Streams and background loops end with the service token.
    svc.shutdown.cancel();
    svc.tasks.close();
    let _ = tokio::time::timeout(Duration::from_secs(5), svc.tasks.wait()).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), tracker.wait()).await;
    // After the last request: warm VMs and provider tasks go with the process, sandboxes stay.
    svc.providers.shutdown(Duration::from_secs(30)).await;
    // Hand background work over at once rather than after the lease expires.
    svc.leadership.release(&*svc.store).await;
    let presence = tasks::leader::presence_lease(&svc.instance_id);
    let _ = svc.store.release_lease(&presence, &svc.instance_id).await;
    result
}
