//! Wire shapes (wire reference §4.1, §7) built from domain records.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use stacyvm_store::{OwnerQuota, Template, TemplateSecret};
use stacyvm_types::{format_rfc3339_go, GoDuration, OnExpire, Sandbox};
use utoipa::ToSchema;

use super::openapi::OwnerIdString;

use crate::service::{OwnerUsage, TemplateInput};

/// A sandbox as the API shows it. Typed rather than a `json!` map: lists of thousands are
/// written straight to bytes without a map per sandbox. Fields are in alphabetical order, the
/// order the original's (and our former map-based) output has; empty optional fields are left
/// out.
#[derive(Serialize, ToSchema)]
#[schema(as = Sandbox, description = "A sandbox. Optional string keys are omitted when empty.")]
pub struct SandboxView<'a> {
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(format = DateTime)]
    expires_at: String,
    #[schema(pattern = r"^sb-[0-9a-f]{8}$")]
    id: &'a str,
    /// The spawn's `idle_timeout`, when set
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<GoDuration>)]
    idle_timeout: Option<String>,
    image: &'a str,
    memory_mb: i64,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    metadata: &'a BTreeMap<String, String>,
    /// `pause` when the TTL pauses instead of destroying (absent = `destroy`)
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    on_expire: Option<&'static str>,
    #[serde(skip_serializing_if = "str::is_empty")]
    owner_id: &'a str,
    /// When it was paused (only while `state` is `paused`)
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    paused_at: Option<String>,
    #[serde(skip_serializing_if = "str::is_empty")]
    preview_domain: &'a str,
    /// What a preview request must carry (header `X-Preview-Token` or
    /// `e2b-traffic-access-token`, or once as `?stacyvm_preview_token=`, which sets a cookie;
    /// docs/preview.md). Answered for one sandbox (spawn, get, extend, pause, resume), never
    /// in lists
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(pattern = r"^[0-9a-f]{32}$")]
    preview_token: Option<&'a str>,
    provider: &'a str,
    /// Its previews need no token (present only when `true`)
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    public_preview: bool,
    #[schema(schema_with = super::openapi::sandbox_states)]
    state: &'static str,
    #[serde(skip_serializing_if = "str::is_empty")]
    tenant_id: &'a str,
    vcpus: i64,
    #[serde(skip_serializing_if = "str::is_empty")]
    vm_id: &'a str,
    /// `local` for sandboxes run by the control plane itself
    #[serde(skip_serializing_if = "str::is_empty")]
    worker_id: &'a str,
}

/// A sandbox for a list: without its preview token.
pub fn sandbox(sb: &Sandbox) -> SandboxView<'_> {
    SandboxView {
        created_at: format_rfc3339_go(&sb.created_at),
        expires_at: format_rfc3339_go(&sb.expires_at),
        id: sb.id.as_str(),
        idle_timeout: sb.lifecycle.idle_timeout.map(|d| d.to_string()),
        image: &sb.image,
        memory_mb: sb.memory_mb,
        metadata: &sb.metadata,
        on_expire: (sb.lifecycle.on_expire != OnExpire::Destroy)
            .then(|| sb.lifecycle.on_expire.as_str()),
        owner_id: &sb.owner_id,
        paused_at: sb.paused_at.as_ref().map(format_rfc3339_go),
        preview_domain: &sb.preview_domain,
        preview_token: None,
        provider: &sb.provider,
        public_preview: sb.public_preview,
        state: sb.state.as_str(),
        tenant_id: &sb.tenant_id,
        vcpus: sb.vcpus,
        vm_id: sb.vm_id.as_deref().unwrap_or(""),
        worker_id: sb.placement.worker_id(),
    }
}

/// One sandbox answered to its (authenticated) caller: with its preview token, when one was
/// issued.
pub fn sandbox_with_token(sb: &Sandbox) -> SandboxView<'_> {
    SandboxView {
        preview_token: Some(sb.preview_token.as_str()).filter(|t| !t.is_empty()),
        ..sandbox(sb)
    }
}

/// A template as the API shows it (fields in alphabetical order, empty optional ones left out).
#[derive(Serialize, ToSchema)]
#[schema(as = Template)]
pub struct TemplateView<'a> {
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    allowed_hosts: &'a [String],
    cpu_cores: i64,
    #[schema(format = DateTime)]
    created_at: String,
    #[serde(skip_serializing_if = "str::is_empty")]
    description: &'a str,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    env: &'a BTreeMap<String, String>,
    image: &'a str,
    memory_mb: i64,
    name: &'a str,
    pool_size: i64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    secrets: Vec<SecretView<'a>>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    setup: &'a [String],
    ttl_seconds: i64,
    #[schema(format = DateTime)]
    updated_at: String,
    version: i64,
}

