//! The raw, serde-facing sections of the config file (wire-reference §11), with the original's
//! defaults except where DECISIONS.md says otherwise. Durations are Go strings; counts are `i64`
//! so negative values reach `validate()` and get a message naming the key.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use stacyvm_types::GoDuration;

use crate::de;
use crate::secrets::{Redacted, RedactedMap};

const MIB: i64 = 1024 * 1024;

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_string()).collect()
}

/// `server.*`: the control plane's HTTP listener and background loops.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSection {
    /// Empty (the default): every address when an API key is configured, loopback only when
    /// none is (DECISIONS.md "Listening without keys").
    pub host: String,
    pub port: i64,
    /// Ours: lets a non-loopback `host` run without API keys. Without it such a config
    /// refuses to start: anyone reaching the port could run commands.
    pub allow_unauthenticated: bool,
    pub preview_domain: String,
    /// Ours: serve `http://{port}-{id}.{preview_domain}` by proxying to the sandbox
    /// (docs/preview.md).
    pub preview_proxy: bool,
    /// Ours: also proxy previews of sandboxes on providers without isolation (mock), whose
    /// "sandbox" ports are the host's own loopback ports. Off by default.
    pub preview_unisolated: bool,
    pub cors_allowed_origins: Vec<String>,
    /// Ours: peers (CIDRs or bare addresses) whose `X-Forwarded-For` / `X-Real-IP` name the
    /// client; from anyone else those headers are ignored. Empty = trust no one.
    pub trusted_proxies: Vec<String>,
    /// Ours: period of the continuous reconciler.
    #[serde(deserialize_with = "de::duration")]
    pub reconcile_interval: GoDuration,
    /// Ours: cap on a request body, in bytes.
    pub max_body_bytes: i64,
    /// Ours: cap on a collected exec's stdout and stderr together, measured on the encoded
    /// reply, in bytes; past it the reply says `"truncated": true`. Workers enforce it too.
    pub max_exec_output: i64,
    /// Ours: collected (sync) execs running at once in one sandbox; more answer 429.
    pub max_sync_execs: i64,
    /// Ours: how long graceful shutdown waits for in-flight requests.
    #[serde(deserialize_with = "de::duration")]
    pub shutdown_timeout: GoDuration,
    /// Ours: serve the operator console at `/ui/` (docs/console.md); `false` removes its
    /// routes.
    pub ui: bool,
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            host: String::new(),
            port: 7423,
            allow_unauthenticated: false,
            preview_domain: "localhost".into(),
            preview_proxy: true,
            preview_unisolated: false,
            cors_allowed_origins: strings(&["*"]),
            trusted_proxies: Vec::new(),
            reconcile_interval: GoDuration::from_secs(30),
            max_body_bytes: 64 * MIB,
            max_exec_output: 16 * MIB,
            max_sync_execs: 16,
            shutdown_timeout: GoDuration::from_secs(30),
            ui: true,
        }
    }
}

/// `worker.*`: settings of `stacyvm worker` (ignored by `serve`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerSection {
    pub id: String,
    pub control_plane_url: String,
    pub listen_addr: String,
    pub preview_domain: String,
    #[serde(deserialize_with = "de::duration")]
    pub heartbeat_interval: GoDuration,
    #[serde(deserialize_with = "de::duration")]
    pub shutdown_timeout: GoDuration,
    /// Ours: a worker silent for this many heartbeat intervals is stale.
    pub stale_after_intervals: i64,
    pub rpc_tls: RpcTlsSection,
}

impl Default for WorkerSection {
    fn default() -> Self {
        WorkerSection {
            id: String::new(),
            control_plane_url: "http://localhost:7423".into(),
            listen_addr: String::new(),
            preview_domain: String::new(),
            heartbeat_interval: GoDuration::from_secs(30),
            shutdown_timeout: GoDuration::from_secs(10),
            stale_after_intervals: 3,
            rpc_tls: RpcTlsSection::default(),
        }
    }
}

