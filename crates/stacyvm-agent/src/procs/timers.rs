//! Process timeouts: one thread keeps every deadline. A thread per process waiting on the
//! process's condvar woke on every output chunk and at every exit; this one wakes only when a
//! deadline comes or an earlier one is added.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use super::{pty, thread, Proc};
use crate::session::lock;

/// A deadline's place in the table, to cancel it.
pub type Key = (Instant, u64);

struct Timers {
    due: Mutex<Table>,
    changed: Condvar,
}

#[derive(Default)]
struct Table {
    entries: BTreeMap<Key, Weak<Proc>>,
    /// Whether the thread runs (it is started with the first deadline).
    running: bool,
}

static TIMERS: OnceLock<Timers> = OnceLock::new();
static NEXT: AtomicU64 = AtomicU64::new(0);

fn timers() -> &'static Timers {
    TIMERS.get_or_init(|| Timers {
        due: Mutex::new(Table::default()),
        changed: Condvar::new(),
    })
}

/// Kills `p`'s group and marks it timed out `after` from now, unless it ended first. Fails
/// only when the timer thread cannot start (out of threads).
pub fn add(p: &Arc<Proc>, after: Duration) -> Result<Key, String> {
    let t = timers();
    let at = Instant::now().checked_add(after).unwrap_or_else(far_future);
    let key = (at, NEXT.fetch_add(1, Ordering::Relaxed));
    let mut table = lock(&t.due);
    if !table.running {
        thread("proc-timers", || run(timers()))?;
        table.running = true;
    }
    let earliest = table.entries.keys().next().is_none_or(|k| key < *k);
    table.entries.insert(key, Arc::downgrade(p));
    drop(table);
    if earliest {
        t.changed.notify_one();
    }
    Ok(key)
}

/// Forgets a deadline (its process ended).
pub fn cancel(key: Key) {
    lock(&timers().due).entries.remove(&key);
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600)
}

fn run(t: &Timers) {
    let mut table = lock(&t.due);
    loop {
        let now = Instant::now();
        let next = table.entries.keys().next().copied();
        match next {
            Some(key) if key.0 <= now => {
                let p = table.entries.remove(&key).and_then(|w| w.upgrade());
                drop(table);
                if let Some(p) = p {
                    fire(&p);
                }
                table = lock(&t.due);
            }
            Some(key) => {
                table = t
                    .changed
                    .wait_timeout(table, key.0 - now)
                    .map_or_else(|e| e.into_inner().0, |(g, _)| g);
            }
            None => {
                table = t.changed.wait(table).unwrap_or_else(|e| e.into_inner());
            }
        }
    }
}

fn fire(p: &Proc) {
    if lock(&p.state).exit.is_none() {
        p.timed_out.store(true, Ordering::SeqCst);
        let _ = pty::signal_group(p.pgid, libc::SIGKILL);
    }
}
