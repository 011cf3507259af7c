//! How the typed sandbox fields map to their text columns, the same for both backends (the
//! schema predates the types: `vm_id` is `''` for none, `worker_id` is `local` or a worker id).

use stacyvm_types::{Placement, Sandbox};

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
