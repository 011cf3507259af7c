//! Helpers shared by the mock provider's test files.

#![allow(dead_code, clippy::unwrap_used)]

use std::path::PathBuf;

use bytes::Bytes;
use stacyvm_provider::conformance::{self, exec_collect, sh};
use stacyvm_provider::{MockProvider, Provider};

pub struct Fixture {
    pub _base: tempfile::TempDir,
    pub base: PathBuf,
    pub p: MockProvider,
}

/// The suite runs on `p`; the fixture keeps its base directory alive.
impl conformance::Fixture for Fixture {
    fn provider(&self) -> &dyn Provider {
        &self.p
    }
}

/// The agent built from this checkout; process tests need it (scripts/test.sh builds it).
pub fn agent() -> PathBuf {
    stacyvm_provider::agent::built().expect(
        "no stacyvm-agent: cd crates/stacyvm-agent && cargo build --release (or set STACYVM_AGENT)",
    )
}

pub fn fixture() -> Fixture {
    let base = tempfile::tempdir().unwrap();
    let path = base.path().canonicalize().unwrap();
    Fixture {
        p: MockProvider::with_base_dir(&path).with_agent(agent()),
        base: path,
        _base: base,
    }
}

pub async fn spawn(p: &MockProvider) -> (String, PathBuf) {
    let spec = conformance::spec("mock");
    let id = p.spawn(&spec).await.unwrap().runtime_id;
    assert_eq!(id, spec.id, "the mock uses the spec id as runtime id");
    let root = p.host_root(&id).unwrap();
    (id, root)
}

pub async fn write(
    p: &MockProvider,
    id: &str,
    path: &str,
    data: &'static [u8],
    mode: Option<&str>,
) {
    p.write_file(id, path, Bytes::from_static(data), mode)
        .await
        .unwrap();
}

pub async fn stdout(p: &MockProvider, id: &str, cmd: &str) -> String {
    let c = exec_collect(p, id, sh(cmd)).await;
    assert_eq!(c.result.as_ref().ok(), Some(&0), "{cmd}: {c:?}");
    c.stdout_str()
}
