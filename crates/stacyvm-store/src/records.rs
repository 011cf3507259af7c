//! Rows the store keeps besides sandboxes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use stacyvm_types::{SandboxId, Timestamp, WorkerId};

#[derive(Debug, Clone, PartialEq)]
pub struct ExecLog {
    pub sandbox_id: SandboxId,
    pub command: String,
    pub exit_code: i64,
    pub stdout: String,
    pub stderr: String,
    pub duration_ms: i64,
    pub created_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct TemplateSecret {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub inject_at: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    pub name: String,
    pub version: i64,
    pub image: String,
    pub description: String,
    pub setup: Vec<String>,
    pub allowed_hosts: Vec<String>,
    pub memory_mb: i64,
    pub cpu_cores: i64,
    pub ttl_seconds: i64,
    pub env: BTreeMap<String, String>,
    pub secrets: Vec<TemplateSecret>,
    pub pool_size: i64,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OwnerQuota {
    pub owner_id: String,
    /// 0 = not set.
    pub max_sandboxes: i64,
    /// 0 = not set.
    pub max_ttl_seconds: i64,
    /// 0 = not set.
    pub max_exec_timeout_seconds: i64,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq)]
pub struct WorkerRecord {
    pub id: WorkerId,
    pub hostname: String,
    /// Verbatim from the heartbeat (`online`, `draining`, ...).
    pub status: String,
    /// `None` = not sent (supports every provider).
    pub providers: Option<Vec<String>>,
    pub capabilities: Option<Vec<String>>,
    /// Free-form; the control plane reads `max_sandboxes`, `rpc_url`, `preview_domain`.
    pub capacity: serde_json::Map<String, serde_json::Value>,
    pub last_heartbeat: Timestamp,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub resource_id: String,
    pub resource_type: String,
    pub holder_id: String,
    pub generation: i64,
    pub expires_at: Timestamp,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAdminAudit {
    pub actor: String,
    pub method: String,
    pub path: String,
    pub status: i64,
    pub duration_ms: i64,
    pub request_id: String,
    pub remote_addr: String,
    pub user_agent: String,
    pub tenant_id: String,
}

/// A stored audit entry: what was inserted, numbered and stamped by the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminAuditRecord {
    pub id: i64,
    pub entry: NewAdminAudit,
    pub created_at: Timestamp,
}

/// Filter for the admin audit listing; empty strings and `None` match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    pub limit: i64,
    pub actor: String,
    pub method: String,
    pub path: String,
    pub status: Option<i64>,
}

/// What the E2B-compatible API keeps of a sandbox it created, besides the sandbox record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct E2bSandbox {
    pub sandbox_id: SandboxId,
    /// The `templateID` the client asked for (answered back as given).
    pub template_id: String,
    /// `envVars` of the create request: the environment of every process started through
    /// the E2B API in this sandbox.
    pub env_vars: BTreeMap<String, String>,
    /// The per-sandbox `X-Access-Token` (`envdAccessToken`); empty when the client asked for
    /// `secure: false`.
    pub access_token: String,
    pub created_at: Timestamp,
}

/// A named volume (sandbox-model.md §2): a disk that outlives the sandboxes mounting it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    pub name: String,
    /// 0 = no size asked for (the backend's default).
    pub size_mb: i64,
    /// The provider that holds the data.
    pub provider: String,
    /// The worker whose provider holds it (`local` = the control plane's own).
    pub worker_id: String,
    pub created_at: Timestamp,
}

/// One volume mounted into one sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeMount {
    pub sandbox_id: SandboxId,
    pub volume: String,
    /// Absolute path inside the sandbox.
    pub mount_path: String,
    pub read_only: bool,
}

/// A snapshot (sandbox-model.md §2): a sandbox's files (or memory too) as they were.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// `snap-<8 hex>`.
    pub id: String,
    pub name: String,
    pub sandbox_id: SandboxId,
    pub provider: String,
    /// The image of the sandbox it was taken of.
    pub image: String,
    /// `filesystem` or `memory`.
    pub kind: String,
    pub size_bytes: i64,
    pub worker_id: String,
    pub created_at: Timestamp,
}
