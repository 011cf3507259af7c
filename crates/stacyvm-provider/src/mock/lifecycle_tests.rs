//! Spawn and destroy bookkeeping: a long-running mock (a demo server) must not keep an entry
//! for every sandbox it ever made.

use stacyvm_types::SandboxState;

use crate::{conformance, Provider, ProviderError};

#[tokio::test]
async fn a_destroyed_sandbox_leaves_no_entry_but_still_answers() {
    let base = tempfile::tempdir().expect("temp dir");
    let p = super::MockProvider::with_base_dir(base.path());
    let mut ids = Vec::new();
    for _ in 0..3 {
        let spec = conformance::spec("mock");
        p.spawn(&spec).await.expect("spawn");
        p.destroy(&spec.id).await.expect("destroy");
        ids.push(spec.id);
    }
    assert!(super::lock(&p.sandboxes).is_empty());
    for id in &ids {
        assert_eq!(p.status(id).await.expect("status"), SandboxState::Destroyed);
        assert_eq!(p.logs(id, 1).await.expect("logs").len(), 1);
        assert!(matches!(
            p.destroy(id).await,
            Err(ProviderError::SandboxNotFound(_))
        ));
    }
    assert!(matches!(
        p.status("sb-never-made").await,
        Err(ProviderError::SandboxNotFound(_))
    ));
}