/// `worker.rpc_tls.*`: optional mTLS on CP ↔ worker RPC. Worker side uses the server cert/key
/// (and `client_ca_file` to require client certs); CP side uses `ca_file`, the client cert/key
/// and `server_name`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RpcTlsSection {
    pub enabled: bool,
    pub server_cert_file: String,
    pub server_key_file: String,
    pub client_ca_file: String,
    pub ca_file: String,
    pub client_cert_file: String,
    pub client_key_file: String,
    pub server_name: String,
    pub insecure_skip_verify: bool,
}

/// `limits.*` (ours): the most one spawn may ask for, so a caller cannot request 1 TiB and
/// 256 vCPUs; `defaults.*` stay what a spawn gets when it does not say.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsSection {
    pub max_memory_mb: i64,
    pub max_vcpus: i64,
    pub max_disk_mb: i64,
}

impl Default for LimitsSection {
    fn default() -> Self {
        LimitsSection {
            max_memory_mb: 32 * 1024,
            max_vcpus: 16,
            max_disk_mb: 64 * 1024,
        }
    }
}

/// `defaults.*`: spawn defaults and global limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DefaultsSection {
    #[serde(deserialize_with = "de::duration")]
    pub ttl: GoDuration,
    pub image: String,
    pub memory_mb: i64,
    pub vcpus: i64,
    pub disk_size_mb: i64,
    pub pool_size: i64,
    pub pool_template: String,
    /// 0 = unlimited.
    #[serde(deserialize_with = "de::duration")]
    pub max_ttl: GoDuration,
    #[serde(deserialize_with = "de::duration")]
    pub default_exec_timeout: GoDuration,
    /// 0 = unlimited.
    #[serde(deserialize_with = "de::duration")]
    pub max_exec_timeout: GoDuration,
    /// 0 = unlimited.
    pub max_sandboxes: i64,
    /// 0 = unlimited.
    pub max_sandboxes_per_owner: i64,
    /// Paused sandboxes allowed at once, counted apart from `max_sandboxes` (0 = unlimited).
    pub max_paused_sandboxes: i64,
    pub spawn_overflow: String,
    #[serde(deserialize_with = "de::duration")]
    pub spawn_queue_timeout: GoDuration,
    pub max_spawn_queue: i64,
}

impl Default for DefaultsSection {
    fn default() -> Self {
        DefaultsSection {
            ttl: GoDuration::from_secs(30 * 60),
            image: "alpine:latest".into(),
            memory_mb: 1024,
            vcpus: 1,
            disk_size_mb: 1024,
            pool_size: 0,
            pool_template: String::new(),
            max_ttl: GoDuration::from_secs(24 * 3600),
            default_exec_timeout: GoDuration::ZERO,
            max_exec_timeout: GoDuration::from_secs(10 * 60),
            max_sandboxes: 0,
            max_sandboxes_per_owner: 0,
            max_paused_sandboxes: 0,
            spawn_overflow: "reject".into(),
            spawn_queue_timeout: GoDuration::from_secs(30),
            max_spawn_queue: 100,
        }
    }
}

/// `auth.*`. After `validate()` the `*_file` keys are resolved into their value keys.
/// `Debug` redacts every secret.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSection {
    pub api_key: String,
    pub admin_api_key: String,
    pub admin_fallback_enabled: bool,
    pub worker_token: String,
    pub worker_token_file: String,
    pub worker_tokens: BTreeMap<String, String>,
    pub worker_signing_key: String,
    pub worker_signing_key_file: String,
    pub worker_signing_keys: Vec<String>,
    pub worker_revoked_token_ids: Vec<String>,
    #[serde(deserialize_with = "de::duration")]
    pub admin_audit_retention: GoDuration,
    pub oidc_issuer: String,
    pub oidc_audience: String,
    pub oidc_jwks_url: String,
    pub oidc_public_key: String,
    pub oidc_public_key_file: String,
    pub oidc_groups_claim: String,
    pub oidc_tenant_claim: String,
    pub oidc_admin_groups: Vec<String>,
    pub oidc_operator_groups: Vec<String>,
    pub oidc_viewer_groups: Vec<String>,
    /// Ignored, as in the original: auth is on when an API key is set.
    pub enabled: bool,
    /// Ignored, as in the original.
    pub oidc_enabled: bool,
}

