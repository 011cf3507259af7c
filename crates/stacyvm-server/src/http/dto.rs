//! Wire shapes (wire reference §4.1, §7) built from domain records.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use stacyvm_store::{OwnerQuota, Template, TemplateSecret};
use stacyvm_types::{format_rfc3339_go, GoDuration, Sandbox};

use crate::service::{OwnerUsage, TemplateInput};

/// A sandbox as the API shows it. Typed rather than a `json!` map: lists of thousands are
/// written straight to bytes without a map per sandbox. Fields are in alphabetical order, the
/// order the original's (and our former map-based) output has; empty optional fields are left
/// out.
#[derive(Serialize)]
pub struct SandboxView<'a> {
    created_at: String,
    expires_at: String,
    id: &'a str,
    image: &'a str,
    memory_mb: i64,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    metadata: &'a BTreeMap<String, String>,
    #[serde(skip_serializing_if = "str::is_empty")]
    owner_id: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    preview_domain: &'a str,
    provider: &'a str,
    state: &'static str,
    #[serde(skip_serializing_if = "str::is_empty")]
    tenant_id: &'a str,
    vcpus: i64,
    #[serde(skip_serializing_if = "str::is_empty")]
    vm_id: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    worker_id: &'a str,
}

pub fn sandbox(sb: &Sandbox) -> SandboxView<'_> {
    SandboxView {
        created_at: format_rfc3339_go(&sb.created_at),
        expires_at: format_rfc3339_go(&sb.expires_at),
        id: &sb.id,
        image: &sb.image,
        memory_mb: sb.memory_mb,
        metadata: &sb.metadata,
        owner_id: &sb.owner_id,
        preview_domain: &sb.preview_domain,
        provider: &sb.provider,
        state: sb.state.as_str(),
        tenant_id: &sb.tenant_id,
        vcpus: sb.vcpus,
        vm_id: &sb.vm_id,
        worker_id: &sb.worker_id,
    }
}

pub fn template(t: &Template) -> Value {
    let mut v = json!({
        "name": t.name, "version": t.version, "image": t.image,
        "memory_mb": t.memory_mb, "cpu_cores": t.cpu_cores, "ttl_seconds": t.ttl_seconds,
        "pool_size": t.pool_size,
        "created_at": format_rfc3339_go(&t.created_at),
        "updated_at": format_rfc3339_go(&t.updated_at),
    });
    if !t.description.is_empty() {
        v["description"] = json!(t.description);
    }
    if !t.setup.is_empty() {
        v["setup"] = json!(t.setup);
    }
    if !t.allowed_hosts.is_empty() {
        v["allowed_hosts"] = json!(t.allowed_hosts);
    }
    if !t.env.is_empty() {
        v["env"] = json!(t.env);
    }
    if !t.secrets.is_empty() {
        v["secrets"] = json!(t.secrets);
    }
    v
}

/// Template body; SDK-only keys (`vcpus`, `ttl`, `provider`, `metadata`) are ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct TemplateBody {
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
}

impl From<TemplateBody> for TemplateInput {
    fn from(b: TemplateBody) -> Self {
        TemplateInput {
            name: b.name,
            version: b.version,
            image: b.image,
            description: b.description,
            setup: b.setup,
            allowed_hosts: b.allowed_hosts,
            memory_mb: b.memory_mb,
            cpu_cores: b.cpu_cores,
            ttl_seconds: b.ttl_seconds,
            env: b.env,
            secrets: b.secrets,
            pool_size: b.pool_size,
        }
    }
}

pub fn quota(q: &OwnerQuota) -> Value {
    json!({
        "owner_id": q.owner_id,
        "max_sandboxes": q.max_sandboxes,
        "max_ttl": GoDuration::from_secs(q.max_ttl_seconds).to_string(),
        "max_exec_timeout": GoDuration::from_secs(q.max_exec_timeout_seconds).to_string(),
        "created_at": format_rfc3339_go(&q.created_at),
        "updated_at": format_rfc3339_go(&q.updated_at),
    })
}

pub fn usage(u: &OwnerUsage) -> Value {
    json!({
        "owner_id": u.owner_id,
        "active_sandboxes": u.active_sandboxes,
        "max_sandboxes": u.max_sandboxes,
        "max_ttl": u.max_ttl.to_string(),
        "max_exec_timeout": u.max_exec_timeout.to_string(),
        "quota_configured": u.quota_configured,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use chrono::TimeZone;
    use stacyvm_types::SandboxState;

    use super::*;

    fn record() -> Sandbox {
        let t = chrono::Utc.with_ymd_and_hms(2026, 5, 8, 10, 30, 0).unwrap();
        Sandbox {
            id: "sb-1".into(),
            state: SandboxState::Running,
            provider: "mock".into(),
            image: "alpine".into(),
            memory_mb: 512,
            vcpus: 1,
            metadata: BTreeMap::new(),
            template: String::new(),
            owner_id: String::new(),
            vm_id: String::new(),
            worker_id: "local".into(),
            tenant_id: String::new(),
            preview_domain: String::new(),
            created_at: t,
            expires_at: t,
            updated_at: t,
        }
    }

    /// The bytes are those of a sorted-key map with empty optional fields left out, as the
    /// API has always written them.
    #[test]
    fn sandbox_view_bytes() {
        let mut sb = record();
        assert_eq!(
            serde_json::to_string(&sandbox(&sb)).unwrap(),
            r#"{"created_at":"2026-05-08T10:30:00Z","expires_at":"2026-05-08T10:30:00Z","id":"sb-1","image":"alpine","memory_mb":512,"provider":"mock","state":"running","vcpus":1,"worker_id":"local"}"#
        );
        sb.metadata.insert("k".into(), "v".into());
        sb.owner_id = "alice".into();
        sb.vm_id = "vm".into();
        sb.tenant_id = "t".into();
        sb.preview_domain = "p.example".into();
        let text = serde_json::to_string(&sandbox(&sb)).unwrap();
        let as_map: Value = serde_json::from_str(&text).unwrap();
        // Re-serialising the parsed map (sorted keys) gives the same bytes: the order is sorted.
        assert_eq!(serde_json::to_string(&as_map).unwrap(), text);
        assert_eq!(as_map["metadata"], json!({"k": "v"}));
        for k in [
            "owner_id",
            "vm_id",
            "tenant_id",
            "preview_domain",
            "worker_id",
        ] {
            assert!(as_map.get(k).is_some(), "{k}");
        }
    }
}
