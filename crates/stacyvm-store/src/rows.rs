//! How stored rows become records, once for both backends. The schemas hold the same columns
//! under the same names in the same text shapes (timestamps as text, lists and maps as JSON
//! text), so each record has one decoder; a backend only says how to read one column of its
//! own row type ([`ReadRow`]).

use chrono::NaiveDateTime;
use serde::de::DeserializeOwned;
use serde::Serialize;
use stacyvm_types::{Lifecycle, OnExpire, PreviewToken, Sandbox, Timestamp};

use crate::{
    columns, AdminAuditRecord, CreatingSandbox, E2bSandbox, ExecLog, Lease, NewAdminAudit,
    OwnerQuota, Snapshot, StoreError, Template, Volume, VolumeMount, WorkerRecord,
};

/// The one text shape of every stored timestamp: exact to the nanosecond, sortable as a string.
pub(crate) const TS_FORMAT: &str = "%Y-%m-%dT%H:%M:%S%.9fZ";

/// A timestamp as stored.
pub(crate) fn ts(t: &Timestamp) -> String {
    t.format(TS_FORMAT).to_string()
}

/// A list or map as stored (JSON text).
pub(crate) fn to_json<T: Serialize>(value: &T, what: &'static str) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|_| StoreError::Corrupt { what })
}