impl Default for AuthSection {
    fn default() -> Self {
        AuthSection {
            api_key: String::new(),
            admin_api_key: String::new(),
            admin_fallback_enabled: true,
            worker_token: String::new(),
            worker_token_file: String::new(),
            worker_tokens: BTreeMap::new(),
            worker_signing_key: String::new(),
            worker_signing_key_file: String::new(),
            worker_signing_keys: Vec::new(),
            worker_revoked_token_ids: Vec::new(),
            admin_audit_retention: GoDuration::ZERO,
            oidc_issuer: String::new(),
            oidc_audience: String::new(),
            oidc_jwks_url: String::new(),
            oidc_public_key: String::new(),
            oidc_public_key_file: String::new(),
            oidc_groups_claim: "groups".into(),
            oidc_tenant_claim: "tenant_id".into(),
            oidc_admin_groups: Vec::new(),
            oidc_operator_groups: Vec::new(),
            oidc_viewer_groups: Vec::new(),
            enabled: false,
            oidc_enabled: false,
        }
    }
}

impl fmt::Debug for AuthSection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthSection")
            .field("api_key", &Redacted(&self.api_key))
            .field("admin_api_key", &Redacted(&self.admin_api_key))
            .field("admin_fallback_enabled", &self.admin_fallback_enabled)
            .field("worker_token", &Redacted(&self.worker_token))
            .field("worker_token_file", &self.worker_token_file)
            .field("worker_tokens", &RedactedMap(&self.worker_tokens))
            .field("worker_signing_key", &Redacted(&self.worker_signing_key))
            .field("worker_signing_key_file", &self.worker_signing_key_file)
            .field(
                "worker_signing_keys",
                &self
                    .worker_signing_keys
                    .iter()
                    .map(|k| Redacted(k))
                    .collect::<Vec<_>>(),
            )
            .field("worker_revoked_token_ids", &self.worker_revoked_token_ids)
            .field("admin_audit_retention", &self.admin_audit_retention)
            .field("oidc_issuer", &self.oidc_issuer)
            .field("oidc_audience", &self.oidc_audience)
            .field("oidc_jwks_url", &self.oidc_jwks_url)
            .field("oidc_public_key", &Redacted(&self.oidc_public_key))
            .field("oidc_public_key_file", &self.oidc_public_key_file)
            .field("oidc_groups_claim", &self.oidc_groups_claim)
            .field("oidc_tenant_claim", &self.oidc_tenant_claim)
            .field("oidc_admin_groups", &self.oidc_admin_groups)
            .field("oidc_operator_groups", &self.oidc_operator_groups)
            .field("oidc_viewer_groups", &self.oidc_viewer_groups)
            .field("enabled", &self.enabled)
            .field("oidc_enabled", &self.oidc_enabled)
            .finish()
    }
}

/// `rate_limit.*`: token buckets on the public API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitSection {
    pub enabled: bool,
    pub requests_per_minute: i64,
    pub burst: i64,
    pub key_by: String,
    #[serde(deserialize_with = "de::duration")]
    pub bucket_ttl: GoDuration,
    #[serde(deserialize_with = "de::duration")]
    pub cleanup_interval: GoDuration,
}

impl Default for RateLimitSection {
    fn default() -> Self {
        RateLimitSection {
            enabled: false,
            requests_per_minute: 120,
            burst: 60,
            key_by: "owner".into(),
            bucket_ttl: GoDuration::from_secs(15 * 60),
            cleanup_interval: GoDuration::from_secs(60),
        }
    }
}

/// `database.*`. `Debug` redacts the DSN (it usually carries a password).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseSection {
    pub driver: String,
    pub path: String,
    pub dsn: String,
}

impl Default for DatabaseSection {
    fn default() -> Self {
        DatabaseSection {
            driver: "sqlite".into(),
            path: "stacyvm.db".into(),
            dsn: String::new(),
        }
    }
}

impl fmt::Debug for DatabaseSection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseSection")
            .field("driver", &self.driver)
            .field("path", &self.path)
            .field("dsn", &Redacted(&self.dsn))
            .finish()
    }
}

