//! Statement text both backends share. The dialects differ in placeholders (`$1`, `?1`) and in
//! which clock stamps a row, so the clauses that carry a rule and name no parameter are written
//! once here and spliced into each backend's statements with `concat!`.
//!
//! Whole statements are shared too where the placeholders allow: SQLite reads `$1` as a
//! parameter as well and numbers `$N` parameters in the order they first appear, so a statement
//! whose parameters first appear as `$1`, `$2`, … in that order binds the same in both dialects
//! (the keyed reads and deletes, the inserts of records written whole).

use stacyvm_types::SandboxState;

/// The `sandboxes` columns, in `rows::sandbox`'s order.
macro_rules! sandbox_columns {
    () => {
        "id, state, provider, image, memory_mb, vcpus, metadata, template, owner_id, vm_id, \
         worker_id, tenant_id, preview_domain, created_at, expires_at, updated_at, on_expire, \
         idle_timeout, paused_at, last_active_at, preview_token, public_preview"
    };
}

/// The `leases` columns, in insert order.
macro_rules! lease_columns {
    () => {
        "resource_id, resource_type, holder_id, generation, expires_at, created_at, updated_at"
    };
}

/// The conflict arm of a lease grant (`INSERT .. VALUES (.., 1, deadline, now, now)`): taken
/// over when the row is released, expired (`expires_at <= now`) or already held by the same
/// holder, and then every grant bumps `generation`. `created_at` marks the start of the current
/// holder's tenure.
macro_rules! lease_grant_rule {
    () => {
        "ON CONFLICT (resource_id) DO UPDATE SET \
           resource_type = excluded.resource_type, \
           holder_id = excluded.holder_id, \
           generation = leases.generation + 1, \
           expires_at = excluded.expires_at, \
           created_at = CASE \
             WHEN leases.holder_id = excluded.holder_id AND leases.expires_at > excluded.updated_at \
             THEN leases.created_at ELSE excluded.created_at END, \
           updated_at = excluded.updated_at \
         WHERE leases.holder_id IS NULL \
            OR leases.holder_id = excluded.holder_id \
            OR leases.expires_at <= excluded.updated_at"
    };
}

/// The `owner_quotas` columns, in insert order.
macro_rules! quota_columns {
    () => {
        "owner_id, max_sandboxes, max_ttl_seconds, max_exec_timeout_seconds, created_at, \
         updated_at"
    };
}

/// The conflict arm of a quota upsert: updates everything but `created_at`.
macro_rules! quota_upsert_rule {
    () => {
        "ON CONFLICT (owner_id) DO UPDATE SET \
           max_sandboxes = excluded.max_sandboxes, \
           max_ttl_seconds = excluded.max_ttl_seconds, \
           max_exec_timeout_seconds = excluded.max_exec_timeout_seconds, \
           updated_at = excluded.updated_at"
    };
}

/// The `workers` columns, in insert order.
macro_rules! worker_columns {
    () => {
        "id, hostname, status, providers, capabilities, capacity, last_heartbeat, created_at, \
         updated_at"
    };
}

/// The `templates` columns, in `rows`' order.
macro_rules! template_columns {
    () => {
        "name, version, image, description, setup, allowed_hosts, memory_mb, cpu_cores, \
         ttl_seconds, env, secrets, pool_size, created_at, updated_at"
    };
}

/// The `e2b_sandboxes` columns, in `rows`' order.
macro_rules! e2b_columns {
    () => {
        "sandbox_id, template_id, env_vars, access_token, created_at"
    };
}

/// The `volumes` columns, in `rows`' order.
macro_rules! volume_columns {
    () => {
        "name, size_mb, provider, worker_id, created_at"
    };
}

/// The `snapshots` columns, in `rows`' order.
macro_rules! snapshot_columns {
    () => {
        "id, name, sandbox_id, provider, image, kind, size_bytes, worker_id, created_at"
    };
}

/// The conflict arm of a heartbeat: updates everything but `created_at`.
macro_rules! worker_heartbeat_rule {
    () => {
        "ON CONFLICT (id) DO UPDATE SET \
           hostname = excluded.hostname, status = excluded.status, \
           providers = excluded.providers, capabilities = excluded.capabilities, \
           capacity = excluded.capacity, last_heartbeat = excluded.last_heartbeat, \
           updated_at = excluded.updated_at"
    };
}

