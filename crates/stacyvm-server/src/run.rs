//! Turns a validated config into a running control plane: settings, store, providers, listener.

use std::sync::Arc;

use crate::remote::{RpcTlsClient, WorkerClient};
use crate::settings::{
    AuthSettings, Limits, RateKeyBy, RateLimitSettings, Settings, SpawnOverflow,
};
use crate::Service;
use stacyvm_auth::{Secret, Verifier, WorkerAuthenticator};
use stacyvm_config::{
    build_providers, ConfigError, CorsOrigins, DatabaseTarget, Overflow, RateLimitKey, ValidConfig,
};
use stacyvm_store::StoreError;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("opening the store")]
    Store(#[source] StoreError),
    #[error("binding {addr}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("provider {name}: {message}")]
    Provider { name: &'static str, message: String },
    /// The provider factory's error, shown as it is (it already names the provider).
    #[error(transparent)]
    Providers(ConfigError),
    #[error("serving HTTP")]
    Serve(#[source] std::io::Error),
}

/// The service-layer settings a config implies.
pub fn settings_from(cfg: &ValidConfig) -> Settings {
    let c = cfg.config();
    let limits = Limits {
        default_image: c.defaults.image.clone(),
        default_memory_mb: c.defaults.memory_mb,
        default_vcpus: c.defaults.vcpus,
        max_memory_mb: c.limits.max_memory_mb,
        max_vcpus: c.limits.max_vcpus,
        default_ttl: cfg.default_ttl(),
        max_ttl: cfg.max_ttl().unwrap_or_default(),
        default_exec_timeout: cfg.default_exec_timeout().unwrap_or_default(),
        max_exec_timeout: cfg.max_exec_timeout().unwrap_or_default(),
        max_sandboxes: cfg
            .max_sandboxes()
            .map_or(0, |n| i64::try_from(n).unwrap_or(i64::MAX)),
        max_sandboxes_per_owner: cfg
            .max_sandboxes_per_owner()
            .map_or(0, |n| i64::try_from(n).unwrap_or(i64::MAX)),
        max_paused_sandboxes: c.defaults.max_paused_sandboxes.max(0),
        spawn_overflow: match cfg.spawn_overflow() {
            Overflow::Queue => SpawnOverflow::Queue,
            Overflow::Reject => SpawnOverflow::Reject,
        },
        spawn_queue_timeout: stacyvm_types::GoDuration::from_std(cfg.spawn_queue_timeout()),
        max_spawn_queue: i64::try_from(cfg.max_spawn_queue()).unwrap_or(i64::MAX),
    };
    let hostname = std::fs::read_to_string("/etc/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into());
    Settings {
        limits,
        e2b: crate::settings::E2bSettings {
            enabled: c.e2b.enabled,
            domain: c.e2b.domain.trim().to_string(),
            templates: c.e2b.templates.clone(),
        },
        auth: AuthSettings {
            api_key: c.auth.api_key.clone(),
            admin_api_key: c.auth.admin_api_key.clone(),
            admin_fallback_enabled: c.auth.admin_fallback_enabled,
        },
        rate_limit: RateLimitSettings {
            enabled: c.rate_limit.enabled,
            requests_per_minute: c.rate_limit.requests_per_minute,
            burst: c.rate_limit.burst,
            key_by: match cfg.rate_limit_key() {
                RateLimitKey::Owner => RateKeyBy::Owner,
                RateLimitKey::ApiKey => RateKeyBy::ApiKey,
                RateLimitKey::Ip => RateKeyBy::Ip,
            },
            bucket_ttl: c.rate_limit.bucket_ttl.to_std().unwrap_or_default(),
        },
        preview_domain: if c.server.preview_domain.is_empty() {
            "localhost".into()
        } else {
            c.server.preview_domain.clone()
        },
        preview_proxy: c.server.preview_proxy,
        preview_unisolated: c.server.preview_unisolated,
        ui: c.server.ui,
        cors_allowed_origins: match cfg.cors() {
            CorsOrigins::Any => vec!["*".into()],
            CorsOrigins::List(l) => l.clone(),
        },
        trusted_proxies: cfg.trusted_proxies().to_vec(),
        max_body_bytes: cfg.max_body_bytes(),
        max_exec_output: cfg.max_exec_output(),
        max_sync_execs: cfg.max_sync_execs(),
        reaper_interval: cfg.reconcile_interval(),
        local_heartbeat_interval: std::time::Duration::from_secs(30),
        worker_stale_after: std::time::Duration::from_secs(120),
        worker_stale_intervals: u32::try_from(c.worker.stale_after_intervals.max(1)).unwrap_or(3),
        admin_audit_retention: c.auth.admin_audit_retention,
        hostname,
        processes: crate::settings::ProcessSettings {
            output_buffer: Some(cfg.process_output_buffer()),
            retain_exited: Some(cfg.process_retain_exited()),
        },
        paused_retention: c
            .lifecycle
            .paused_retention
            .to_std()
            .filter(|d| !d.is_zero()),
        snapshot_grace: c
            .lifecycle
            .snapshot_grace
            .to_std()
            .unwrap_or(std::time::Duration::from_secs(15 * 60)),
    }
}

/// Worker authentication and the RPC client (with `worker.rpc_tls` when enabled).
/// Signing keys for worker tokens. A primary key given as `auth.worker_signing_key_file` is
/// re-read when the file changes (rotation without restart); `auth.worker_signing_keys` stay
/// accepted beside it.
fn signing_verifier(cfg: &ValidConfig) -> Verifier {
    let auth = &cfg.config().auth;
    let revoked = auth.worker_revoked_token_ids.clone();
    match cfg.secret_file("auth.worker_signing_key") {
        Some(path) => Verifier::new(auth.worker_signing_keys.clone(), revoked)
            .with_key_file(Secret::file(path)),
        None => Verifier::new(cfg.worker_signing_keys(), revoked),
    }
}

pub fn worker_rpc(
    cfg: &ValidConfig,
) -> Result<(Arc<WorkerAuthenticator>, Arc<WorkerClient>), RunError> {
    let c = cfg.config();
    let auth = Arc::new(WorkerAuthenticator::new(
        // A token given as a file is re-read when the file changes (rotation without restart).
        match cfg.secret_file("auth.worker_token") {
            Some(path) => Some(Secret::file(path)),
            None => cfg.worker_token().map(Secret::inline),
        },
        c.auth.worker_tokens.clone(),
        signing_verifier(cfg),
    ));
    let t = &c.worker.rpc_tls;
    let tls = if t.enabled {
        let read = |what: &'static str, path: &str| -> Result<Option<Vec<u8>>, RunError> {
            if path.is_empty() {
                return Ok(None);
            }
            std::fs::read(path)
                .map(Some)
                .map_err(|e| RunError::Provider {
                    name: "worker.rpc_tls",
                    message: format!("{what}: {e}"),
                })
        };
        let mut identity = read("client_cert_file", &t.client_cert_file)?;
        if let (Some(id), Some(key)) = (&mut identity, read("client_key_file", &t.client_key_file)?)
        {
            id.push(b'\n');
            id.extend_from_slice(&key);
        }
        if t.insecure_skip_verify {
            tracing::warn!(
                "worker.rpc_tls.insecure_skip_verify is set: worker certificates are NOT verified"
            );
        }
        Some(RpcTlsClient {
            ca_pem: read("ca_file", &t.ca_file)?,
            identity_pem: identity,
            server_name: Some(t.server_name.clone()).filter(|s| !s.is_empty()),
            insecure_skip_verify: t.insecure_skip_verify,
        })
    } else {
        None
    };
    let client = WorkerClient::new(tls, auth.clone()).map_err(|e| RunError::Provider {
        name: "worker.rpc_tls",
        message: e.to_string(),
    })?;
    Ok((auth, Arc::new(client)))
}

/// Opens the store, builds providers, binds, and serves until `shutdown`.
pub async fn run(cfg: ValidConfig, shutdown: CancellationToken) -> Result<(), RunError> {
    for w in cfg.warnings() {
        tracing::warn!("{w}");
    }
    let store = match cfg.database() {
        DatabaseTarget::Sqlite { path } => {
            stacyvm_store::open("sqlite", &path.to_string_lossy()).await
        }
        DatabaseTarget::Postgres { dsn } => stacyvm_store::open("postgres", dsn).await,
    }
    .map_err(RunError::Store)?;
    let cluster = store.cluster_id().await.map_err(RunError::Store)?;
    tracing::info!(%cluster, "cluster id (runtimes are labelled with it)");
    let providers = build_providers(&cfg, Some(&cluster))
        .await
        .map_err(RunError::Providers)?;
    let settings = settings_from(&cfg);
    let (auth, client) = worker_rpc(&cfg)?;
    let svc = Service::with_worker_auth(
        store,
        providers,
        settings,
        Some(client),
        Some(auth),
        cfg.worker_signing_keys().into_iter().next(),
    );
    let addr = cfg.listen_addr();
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(|source| RunError::Bind {
            addr: addr.clone(),
            source,
        })?;
    tracing::info!(%addr, version = svc.version(), "stacyvm control plane listening");
    if !cfg.api_auth_enabled() {
        tracing::warn!(
            %addr,
            "no API key configured: anyone who can reach {addr} can run commands in sandboxes; \
             set auth.api_key (STACYVM_AUTH_API_KEY) to serve other machines"
        );
    }
    let e2b = &cfg.config().e2b;
    let e2b_listener = if e2b.enabled && !e2b.listen.trim().is_empty() {
        let addr = e2b.listen.trim().to_string();
        let l = tokio::net::TcpListener::bind(&addr)
            .await
            .map_err(|source| RunError::Bind {
                addr: addr.clone(),
                source,
            })?;
        tracing::info!(%addr, "E2B API listening");
        Some(l)
    } else {
        None
    };
    crate::serve_with_e2b(
        listener,
        e2b_listener,
        svc,
        shutdown,
        cfg.server_shutdown_timeout(),
    )
    .await
    .map_err(RunError::Serve)
}
