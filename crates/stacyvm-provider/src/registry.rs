use std::collections::BTreeMap;
use std::sync::Arc;

use crate::{Provider, ProviderError};

/// The providers a process runs, by name, with an optional default.
#[derive(Clone, Default)]
pub struct ProviderRegistry {
    providers: BTreeMap<String, Arc<dyn Provider>>,
    default: Option<String>,
}

impl ProviderRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn register(&mut self, p: Arc<dyn Provider>) {
        self.providers.insert(p.name().to_string(), p);
    }

    /// Sets the default; ignored (returns false) when no provider has that name.
    pub fn set_default(&mut self, name: &str) -> bool {
        if self.providers.contains_key(name) {
            self.default = Some(name.to_string());
            true
        } else {
            false
        }
    }

    pub fn default_name(&self) -> Option<&str> {
        self.default.as_deref()
    }

    /// Looks up `name`, or the default when `name` is empty.
    pub fn get(&self, name: &str) -> Result<Arc<dyn Provider>, ProviderError> {
        let key = if name.is_empty() {
            self.default.as_deref().unwrap_or("")
        } else {
            name
        };
        self.providers
            .get(key)
            .cloned()
            .ok_or_else(|| ProviderError::ProviderNotFound(key.to_string()))
    }

    pub fn names(&self) -> Vec<String> {
        self.providers.keys().cloned().collect()
    }

    pub fn all(&self) -> impl Iterator<Item = &Arc<dyn Provider>> {
        self.providers.values()
    }

    pub fn is_empty(&self) -> bool {
        self.providers.is_empty()
    }

    /// Calls every provider's [`Provider::shutdown`], one after another, each bounded by
    /// `limit`.
    pub async fn shutdown(&self, limit: std::time::Duration) {
        for (name, p) in &self.providers {
            if tokio::time::timeout(limit, p.shutdown()).await.is_err() {
                tracing::warn!(provider = %name, "provider shutdown timed out");
            }
        }
    }
}
