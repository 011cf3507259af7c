use stacyvm_types::{InvalidTransition, Sandbox, SandboxState};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found: {kind} {id:?}")]
    NotFound { kind: &'static str, id: String },
    #[error("conflict: {0}")]
    Conflict(String),
    /// An admission limit refused `insert_sandbox_limited`.
    #[error("limit reached: {0}")]
    LimitReached(crate::LimitHit),
    #[error(transparent)]
    InvalidTransition(#[from] InvalidTransition),
    /// A stored value could not be decoded (corrupt row, unknown state).
    #[error("corrupt {what} in store")]
    Corrupt { what: &'static str },
    #[error("{0}")]
    Unsupported(String),
    /// The schema in the database is newer than this binary knows.
    #[error("database schema version {found} is newer than this binary supports ({supported})")]
    SchemaTooNew { found: i64, supported: i64 },
    /// The database server could not be reached or refused the login when the store opened.
    #[error("cannot connect to the database at {target}: {reason}")]
    Unreachable { target: String, reason: String },
    #[error("database error")]
    Database(#[source] sqlx::Error),
    /// A statement of the SQLite store failed (see `sqlite::db`).
    #[error("database error")]
    Sqlite(#[source] rusqlite::Error),
    #[error("migration failed")]
    Migrate(#[source] sqlx::migrate::MigrateError),
}

impl StoreError {
    pub fn not_found(kind: &'static str, id: impl Into<String>) -> Self {
        StoreError::NotFound {
            kind,
            id: id.into(),
        }
    }

    /// `prune_leases` without a prefix would reach sandbox leases, whose generations must
    /// survive.
    pub(crate) fn no_lease_prefix() -> Self {
        StoreError::Unsupported("pruning leases needs a resource-id prefix".into())
    }

    /// Why a state-moving update matched no row, from the record read afterwards: already in
    /// `to` is success (the moves are idempotent), anything else an invalid transition.
    pub(crate) fn unmoved(current: Sandbox, to: SandboxState) -> Result<Sandbox, StoreError> {
        if current.state != to {
            current.state.valid_transition(to)?;
            return Err(StoreError::Conflict(format!(
                "sandbox {} is {} and cannot be {to}",
                current.id, current.state
            )));
        }
        Ok(current)
    }

    /// Why marking a creating sandbox running matched no row: already running on `vm_id` is
    /// success (a retried report), anything else an invalid transition.
    pub(crate) fn not_marked_running(
        current: Sandbox,
        vm_id: Option<&str>,
    ) -> Result<Sandbox, StoreError> {
        if current.state == SandboxState::Running && current.vm_id.as_deref() == vm_id {
            return Ok(current);
        }
        current.state.valid_transition(SandboxState::Running)?;
        Err(StoreError::Conflict(format!(
            "sandbox {} is {} and cannot be marked running",
            current.id, current.state
        )))
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, StoreError::NotFound { .. })
    }
}
