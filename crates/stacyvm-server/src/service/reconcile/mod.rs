//! Reconciliation: the records against what really runs. Background loops (`tasks/`) and
//! startup call these passes; every change is published as a `reconcile.action` event.

mod abandoned;
mod local;
mod remote;
