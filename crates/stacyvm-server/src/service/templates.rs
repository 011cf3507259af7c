//! Sandbox templates: stored spawn presets.

use std::collections::BTreeMap;

use stacyvm_store::{Template, TemplateSecret};
use stacyvm_types::Sandbox;

use super::bounds::{self, check_len, check_list, check_map, MAX_KEY, MAX_TEXT};
use super::{Caller, Service, SpawnParams};
use crate::error::{ServiceError, ServiceResult};

#[derive(Debug, Clone, Default)]
pub struct TemplateInput {
    pub name: String,
    pub version: i64,
    pub image: String,
    pub description: String,
    pub setup: Vec<String>,
    pub allowed_hosts: Vec<String>,
    pub memory_mb: i64,
    pub cpu_cores: i64,
    pub ttl_seconds: i64,
    pub env: BTreeMap<String, String>,
    pub secrets: Vec<TemplateSecret>,
    pub pool_size: i64,
}

pub(super) fn validate_name(name: &str) -> ServiceResult<()> {
    if name.trim().is_empty() {
        return Err(ServiceError::bad_request("template name is required"));
    }
    if name.len() > bounds::MAX_NAME
        || name
            .chars()
            .any(|c| c == '/' || c.is_whitespace() || c.is_control())
    {
        return Err(ServiceError::bad_request(
            "template name must be ≤128 characters without '/', whitespace or control characters",
        ));
    }
    Ok(())
}

impl TemplateInput {
    /// Validates and fills defaults (version 1, 512 MiB, 1 core, 300 s).
    fn into_template(self) -> ServiceResult<Template> {
        validate_name(&self.name)?;
        if self.image.trim().is_empty() {
            return Err(ServiceError::bad_request("template image is required"));
        }
        check_len("image", &self.image, bounds::MAX_IMAGE)?;
        check_len("description", &self.description, MAX_TEXT)?;
        check_list("setup", self.setup.iter().map(String::as_str), MAX_TEXT)?;
        check_list(
            "allowed_hosts",
            self.allowed_hosts.iter().map(String::as_str),
            MAX_KEY,
        )?;
        check_map("env", &self.env)?;
        check_list(
            "secrets",
            self.secrets.iter().map(|s| s.name.as_str()),
            MAX_KEY,
        )?;
        check_list(
            "secrets",
            self.secrets.iter().map(|s| s.inject_at.as_str()),
            MAX_KEY,
        )?;
        for (field, v) in [
            ("version", self.version),
            ("memory_mb", self.memory_mb),
            ("cpu_cores", self.cpu_cores),
            ("ttl_seconds", self.ttl_seconds),
            ("pool_size", self.pool_size),
        ] {
            if v < 0 {
                return Err(ServiceError::bad_request(format!(
                    "{field} must not be negative"
                )));
            }
        }
        let now = chrono::Utc::now();
        let or = |v: i64, d: i64| if v == 0 { d } else { v };
        Ok(Template {
            name: self.name.trim().to_string(),
            version: or(self.version, 1),
            image: self.image.trim().to_string(),
            description: self.description,
            setup: self.setup,
            allowed_hosts: self.allowed_hosts,
            memory_mb: or(self.memory_mb, 512),
            cpu_cores: or(self.cpu_cores, 1),
            ttl_seconds: or(self.ttl_seconds, 300),
            env: self.env,
            secrets: self.secrets,
            pool_size: self.pool_size,
            created_at: now,
            updated_at: now,
        })
    }
}

/// Stored spawn presets.
#[derive(Clone, Copy)]
pub struct Templates<'a> {
    svc: &'a Service,
}

impl Service {
    pub fn templates(&self) -> Templates<'_> {
        Templates { svc: self }
    }
}

impl Templates<'_> {
    pub async fn create(self, input: TemplateInput) -> ServiceResult<Template> {
        let t = input.into_template()?;
        match self.svc.store.create_template(&t).await {
            Ok(()) => Ok(t),
            Err(stacyvm_store::StoreError::Conflict(_)) => {
                Err(ServiceError::Conflict("template already exists".into()))
            }
            Err(e) => Err(e.into()),
        }
    }

    pub async fn get(self, name: &str) -> ServiceResult<Template> {
        Ok(self.svc.store.get_template(name).await?)
    }

    pub async fn list(self) -> ServiceResult<Vec<Template>> {
        Ok(self.svc.store.list_templates().await?)
    }

    /// Full replace; the name comes from the path.
    pub async fn replace(self, name: &str, mut input: TemplateInput) -> ServiceResult<Template> {
        input.name = name.to_string();
        let t = input.into_template()?;
        self.svc.store.replace_template(&t).await?;
        Ok(self.svc.store.get_template(name).await?)
    }

    pub async fn delete(self, name: &str) -> ServiceResult<()> {
        Ok(self.svc.store.delete_template(name).await?)
    }

    pub async fn spawn(
        self,
        name: &str,
        provider: Option<String>,
        ttl: Option<String>,
        caller: &Caller,
    ) -> ServiceResult<Sandbox> {
        let t = self.svc.store.get_template(name).await?;
        let mut metadata = BTreeMap::new();
        metadata.insert("template".to_string(), t.name.clone());
        let p = SpawnParams {
            image: t.image.clone(),
            provider: provider.unwrap_or_default(),
            memory_mb: t.memory_mb,
            vcpus: t.cpu_cores,
            ttl: ttl
                .filter(|s| !s.trim().is_empty())
                .unwrap_or_else(|| format!("{}s", t.ttl_seconds)),
            owner_id: String::new(),
            template: t.name.clone(),
            metadata,
            ..SpawnParams::default()
        };
        self.svc.sandboxes().spawn(p, caller).await
    }
}
