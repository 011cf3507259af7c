//! SQLite backend. (Placeholder: the store task replaces this file.)

use crate::StoreError;

/// Placeholder until the store task lands.
pub struct SqliteStore;

impl SqliteStore {
    pub async fn open(_path: &str) -> Result<Self, StoreError> {
        Err(StoreError::Unsupported("sqlite store not built yet".into()))
    }
}
