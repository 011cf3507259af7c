//! WAL checkpoints on a thread of their own. SQLite's automatic checkpoint runs inside the
//! commit that crosses 1,000 WAL pages: that commit copies the pages back into the database
//! and fsyncs while holding the writer's mutex, which here is held on a tokio worker, so every
//! other write (and the worker thread) stalls behind a disk flush. Instead the writer has
//! `wal_autocheckpoint = 0` and this thread runs `PRAGMA wal_checkpoint(PASSIVE)` on its own
//! connection once enough commits have piled up. A passive checkpoint never waits for the
//! writer or readers, so it only costs CPU and I/O, never a stall of a request.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::Connection;

/// How often the thread looks at the commit count.
const TICK: Duration = Duration::from_millis(50);
/// Commits that trigger a checkpoint (a spawn+destroy pair is three): keeps the WAL to a few
/// MiB under load.
const COMMITS: u64 = 256;
/// A quiet database is still checkpointed this long after its last unflushed commit.
const IDLE: Duration = Duration::from_secs(1);

/// The running checkpoint thread; dropping it stops the thread and waits for it.
pub(super) struct Checkpointer {
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Starts the thread on `conn`, a connection of its own to the database file. `commits`
    /// is the writer's commit counter.
    pub(super) fn start(conn: Connection, commits: Arc<AtomicU64>) -> std::io::Result<Self> {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || {
                let mut done = commits.load(Ordering::Relaxed);
                let mut last = Instant::now();
                loop {
                    match stopped.recv_timeout(TICK) {
                        Err(RecvTimeoutError::Timeout) => {}
                        // Stopped: the last connection to close checkpoints the rest.
                        Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
                    }
                    let now = commits.load(Ordering::Relaxed);
                    let pending = now.wrapping_sub(done);
                    if pending >= COMMITS || (pending > 0 && last.elapsed() >= IDLE) {
                        if let Err(e) =
                            conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                        {
                            tracing::warn!(error = %e, "sqlite WAL checkpoint failed");
                        }
                        done = now;
                        last = Instant::now();
                    }
                }
            })?;
        Ok(Checkpointer {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
