//! StacyVM control plane: the service layer every transport calls, the HTTP API, and the
//! background tasks. The binary calls [`serve`] with a validated config.

mod error;
mod events;
mod http;
mod listener;
mod log_throttle;
mod metrics;
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
    Admin, AdmissionDecision, AuditQuery, Caller, CallerRole, Diagnostics, EventSubscription, Exec,
    ExecParams, ExecResult, ExecStream, Files, IssuedToken, LifecycleReport, MountParams,
    OwnerUsage, PreviewHost, ProcessParams, Processes, ProviderHealth, QuotaInput, QuotaSummary,
    Quotas, ReadyReport, Sandboxes, Service, Snapshots, SpawnParams, StoreHealth, StreamItem,
    System, Templates, TokenRequest, VolumeInfo, VolumeParams, Volumes, Workers,
};
pub use settings::{
    AuthSettings, Limits, ProcessSettings, RateKeyBy, RateLimitSettings, Settings, SpawnOverflow,
};
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
    serve_with_e2b(listener, None, svc, shutdown, grace).await
}

/// [`serve`], plus the E2B API alone on `e2b` (`e2b.listen`) when given.
pub async fn serve_with_e2b(
    listener: TcpListener,
    e2b: Option<TcpListener>,
    svc: Service,
    shutdown: CancellationToken,
    grace: Duration,
) -> std::io::Result<()> {
    svc.start().await;
    let tracker = TaskTracker::new();
    let bg = svc.background_token();
    tracker.spawn(tasks::leases(svc.clone(), bg.clone()));
    tracker.spawn(tasks::event_bridge(svc.clone(), bg.clone()));
    tracker.spawn(tasks::reaper(svc.clone(), bg.clone()));
    tracker.spawn(tasks::local_heartbeat(svc.clone(), bg.clone()));
    tracker.spawn(tasks::reconciler(svc.clone(), bg.clone()));
    tracker.spawn(tasks::worker_deadlines(svc.clone(), bg.clone()));
    tracker.spawn(tasks::history_sampler(svc.clone(), bg.clone()));
    tracker.close();

    let (app, e2b_app) = http::routers(svc.clone());
    let guard = || axum::middleware::from_fn(listener::body_guard_layer);
    let nofile = listener::raise_nofile_limit();
    let cap = listener::connection_cap(nofile);
    tracing::debug!(nofile, connection_cap = cap, "listener limits");
    let main = listener::serve(listener, app.layer(guard()), shutdown.clone(), cap);
    let side = async {
        if let Some(l) = e2b {
            listener::serve(l, e2b_app.layer(guard()), shutdown.clone(), cap).await;
        }
    };
    let server = async {
        tokio::join!(main, side);
    };
    let result = tokio::select! {
        () = server => Ok(()),
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
