//! The store conformance suite on Postgres: every check on a fresh throwaway database
//! (`CREATE DATABASE t_<unique>`, dropped afterwards) on the server named by
//! `STACYVM_TEST_PG_DSN`. Without that server the checks print a notice and pass, except under
//! `CI=true`, where they fail.

use std::sync::Arc;

use stacyvm_store::conformance::Backend;
use stacyvm_store::pg_test_db::TestDb;
use stacyvm_store::Store;

struct PgBackend {
    db: Option<TestDb>,
}

#[async_trait::async_trait]
impl Backend for PgBackend {
    async fn connect(&self) -> Arc<dyn Store> {
        let db = self
            .db
            .as_ref()
            .expect("connect() called on an unavailable backend");
        Arc::new(db.open().await)
    }

    fn available(&self) -> bool {
        self.db.is_some()
    }
}

async fn fresh() -> PgBackend {
    PgBackend {
        db: TestDb::create().await,
    }
}

stacyvm_store::store_conformance_tests!(fresh);
