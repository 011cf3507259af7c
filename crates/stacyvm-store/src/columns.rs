//! How the typed sandbox fields map to their text columns, the same for both backends (the
//! schema predates the types: `vm_id` is `''` for none, `worker_id` is `local` or a worker id).

use stacyvm_types::{GoDuration, Placement, Sandbox, Timestamp};

use crate::rows::ts;

/// The `vm_id` column: empty when the runtime id is the sandbox id.
pub(crate) fn vm_id(sb: &Sandbox) -> &str {
    sb.vm_id.as_deref().unwrap_or("")
}

pub(crate) fn vm_id_from(column: String) -> Option<String> {
    (!column.is_empty()).then_some(column)
}

/// The `worker_id` column.
pub(crate) fn worker_id(sb: &Sandbox) -> &str {
    sb.placement.worker_id()
}

pub(crate) fn placement_from(column: &str) -> Placement {
    Placement::from_worker_id(column)
}

/// The `idle_timeout` column: nanoseconds, 0 for none.
pub(crate) fn idle_timeout(sb: &Sandbox) -> i64 {
    sb.lifecycle.idle_timeout.map_or(0, GoDuration::nanos)
}

pub(crate) fn idle_timeout_from(column: i64) -> Option<GoDuration> {
    (column > 0).then_some(GoDuration(column))
}

/// An optional time column (`paused_at`, `last_active_at`): `''` for none.
pub(crate) fn opt_ts(t: Option<&Timestamp>) -> String {
    t.map(ts).unwrap_or_default()
}
