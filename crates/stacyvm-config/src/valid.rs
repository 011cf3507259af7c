//! The validated config: the raw sections (through `Deref`) plus typed accessors for the values
//! the rest of the code needs, and the warnings `validate()` collected.

use std::fmt;
use std::ops::Deref;
use std::path::PathBuf;
use std::time::Duration;

use stacyvm_types::GoDuration;

use crate::secrets::Redacted;
use crate::Config;

macro_rules! str_enum {
    ($(#[$doc:meta])* $name:ident { $($variant:ident => $s:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $s),+ }
            }

            /// Case-insensitive, surrounding blanks ignored.
            pub fn parse(s: &str) -> Option<Self> {
                let s = s.trim();
                Self::ALL.iter().copied().find(|v| v.as_str().eq_ignore_ascii_case(s))
            }

            pub(crate) fn names() -> String {
                Self::ALL.iter().map(|v| v.as_str()).collect::<Vec<_>>().join(", ")
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

str_enum!(
    /// `providers.default` (empty = auto).
    ProviderChoice { Auto => "auto", Mock => "mock", Docker => "docker", Microvm => "microvm", Bwrap => "bwrap" }
);
str_enum!(LogLevel { Trace => "trace", Debug => "debug", Info => "info", Warn => "warn", Error => "error" });
str_enum!(
    /// `pretty` is coloured; `text` is plain human-readable lines.
    LogFormat { Json => "json", Pretty => "pretty", Text => "text" }
);
str_enum!(
    /// `defaults.spawn_overflow` and `pool.overflow` (empty = reject).
    Overflow { Reject => "reject", Queue => "queue" }
);
str_enum!(
    /// `rate_limit.key_by` (empty = owner).
    RateLimitKey { Owner => "owner", ApiKey => "api_key", Ip => "ip" }
);
str_enum!(
    /// `providers.microvm.accel`.
    Accel { Auto => "auto", Kvm => "kvm", Tcg => "tcg" }
);
str_enum!(
    /// `providers.microvm.network_mode`.
    MicrovmNetwork { None => "none", User => "user" }
);

/// `server.cors_allowed_origins`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorsOrigins {
    /// `*` is listed: any origin.
    Any,
    /// Exact origins (`https://app.example.com:8443`); empty = no CORS headers.
    List(Vec<String>),
}

/// Where the store lives. `Debug` redacts the DSN.
#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseTarget {
    Sqlite { path: PathBuf },
    Postgres { dsn: String },
}

impl fmt::Debug for DatabaseTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DatabaseTarget::Sqlite { path } => {
                f.debug_struct("Sqlite").field("path", path).finish()
            }
            DatabaseTarget::Postgres { dsn } => f
                .debug_struct("Postgres")
                .field("dsn", &Redacted(dsn))
                .finish(),
        }
    }
}

/// A config that passed `validate()`: every accessor below is infallible. Secrets from
/// `*_file` keys are already in their value keys (`auth.worker_token`, ...).
#[derive(Debug, Clone)]
pub struct ValidConfig {
    pub(crate) inner: Config,
    pub(crate) warnings: Vec<String>,
    pub(crate) provider: ProviderChoice,
    pub(crate) log_level: LogLevel,
    pub(crate) log_format: LogFormat,
    pub(crate) spawn_overflow: Overflow,
    pub(crate) rate_limit_key: RateLimitKey,
    pub(crate) accel: Accel,
    pub(crate) microvm_network: MicrovmNetwork,
    pub(crate) cors: CorsOrigins,
    pub(crate) trusted_proxies: Vec<ipnet::IpNet>,
    pub(crate) database: DatabaseTarget,
    pub(crate) docker_memory_bytes: Option<u64>,
    /// `*_file` secrets read at validation, by value key (`auth.worker_token` → path).
    pub(crate) secret_files: std::collections::BTreeMap<String, PathBuf>,
}

impl Deref for ValidConfig {
    type Target = Config;
    fn deref(&self) -> &Config {
        &self.inner
    }
}

fn std_duration(d: GoDuration) -> Duration {
    // validate() rejected negative durations, so this never falls back.
    d.to_std().unwrap_or_default()
}

