//! The worker process: providers, RPC listener, first heartbeat (fatal on failure), heartbeat
//! loop, and on `shutdown` the drain sequence (DECISIONS.md "Drain").

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::WorkerConfig;
use crate::error::WorkerError;
use crate::heartbeat::{error_chain, Beat};
use crate::rpc::rpc_router;
use crate::serve::Server;
use crate::state::WorkerState;

/// Bounds the "I am draining" heartbeat sent on shutdown.
const DRAIN_BEAT_TIMEOUT: Duration = Duration::from_secs(5);
/// After the drain deadline, how long killed commands get to unwind.
const KILL_GRACE: Duration = Duration::from_secs(5);

/// Runs the worker until `shutdown` is cancelled (SIGTERM/SIGINT in the binary), then drains:
/// new spawns are refused, the control plane hears `status: "draining"`, in-flight RPCs get up
/// to `worker.shutdown_timeout`, and whatever still runs after that is killed.
pub async fn run(cfg: WorkerConfig, shutdown: CancellationToken) -> Result<(), WorkerError> {
    for w in cfg.source.warnings() {
        tracing::warn!("{w}");
    }
    let providers = match cfg.providers.clone() {
        Some(p) => p,
        // A worker has no store, so no cluster id; its runtimes, volumes and snapshots are
        // labelled `worker:<id>` instead. A control plane sharing the host (its own cluster
        // label) then never takes them for its orphans, and the worker never lists the
        // control plane's. Unlabelled ones (made before this) stay the worker's.
        None => {
            let cluster = format!("worker:{}", cfg.id());
            stacyvm_config::build_providers(&cfg.source, Some(&cluster))
                .await
                .map_err(|e| WorkerError::Providers(error_chain(&e)))?
        }
    };
    let state = WorkerState::new(&cfg, providers)?;
    state.adopt_runtimes().await;
    let mut beat = Beat {
        hostname: cfg.hostname.clone(),
        interval: cfg.heartbeat_interval,
        preview_domain: cfg.preview_domain.clone(),
        rpc_url: None,
        max_sandboxes: cfg.max_sandboxes,
        max_sandboxes_per_owner: cfg.max_sandboxes_per_owner,
    };
    let first_failed = |source| WorkerError::FirstHeartbeat {
        url: cfg.control_plane_url.clone(),
        source,
    };

    if cfg.once {
        beat.rpc_url = cfg
            .listen_addr
            .as_ref()
            .map(|a| format!("{}://{a}", cfg.rpc_scheme()));
        beat.send(&state).await.map_err(first_failed)?;
        tracing::info!(worker_id = %cfg.id, "heartbeat sent (--once)");
        return Ok(());
    }

    let server = match &cfg.listen_addr {
        Some(addr) => {
            let tls = cfg
                .tls
                .as_ref()
                .map(crate::tls::server_config)
                .transpose()?;
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| WorkerError::Bind {
                    addr: addr.clone(),
                    source,
                })?;
            let local = listener.local_addr().map_err(|source| WorkerError::Bind {
                addr: addr.clone(),
                source,
            })?;
            let url = format!("{}://{}", cfg.rpc_scheme(), advertised(addr, local));
            tracing::info!(%local, rpc_url = %url, tls = cfg.tls.is_some(), mtls = cfg.tls.as_ref().is_some_and(|t| t.client_ca.is_some()), "worker RPC listening");
            beat.rpc_url = Some(url);
            Some(Server::spawn(listener, rpc_router(state.clone()), tls))
        }
        None => {
            tracing::info!("no listen address: worker RPC is off, heartbeats only");
            None
        }
    };

    if let Err(e) = beat.send(&state).await {
        if let Some(s) = server {
            s.shutdown(Duration::ZERO).await;
        }
        return Err(first_failed(e));
    }
    tracing::info!(
        worker_id = %cfg.id,
        control_plane = %cfg.control_plane_url,
        rpc_url = beat.rpc_url.as_deref().unwrap_or(""),
        providers = ?state.inner.providers.names(),
        "worker registered with the control plane"
    );

    let beat_stop = CancellationToken::new();
    let beat_task = tokio::spawn(beat.clone().run_loop(state.clone(), beat_stop.clone()));
    shutdown.cancelled().await;

    // Drain: refuse spawns, tell the control plane, let in-flight work finish, then stop.
    let deadline = Instant::now() + cfg.shutdown_timeout;
    state.inner.drain.start();
    beat_stop.cancel();
    let _ = beat_task.await;
    match tokio::time::timeout(DRAIN_BEAT_TIMEOUT, beat.send(&state)).await {
        Ok(Ok(())) => tracing::info!("control plane told: draining"),
        Ok(Err(e)) => tracing::warn!(error = %error_chain(&e), "draining heartbeat failed"),
        Err(_) => tracing::warn!("draining heartbeat timed out"),
    }
    let left = |now: Instant| deadline.saturating_duration_since(now);
    let mut clean = match server {
        Some(s) => s.shutdown(left(Instant::now())).await,
        None => true,
    };
    clean &= crate::drain::wait_idle(&state.inner.tasks, left(Instant::now())).await;
    if !clean {
        tracing::warn!(
            timeout = ?cfg.shutdown_timeout,
            "shutdown timeout reached; stopping the remaining commands"
        );
    }
    state.inner.stop.cancel();
    let _ = tokio::time::timeout(KILL_GRACE, state.inner.tasks.wait()).await;
    tracing::info!("worker stopped");
    Ok(())
}

/// The address to advertise: as configured, with a real port when port 0 was asked for.
fn advertised(configured: &str, local: SocketAddr) -> String {
    match configured.rsplit_once(':') {
        Some((host, "0")) => format!("{host}:{}", local.port()),
        _ => configured.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_zero_is_replaced() {
        let local: SocketAddr = "127.0.0.1:45678".parse().expect("addr");
        assert_eq!(advertised("127.0.0.1:0", local), "127.0.0.1:45678");
        assert_eq!(advertised("[::1]:0", local), "[::1]:45678");
        assert_eq!(advertised("10.0.0.5:7430", local), "10.0.0.5:7430");
    }
}
