//! In-process event bus behind `GET /events` (SSE). Slow subscribers drop events, as the
//! original does; nothing is replayed.

use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{json, Map, Value};
use stacyvm_types::format_rfc3339_go;
use tokio::sync::broadcast;

#[derive(Debug, Clone)]
pub struct Event {
    pub id: String,
    pub kind: &'static str,
    pub sandbox_id: Option<String>,
    pub timestamp: stacyvm_types::Timestamp,
    pub data: Option<Map<String, Value>>,
}

impl Event {
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("id".into(), json!(self.id));
        m.insert("type".into(), json!(self.kind));
        if let Some(sb) = &self.sandbox_id {
            m.insert("sandbox_id".into(), json!(sb));
        }
        m.insert(
            "timestamp".into(),
            json!(format_rfc3339_go(&self.timestamp)),
        );
        if let Some(d) = &self.data {
            m.insert("data".into(), Value::Object(d.clone()));
        }
        Value::Object(m)
    }
}

pub struct EventBus {
    tx: broadcast::Sender<Event>,
    seq: AtomicU64,
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
        }
    }

    pub fn publish(&self, kind: &'static str, sandbox_id: Option<&str>, data: Option<Value>) {
        let n = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        let data = match data {
            Some(Value::Object(m)) => Some(m),
            _ => None,
        };
        // No receivers is fine: events are best-effort.
        let _ = self.tx.send(Event {
            id: format!("evt-{n}"),
            kind,
            sandbox_id: sandbox_id.map(str::to_string),
            timestamp: chrono::Utc::now(),
            data,
        });
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
