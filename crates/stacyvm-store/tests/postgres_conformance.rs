//! The store conformance suite on Postgres: every check on a fresh throwaway database
//! (`CREATE DATABASE t_<unique>`, dropped afterwards) on the server named by
//! `STACYVM_TEST_PG_DSN`. Without that server the checks fail; the default nextest profile leaves
//! this binary out (profiles `pg` and `ci` select it).

use std::sync::Arc;

use stacyvm_store::conformance::Backend;
use stacyvm_store::pg_test_db::TestDb;
use stacyvm_store::Store;

struct PgBackend {
    db: TestDb,
}

#[async_trait::async_trait]
impl Backend for PgBackend {
    async fn connect(&self) -> Arc<dyn Store> {
        Arc::new(self.db.open().await)
    }
}

async fn fresh() -> PgBackend {
    PgBackend {
        db: TestDb::create().await,
    }
}

stacyvm_store::store_conformance_tests!(fresh);
