//! Which runtimes a provider may treat as its own when several installations share a host.
//!
//! A control plane's providers carry the installation's cluster id (made once in the store,
//! `Store::cluster_id`); Docker containers get the label [`CLUSTER_LABEL`] and microvm
//! directories record it in their metadata. Listing (`Provider::list_runtimes`, which
//! reconciliation and orphan cleanup act on) keeps a runtime when [`ours`] says so:
//!
//! - labelled with our cluster: ours;
//! - labelled with another cluster: never ours (another installation with its own database);
//! - no cluster label: ours, as before. Runtimes made by builds older than the label have
//!   none, and treating them as foreign would leak them on upgrade.
//!
//! A remote worker has no store: its providers use `worker:<id>` as their cluster, so a
//! control plane on the same host (a Docker daemon both use) never destroys a worker's
//! sandboxes as orphans, nor the worker the control plane's.

/// Docker label (and microvm metadata field) naming the cluster a runtime belongs to.
#[cfg(feature = "docker")]
pub(crate) const CLUSTER_LABEL: &str = "stacyvm.cluster";

/// Whether a runtime whose cluster label is `label` belongs to a provider of cluster `mine`.
pub(crate) fn ours(label: Option<&str>, mine: Option<&str>) -> bool {
    match label {
        None => true,
        Some(l) => mine == Some(l),
    }
}

#[cfg(test)]
mod tests {
    use super::ours;

    #[test]
    fn own_and_unlabelled_runtimes_are_ours_foreign_ones_never() {
        assert!(ours(Some("a1"), Some("a1")));
        assert!(ours(None, Some("a1")), "made before the label existed");
        assert!(!ours(Some("b2"), Some("a1")), "another installation's");
        assert!(ours(None, None));
        assert!(
            !ours(Some("a1"), None),
            "a worker leaves a control plane's runtimes alone"
        );
    }
}
