//! Persistence for StacyVM. One [`Store`] trait; one module per backend with mirrored file names.
//! `sqlx::Error` never leaves this crate: backends translate it into [`StoreError`].

mod admission;
mod bridge;
mod columns;
#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
mod error;
mod maintenance;
mod postgres;
mod records;
mod rows;
mod sqlite;
mod statements;

use std::sync::Arc;

pub use admission::{CreatingSandbox, InsertLimits, LimitHit};
pub use bridge::{EventBridge, MAX_EVENT_PAYLOAD};
pub use error::StoreError;
pub use maintenance::{backup_sqlite, migrate, BackupReport, MigrationReport};
/// Throwaway databases on the Postgres test server (`STACYVM_TEST_PG_DSN`).
#[cfg(any(test, feature = "conformance"))]
pub use postgres::test_db as pg_test_db;
pub use postgres::PgStore;
pub use records::{
    AdminAuditRecord, AuditFilter, E2bSandbox, ExecLog, Lease, NewAdminAudit, OwnerQuota, Snapshot,
    Template, TemplateSecret, Volume, VolumeMount, WorkerRecord,
};
pub use sqlite::SqliteStore;
use stacyvm_types::{Sandbox, SandboxId, SandboxState, Timestamp, WorkerId};

/// Counts used by admission control.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ActiveCounts {
    /// Sandboxes not destroyed and not expired.
    pub total: i64,
    /// Of those, the ones whose `owner_id` equals the asked owner (0 when no owner was asked).
    pub owner: i64,
}

