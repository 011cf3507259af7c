//! Statement text both backends share. The dialects differ only in placeholders (`$1`, `?1`)
//! and in which clock stamps a row, so the clauses that carry a rule and name no parameter are
//! written once here and spliced into each backend's statements with `concat!`.

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

pub(crate) use {
    lease_columns, lease_grant_rule, quota_columns, quota_upsert_rule, sandbox_columns,
};

/// The states `to` may be reached from, as an SQL list of literals (all from a closed enum).
/// `to` itself is left out: re-setting the current state is answered without a write.
pub(crate) fn sources_of(to: SandboxState) -> String {
    SandboxState::ALL
        .into_iter()
        .filter(|&from| from != to && from.valid_transition(to).is_ok())
        .map(|from| format!("'{}'", from.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_follow_the_transition_table() {
        assert_eq!(sources_of(SandboxState::Creating), "");
        assert_eq!(
            sources_of(SandboxState::Running),
            "'creating', 'error', 'unhealthy', 'expired', 'paused'"
        );
        assert!(!sources_of(SandboxState::Destroyed).contains("'destroyed'"));
    }
}