/// A secret a template injects (keys in alphabetical order, as the map it replaced wrote them).
#[derive(Serialize, ToSchema)]
#[schema(as = TemplateSecret)]
pub struct SecretView<'a> {
    inject_at: &'a str,
    name: &'a str,
}

impl<'a> From<&'a TemplateSecret> for SecretView<'a> {
    fn from(s: &'a TemplateSecret) -> Self {
        SecretView {
            inject_at: &s.inject_at,
            name: &s.name,
        }
    }
}

pub fn template(t: &Template) -> TemplateView<'_> {
    TemplateView {
        allowed_hosts: &t.allowed_hosts,
        cpu_cores: t.cpu_cores,
        created_at: format_rfc3339_go(&t.created_at),
        description: &t.description,
        env: &t.env,
        image: &t.image,
        memory_mb: t.memory_mb,
        name: &t.name,
        pool_size: t.pool_size,
        secrets: t.secrets.iter().map(SecretView::from).collect(),
        setup: &t.setup,
        ttl_seconds: t.ttl_seconds,
        updated_at: format_rfc3339_go(&t.updated_at),
        version: t.version,
    }
}

/// Template body. SDK keys `vcpus`, `ttl`, `provider`, `metadata` are accepted and ignored.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[schema(as = TemplateInput)]
#[serde(default)]
pub struct TemplateBody {
    /// Ignored on PUT (taken from the path)
    #[schema(required = true, max_length = 128)]
    pub name: String,
    /// 0 = 1
    #[schema(minimum = 0)]
    pub version: i64,
    #[schema(required = true)]
    pub image: String,
    pub description: String,
    pub setup: Vec<String>,
    pub allowed_hosts: Vec<String>,
    /// 0 = 512
    #[schema(minimum = 0)]
    pub memory_mb: i64,
    /// 0 = 1
    #[schema(minimum = 0)]
    pub cpu_cores: i64,
    /// 0 = 300
    #[schema(minimum = 0)]
    pub ttl_seconds: i64,
    pub env: BTreeMap<String, String>,
    #[schema(value_type = Vec<SecretView>)]
    pub secrets: Vec<TemplateSecret>,
    #[schema(minimum = 0)]
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

/// An owner's quota.
#[derive(Serialize, ToSchema)]
#[schema(as = OwnerQuota)]
#[serde(deny_unknown_fields)]
pub struct QuotaView<'a> {
    #[schema(format = DateTime)]
    created_at: String,
    /// `0s` = not set
    max_exec_timeout: GoDuration,
    /// 0 = not set
    max_sandboxes: i64,
    /// `0s` = not set
    max_ttl: GoDuration,
    #[schema(value_type = OwnerIdString)]
    owner_id: &'a str,
    #[schema(format = DateTime)]
    updated_at: String,
}

pub fn quota(q: &OwnerQuota) -> QuotaView<'_> {
    QuotaView {
        created_at: format_rfc3339_go(&q.created_at),
        max_exec_timeout: GoDuration::from_secs(q.max_exec_timeout_seconds),
        max_sandboxes: q.max_sandboxes,
        max_ttl: GoDuration::from_secs(q.max_ttl_seconds),
        owner_id: &q.owner_id,
        updated_at: format_rfc3339_go(&q.updated_at),
    }
}

/// What an owner uses and may use (the effective limits).
#[derive(Serialize, ToSchema)]
#[schema(as = OwnerUsage)]
#[serde(deny_unknown_fields)]
pub struct UsageView<'a> {
    active_sandboxes: i64,
    max_exec_timeout: GoDuration,
    /// Effective; 0 = unlimited
    max_sandboxes: i64,
    max_ttl: GoDuration,
    #[schema(value_type = OwnerIdString)]
    owner_id: &'a str,
    quota_configured: bool,
}

pub fn usage(u: &OwnerUsage) -> UsageView<'_> {
    UsageView {
        active_sandboxes: u.active_sandboxes,
        max_exec_timeout: u.max_exec_timeout,
        max_sandboxes: u.max_sandboxes,
        max_ttl: u.max_ttl,
        owner_id: &u.owner_id,
        quota_configured: u.quota_configured,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use chrono::TimeZone;
    use serde_json::{json, Value};
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
            vm_id: None,
            placement: stacyvm_types::Placement::Local,
            tenant_id: String::new(),
            preview_domain: String::new(),
            created_at: t,
            expires_at: t,
            updated_at: t,
            lifecycle: Default::default(),
            paused_at: None,
            last_active_at: None,
            preview_token: stacyvm_types::PreviewToken::default(),
            public_preview: false,
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
        sb.vm_id = Some("vm".into());
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