/// An active sandbox row: the predicate of the active partial indexes (migration 0010), which
/// queries repeat word for word so the planner can use them. Three `<>`, not `NOT IN (…)`:
/// SQLite builds an ephemeral table for a constant list of more than two values, and it
/// evaluates a partial index's predicate on every insert and on both rows of every state
/// update, so 0007's `NOT IN` form built two to four such tables per write (about 15% of
/// spawn+destroy throughput, docs/benchmarks.md).
macro_rules! active_sandbox {
    () => {
        "state <> 'destroyed' AND state <> 'expired' AND state <> 'destroying'"
    };
}

pub(crate) use {
    active_sandbox, lease_columns, lease_grant_rule, quota_columns, quota_upsert_rule,
    sandbox_columns, worker_columns, worker_heartbeat_rule,
};

/// `sandboxes`, keyed by `id`. The state predicates repeat the partial indexes' WHERE clauses
/// word for word (SQLite uses a partial index only then).
pub(crate) mod sandboxes {
    pub(crate) const INSERT: &str = concat!(
        "INSERT INTO sandboxes (",
        sandbox_columns!(),
        ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, \
           $18, $19, $20, $21, $22)"
    );
    /// A whole record and the control plane that inserts it: an admission without limits.
    pub(crate) const INSERT_BY: &str = concat!(
        "INSERT INTO sandboxes (",
        sandbox_columns!(),
        ", created_by) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, \
           $15, $16, $17, $18, $19, $20, $21, $22, $23)"
    );
    pub(crate) const GET: &str = concat!(
        "SELECT ",
        sandbox_columns!(),
        " FROM sandboxes WHERE id = $1"
    );
    pub(crate) const LIST: &str = concat!(
        "SELECT ",
        sandbox_columns!(),
        " FROM sandboxes WHERE state <> 'destroyed' ORDER BY created_at DESC, id DESC"
    );
    /// Local placements are stored as `local` (and `''` by older rows, `columns::placement_from`).
    pub(crate) const LOCAL_RUNTIME_IDS: &str =
        "SELECT CASE WHEN vm_id <> '' THEN vm_id ELSE id END AS runtime_id FROM sandboxes \
         WHERE state <> 'destroyed' AND (worker_id = 'local' OR worker_id = '')";
    pub(crate) const LIST_EXPIRED: &str = concat!(
        "SELECT ",
        sandbox_columns!(),
        " FROM sandboxes WHERE ",
        active_sandbox!(),
        " AND state <> 'paused' AND expires_at < $1 ORDER BY expires_at, id"
    );
    /// Both counts read only the partial index of active rows; the owner one seeks into it.
    pub(crate) const COUNT_ACTIVE: &str = concat!(
        "SELECT (SELECT COUNT(*) FROM sandboxes WHERE ",
        active_sandbox!(),
        " AND state <> 'paused'), (SELECT COUNT(*) FROM sandboxes WHERE ",
        active_sandbox!(),
        " AND state <> 'paused' AND owner_id = $1 AND $1 <> '')"
    );
    /// Records still `creating`, oldest first, with the control plane that inserted them.
    pub(crate) const LIST_CREATING: &str = concat!(
        "SELECT ",
        sandbox_columns!(),
        ", created_by FROM sandboxes WHERE state = 'creating' ORDER BY created_at, id"
    );
}

/// `templates`, keyed by `name`.
pub(crate) mod templates {
    pub(crate) const INSERT: &str = concat!(
        "INSERT INTO templates (",
        template_columns!(),
        ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
    );
    pub(crate) const GET: &str = concat!(
        "SELECT ",
        template_columns!(),
        " FROM templates WHERE name = $1"
    );
    pub(crate) const LIST: &str = concat!(
        "SELECT ",
        template_columns!(),
        " FROM templates ORDER BY name"
    );
    pub(crate) const DELETE: &str = "DELETE FROM templates WHERE name = $1";
}

/// `owner_quotas`, keyed by `owner_id`.
pub(crate) mod quotas {
    pub(crate) const GET: &str = concat!(
        "SELECT ",
        quota_columns!(),
        " FROM owner_quotas WHERE owner_id = $1"
    );
    pub(crate) const LIST: &str = concat!(
        "SELECT ",
        quota_columns!(),
        " FROM owner_quotas ORDER BY owner_id"
    );
    pub(crate) const DELETE: &str = "DELETE FROM owner_quotas WHERE owner_id = $1";
}