/// One result row of a backend, read by column name. Every failure is `Corrupt` naming the
/// column.
pub(crate) trait ReadRow {
    /// A nullable text column.
    fn opt_text(&self, name: &'static str) -> Result<Option<String>, StoreError>;
    fn int(&self, name: &'static str) -> Result<i64, StoreError>;
    /// Command output, which may hold NUL characters (Postgres keeps it as UTF-8 bytes).
    fn output(&self, name: &'static str) -> Result<String, StoreError>;

    fn text(&self, name: &'static str) -> Result<String, StoreError> {
        self.opt_text(name)?
            .ok_or(StoreError::Corrupt { what: name })
    }

    fn time(&self, name: &'static str) -> Result<Timestamp, StoreError> {
        NaiveDateTime::parse_from_str(&self.text(name)?, TS_FORMAT)
            .map(|n| n.and_utc())
            .map_err(|_| StoreError::Corrupt { what: name })
    }

    /// A time column that is `''` for none.
    fn opt_time(&self, name: &'static str) -> Result<Option<Timestamp>, StoreError> {
        let t = self.text(name)?;
        if t.is_empty() {
            return Ok(None);
        }
        NaiveDateTime::parse_from_str(&t, TS_FORMAT)
            .map(|n| Some(n.and_utc()))
            .map_err(|_| StoreError::Corrupt { what: name })
    }

    fn json<T: DeserializeOwned>(&self, name: &'static str) -> Result<T, StoreError> {
        serde_json::from_str(&self.text(name)?).map_err(|_| StoreError::Corrupt { what: name })
    }

    /// A nullable JSON list: NULL means "not sent", which differs from an empty list.
    fn json_list(&self, name: &'static str) -> Result<Option<Vec<String>>, StoreError> {
        self.opt_text(name)?
            .map(|t| serde_json::from_str(&t).map_err(|_| StoreError::Corrupt { what: name }))
            .transpose()
    }
}

/// A nullable JSON list as stored (`None` stays NULL).
pub(crate) fn list_json(
    value: &Option<Vec<String>>,
    what: &'static str,
) -> Result<Option<String>, StoreError> {
    value.as_ref().map(|v| to_json(v, what)).transpose()
}

pub(crate) fn sandbox(row: &impl ReadRow) -> Result<Sandbox, StoreError> {
    let state = row.text("state")?;
    Ok(Sandbox {
        id: row.text("id")?.into(),
        state: state
            .parse()
            .map_err(|_| StoreError::Corrupt { what: "state" })?,
        provider: row.text("provider")?,
        image: row.text("image")?,
        memory_mb: row.int("memory_mb")?,
        vcpus: row.int("vcpus")?,
        metadata: row.json("metadata")?,
        template: row.text("template")?,
        owner_id: row.text("owner_id")?,
        vm_id: columns::vm_id_from(row.text("vm_id")?),
        placement: columns::placement_from(&row.text("worker_id")?),
        tenant_id: row.text("tenant_id")?,
        preview_domain: row.text("preview_domain")?,
        created_at: row.time("created_at")?,
        expires_at: row.time("expires_at")?,
        updated_at: row.time("updated_at")?,
        lifecycle: Lifecycle {
            on_expire: OnExpire::parse(&row.text("on_expire")?)
                .ok_or(StoreError::Corrupt { what: "on_expire" })?,
            idle_timeout: columns::idle_timeout_from(row.int("idle_timeout")?),
        },
        paused_at: row.opt_time("paused_at")?,
        last_active_at: row.opt_time("last_active_at")?,
        preview_token: PreviewToken::from_stored(row.text("preview_token")?),
        public_preview: row.int("public_preview")? != 0,
    })
}

/// A `creating` record with the control plane that inserted it.
pub(crate) fn creating_sandbox(row: &impl ReadRow) -> Result<CreatingSandbox, StoreError> {
    Ok(CreatingSandbox {
        sandbox: sandbox(row)?,
        created_by: row.text("created_by")?,
    })
}

pub(crate) fn exec_log(row: &impl ReadRow) -> Result<ExecLog, StoreError> {
    Ok(ExecLog {
        sandbox_id: row.text("sandbox_id")?.into(),
        command: row.text("command")?,
        exit_code: row.int("exit_code")?,
        stdout: row.output("stdout")?,
        stderr: row.output("stderr")?,
        duration_ms: row.int("duration_ms")?,
        created_at: row.time("created_at")?,
    })
}

pub(crate) fn template(row: &impl ReadRow) -> Result<Template, StoreError> {
    Ok(Template {
        name: row.text("name")?,
        version: row.int("version")?,
        image: row.text("image")?,
        description: row.text("description")?,
        setup: row.json("setup")?,
        allowed_hosts: row.json("allowed_hosts")?,
        memory_mb: row.int("memory_mb")?,
        cpu_cores: row.int("cpu_cores")?,
        ttl_seconds: row.int("ttl_seconds")?,
        env: row.json("env")?,
        secrets: row.json("secrets")?,
        pool_size: row.int("pool_size")?,
        created_at: row.time("created_at")?,
        updated_at: row.time("updated_at")?,
    })
}

pub(crate) fn quota(row: &impl ReadRow) -> Result<OwnerQuota, StoreError> {
    Ok(OwnerQuota {
        owner_id: row.text("owner_id")?,
        max_sandboxes: row.int("max_sandboxes")?,
        max_ttl_seconds: row.int("max_ttl_seconds")?,
        max_exec_timeout_seconds: row.int("max_exec_timeout_seconds")?,
        created_at: row.time("created_at")?,
        updated_at: row.time("updated_at")?,
    })
}

pub(crate) fn worker(row: &impl ReadRow) -> Result<WorkerRecord, StoreError> {
    Ok(WorkerRecord {
        id: row.text("id")?.into(),
        hostname: row.text("hostname")?,
        status: row.text("status")?,
        providers: row.json_list("providers")?,
        capabilities: row.json_list("capabilities")?,
        capacity: row.json("capacity")?,
        last_heartbeat: row.time("last_heartbeat")?,
        created_at: row.time("created_at")?,
        updated_at: row.time("updated_at")?,
    })
}

pub(crate) fn lease(row: &impl ReadRow) -> Result<Lease, StoreError> {
    Ok(Lease {
        resource_id: row.text("resource_id")?,
        resource_type: row.text("resource_type")?,
        holder_id: row.text("holder_id")?,
        generation: row.int("generation")?,
        expires_at: row.time("expires_at")?,
        created_at: row.time("created_at")?,
        updated_at: row.time("updated_at")?,
    })
}

pub(crate) fn admin_audit(row: &impl ReadRow) -> Result<AdminAuditRecord, StoreError> {
    Ok(AdminAuditRecord {
        id: row.int("id")?,
        entry: NewAdminAudit {
            actor: row.text("actor")?,
            method: row.text("method")?,
            path: row.text("path")?,
            status: row.int("status")?,
            duration_ms: row.int("duration_ms")?,
            request_id: row.text("request_id")?,
            remote_addr: row.text("remote_addr")?,
            user_agent: row.text("user_agent")?,
            tenant_id: row.text("tenant_id")?,
        },
        created_at: row.time("created_at")?,
    })
}

pub(crate) fn e2b_sandbox(row: &impl ReadRow) -> Result<E2bSandbox, StoreError> {
    Ok(E2bSandbox {
        sandbox_id: row.text("sandbox_id")?.into(),
        template_id: row.text("template_id")?,
        env_vars: row.json("env_vars")?,
        access_token: row.text("access_token")?,
        created_at: row.time("created_at")?,
    })
}

pub(crate) fn volume(row: &impl ReadRow) -> Result<Volume, StoreError> {
    Ok(Volume {
        name: row.text("name")?,
        size_mb: row.int("size_mb")?,
        provider: row.text("provider")?,
        worker_id: row.text("worker_id")?,
        created_at: row.time("created_at")?,
    })
}

pub(crate) fn volume_mount(row: &impl ReadRow) -> Result<VolumeMount, StoreError> {
    Ok(VolumeMount {
        sandbox_id: row.text("sandbox_id")?.into(),
        volume: row.text("volume")?,
        mount_path: row.text("mount_path")?,
        read_only: row.int("read_only")? != 0,
    })
}

pub(crate) fn snapshot(row: &impl ReadRow) -> Result<Snapshot, StoreError> {
    Ok(Snapshot {
        id: row.text("id")?,
        name: row.text("name")?,
        sandbox_id: row.text("sandbox_id")?.into(),
        provider: row.text("provider")?,
        image: row.text("image")?,
        kind: row.text("kind")?,
        size_bytes: row.int("size_bytes")?,
        worker_id: row.text("worker_id")?,
        created_at: row.time("created_at")?,
    })
}