#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// Cheap round trip used by health and diagnostics.
    async fn ping(&self) -> Result<(), StoreError>;
    /// This installation's cluster id (16 hex digits, made once by the migration that added
    /// it, the same for every control plane on the database). Runtimes are labelled with it.
    async fn cluster_id(&self) -> Result<String, StoreError>;

    // --- sandboxes -------------------------------------------------------------------------
    /// Inserts a new record. `Conflict` when the id exists (even destroyed).
    async fn insert_sandbox(&self, sb: &Sandbox) -> Result<(), StoreError>;
    /// Any record, destroyed ones included. `NotFound` when absent.
    async fn get_sandbox(&self, id: &SandboxId) -> Result<Sandbox, StoreError>;
    /// Every record not destroyed, newest `created_at` first.
    async fn list_sandboxes(&self) -> Result<Vec<Sandbox>, StoreError>;
    /// The runtime id (`vm_id`, else the id) of every record not destroyed that runs on this
    /// control plane's own providers, in no order: what the orphan sweep must keep, without
    /// decoding whole records (it runs every second after a start, with any number of them).
    async fn list_local_runtime_ids(&self) -> Result<Vec<String>, StoreError>;
    /// Moves a record to `state` if the transition is valid (`InvalidTransition` otherwise) and
    /// returns the updated record. Setting the current state again is a no-op success.
    async fn set_sandbox_state(
        &self,
        id: &SandboxId,
        state: SandboxState,
    ) -> Result<Sandbox, StoreError>;
    /// Marks a `creating` record `running` and records the provider's runtime id (`vm_id`,
    /// `None` when it equals the sandbox id).
    async fn set_sandbox_running(
        &self,
        id: &SandboxId,
        vm_id: Option<&str>,
    ) -> Result<Sandbox, StoreError>;
    /// Sets `expires_at` on a live record (`NotFound` for destroyed or absent ones).
    async fn set_sandbox_expiry(
        &self,
        id: &SandboxId,
        expires_at: Timestamp,
    ) -> Result<Sandbox, StoreError>;
    /// Live records (not destroyed, not expired) with `expires_at < now`.
    async fn list_expired_sandboxes(&self, now: Timestamp) -> Result<Vec<Sandbox>, StoreError>;
    /// Active counts for admission; `owner` is counted only when `Some` and non-empty.
    async fn count_active_sandboxes(&self, owner: Option<&str>)
        -> Result<ActiveCounts, StoreError>;
    /// Inserts a new record like `insert_sandbox`, recording `limits.created_by`, unless one
    /// of the limits is already reached (`LimitReached`). The check and the insert are one
    /// atomic step for every control plane on the database.
    async fn insert_sandbox_limited(
        &self,
        sb: &Sandbox,
        limits: &InsertLimits<'_>,
    ) -> Result<(), StoreError>;
    /// Records still `creating`, oldest first, with the control plane that inserted them.
    async fn list_creating_sandboxes(&self) -> Result<Vec<CreatingSandbox>, StoreError>;
    /// `running` → `paused`, recording `paused_at = at`. A paused record is returned as it is
    /// (idempotent); other states give `InvalidTransition` or `Conflict`.
    async fn pause_sandbox(&self, id: &SandboxId, at: Timestamp) -> Result<Sandbox, StoreError>;
    /// `paused` → `running` with a new `expires_at` (`paused_at` cleared). A running record is
    /// returned as it is (idempotent); other states give `InvalidTransition` or `Conflict`.
    async fn resume_sandbox(
        &self,
        id: &SandboxId,
        expires_at: Timestamp,
    ) -> Result<Sandbox, StoreError>;
    /// Records activity: `last_active_at = at` on a live record when `at` is later than the
    /// stored value (an absent or destroyed record is left alone, without error).
    async fn touch_sandbox(&self, id: &SandboxId, at: Timestamp) -> Result<(), StoreError>;
    /// How many records are `paused` (`max_paused_sandboxes`).
    async fn count_paused_sandboxes(&self) -> Result<i64, StoreError>;

    // --- exec logs -------------------------------------------------------------------------
    async fn insert_exec_log(&self, log: &ExecLog) -> Result<(), StoreError>;
    /// Newest first, at most `limit`.
    async fn list_exec_logs(
        &self,
        sandbox_id: &SandboxId,
        limit: i64,
    ) -> Result<Vec<ExecLog>, StoreError>;

    // --- templates -------------------------------------------------------------------------
    /// `Conflict` when the name exists.
    async fn create_template(&self, t: &Template) -> Result<(), StoreError>;
    async fn get_template(&self, name: &str) -> Result<Template, StoreError>;
    /// Ordered by name.
    async fn list_templates(&self) -> Result<Vec<Template>, StoreError>;
    /// Full replace of an existing template (`NotFound` when absent); keeps `created_at`.
    async fn replace_template(&self, t: &Template) -> Result<(), StoreError>;
    async fn delete_template(&self, name: &str) -> Result<(), StoreError>;

    // --- owner quotas ----------------------------------------------------------------------
    /// Insert or update; `created_at` is kept on update. Returns the stored row.
    async fn upsert_quota(&self, q: &OwnerQuota) -> Result<OwnerQuota, StoreError>;
    async fn get_quota(&self, owner_id: &str) -> Result<OwnerQuota, StoreError>;
    /// Ordered by owner id.
    async fn list_quotas(&self) -> Result<Vec<OwnerQuota>, StoreError>;
    async fn delete_quota(&self, owner_id: &str) -> Result<(), StoreError>;

    // --- workers ---------------------------------------------------------------------------
    /// Records a heartbeat: insert or update everything but `created_at`; sets
    /// `last_heartbeat = updated_at = now`. Returns the stored row.
    async fn upsert_worker(&self, w: &WorkerRecord) -> Result<WorkerRecord, StoreError>;
    async fn get_worker(&self, id: &WorkerId) -> Result<WorkerRecord, StoreError>;
    /// Ordered by id.
    async fn list_workers(&self) -> Result<Vec<WorkerRecord>, StoreError>;
    async fn delete_worker(&self, id: &WorkerId) -> Result<(), StoreError>;

    // --- leases ----------------------------------------------------------------------------
    /// Grants the lease when it is free, expired, or already held by `holder`: generation + 1
    /// (1 for a new row), `expires_at = now + ttl`. `Conflict` when another holder has it live.
    async fn acquire_lease(
        &self,
        resource_id: &str,
        resource_type: &str,
        holder_id: &str,
        ttl: std::time::Duration,
    ) -> Result<Lease, StoreError>;
    /// Only the current holder of an unexpired lease: generation + 1, new expiry. `Conflict`
    /// otherwise.
    async fn renew_lease(
        &self,
        resource_id: &str,
        holder_id: &str,
        ttl: std::time::Duration,
    ) -> Result<Lease, StoreError>;
    /// Deletes the lease when `holder_id` holds it; `NotFound` otherwise.
    async fn release_lease(&self, resource_id: &str, holder_id: &str) -> Result<(), StoreError>;
    async fn get_lease(&self, resource_id: &str) -> Result<Lease, StoreError>;
    async fn list_leases(&self) -> Result<Vec<Lease>, StoreError>;
    /// Deletes the rows of leases whose resource id starts with `prefix` (non-empty) and that
    /// are released, or expired at least `expired_for` ago; returns how many. Only for
    /// resources whose ids are never reused (a control plane's presence lease): a deleted row's
    /// generation starts again at 1, so sandbox leases, whose generations fence workers, must
    /// never be pruned.
    async fn prune_leases(
        &self,
        prefix: &str,
        expired_for: std::time::Duration,
    ) -> Result<u64, StoreError>;

    // --- admin audit -----------------------------------------------------------------------
    async fn insert_admin_audit(&self, rec: &NewAdminAudit) -> Result<(), StoreError>;
    /// Newest first, filtered.
    async fn list_admin_audit(
        &self,
        filter: &AuditFilter,
    ) -> Result<Vec<AdminAuditRecord>, StoreError>;
    /// Deletes rows older than `before`; returns how many.
    async fn prune_admin_audit(&self, before: Timestamp) -> Result<u64, StoreError>;

    // --- the E2B-compatible API -------------------------------------------------------------
    /// Records what the E2B API keeps of a sandbox it created (docs/e2b.md). `Conflict` when
    /// the sandbox already has one.
    async fn insert_e2b_sandbox(&self, r: &E2bSandbox) -> Result<(), StoreError>;
    /// `NotFound` (kind `e2b sandbox`) for a sandbox the E2B API did not create.
    async fn get_e2b_sandbox(&self, id: &SandboxId) -> Result<E2bSandbox, StoreError>;

    // --- volumes ---------------------------------------------------------------------------
    /// `Conflict` when the name is taken.
    async fn insert_volume(&self, v: &Volume) -> Result<(), StoreError>;
    /// `NotFound` (kind `volume`) when absent.
    async fn get_volume(&self, name: &str) -> Result<Volume, StoreError>;
    /// Ordered by name.
    async fn list_volumes(&self) -> Result<Vec<Volume>, StoreError>;
    /// Deletes the volume and its mount history. `NotFound` when absent, `Conflict` while a
    /// sandbox that is not destroyed mounts it; the check and the delete are one atomic step.
    async fn delete_volume(&self, name: &str) -> Result<(), StoreError>;
    /// Records the mounts of one sandbox (its record exists), atomically: `NotFound` (kind
    /// `volume`) when a volume is absent, `Conflict` when a read-write mount meets another
    /// sandbox, not destroyed, that mounts the same volume read-write. Nothing is recorded on
    /// an error.
    async fn mount_volumes(
        &self,
        sandbox_id: &SandboxId,
        mounts: &[VolumeMount],
    ) -> Result<(), StoreError>;
    /// The mounts of every sandbox that is not destroyed, ordered by volume, sandbox, path.
    async fn list_volume_mounts(&self) -> Result<Vec<VolumeMount>, StoreError>;

    // --- snapshots -------------------------------------------------------------------------
    /// `Conflict` when the id exists.
    async fn insert_snapshot(&self, s: &Snapshot) -> Result<(), StoreError>;
    /// `NotFound` (kind `snapshot`) when absent.
    async fn get_snapshot(&self, id: &str) -> Result<Snapshot, StoreError>;
    /// Newest `created_at` first.
    async fn list_snapshots(&self) -> Result<Vec<Snapshot>, StoreError>;
    /// `NotFound` when absent.
    async fn delete_snapshot(&self, id: &str) -> Result<(), StoreError>;

    // --- several control planes ------------------------------------------------------------
    /// The event bridge between control planes sharing this database, when the backend has
    /// one (Postgres). Every call returns the same bridge.
    fn event_bridge(&self) -> Option<Arc<dyn EventBridge>> {
        None
    }
}

