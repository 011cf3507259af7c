//! What `stacyvm top` shows, without a terminal: the three lists, the selection, the filter,
//! the prompt and the status line. The fetchers send [`Update`]s in, keys come in through
//! `input.rs`, and `render.rs` only reads.

use std::collections::VecDeque;

use chrono::{DateTime, Utc};
use serde_json::Value;

/// Events kept for the Events view (newest first).
pub(super) const EVENT_HISTORY: usize = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Tab {
    Sandboxes,
    Workers,
    Events,
}

impl Tab {
    pub(super) const ALL: [Tab; 3] = [Tab::Sandboxes, Tab::Workers, Tab::Events];

    pub(super) fn title(self) -> &'static str {
        match self {
            Tab::Sandboxes => "Sandboxes",
            Tab::Workers => "Workers",
            Tab::Events => "Events",
        }
    }

    pub(super) fn index(self) -> usize {
        match self {
            Tab::Sandboxes => 0,
            Tab::Workers => 1,
            Tab::Events => 2,
        }
    }

    pub(super) fn next(self) -> Tab {
        Tab::ALL[(self.index() + 1) % Tab::ALL.len()]
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(super) struct SandboxRow {
    pub id: String,
    pub state: String,
    pub provider: String,
    pub worker: String,
    pub image: String,
    pub created_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq)]
pub(super) struct WorkerRow {
    pub id: String,
    /// `stale` when the server says so, else the worker's status (`online`, `draining`, ...).
    pub health: String,
    pub last_heartbeat: Option<DateTime<Utc>>,
    pub capacity: String,
}

#[derive(Debug, Clone, PartialEq)]
pub(super) struct EventRow {
    pub kind: String,
    pub sandbox: String,
    pub at: Option<DateTime<Utc>>,
    /// The event's `data` as compact JSON, empty when it has none.
    pub data: String,
}

/// The live event stream's state, shown in the header.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Stream {
    Connecting,
    Live,
    Down(String),
}

/// What the fetchers tell the UI.
#[derive(Debug)]
pub(super) enum Update {
    Sandboxes(Result<Vec<SandboxRow>, String>),
    Workers(Result<Vec<WorkerRow>, String>),
    Event(EventRow),
    Stream(Stream),
    /// The outcome of an action (destroy), for the status line.
    Notice(Result<String, String>),
}

/// What a key asks the caller to do beyond changing the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Action {
    None,
    Quit,
    Refresh,
    Shell(String),
    Destroy(String),
}

/// Which line the keyboard is typing into, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Mode {
    Normal,
    Filter,
    /// `d` was pressed on this sandbox: `y` destroys it, anything else cancels.
    ConfirmDestroy(String),
}

#[derive(Debug)]
pub(super) struct App {
    pub tab: Tab,
    pub sandboxes: Vec<SandboxRow>,
    pub workers: Vec<WorkerRow>,
    /// Newest first.
    pub events: VecDeque<EventRow>,
    /// Index into the filtered rows of each tab.
    pub selected: [usize; 3],
    pub filter: String,
    pub mode: Mode,
    pub stream: Stream,
    /// The last failed list fetch (sandboxes, workers); cleared by the next success.
    pub errors: [Option<String>; 2],
    /// The last action's outcome: `Ok` notice or `Err` message.
    pub notice: Option<Result<String, String>>,
    /// Rows one PgUp/PgDn moves (the table's height, set by the caller).
    pub page: usize,
    /// Whether the sandbox list has been fetched at least once.
    pub loaded: bool,
}

impl Default for App {
    fn default() -> Self {
        App {
            tab: Tab::Sandboxes,
            sandboxes: Vec::new(),
            workers: Vec::new(),
            events: VecDeque::new(),
            selected: [0; 3],
            filter: String::new(),
            mode: Mode::Normal,
            stream: Stream::Connecting,
            errors: [None, None],
            notice: None,
            page: 10,
            loaded: false,
        }
    }
}