/// `workers`, keyed by `id`.
pub(crate) mod workers {
    pub(crate) const GET: &str =
        concat!("SELECT ", worker_columns!(), " FROM workers WHERE id = $1");
    pub(crate) const LIST: &str =
        concat!("SELECT ", worker_columns!(), " FROM workers ORDER BY id");
    pub(crate) const DELETE: &str = "DELETE FROM workers WHERE id = $1";
}

/// `leases`, keyed by `resource_id`; a released lease (no holder) is not answered.
pub(crate) mod leases {
    pub(crate) const GET: &str = concat!(
        "SELECT ",
        lease_columns!(),
        " FROM leases WHERE resource_id = $1 AND holder_id IS NOT NULL"
    );
    pub(crate) const LIST: &str = concat!(
        "SELECT ",
        lease_columns!(),
        " FROM leases WHERE holder_id IS NOT NULL ORDER BY resource_id"
    );
}

/// `e2b_sandboxes`, keyed by `sandbox_id`, written once.
pub(crate) mod e2b_sandboxes {
    pub(crate) const INSERT: &str = concat!(
        "INSERT INTO e2b_sandboxes (",
        e2b_columns!(),
        ") VALUES ($1, $2, $3, $4, $5)"
    );
    pub(crate) const GET: &str = concat!(
        "SELECT ",
        e2b_columns!(),
        " FROM e2b_sandboxes WHERE sandbox_id = $1"
    );
}

/// `volumes`, keyed by `name`, and the mounts of sandboxes that are not destroyed.
pub(crate) mod volumes {
    pub(crate) const INSERT: &str = concat!(
        "INSERT INTO volumes (",
        volume_columns!(),
        ") VALUES ($1, $2, $3, $4, $5)"
    );
    pub(crate) const GET: &str = concat!(
        "SELECT ",
        volume_columns!(),
        " FROM volumes WHERE name = $1"
    );
    pub(crate) const LIST: &str =
        concat!("SELECT ", volume_columns!(), " FROM volumes ORDER BY name");
    pub(crate) const LIST_MOUNTS: &str =
        "SELECT m.sandbox_id, m.volume, m.mount_path, m.read_only FROM volume_mounts m \
         JOIN sandboxes s ON s.id = m.sandbox_id WHERE s.state <> 'destroyed' \
         ORDER BY m.volume, m.sandbox_id, m.mount_path";
}

/// `snapshots`, keyed by `id`, written once each.
pub(crate) mod snapshots {
    pub(crate) const INSERT: &str = concat!(
        "INSERT INTO snapshots (",
        snapshot_columns!(),
        ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
    );
    pub(crate) const GET: &str = concat!(
        "SELECT ",
        snapshot_columns!(),
        " FROM snapshots WHERE id = $1"
    );
    pub(crate) const LIST: &str = concat!(
        "SELECT ",
        snapshot_columns!(),
        " FROM snapshots ORDER BY created_at DESC, id DESC"
    );
    pub(crate) const DELETE: &str = "DELETE FROM snapshots WHERE id = $1";
}

/// `exec_logs`: appended, read newest first (`$2` = how many).
pub(crate) mod exec_logs {
    pub(crate) const INSERT: &str = "INSERT INTO exec_logs \
           (sandbox_id, command, exit_code, stdout, stderr, duration_ms, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)";
    pub(crate) const LIST: &str =
        "SELECT sandbox_id, command, exit_code, stdout, stderr, duration_ms, created_at \
         FROM exec_logs WHERE sandbox_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2";
}

/// The states `to` may be reached from, as a parenthesised SQL condition on `state` (literals
/// from a closed enum; empty when none may). `to` itself is left out: re-setting the current
/// state is answered without a write. An `OR` of equalities rather than `IN (…)`, which SQLite
/// answers with an ephemeral table for more than two values (see `active_sandbox!`).
pub(crate) fn sources_of(to: SandboxState) -> String {
    let terms: Vec<String> = SandboxState::ALL
        .into_iter()
        .filter(|&from| from != to && from.valid_transition(to).is_ok())
        .map(|from| format!("state = '{}'", from.as_str()))
        .collect();
    if terms.is_empty() {
        return String::new();
    }
    format!("({})", terms.join(" OR "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_follow_the_transition_table() {
        assert_eq!(sources_of(SandboxState::Creating), "");
        assert_eq!(
            sources_of(SandboxState::Running),
            "(state = 'creating' OR state = 'error' OR state = 'unhealthy' \
             OR state = 'expired' OR state = 'paused')"
        );
        assert!(!sources_of(SandboxState::Destroyed).contains("'destroyed'"));
    }
}
