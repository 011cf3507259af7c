//! In-process event bus behind `GET /events` (SSE). Slow subscribers drop events, as the
//! original does; nothing is replayed.
//!
//! When the store offers an [`EventBridge`] (Postgres), [`run_bridge`] forwards this control
//! plane's events to the others and injects theirs, so `/events` on any control plane shows
//! events from all of them. A bridge payload is `{"origin": <instance id>, "events": [..]}`;
//! a control plane ignores payloads with its own origin (NOTIFY reaches the sender too).
//! Kinds are the closed [`EventKind`]: a peer's event of a kind this build does not know (a
//! newer control plane during a rolling upgrade) is not shown here.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use serde::Serialize;
use serde_json::{Map, Value};
use stacyvm_store::{EventBridge, MAX_EVENT_PAYLOAD};
use stacyvm_types::{format_rfc3339_go, EventKind, SandboxId};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub struct Event {
    pub id: String,
    pub kind: EventKind,
    pub sandbox_id: Option<SandboxId>,
    pub timestamp: stacyvm_types::Timestamp,
    pub data: Option<EventData>,
    /// Came from another control plane through the bridge (never forwarded again).
    pub remote: bool,
}

/// What an event says beyond its type. The service publishes these typed values; they become
/// JSON only when an event is written out (`/events`, the bridge). Each variant's fields are in
/// alphabetical order: the bytes match the sorted maps events have always carried.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum EventData {
    /// An operation failed, timed out or hit a limit.
    Failure {
        error: String,
        operation: &'static str,
        provider: String,
    },
    /// A spawn entered, left or timed out of the spawn queue.
    Queue {
        #[serde(skip_serializing_if = "Option::is_none")]
        depth: Option<i64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        operation: &'static str,
        owner_id: String,
        provider: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        wait_ms: Option<u64>,
    },
    QuotaSaved {
        max_exec_timeout: String,
        max_sandboxes: i64,
        max_ttl: String,
        owner_id: String,
    },
    QuotaDeleted {
        owner_id: String,
    },
    /// A background process started or exited (`exit_code`/`signal` only on exit).
    Process {
        command: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        exit_code: Option<i32>,
        pid: stacyvm_types::Pid,
        #[serde(skip_serializing_if = "Option::is_none")]
        signal: Option<&'static str>,
        #[serde(skip_serializing_if = "String::is_empty")]
        tag: String,
    },
    /// Reconciliation (or an admin drain) changed a sandbox, runtime or worker.
    Reconcile(ReconcileAction),
    /// Another control plane's data, as it sent it.
    Remote(Map<String, Value>),
}

impl EventData {
    /// `{"command", "exit_code"?, "pid", "signal"?, "tag"?}` of a process.
    pub fn process(p: &stacyvm_types::ProcessInfo) -> Self {
        EventData::Process {
            command: p.command.clone(),
            exit_code: p.exit_code,
            pid: p.pid,
            signal: p.signal.map(stacyvm_types::Signal::as_str),
            tag: p.tag.clone(),
        }
    }

    /// `{"operation", "provider", "error"}`.
    pub fn failure(operation: &'static str, provider: &str, error: impl Into<String>) -> Self {
        EventData::Failure {
            error: error.into(),
            operation,
            provider: provider.to_string(),
        }
    }
}

/// The data of a `reconcile.action` event: the action, and where and why when known.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReconcileAction {
    pub action: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
}

impl ReconcileAction {
    pub fn new(action: impl Into<String>) -> Self {
        ReconcileAction {
            action: action.into(),
            provider: None,
            reason: None,
            worker: None,
        }
    }

    pub fn provider(mut self, provider: impl Into<String>) -> Self {
        self.provider = Some(provider.into());
        self
    }

    pub fn reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }

    pub fn worker(mut self, worker: impl Into<String>) -> Self {
        self.worker = Some(worker.into());
        self
    }
}

impl From<ReconcileAction> for EventData {
    fn from(a: ReconcileAction) -> Self {
        EventData::Reconcile(a)
    }
}

/// An event as `/events` and the bridge carry it (keys in alphabetical order).
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = Event, description = "One server-sent event (`GET /events`).")]
pub(crate) struct EventWire<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    data: Option<&'a EventData>,
    #[schema(example = "evt-1")]
    id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    sandbox_id: Option<&'a str>,
    #[schema(format = DateTime)]
    timestamp: String,
    /// sandbox.created, sandbox.running, sandbox.destroyed, exec.started, exec.completed,
    /// exec.failed, exec.timeout, file.written, file.read, operation.failed, provider.failed,
    /// resource.limit, spawn.queued, spawn.dequeued, spawn.queue_timeout, quota.saved,
    /// quota.deleted, reconcile.action, process.started, process.exited
    #[serde(rename = "type")]
    #[schema(example = "sandbox.created")]
    kind: &'static str,
}

impl Serialize for Event {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        EventWire {
            data: self.data.as_ref(),
            id: &self.id,
            sandbox_id: self.sandbox_id.as_deref(),
            timestamp: format_rfc3339_go(&self.timestamp),
            kind: self.kind.as_str(),
        }
        .serialize(s)
    }
}

