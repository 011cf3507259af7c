//! The store conformance suite on SQLite: every check on a fresh database file in a tempdir.

use std::sync::Arc;

use stacyvm_store::conformance::Backend;
use stacyvm_store::{SqliteStore, Store};

struct SqliteFile {
    dir: tempfile::TempDir,
}

impl SqliteFile {
    fn path(&self) -> String {
        self.dir.path().join("stacyvm.db").display().to_string()
    }
}

#[async_trait::async_trait]
impl Backend for SqliteFile {
    async fn connect(&self) -> Arc<dyn Store> {
        Arc::new(
            SqliteStore::open(&self.path())
                .await
                .expect("open sqlite store"),
        )
    }
}

async fn fresh() -> SqliteFile {
    SqliteFile {
        dir: tempfile::tempdir().expect("tempdir"),
    }
}

stacyvm_store::store_conformance_tests!(fresh);