/// `logging.*`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoggingSection {
    pub level: String,
    pub format: String,
}

impl Default for LoggingSection {
    fn default() -> Self {
        LoggingSection {
            level: "info".into(),
            format: "json".into(),
        }
    }
}

/// `pool.*`: the original's shared-VM pool mode. Parsed, not implemented (warned about).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PoolSection {
    pub enabled: bool,
    pub max_vms: i64,
    pub max_users_per_vm: i64,
    pub image: String,
    pub memory_mb: i64,
    pub vcpus: i64,
    pub overflow: String,
}

impl Default for PoolSection {
    fn default() -> Self {
        PoolSection {
            enabled: false,
            max_vms: 10,
            max_users_per_vm: 5,
            image: "alpine:latest".into(),
            memory_mb: 2048,
            vcpus: 2,
            overflow: "reject".into(),
        }
    }
}

/// `processes.*`: background processes (docs/processes.md). What the process registry (the
/// sandbox's agent) keeps, and where the agent binary is for providers that run it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProcessesSection {
    /// Bytes of output kept per process; older output is dropped (and reported as a gap).
    pub output_buffer: i64,
    /// How long an exited process stays listed.
    #[serde(deserialize_with = "de::duration")]
    pub retain_exited: GoDuration,
    /// The static `stacyvm-agent` binary for providers that run it (mock, docker); empty =
    /// the provider's own lookup.
    pub agent: String,
}

/// Bounds of `processes.output_buffer`: a page at least, a GiB at most (it is kept per process).
pub const MIN_OUTPUT_BUFFER: i64 = 4096;
pub const MAX_OUTPUT_BUFFER: i64 = 1 << 30;

impl Default for ProcessesSection {
    fn default() -> Self {
        ProcessesSection {
            output_buffer: 1 << 20,
            retain_exited: GoDuration::from_std(std::time::Duration::from_secs(600)),
            agent: String::new(),
        }
    }
}

/// `lifecycle.*`: what happens to paused sandboxes (docs/state.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LifecycleSection {
    /// A sandbox paused this long is destroyed; 0 = kept until destroyed.
    #[serde(deserialize_with = "de::duration")]
    pub paused_retention: GoDuration,
    /// A snapshot's data that no record names is removed by the reconcile pass once this old
    /// (a snapshot is made before its record is written, so this must outlast the longest
    /// snapshot).
    #[serde(deserialize_with = "de::duration")]
    pub snapshot_grace: GoDuration,
}

impl Default for LifecycleSection {
    fn default() -> Self {
        LifecycleSection {
            paused_retention: GoDuration::from_secs(7 * 24 * 3600),
            snapshot_grace: GoDuration::from_secs(15 * 60),
        }
    }
}

/// `e2b.*`: the E2B-compatible API (docs/e2b.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct E2bApiSection {
    /// Serve the E2B API (control plane and data plane) on the main listener.
    pub enabled: bool,
    /// Also serve it on this address (`host:port`); empty = the main listener only.
    pub listen: String,
    /// The `domain` answered to the SDK: previews are `{port}-{id}.{domain}`. Empty =
    /// `server.preview_domain`.
    pub domain: String,
    /// `templateID` → what to spawn. `base` defaults to `defaults.image` when not listed.
    pub templates: std::collections::BTreeMap<String, E2bTemplate>,
}

impl Default for E2bApiSection {
    fn default() -> Self {
        E2bApiSection {
            enabled: true,
            listen: String::new(),
            domain: String::new(),
            templates: Default::default(),
        }
    }
}

/// One entry of `e2b.templates`. Empty or 0 fields take the server's defaults.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct E2bTemplate {
    pub image: String,
    pub provider: String,
    pub memory_mb: i64,
    pub vcpus: i64,
    /// The working directory of processes started without one; empty = the user's home
    /// (`/home/{user}`, `/root` for root) when `user` is set, else `/workspace`.
    pub workdir: String,
    /// The account commands run as by default (E2B's `user`; the image must have it); the
    /// SDK's `user=` then picks another. Empty = the agent's user (root), `user=` ignored.
    pub user: String,
}