impl Event {
    /// An event another control plane sent (its wire shape); `None` when malformed or of a
    /// kind this build does not know.
    fn from_remote(v: &Value) -> Option<Event> {
        let o = v.as_object()?;
        Some(Event {
            id: o.get("id")?.as_str()?.to_string(),
            kind: o.get("type")?.as_str()?.parse().ok()?,
            sandbox_id: o
                .get("sandbox_id")
                .and_then(Value::as_str)
                .map(SandboxId::from),
            timestamp: o
                .get("timestamp")
                .and_then(Value::as_str)
                .and_then(stacyvm_types::parse_rfc3339)
                .unwrap_or_else(chrono::Utc::now),
            data: o
                .get("data")
                .and_then(Value::as_object)
                .cloned()
                .map(EventData::Remote),
            remote: true,
        })
    }
}

/// Local events waiting to be sent over the bridge; beyond this they are dropped.
const FORWARD_QUEUE: usize = 1024;

pub struct EventBus {
    tx: broadcast::Sender<Event>,
    seq: AtomicU64,
    /// Set while a bridge runs: local events are also queued for it.
    forward: OnceLock<mpsc::Sender<Event>>,
}

impl Default for EventBus {
    fn default() -> Self {
        Self::new()
    }
}

impl EventBus {
    pub fn new() -> Self {
        let (tx, _) = broadcast::channel(64);
        EventBus {
            tx,
            seq: AtomicU64::new(0),
            forward: OnceLock::new(),
        }
    }

    pub fn publish(
        &self,
        kind: EventKind,
        sandbox_id: Option<&SandboxId>,
        data: Option<EventData>,
    ) {
        let n = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        let ev = Event {
            id: format!("evt-{n}"),
            kind,
            sandbox_id: sandbox_id.cloned(),
            timestamp: chrono::Utc::now(),
            data,
            remote: false,
        };
        if let Some(fwd) = self.forward.get() {
            // A full queue (bridge stalled) drops the event for other control planes only.
            let _ = fwd.try_send(ev.clone());
        }
        // No receivers is fine: events are best-effort.
        let _ = self.tx.send(ev);
    }

    /// Delivers another control plane's event to local subscribers.
    fn inject(&self, ev: Event) {
        let _ = self.tx.send(ev);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }

    pub fn subscribers(&self) -> usize {
        self.tx.receiver_count()
    }

    pub fn total(&self) -> u64 {
        self.seq.load(Ordering::Relaxed)
    }
}

/// Joins `bus` to the other control planes through `bridge` until `cancel` fires. `on_remote`
/// sees every injected event (e.g. to wake spawns queued for capacity another control plane
/// freed). One bridge per bus: a second call returns at once.
pub async fn run_bridge(
    bus: &EventBus,
    bridge: Arc<dyn EventBridge>,
    origin: &str,
    cancel: CancellationToken,
    on_remote: impl Fn(&Event),
) {
    let (tx, mut local) = mpsc::channel(FORWARD_QUEUE);
    if bus.forward.set(tx).is_err() {
        return;
    }
    let mut incoming = bridge.subscribe();
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            ev = local.recv() => {
                let Some(ev) = ev else { return };
                let mut batch = vec![ev];
                while let Ok(more) = local.try_recv() {
                    batch.push(more);
                }
                for payload in payloads(origin, &batch) {
                    if let Err(e) = bridge.publish(&payload).await {
                        tracing::warn!(error = %e, "event bridge: publish failed");
                    }
                }
            }
            msg = incoming.recv() => match msg {
                Ok(payload) => {
                    for ev in remote_events(origin, &payload) {
                        on_remote(&ev);
                        bus.inject(ev);
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "event bridge: fell behind");
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }
}

/// Packs events into as few payloads as fit the bridge's size limit. An event too large to
/// travel alone is dropped (it still reached local subscribers).
fn payloads(origin: &str, events: &[Event]) -> Vec<String> {
    let envelope = |items: &[String]| {
        format!(
            "{{\"origin\":{},\"events\":[{}]}}",
            Value::from(origin),
            items.join(",")
        )
    };
    let overhead = envelope(&[]).len();
    let mut out = Vec::new();
    let mut items: Vec<String> = Vec::new();
    let mut size = overhead;
    for ev in events {
        let item = serde_json::to_string(ev).unwrap_or_default();
        if overhead + item.len() > MAX_EVENT_PAYLOAD {
            tracing::warn!(kind = %ev.kind, bytes = item.len(), "event bridge: event too large, not forwarded");
            continue;
        }
        let sep = usize::from(!items.is_empty());
        if size + sep + item.len() > MAX_EVENT_PAYLOAD {
            out.push(envelope(&items));
            items.clear();
            size = overhead;
        }
        size += usize::from(!items.is_empty()) + item.len();
        items.push(item);
    }
    if !items.is_empty() {
        out.push(envelope(&items));
    }
    out
}

/// The events of a payload from another control plane; none for our own or malformed ones.
fn remote_events(origin: &str, payload: &str) -> Vec<Event> {
    let Ok(v) = serde_json::from_str::<Value>(payload) else {
        return Vec::new();
    };
    if v.get("origin").and_then(Value::as_str) == Some(origin) {
        return Vec::new();
    }
    v.get("events")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Event::from_remote).collect())
        .unwrap_or_default()
}

#[cfg(test)]
#[path = "events_tests.rs"]
mod tests;