impl App {
    pub(super) fn apply(&mut self, u: Update) {
        match u {
            Update::Sandboxes(Ok(mut rows)) => {
                let keep = self.selected_sandbox().map(|s| s.id.clone());
                rows.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.id.cmp(&b.id)));
                self.sandboxes = rows;
                self.errors[0] = None;
                self.loaded = true;
                if let Some(id) = keep {
                    self.reselect(Tab::Sandboxes, &id);
                }
            }
            Update::Workers(Ok(mut rows)) => {
                let keep = self.selected_worker().map(|w| w.id.clone());
                rows.sort_by(|a, b| a.id.cmp(&b.id));
                self.workers = rows;
                self.errors[1] = None;
                if let Some(id) = keep {
                    self.reselect(Tab::Workers, &id);
                }
            }
            Update::Sandboxes(Err(e)) => self.errors[0] = Some(e),
            Update::Workers(Err(e)) => self.errors[1] = Some(e),
            Update::Event(ev) => {
                // Keep a selected event where it is while new ones arrive on top (those the
                // filter hides do not move it).
                let shown = self.matches(&[&ev.kind, &ev.sandbox, &ev.data]);
                if shown && self.selected[Tab::Events.index()] > 0 {
                    self.selected[Tab::Events.index()] += 1;
                }
                self.events.push_front(ev);
                self.events.truncate(EVENT_HISTORY);
            }
            Update::Stream(s) => self.stream = s,
            Update::Notice(n) => self.notice = Some(n),
        }
        self.clamp();
    }

    /// The sandboxes the filter lets through, in display order.
    pub(super) fn visible_sandboxes(&self) -> Vec<&SandboxRow> {
        self.sandboxes
            .iter()
            .filter(|s| self.matches(&[&s.id, &s.state, &s.provider, &s.worker, &s.image]))
            .collect()
    }

    pub(super) fn visible_workers(&self) -> Vec<&WorkerRow> {
        self.workers
            .iter()
            .filter(|w| self.matches(&[&w.id, &w.health, &w.capacity]))
            .collect()
    }

    pub(super) fn visible_events(&self) -> Vec<&EventRow> {
        self.events
            .iter()
            .filter(|e| self.matches(&[&e.kind, &e.sandbox, &e.data]))
            .collect()
    }

    /// Sandboxes placed on a worker (those with no worker run on the control plane's own,
    /// `local`).
    pub(super) fn sandbox_count(&self, worker: &str) -> usize {
        self.sandboxes
            .iter()
            .filter(|s| s.worker == worker || (s.worker.is_empty() && worker == "local"))
            .count()
    }

    fn matches(&self, fields: &[&String]) -> bool {
        if self.filter.is_empty() {
            return true;
        }
        let needle = self.filter.to_lowercase();
        fields.iter().any(|f| f.to_lowercase().contains(&needle))
    }

    pub(super) fn visible_len(&self, tab: Tab) -> usize {
        match tab {
            Tab::Sandboxes => self.visible_sandboxes().len(),
            Tab::Workers => self.visible_workers().len(),
            Tab::Events => self.visible_events().len(),
        }
    }

    pub(super) fn selected_sandbox(&self) -> Option<&SandboxRow> {
        self.visible_sandboxes()
            .get(self.selected[Tab::Sandboxes.index()])
            .copied()
    }

    fn selected_worker(&self) -> Option<&WorkerRow> {
        self.visible_workers()
            .get(self.selected[Tab::Workers.index()])
            .copied()
    }

    fn reselect(&mut self, tab: Tab, id: &str) {
        let at = match tab {
            Tab::Sandboxes => self.visible_sandboxes().iter().position(|s| s.id == id),
            Tab::Workers => self.visible_workers().iter().position(|w| w.id == id),
            Tab::Events => None,
        };
        if let Some(i) = at {
            self.selected[tab.index()] = i;
        }
    }

    /// Keeps every selection inside its filtered list.
    pub(super) fn clamp(&mut self) {
        for tab in Tab::ALL {
            let len = self.visible_len(tab);
            let sel = &mut self.selected[tab.index()];
            *sel = (*sel).min(len.saturating_sub(1));
        }
    }

    /// Moves the current tab's selection by `delta` rows, stopping at either end.
    pub(super) fn move_by(&mut self, delta: isize) {
        let len = self.visible_len(self.tab);
        let sel = &mut self.selected[self.tab.index()];
        let to = sel.saturating_add_signed(delta);
        *sel = to.min(len.saturating_sub(1));
    }

    pub(super) fn home(&mut self) {
        self.selected[self.tab.index()] = 0;
    }

    pub(super) fn end(&mut self) {
        self.selected[self.tab.index()] = self.visible_len(self.tab).saturating_sub(1);
    }

    /// The status line's error, most important first: a failed list fetch, then the stream.
    pub(super) fn error(&self) -> Option<&str> {
        self.errors
            .iter()
            .flatten()
            .next()
            .map(String::as_str)
            .or(match &self.stream {
                Stream::Down(e) => Some(e.as_str()),
                _ => None,
            })
    }
}

