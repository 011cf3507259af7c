//! How to reach the runtime of a sandbox: its local backend, or a [`RemoteProvider`] that
//! forwards every call to the owning worker over its RPC.

use std::sync::Arc;

use serde_json::Value;
use stacyvm_provider::Provider;
use stacyvm_store::WorkerRecord;
use stacyvm_types::{GoDuration, Placement, Sandbox, SandboxId, Timestamp, WorkerId};

use super::{lease_ttl, Service};
use crate::error::{ServiceError, ServiceResult};
use crate::remote::RemoteProvider;

/// The RPC address a worker advertised in its heartbeat (`capacity.rpc_url`), if any.
pub(super) fn rpc_url(w: &WorkerRecord) -> Option<&str> {
    w.capacity
        .get("rpc_url")
        .and_then(Value::as_str)
        .filter(|u| !u.is_empty())
}

impl Service {
    /// The client and address for calling worker `w`.
    pub(super) fn remote_endpoint(
        &self,
        w: &WorkerRecord,
    ) -> ServiceResult<(Arc<crate::remote::WorkerClient>, crate::remote::Endpoint)> {
        let client = self.remote.clone().ok_or_else(|| {
            ServiceError::Unavailable("remote worker RPC is not configured".into())
        })?;
        let rpc_url = rpc_url(w)
            .ok_or_else(|| ServiceError::Unavailable(format!("worker {} has no rpc_url", w.id)))?;
        let endpoint = crate::remote::Endpoint {
            worker_id: w.id.clone(),
            rpc_url: rpc_url.to_string(),
        };
        Ok((client, endpoint))
    }

    /// The provider that runs `sb`: a local backend, or a [`RemoteProvider`] that forwards to the
    /// owning worker.
    pub(super) async fn provider_for(&self, sb: &Sandbox) -> ServiceResult<Arc<dyn Provider>> {
        let Placement::Remote(worker) = &sb.placement else {
            return Ok(self.providers.get(&sb.provider)?);
        };
        let remote = self
            .remote_provider(&sb.id, worker, &sb.provider, sb.expires_at)
            .await?;
        Ok(Arc::new(remote))
    }

    pub(super) async fn remote_provider(
        &self,
        sandbox_id: &SandboxId,
        worker_id: &WorkerId,
        provider: &str,
        expires_at: Timestamp,
    ) -> ServiceResult<RemoteProvider> {
        let w = self.registered_worker(worker_id).await?;
        self.remote_provider_on(&w, sandbox_id, provider, expires_at)
    }

    /// Provider `provider` on worker `worker` (a volume's or snapshot's `worker_id`): a local
    /// backend, or the worker's through its RPC. 409 `WORKER_UNAVAILABLE` for a remote worker
    /// that is not registered, silent or too old to hold them: its volumes and snapshots are
    /// unavailable then, not lost.
    pub(super) async fn provider_on_worker(
        &self,
        worker: &str,
        provider: &str,
    ) -> ServiceResult<Arc<dyn Provider>> {
        let id = WorkerId::from(worker);
        if id.is_local() {
            return Ok(self.providers.get(provider)?);
        }
        let w = match self.store.get_worker(&id).await {
            Ok(w) => w,
            Err(e) if e.is_not_found() => {
                return Err(ServiceError::WorkerUnavailable(format!(
                    "worker {id} is not registered"
                )))
            }
            Err(e) => return Err(e.into()),
        };
        self.state_provider_on(&w, provider)
            .map(|p| Arc::new(p) as Arc<dyn Provider>)
    }

    /// A [`RemoteProvider`] for `w`'s volumes and snapshots (bound to no sandbox).
    fn state_provider_on(&self, w: &WorkerRecord, provider: &str) -> ServiceResult<RemoteProvider> {
        if self.is_stale(w) {
            return Err(ServiceError::WorkerUnavailable(format!(
                "worker {} is not answering its heartbeats",
                w.id
            )));
        }
        if !super::placement::has_capability(w, stacyvm_protocol::capability::STATE) {
            return Err(ServiceError::WorkerUnavailable(format!(
                "worker {} is too old to hold volumes or snapshots; upgrade it",
                w.id
            )));
        }
        // No sandbox: the calls name their volume or snapshot, and take no lease.
        self.remote_provider_on(w, &SandboxId::random(), provider, chrono::Utc::now())
    }

    /// Every provider that may hold volumes or snapshots of this installation: the local ones,
    /// and each provider of each answering remote worker with the `state` capability. For the
    /// reconcile pass's sweeps.
    pub(super) async fn state_holders(&self) -> ServiceResult<Vec<Arc<dyn Provider>>> {
        let mut out: Vec<Arc<dyn Provider>> = self.providers.all().cloned().collect();
        for w in self.store.list_workers().await? {
            if w.id.is_local() || self.remote.is_none() {
                continue;
            }
            let names = match w.providers.as_deref() {
                Some(list) if !list.is_empty() => list.to_vec(),
                _ => vec![String::new()],
            };
            for name in names {
                if let Ok(p) = self.state_provider_on(&w, &name) {
                    out.push(Arc::new(p));
                }
            }
        }
        Ok(out)
    }

    /// A worker record for routing; a missing one is `Unavailable` (the owner is gone).
    pub(super) async fn registered_worker(
        &self,
        worker_id: &WorkerId,
    ) -> ServiceResult<WorkerRecord> {
        match self.store.get_worker(worker_id).await {
            Ok(w) => Ok(w),
            Err(e) if e.is_not_found() => Err(ServiceError::Unavailable(format!(
                "worker {worker_id} is not registered"
            ))),
            Err(e) => Err(e.into()),
        }
    }

    /// [`Self::remote_provider`] for an already loaded worker record.
    pub(super) fn remote_provider_on(
        &self,
        w: &WorkerRecord,
        sandbox_id: &SandboxId,
        provider: &str,
        expires_at: Timestamp,
    ) -> ServiceResult<RemoteProvider> {
        let (client, endpoint) = self.remote_endpoint(w)?;
        let has = |cap: &str| super::placement::has_capability(w, cap);
        let remaining = (expires_at - chrono::Utc::now())
            .to_std()
            .unwrap_or_default();
        Ok(RemoteProvider {
            client,
            endpoint,
            store: self.store.clone(),
            provider: provider.to_string(),
            sandbox_id: sandbox_id.clone(),
            lease_ttl: lease_ttl(remaining),
            ttl: GoDuration::from_std(remaining),
            file_stream: has(stacyvm_protocol::capability::FILE_STREAM),
            watch: has(stacyvm_protocol::capability::WATCH),
            user: has(stacyvm_protocol::capability::USER),
            state: has(stacyvm_protocol::capability::STATE),
        })
    }
}
