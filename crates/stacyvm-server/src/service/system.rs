//! Health, readiness, provider status, and the summaries behind diagnostics and metrics.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::Value;
use stacyvm_types::SandboxState;

use super::{QueueStats, QuotaSummary, Service, WorkerCounts};
use crate::error::{ServiceError, ServiceResult};
use crate::metrics::{Gauges, HistorySnapshot, RequestMetrics};
use crate::ops::OpStats;

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

/// One provider, for `GET /providers/{name}`.
#[derive(Debug, Clone)]
pub struct ProviderDetail {
    pub name: String,
    pub default: bool,
    pub sandbox_count: usize,
    /// `None` when the registry no longer lists it.
    pub health: Option<ProviderHealth>,
    /// The backend's own redacted summary of its settings.
    pub config: Value,
    pub isolated: bool,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct SandboxCounts {
    pub total: usize,
    /// Running sandboxes.
    pub active: i64,
    pub by_state: BTreeMap<String, i64>,
    pub by_provider: BTreeMap<String, i64>,
    pub by_worker: BTreeMap<String, i64>,
    /// Why the figures are zero: the store could not be read.
    pub error: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct LeaseCounts {
    pub total: usize,
    pub active: usize,
    pub expired: usize,
    pub by_holder: BTreeMap<String, i64>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EventCounts {
    pub subscribers: usize,
    /// Events published since start.
    pub total: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StoreHealth {
    pub healthy: bool,
    pub latency_ms: f64,
    pub error: Option<String>,
}

/// The figures `/metrics`, `/diagnostics` and Prometheus share.
#[derive(Debug, Clone)]
pub struct Overview {
    pub sandboxes: SandboxCounts,
    pub workers: WorkerCounts,
    pub leases: LeaseCounts,
    pub events: EventCounts,
    /// `(operation, provider, figures)`.
    pub operations: Vec<(String, String, OpStats)>,
    pub scheduler: QueueStats,
    /// `None` when the store could not be read.
    pub quotas: Option<QuotaSummary>,
    pub providers: Vec<ProviderHealth>,
    pub uptime: Duration,
    /// Request-scoped tasks running (streams, proxied connections).
    pub tasks: usize,
}

/// [`Overview`] plus what only `/diagnostics` shows.
#[derive(Debug, Clone)]
pub struct Diagnostics {
    pub overview: Overview,
    pub store: StoreHealth,
    pub instance_id: String,
    pub background_leader: bool,
}

#[derive(Debug, Clone)]
pub struct ReadyReport {
    pub ready: bool,
    pub providers: Vec<ProviderHealth>,
}

/// Health, readiness, providers, and the figures behind `/metrics` and `/diagnostics`.
#[derive(Clone, Copy)]
pub struct System<'a> {
    svc: &'a Service,
}

impl Service {
    pub fn system(&self) -> System<'_> {
        System { svc: self }
    }
}

impl System<'_> {
    pub async fn provider_health(self) -> Vec<ProviderHealth> {
        let default = self.svc.providers.default_name().map(str::to_string);
        let checks = self.svc.providers.all().map(|p| {
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

    pub async fn ready(self) -> ReadyReport {
        let providers = self.provider_health().await;
        let ready = providers.iter().any(|p| p.healthy) && self.svc.store.ping().await.is_ok();
        ReadyReport { ready, providers }
    }

    pub async fn provider_detail(self, name: &str) -> ServiceResult<ProviderDetail> {
        let p = self
            .svc
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
        let sandbox_count = self
            .svc
            .store
            .list_sandboxes()
            .await?
            .iter()
            .filter(|s| s.provider == p.name())
            .count();
        Ok(ProviderDetail {
            name: p.name().to_string(),
            default: self.svc.providers.default_name() == Some(p.name()),
            sandbox_count,
            health,
            config: p.config_summary(),
            isolated: p.isolated(),
        })
    }

    /// Sandbox records by state, provider and worker; a store failure is reported in `error`.
    pub async fn sandbox_counts(self) -> SandboxCounts {
        match self.svc.store.list_sandboxes().await {
            Ok(list) => {
                let mut c = SandboxCounts {
                    total: list.len(),
                    ..SandboxCounts::default()
                };
                for s in &list {
                    *c.by_state.entry(s.state.to_string()).or_default() += 1;
                    *c.by_provider.entry(s.provider.clone()).or_default() += 1;
                    *c.by_worker
                        .entry(s.placement.worker_id().to_string())
                        .or_default() += 1;
                }
                c.active = c.by_state.get("running").copied().unwrap_or(0);
                c
            }
            Err(e) => SandboxCounts {
                error: Some(e.to_string()),
                ..SandboxCounts::default()
            },
        }
    }

    /// Leases, live and expired, by holder; a store failure is reported in `error`.
    pub async fn lease_counts(self) -> LeaseCounts {
        match self.svc.store.list_leases().await {
            Ok(ls) => {
                let now = chrono::Utc::now();
                let active = ls.iter().filter(|l| l.expires_at > now).count();
                let mut by_holder = BTreeMap::<String, i64>::new();
                for l in &ls {
                    *by_holder.entry(l.holder_id.clone()).or_default() += 1;
                }
                LeaseCounts {
                    total: ls.len(),
                    active,
                    expired: ls.len() - active,
                    by_holder,
                    error: None,
                }
            }
            Err(e) => LeaseCounts {
                error: Some(e.to_string()),
                ..LeaseCounts::default()
            },
        }
    }

    pub fn event_counts(self) -> EventCounts {
        EventCounts {
            subscribers: self.svc.events.subscribers(),
            total: self.svc.events.total(),
        }
    }

    /// Pings the store and times the answer.
    pub async fn store_health(self) -> StoreHealth {
        let started = Instant::now();
        let res = self.svc.store.ping().await;
        StoreHealth {
            healthy: res.is_ok(),
            latency_ms: started.elapsed().as_secs_f64() * 1000.0,
            error: res.err().map(|e| e.to_string()),
        }
    }

    pub async fn overview(self) -> Overview {
        let sandboxes = self.sandbox_counts().await;
        let workers = self.svc.workers().counts().await;
        let leases = self.lease_counts().await;
        let quotas = self.svc.quotas().summary().await.ok();
        Overview {
            sandboxes,
            workers,
            leases,
            events: self.event_counts(),
            operations: self.svc.ops.snapshot(),
            scheduler: self.svc.admission().stats(),
            quotas,
            providers: self.provider_health().await,
            uptime: self.svc.uptime(),
            tasks: self.svc.tasks.len(),
        }
    }

    /// The last hour of spawns, spawn latency and running sandboxes by worker, per minute
    /// (this control plane's own spawns; the console's charts).
    pub fn metrics_history(self) -> HistorySnapshot {
        self.svc.ops.history().snapshot(chrono::Utc::now())
    }

    /// Records the running sandboxes by worker into this minute of the history (the
    /// `history_sampler` task, once a minute). A store failure skips the minute.
    pub async fn sample_active(self) {
        let list = match self.svc.store.list_sandboxes().await {
            Ok(l) => l,
            Err(e) => {
                tracing::debug!(error = %e, "metrics history: sandboxes not sampled");
                return;
            }
        };
        let mut by_worker = BTreeMap::<String, i64>::new();
        for s in list.iter().filter(|s| s.state == SandboxState::Running) {
            *by_worker
                .entry(s.placement.worker_id().to_string())
                .or_default() += 1;
        }
        self.svc
            .ops
            .history()
            .sample_active_at(chrono::Utc::now(), by_worker);
    }

    /// Where the HTTP layer records request latency (this service's registry).
    pub fn request_metrics(self) -> RequestMetrics {
        self.svc.metrics.requests().clone()
    }

    /// The Prometheus text exposition: this scrape's `gauges` (built from [`Self::overview`]),
    /// then the series the service records as things happen (docs/metrics.md).
    pub fn prometheus(self, gauges: Gauges) -> String {
        self.svc.metrics.render(gauges)
    }

    pub async fn diagnostics(self) -> Diagnostics {
        let overview = self.overview().await;
        Diagnostics {
            overview,
            store: self.store_health().await,
            instance_id: self.svc.instance_id.clone(),
            background_leader: self.svc.leads_background().await,
        }
    }
}
