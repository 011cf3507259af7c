//! Wire shapes (wire reference §4.1, §7) built from domain records.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{json, Value};
use stacyvm_store::{OwnerQuota, Template, TemplateSecret};
use stacyvm_types::{format_rfc3339_go, GoDuration, Sandbox};

use crate::service::{OwnerUsage, TemplateInput};

pub fn sandbox(sb: &Sandbox) -> Value {
    let mut v = json!({
        "id": sb.id,
        "state": sb.state.as_str(),
        "provider": sb.provider,
        "image": sb.image,
        "memory_mb": sb.memory_mb,
        "vcpus": sb.vcpus,
        "created_at": format_rfc3339_go(&sb.created_at),
        "expires_at": format_rfc3339_go(&sb.expires_at),
    });
    let opt = |v: &mut Value, k: &str, s: &str| {
        if !s.is_empty() {
            v[k] = json!(s);
        }
    };
    opt(&mut v, "owner_id", &sb.owner_id);
    opt(&mut v, "tenant_id", &sb.tenant_id);
    opt(&mut v, "vm_id", &sb.vm_id);
    opt(&mut v, "worker_id", &sb.worker_id);
    opt(&mut v, "preview_domain", &sb.preview_domain);
    if !sb.metadata.is_empty() {
        v["metadata"] = json!(sb.metadata);
    }
    v
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
