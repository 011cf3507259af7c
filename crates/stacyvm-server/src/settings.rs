//! The runtime settings the service layer reads, derived from the validated config in one place
//! (`run.rs`) so tests can build them directly.

use std::time::Duration;

use stacyvm_types::GoDuration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SpawnOverflow {
    #[default]
    Reject,
    Queue,
}

impl SpawnOverflow {
    pub fn as_str(self) -> &'static str {
        match self {
            SpawnOverflow::Reject => "reject",
            SpawnOverflow::Queue => "queue",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Limits {
    pub default_image: String,
    pub default_memory_mb: i64,
    pub default_vcpus: i64,
    /// The most one spawn may ask for (`limits.*`).
    pub max_memory_mb: i64,
    pub max_vcpus: i64,
    pub default_ttl: GoDuration,
    /// 0 = unlimited.
    pub max_ttl: GoDuration,
    pub default_exec_timeout: GoDuration,
    /// 0 = unlimited.
    pub max_exec_timeout: GoDuration,
    /// 0 = unlimited.
    pub max_sandboxes: i64,
    pub max_sandboxes_per_owner: i64,
    /// Paused sandboxes at once, apart from `max_sandboxes`; 0 = unlimited.
    pub max_paused_sandboxes: i64,
    pub spawn_overflow: SpawnOverflow,
    pub spawn_queue_timeout: GoDuration,
    pub max_spawn_queue: i64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            default_image: "alpine:latest".into(),
            default_memory_mb: 1024,
            default_vcpus: 1,
            max_memory_mb: 32 * 1024,
            max_vcpus: 16,
            default_ttl: GoDuration::from_secs(30 * 60),
            max_ttl: GoDuration::from_secs(24 * 3600),
            default_exec_timeout: GoDuration::ZERO,
            max_exec_timeout: GoDuration::from_secs(600),
            max_sandboxes: 0,
            max_sandboxes_per_owner: 0,
            max_paused_sandboxes: 0,
            spawn_overflow: SpawnOverflow::Reject,
            spawn_queue_timeout: GoDuration::from_secs(30),
            max_spawn_queue: 100,
        }
    }
}

#[derive(Clone, Default)]
pub struct AuthSettings {
    pub api_key: String,
    pub admin_api_key: String,
    pub admin_fallback_enabled: bool,
}

impl std::fmt::Debug for AuthSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let r = |s: &str| if s.is_empty() { "" } else { "<redacted>" };
        f.debug_struct("AuthSettings")
            .field("api_key", &r(&self.api_key))
            .field("admin_api_key", &r(&self.admin_api_key))
            .field("admin_fallback_enabled", &self.admin_fallback_enabled)
            .finish()
    }
}

impl AuthSettings {
    pub fn enabled(&self) -> bool {
        !self.api_key.is_empty() || !self.admin_api_key.is_empty()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RateKeyBy {
    #[default]
    Owner,
    ApiKey,
    Ip,
}

#[derive(Debug, Clone, Default)]
pub struct RateLimitSettings {
    pub enabled: bool,
    pub requests_per_minute: i64,
    pub burst: i64,
    pub key_by: RateKeyBy,
    pub bucket_ttl: Duration,
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub limits: Limits,
    /// The E2B-compatible API (`e2b.*`, docs/e2b.md).
    pub e2b: E2bSettings,
    pub auth: AuthSettings,
    pub rate_limit: RateLimitSettings,
    pub preview_domain: String,
    /// Whether `Host: {port}-{id}.{domain}` requests are proxied to the sandbox.
    pub preview_proxy: bool,
    /// Whether previews of sandboxes on providers without isolation (mock) are proxied: their
    /// ports are the host's own (`server.preview_unisolated`).
    pub preview_unisolated: bool,
    /// Whether the operator console is served at `/ui/` (`server.ui`).
    pub ui: bool,
    /// Empty or containing `*` = any origin.
    pub cors_allowed_origins: Vec<String>,
    /// Peers whose `X-Forwarded-For` / `X-Real-IP` name the client (`server.trusted_proxies`).
    pub trusted_proxies: Vec<ipnet::IpNet>,
    pub max_body_bytes: usize,
    /// Encoded stdout + stderr of a collected exec at most (`server.max_exec_output`).
    pub max_exec_output: usize,
    /// Collected execs in flight per sandbox at most (`server.max_sync_execs`).
    pub max_sync_execs: usize,
    pub reaper_interval: Duration,
    pub local_heartbeat_interval: Duration,
    /// After how long without a heartbeat a worker that does not report its interval counts
    /// as stale (the original's fixed 2 minutes).
    pub worker_stale_after: Duration,
    /// A worker reporting `heartbeat_interval_ms` is stale after this many silent intervals.
    pub worker_stale_intervals: u32,
    pub admin_audit_retention: GoDuration,
    pub hostname: String,
    pub processes: ProcessSettings,
    /// Paused this long, a sandbox is destroyed (`lifecycle.paused_retention`); `None` = kept.
    pub paused_retention: Option<Duration>,
    /// Unrecorded snapshot data older than this is swept (`lifecycle.snapshot_grace`).
    pub snapshot_grace: Duration,
}

/// `processes.*`: what providers are asked to retain per process. `None` = the agent's own
/// defaults (1 MiB of output, exited processes listed for 10 minutes).
#[derive(Debug, Clone, Default)]
pub struct ProcessSettings {
    pub output_buffer: Option<u64>,
    pub retain_exited: Option<Duration>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            limits: Limits::default(),
            e2b: E2bSettings::default(),
            auth: AuthSettings {
                admin_fallback_enabled: true,
                ..Default::default()
            },
            rate_limit: RateLimitSettings::default(),
            preview_domain: "localhost".into(),
            preview_proxy: true,
            preview_unisolated: false,
            ui: true,
            cors_allowed_origins: vec!["*".into()],
            trusted_proxies: Vec::new(),
            max_body_bytes: 64 << 20,
            max_exec_output: stacyvm_types::DEFAULT_MAX_EXEC_OUTPUT,
            max_sync_execs: 16,
            reaper_interval: Duration::from_secs(30),
            local_heartbeat_interval: Duration::from_secs(30),
            worker_stale_after: Duration::from_secs(120),
            worker_stale_intervals: 3,
            admin_audit_retention: GoDuration::ZERO,
            hostname: "localhost".into(),
            processes: ProcessSettings::default(),
            paused_retention: Some(Duration::from_secs(7 * 24 * 3600)),
            snapshot_grace: Duration::from_secs(15 * 60),
        }
    }
}

/// `e2b.*` as the service reads it.
#[derive(Debug, Clone)]
pub struct E2bSettings {
    pub enabled: bool,
    /// The `domain` answered to the SDK; empty = the preview domain.
    pub domain: String,
    pub templates: std::collections::BTreeMap<String, stacyvm_config::E2bTemplate>,
}

impl Default for E2bSettings {
    fn default() -> Self {
        E2bSettings {
            enabled: true,
            domain: String::new(),
            templates: Default::default(),
        }
    }
}