/// The `Store` impl of a backend, written once so the two cannot drift apart. `$own` are the
/// methods the backend writes itself. Keyed reads, lists and deletes run the shared statements
/// of `statements` through the backend's `get_keyed`, `get_all` and `delete_keyed` (the same
/// names and arguments on `PgStore` and the SQLite `Db`); every other method hands over to the
/// function of the same name in the backend's per-table module (the backends mirror module and
/// function names). Both are reached through `self.$db`, or the store itself when no field is
/// named.
macro_rules! impl_store {
    ($store:ty $(, $db:ident)?; $($own:tt)*) => {
        #[async_trait::async_trait]
        impl $crate::Store for $store {
            $($own)*

            async fn insert_sandbox(&self, sb: &Sandbox) -> Result<(), StoreError> {
                sandboxes::insert(&self$(.$db)?, sb).await
            }

            async fn get_sandbox(&self, id: &SandboxId) -> Result<Sandbox, StoreError> {
                sandboxes::get(&self$(.$db)?, id).await
            }

            async fn list_sandboxes(&self) -> Result<Vec<Sandbox>, StoreError> {
                sandboxes::list(&self$(.$db)?).await
            }

            async fn list_local_runtime_ids(&self) -> Result<Vec<String>, StoreError> {
                let sql = $crate::statements::sandboxes::LOCAL_RUNTIME_IDS;
                self$(.$db)?.get_all("sandbox", sql, |r| {
                    use $crate::rows::ReadRow;
                    r.text("runtime_id")
                }).await
            }

            async fn set_sandbox_state(
                &self,
                id: &SandboxId,
                state: SandboxState,
            ) -> Result<Sandbox, StoreError> {
                sandboxes::set_state(&self$(.$db)?, id, state).await
            }

            async fn set_sandbox_running(
                &self,
                id: &SandboxId,
                vm_id: Option<&str>,
            ) -> Result<Sandbox, StoreError> {
                sandboxes::set_running(&self$(.$db)?, id, vm_id).await
            }

            async fn set_sandbox_expiry(
                &self,
                id: &SandboxId,
                expires_at: Timestamp,
            ) -> Result<Sandbox, StoreError> {
                sandboxes::set_expiry(&self$(.$db)?, id, expires_at).await
            }

            async fn list_expired_sandboxes(
                &self,
                now: Timestamp,
            ) -> Result<Vec<Sandbox>, StoreError> {
                sandboxes::list_expired(&self$(.$db)?, now).await
            }

            async fn count_active_sandboxes(
                &self,
                owner: Option<&str>,
            ) -> Result<$crate::ActiveCounts, StoreError> {
                sandboxes::count_active(&self$(.$db)?, owner).await
            }

            async fn insert_sandbox_limited(
                &self,
                sb: &Sandbox,
                limits: &$crate::InsertLimits<'_>,
            ) -> Result<(), StoreError> {
                admission::insert_limited(&self$(.$db)?, sb, limits).await
            }

            async fn list_creating_sandboxes(
                &self,
            ) -> Result<Vec<$crate::CreatingSandbox>, StoreError> {
                let sql = $crate::statements::sandboxes::LIST_CREATING;
                self$(.$db)?.get_all("sandbox", sql, |r| $crate::rows::creating_sandbox(r)).await
            }

            async fn pause_sandbox(
                &self,
                id: &SandboxId,
                at: Timestamp,
            ) -> Result<Sandbox, StoreError> {
                lifecycle::pause(&self$(.$db)?, id, at).await
            }

            async fn resume_sandbox(
                &self,
                id: &SandboxId,
                expires_at: Timestamp,
            ) -> Result<Sandbox, StoreError> {
                lifecycle::resume(&self$(.$db)?, id, expires_at).await
            }

            async fn touch_sandbox(&self, id: &SandboxId, at: Timestamp) -> Result<(), StoreError> {
                lifecycle::touch(&self$(.$db)?, id, at).await
            }

            async fn count_paused_sandboxes(&self) -> Result<i64, StoreError> {
                lifecycle::count_paused(&self$(.$db)?).await
            }

            async fn insert_exec_log(&self, log: &ExecLog) -> Result<(), StoreError> {
                exec_logs::insert(&self$(.$db)?, log).await
            }

            async fn list_exec_logs(
                &self,
                sandbox_id: &SandboxId,
                limit: i64,
            ) -> Result<Vec<ExecLog>, StoreError> {
                // "At most `limit`": nothing for `limit <= 0`.
                if limit <= 0 {
                    return Ok(Vec::new());
                }
                exec_logs::list(&self$(.$db)?, sandbox_id, limit).await
            }

            async fn create_template(&self, t: &Template) -> Result<(), StoreError> {
                templates::create(&self$(.$db)?, t).await
            }

            async fn get_template(&self, name: &str) -> Result<Template, StoreError> {
                let sql = $crate::statements::templates::GET;
                self$(.$db)?.get_keyed("template", sql, name, |r| $crate::rows::template(r)).await
            }

            async fn list_templates(&self) -> Result<Vec<Template>, StoreError> {
                let sql = $crate::statements::templates::LIST;
                self$(.$db)?.get_all("template", sql, |r| $crate::rows::template(r)).await
            }

            async fn replace_template(&self, t: &Template) -> Result<(), StoreError> {
                templates::replace(&self$(.$db)?, t).await
            }

            async fn delete_template(&self, name: &str) -> Result<(), StoreError> {
                let sql = $crate::statements::templates::DELETE;
                self$(.$db)?.delete_keyed("template", sql, name).await
            }

            async fn upsert_quota(&self, q: &OwnerQuota) -> Result<OwnerQuota, StoreError> {
                quotas::upsert(&self$(.$db)?, q).await
            }

            async fn get_quota(&self, owner_id: &str) -> Result<OwnerQuota, StoreError> {
                let sql = $crate::statements::quotas::GET;
                self$(.$db)?.get_keyed("owner_quota", sql, owner_id, |r| $crate::rows::quota(r)).await
            }

            async fn list_quotas(&self) -> Result<Vec<OwnerQuota>, StoreError> {
                let sql = $crate::statements::quotas::LIST;
                self$(.$db)?.get_all("owner_quota", sql, |r| $crate::rows::quota(r)).await
            }

            async fn delete_quota(&self, owner_id: &str) -> Result<(), StoreError> {
                let sql = $crate::statements::quotas::DELETE;
                self$(.$db)?.delete_keyed("owner_quota", sql, owner_id).await
            }

            async fn upsert_worker(&self, w: &WorkerRecord) -> Result<WorkerRecord, StoreError> {
                workers::upsert(&self$(.$db)?, w).await
            }

            async fn get_worker(&self, id: &WorkerId) -> Result<WorkerRecord, StoreError> {
                let sql = $crate::statements::workers::GET;
                self$(.$db)?.get_keyed("worker", sql, id, |r| $crate::rows::worker(r)).await
            }

            async fn list_workers(&self) -> Result<Vec<WorkerRecord>, StoreError> {
                let sql = $crate::statements::workers::LIST;
                self$(.$db)?.get_all("worker", sql, |r| $crate::rows::worker(r)).await
            }

            async fn delete_worker(&self, id: &WorkerId) -> Result<(), StoreError> {
                let sql = $crate::statements::workers::DELETE;
                self$(.$db)?.delete_keyed("worker", sql, id).await
            }

            async fn acquire_lease(
                &self,
                resource_id: &str,
                resource_type: &str,
                holder_id: &str,
                ttl: std::time::Duration,
            ) -> Result<Lease, StoreError> {
                leases::acquire(&self$(.$db)?, resource_id, resource_type, holder_id, ttl).await
            }

            async fn renew_lease(
                &self,
                resource_id: &str,
                holder_id: &str,
                ttl: std::time::Duration,
            ) -> Result<Lease, StoreError> {
                leases::renew(&self$(.$db)?, resource_id, holder_id, ttl).await
            }

            async fn release_lease(&self, resource_id: &str, holder_id: &str) -> Result<(), StoreError> {
                leases::release(&self$(.$db)?, resource_id, holder_id).await
            }

            async fn get_lease(&self, resource_id: &str) -> Result<Lease, StoreError> {
                let sql = $crate::statements::leases::GET;
                self$(.$db)?.get_keyed("lease", sql, resource_id, |r| $crate::rows::lease(r)).await
            }

            async fn list_leases(&self) -> Result<Vec<Lease>, StoreError> {
                let sql = $crate::statements::leases::LIST;
                self$(.$db)?.get_all("lease", sql, |r| $crate::rows::lease(r)).await
            }

            async fn prune_leases(
                &self,
                prefix: &str,
                expired_for: std::time::Duration,
            ) -> Result<u64, StoreError> {
                leases::prune(&self$(.$db)?, prefix, expired_for).await
            }

            async fn insert_admin_audit(&self, rec: &NewAdminAudit) -> Result<(), StoreError> {
                audit::insert(&self$(.$db)?, rec).await
            }

            async fn list_admin_audit(
                &self,
                filter: &AuditFilter,
            ) -> Result<Vec<AdminAuditRecord>, StoreError> {
                audit::list(&self$(.$db)?, filter).await
            }

            async fn prune_admin_audit(&self, before: Timestamp) -> Result<u64, StoreError> {
                audit::prune(&self$(.$db)?, before).await
            }

            async fn insert_e2b_sandbox(&self, r: &E2bSandbox) -> Result<(), StoreError> {
                e2b_sandboxes::insert(&self$(.$db)?, r).await
            }

            async fn get_e2b_sandbox(&self, id: &SandboxId) -> Result<E2bSandbox, StoreError> {
                let sql = $crate::statements::e2b_sandboxes::GET;
                self$(.$db)?.get_keyed("e2b sandbox", sql, id, |r| $crate::rows::e2b_sandbox(r)).await
            }

            async fn insert_volume(&self, v: &Volume) -> Result<(), StoreError> {
                volumes::insert(&self$(.$db)?, v).await
            }

            async fn get_volume(&self, name: &str) -> Result<Volume, StoreError> {
                let sql = $crate::statements::volumes::GET;
                self$(.$db)?.get_keyed("volume", sql, name, |r| $crate::rows::volume(r)).await
            }

            async fn list_volumes(&self) -> Result<Vec<Volume>, StoreError> {
                let sql = $crate::statements::volumes::LIST;
                self$(.$db)?.get_all("volume", sql, |r| $crate::rows::volume(r)).await
            }

            async fn delete_volume(&self, name: &str) -> Result<(), StoreError> {
                volumes::delete(&self$(.$db)?, name).await
            }

            async fn mount_volumes(
                &self,
                sandbox_id: &SandboxId,
                mounts: &[VolumeMount],
            ) -> Result<(), StoreError> {
                volumes::mount(&self$(.$db)?, sandbox_id, mounts).await
            }

            async fn list_volume_mounts(&self) -> Result<Vec<VolumeMount>, StoreError> {
                let sql = $crate::statements::volumes::LIST_MOUNTS;
                self$(.$db)?.get_all("volume", sql, |r| $crate::rows::volume_mount(r)).await
            }

            async fn insert_snapshot(&self, s: &Snapshot) -> Result<(), StoreError> {
                snapshots::insert(&self$(.$db)?, s).await
            }

            async fn get_snapshot(&self, id: &str) -> Result<Snapshot, StoreError> {
                let sql = $crate::statements::snapshots::GET;
                self$(.$db)?.get_keyed("snapshot", sql, id, |r| $crate::rows::snapshot(r)).await
            }

            async fn list_snapshots(&self) -> Result<Vec<Snapshot>, StoreError> {
                let sql = $crate::statements::snapshots::LIST;
                self$(.$db)?.get_all("snapshot", sql, |r| $crate::rows::snapshot(r)).await
            }

            async fn delete_snapshot(&self, id: &str) -> Result<(), StoreError> {
                let sql = $crate::statements::snapshots::DELETE;
                self$(.$db)?.delete_keyed("snapshot", sql, id).await
            }
        }
    };
}
pub(crate) use impl_store;

/// Opens the backend named by `driver` (`sqlite` with a path, `postgres` with a DSN). Runs
/// migrations.
pub async fn open(driver: &str, path_or_dsn: &str) -> Result<Arc<dyn Store>, StoreError> {
    match driver {
        "" | "sqlite" => Ok(Arc::new(SqliteStore::open(path_or_dsn).await?)),
        "postgres" | "postgresql" => Ok(Arc::new(PgStore::open(path_or_dsn).await?)),
        other => Err(StoreError::Unsupported(format!(
            "database driver {other:?} is not supported by this build"
        ))),
    }
}