// ---- decoding the API's JSON -------------------------------------------------------------------

fn text(v: &Value, key: &str) -> String {
    v[key].as_str().unwrap_or_default().to_string()
}

fn time(v: &Value, key: &str) -> Option<DateTime<Utc>> {
    let s = v[key].as_str().filter(|s| !s.is_empty())?;
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// `GET /sandboxes` → rows.
pub(super) fn sandboxes_from(v: &Value) -> Vec<SandboxRow> {
    v.as_array()
        .into_iter()
        .flatten()
        .map(|s| SandboxRow {
            id: text(s, "id"),
            state: text(s, "state"),
            provider: text(s, "provider"),
            worker: text(s, "worker_id"),
            image: text(s, "image"),
            created_at: time(s, "created_at"),
            expires_at: time(s, "expires_at"),
        })
        .collect()
}

/// `GET /workers` → rows.
pub(super) fn workers_from(v: &Value) -> Vec<WorkerRow> {
    v.as_array()
        .into_iter()
        .flatten()
        .map(|w| {
            let health = if w["stale"] == true {
                "stale".to_string()
            } else {
                w["status"].as_str().unwrap_or("unknown").to_string()
            };
            let capacity = match w["capacity"]["max_sandboxes"].as_i64() {
                Some(n) if n > 0 => format!("max {n}"),
                Some(_) => "no limit".to_string(),
                None => String::new(),
            };
            WorkerRow {
                id: text(w, "id"),
                health,
                last_heartbeat: time(w, "last_heartbeat"),
                capacity,
            }
        })
        .collect()
}

/// One event of `GET /events` → a row.
pub(super) fn event_from(v: &Value) -> EventRow {
    EventRow {
        kind: text(v, "type"),
        sandbox: text(v, "sandbox_id"),
        at: time(v, "timestamp"),
        data: match &v["data"] {
            Value::Null => String::new(),
            d => d.to_string(),
        },
    }
}

/// Whether an event of this type can change the sandbox or worker lists (so they are
/// fetched again at once rather than at the next periodic refresh).
pub(super) fn changes_lists(kind: &str) -> bool {
    kind.starts_with("sandbox.") || kind.starts_with("spawn.") || kind == "reconcile.action"
}

/// Takes the complete server-sent events out of `buf` (blocks end with a blank line) and
/// returns their `data` payloads; a partial block stays in `buf` for the next chunk (bytes,
/// so a character split between chunks is decoded whole).
pub(super) fn take_sse(buf: &mut Vec<u8>) -> Vec<String> {
    let mut out = Vec::new();
    while let Some(cut) = buf.windows(2).position(|w| w == b"\n\n") {
        let block: Vec<u8> = buf.drain(..cut + 2).collect();
        let block = String::from_utf8_lossy(&block);
        let data: Vec<&str> = block
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .map(|l| l.strip_prefix(' ').unwrap_or(l))
            .collect();
        if !data.is_empty() {
            out.push(data.join("\n"));
        }
    }
    out
}

/// A short duration: `42s`, `5m`, `3h`, `2d`.
pub(super) fn short(d: chrono::Duration) -> String {
    let s = d.num_seconds().max(0);
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m", s / 60),
        3600..=86_399 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

/// How long ago `t` was, `-` when unknown.
pub(super) fn ago(t: Option<DateTime<Utc>>, now: DateTime<Utc>) -> String {
    t.map_or_else(|| "-".into(), |t| format!("{} ago", short(now - t)))
}

/// When `t` comes: `in 4m`, `expired`, or `never` when there is none.
pub(super) fn until(t: Option<DateTime<Utc>>, now: DateTime<Utc>) -> String {
    match t {
        None => "never".into(),
        Some(t) if t <= now => "expired".into(),
        Some(t) => format!("in {}", short(t - now)),
    }
}

#[cfg(test)]
#[path = "model_tests.rs"]
mod tests;
