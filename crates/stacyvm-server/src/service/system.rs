//! Health, readiness, provider status, and the summaries behind diagnostics and metrics.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use stacyvm_types::{format_rfc3339_secs, GoDuration};

use super::Service;
use crate::error::{ServiceError, ServiceResult};

const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, PartialEq)]
pub struct ProviderHealth {
    pub name: String,
    pub healthy: bool,
    pub default: bool,
    pub latency_ms: f64,
    pub last_checked: chrono::DateTime<chrono::Utc>,
    pub error: Option<String>,
    pub capabilities: Vec<&'static str>,
    pub isolated: bool,
}

impl ProviderHealth {
    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "name": self.name, "healthy": self.healthy, "default": self.default,
            "latency_ms": self.latency_ms, "last_checked": format_rfc3339_secs(&self.last_checked),
            "capabilities": self.capabilities,
        });
        if let Some(e) = &self.error {
            v["error"] = json!(e);
        }
        v
    }
}

#[derive(Debug, Clone)]
pub struct ReadyReport {
    pub ready: bool,
    pub providers: Vec<ProviderHealth>,
}

impl Service {
    pub async fn provider_health(&self) -> Vec<ProviderHealth> {
        let default = self.providers.default_name().map(str::to_string);
        let checks = self.providers.all().map(|p| {
            let p = p.clone();
            let default = default.clone();
            async move {
                let started = Instant::now();
                let res = tokio::time::timeout(HEALTH_TIMEOUT, p.health()).await;
                let error = match res {
                    Ok(Ok(())) => None,
                    Ok(Err(e)) => Some(e.to_string()),
                    Err(_) => Some("health check timed out".to_string()),
                };
                ProviderHealth {
                    name: p.name().to_string(),
                    healthy: error.is_none(),
                    default: default.as_deref() == Some(p.name()),
                    latency_ms: started.elapsed().as_secs_f64() * 1000.0,
                    last_checked: chrono::Utc::now(),
                    error,
                    capabilities: p.capabilities(),
                    isolated: p.isolated(),
                }
            }
        });
        futures_util::future::join_all(checks).await
    }

    pub async fn ready(&self) -> ReadyReport {
        let providers = self.provider_health().await;
        let ready = providers.iter().any(|p| p.healthy) && self.store.ping().await.is_ok();
        ReadyReport { ready, providers }
    }

    pub async fn provider_detail(&self, name: &str) -> ServiceResult<Value> {
        let p = self
            .providers
            .get(name)
            .map_err(|_| ServiceError::ProviderNotFound(name.into()))?;
        if name.is_empty() {
            return Err(ServiceError::ProviderNotFound(String::new()));
        }
        let health = self
            .provider_health()
            .await
            .into_iter()
            .find(|h| h.name == p.name());
        let count = self
            .store
            .list_sandboxes()
            .await?
            .iter()
            .filter(|s| s.provider == p.name())
            .count();
        Ok(json!({
            "name": p.name(),
            "healthy": health.as_ref().is_some_and(|h| h.healthy),
            "default": self.providers.default_name() == Some(p.name()),
            "sandbox_count": count,
            "health": health.map(|h| h.to_json()),
            "config": p.config_summary(),
            "isolated": p.isolated(),
        }))
    }

    pub async fn sandboxes_summary(&self) -> Value {
        match self.store.list_sandboxes().await {
            Ok(list) => {
                let mut by_state = BTreeMap::<String, i64>::new();
                let mut by_provider = BTreeMap::<String, i64>::new();
                let mut by_worker = BTreeMap::<String, i64>::new();
                for s in &list {
                    *by_state.entry(s.state.to_string()).or_default() += 1;
                    *by_provider.entry(s.provider.clone()).or_default() += 1;
                    *by_worker.entry(s.worker_id.clone()).or_default() += 1;
                }
                let active = by_state.get("running").copied().unwrap_or(0);
                json!({"total": list.len(), "active": active, "by_state": by_state,
                    "by_provider": by_provider, "by_worker": by_worker})
            }
            Err(e) => {
                json!({"total":0,"active":0,"by_state":{},"by_provider":{},"by_worker":{},"error":e.to_string()})
            }
        }
    }

    pub async fn leases_summary(&self) -> Value {
        match self.store.list_leases().await {
            Ok(ls) => {
                let now = chrono::Utc::now();
                let active = ls.iter().filter(|l| l.expires_at > now).count();
                let mut by_holder = BTreeMap::<String, i64>::new();
                for l in &ls {
                    *by_holder.entry(l.holder_id.clone()).or_default() += 1;
                }
                json!({"total": ls.len(), "active": active, "expired": ls.len() - active, "by_holder": by_holder})
            }
            Err(e) => {
                json!({"total":0,"active":0,"expired":0,"by_holder":{},"error":e.to_string()})
            }
        }
    }

    pub fn events_summary(&self) -> Value {
        json!({"subscribers": self.events.subscribers(), "history_size": 0, "events_total": self.events.total()})
    }

    pub fn uptime_string(&self) -> String {
        GoDuration::from_std(self.uptime()).to_string()
    }
}