fn non_negative(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

fn unlimited_if_zero(d: GoDuration) -> Option<GoDuration> {
    (!d.is_zero()).then_some(d)
}

impl ValidConfig {
    /// Things the operator should know (ignored sections, insecure settings); log each one.
    /// The file a secret was read from (`auth.worker_token` → its `_file`), so long-running
    /// services can re-read it when it is rotated on disk.
    pub fn secret_file(&self, key: &str) -> Option<&std::path::Path> {
        self.secret_files.get(key).map(PathBuf::as_path)
    }

    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    pub fn config(&self) -> &Config {
        &self.inner
    }

    pub fn into_inner(self) -> Config {
        self.inner
    }

    /// The file the config came from (`None` = built-in defaults).
    pub fn source_path(&self) -> Option<&std::path::Path> {
        self.inner.source.as_deref()
    }

    /// `host:port` for the API listener (IPv6 hosts bracketed).
    /// `host:port` to bind. An empty `server.host` means every address when API keys are
    /// configured and loopback only when they are not.
    pub fn listen_addr(&self) -> String {
        let host = match self.inner.server.host.trim() {
            "" if self.api_auth_enabled() => "0.0.0.0",
            "" => "127.0.0.1",
            h => h,
        };
        let port = self.server_port();
        if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        }
    }

    pub fn server_port(&self) -> u16 {
        u16::try_from(self.inner.server.port).unwrap_or_default()
    }

    /// `processes.output_buffer` in bytes (validated positive).
    pub fn process_output_buffer(&self) -> u64 {
        u64::try_from(self.inner.processes.output_buffer).unwrap_or(1 << 20)
    }

    /// `processes.agent`, when set.
    pub fn process_agent(&self) -> Option<&str> {
        Some(self.inner.processes.agent.as_str()).filter(|a| !a.is_empty())
    }

    /// `processes.retain_exited`.
    pub fn process_retain_exited(&self) -> Duration {
        std_duration(self.inner.processes.retain_exited)
    }

    pub fn max_body_bytes(&self) -> usize {
        usize::try_from(self.inner.server.max_body_bytes).unwrap_or(usize::MAX)
    }

    pub fn max_exec_output(&self) -> usize {
        usize::try_from(self.inner.server.max_exec_output).unwrap_or(usize::MAX)
    }

    pub fn max_sync_execs(&self) -> usize {
        usize::try_from(self.inner.server.max_sync_execs).unwrap_or(usize::MAX)
    }

    pub fn reconcile_interval(&self) -> Duration {
        std_duration(self.inner.server.reconcile_interval)
    }

    pub fn server_shutdown_timeout(&self) -> Duration {
        std_duration(self.inner.server.shutdown_timeout)
    }

    pub fn cors(&self) -> &CorsOrigins {
        &self.cors
    }

    /// `server.trusted_proxies`, parsed (a bare address is its own /32 or /128).
    pub fn trusted_proxies(&self) -> &[ipnet::IpNet] {
        &self.trusted_proxies
    }

    pub fn provider_default(&self) -> ProviderChoice {
        self.provider
    }

    /// True when `provider` is enabled, or is the configured default (which implies it).
    pub fn wants_provider(&self, provider: ProviderChoice) -> bool {
        let p = &self.inner.providers;
        let enabled = match provider {
            ProviderChoice::Auto => false,
            ProviderChoice::Mock => p.mock.enabled,
            ProviderChoice::Docker => p.docker.enabled,
            ProviderChoice::Microvm => p.microvm.enabled,
            ProviderChoice::Bwrap => p.bwrap.enabled,
        };
        enabled || self.provider == provider
    }

    /// `providers.docker.memory` in bytes; `None` = no limit.
    pub fn docker_memory_bytes(&self) -> Option<u64> {
        self.docker_memory_bytes
    }

    pub fn microvm_accel(&self) -> Accel {
        self.accel
    }

    pub fn microvm_network(&self) -> MicrovmNetwork {
        self.microvm_network
    }

    pub fn default_ttl(&self) -> GoDuration {
        self.inner.defaults.ttl
    }

    /// `None` = unlimited.
    pub fn max_ttl(&self) -> Option<GoDuration> {
        unlimited_if_zero(self.inner.defaults.max_ttl)
    }

    /// `None` = no default timeout.
    pub fn default_exec_timeout(&self) -> Option<GoDuration> {
        unlimited_if_zero(self.inner.defaults.default_exec_timeout)
    }

    /// `None` = unlimited.
    pub fn max_exec_timeout(&self) -> Option<GoDuration> {
        unlimited_if_zero(self.inner.defaults.max_exec_timeout)
    }

    /// `None` = unlimited.
    pub fn max_sandboxes(&self) -> Option<u64> {
        Some(non_negative(self.inner.defaults.max_sandboxes)).filter(|n| *n > 0)
    }

    /// `None` = unlimited.
    pub fn max_sandboxes_per_owner(&self) -> Option<u64> {
        Some(non_negative(self.inner.defaults.max_sandboxes_per_owner)).filter(|n| *n > 0)
    }

    pub fn spawn_overflow(&self) -> Overflow {
        self.spawn_overflow
    }

    pub fn spawn_queue_timeout(&self) -> Duration {
        std_duration(self.inner.defaults.spawn_queue_timeout)
    }

    pub fn max_spawn_queue(&self) -> u64 {
        non_negative(self.inner.defaults.max_spawn_queue)
    }

    pub fn rate_limit_key(&self) -> RateLimitKey {
        self.rate_limit_key
    }

    pub fn database(&self) -> &DatabaseTarget {
        &self.database
    }

    pub fn log_level(&self) -> LogLevel {
        self.log_level
    }

    pub fn log_format(&self) -> LogFormat {
        self.log_format
    }

    /// API-key auth is on when either key is set (`auth.enabled` is ignored, as in the original).
    pub fn api_auth_enabled(&self) -> bool {
        !self.inner.auth.api_key.is_empty() || !self.inner.auth.admin_api_key.is_empty()
    }

    /// The key admin routes accept: `admin_api_key`, else `api_key` when
    /// `admin_fallback_enabled`, else none.
    pub fn effective_admin_key(&self) -> Option<&str> {
        let auth = &self.inner.auth;
        if !auth.admin_api_key.is_empty() {
            Some(&auth.admin_api_key)
        } else if auth.admin_fallback_enabled && !auth.api_key.is_empty() {
            Some(&auth.api_key)
        } else {
            None
        }
    }

    /// The shared static worker token (from the value or its `_file`).
    pub fn worker_token(&self) -> Option<&str> {
        Some(self.inner.auth.worker_token.as_str()).filter(|t| !t.is_empty())
    }

    /// HMAC keys for signed worker tokens: primary first, then `worker_signing_keys`; trimmed,
    /// empty ones dropped, duplicates removed.
    pub fn worker_signing_keys(&self) -> Vec<String> {
        let auth = &self.inner.auth;
        let mut out: Vec<String> = Vec::new();
        for key in std::iter::once(&auth.worker_signing_key).chain(&auth.worker_signing_keys) {
            let key = key.trim();
            if !key.is_empty() && !out.iter().any(|k| k == key) {
                out.push(key.to_string());
            }
        }
        out
    }

    /// `worker.id`, or `None` when the worker should use the hostname.
    pub fn worker_id(&self) -> Option<&str> {
        Some(self.inner.worker.id.trim()).filter(|s| !s.is_empty())
    }

    /// `worker.preview_domain`, falling back to `server.preview_domain`.
    pub fn worker_preview_domain(&self) -> &str {
        let w = self.inner.worker.preview_domain.trim();
        if w.is_empty() {
            &self.inner.server.preview_domain
        } else {
            w
        }
    }

    pub fn heartbeat_interval(&self) -> Duration {
        std_duration(self.inner.worker.heartbeat_interval)
    }

    /// How long a worker may stay silent before it counts as stale.
    pub fn worker_stale_after(&self) -> Duration {
        let n = u32::try_from(self.inner.worker.stale_after_intervals).unwrap_or(u32::MAX);
        self.heartbeat_interval().saturating_mul(n)
    }

    pub fn worker_shutdown_timeout(&self) -> Duration {
        std_duration(self.inner.worker.shutdown_timeout)
    }

    /// Scheme of the worker's advertised `rpc_url`.
    pub fn worker_rpc_scheme(&self) -> &'static str {
        if self.inner.worker.rpc_tls.enabled {
            "https"
        } else {
            "http"
        }
    }

    /// The `rpc_url` a worker advertises; `None` when `worker.listen_addr` is empty (RPC off).
    pub fn worker_rpc_url(&self) -> Option<String> {
        let addr = self.inner.worker.listen_addr.trim();
        (!addr.is_empty()).then(|| format!("{}://{addr}", self.worker_rpc_scheme()))
    }
}
