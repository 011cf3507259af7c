//! The agent's helper threads, reused: every process costs several (output pumps, waiter,
//! timer, reader), and starting a thread costs about ten system calls and a fresh stack, which
//! is most of what a short exec spends in the agent. A finished helper waits a while for the
//! next job instead of exiting; only when none waits is a thread started.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::Duration;

/// How long a helper waits for work before it exits.
const IDLE: Duration = Duration::from_secs(10);
/// Small stacks: a sandbox may keep a thousand idle processes, each holding a few helpers.
const STACK: usize = 256 * 1024;

type Job = Box<dyn FnOnce() + Send>;

struct Pool {
    state: Mutex<State>,
    work: Condvar,
}

struct State {
    /// Jobs handed to a waiting helper and not yet taken.
    queue: VecDeque<Job>,
    /// Waiting helpers not yet promised a job.
    idle: usize,
}

fn pool() -> &'static Pool {
    static P: OnceLock<Pool> = OnceLock::new();
    P.get_or_init(|| Pool {
        state: Mutex::new(State {
            queue: VecDeque::new(),
            idle: 0,
        }),
        work: Condvar::new(),
    })
}

fn lock(p: &Pool) -> std::sync::MutexGuard<'_, State> {
    p.state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Runs `f` on a helper thread: a waiting one, else a new one. Fails (instead of panicking,
/// as `std::thread::spawn` would) when no helper waits and the sandbox is out of pids or
/// memory, e.g. under a fork bomb: the caller answers `Busy`. `name` names a new thread
/// (reused ones keep the name they were started with).
pub fn thread(name: &str, f: impl FnOnce() + Send + 'static) -> Result<(), String> {
    let p = pool();
    {
        let mut st = lock(p);
        if st.idle > 0 {
            st.idle -= 1;
            st.queue.push_back(Box::new(f));
            drop(st);
            p.work.notify_one();
            return Ok(());
        }
    }
    std::thread::Builder::new()
        .name(name.to_string())
        .stack_size(STACK)
        .spawn(move || {
            f();
            helper(p);
        })
        .map(drop)
        .map_err(|e| format!("the sandbox cannot start another thread ({e}); retry later"))
}

/// A helper between jobs: takes the next one handed over, or exits after `IDLE` without one.
fn helper(p: &'static Pool) {
    loop {
        let job = {
            let mut st = lock(p);
            st.idle += 1;
            loop {
                if let Some(job) = st.queue.pop_front() {
                    break Some(job);
                }
                let (next, timeout) = p
                    .work
                    .wait_timeout(st, IDLE)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                st = next;
                if timeout.timed_out() && st.queue.is_empty() {
                    // Nobody promised this helper a job (the promise and the job arrive
                    // together, under the lock): it leaves the idle count itself.
                    st.idle -= 1;
                    break None;
                }
            }
        };
        match job {
            Some(job) => job(),
            None => return,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::sync::mpsc::channel;

    #[test]
    fn helpers_are_reused_and_every_job_runs() {
        let (tx, rx) = channel();
        for i in 0..50 {
            let tx = tx.clone();
            thread("t", move || {
                tx.send((i, std::thread::current().id())).unwrap()
            })
            .unwrap();
            // Let the helper finish and wait, so the next job can reuse it.
            std::thread::sleep(Duration::from_millis(2));
        }
        let got: Vec<_> = (0..50).map(|_| rx.recv().unwrap()).collect();
        let mut ids: Vec<_> = got.iter().map(|(i, _)| *i).collect();
        ids.sort_unstable();
        assert_eq!(ids, (0..50).collect::<Vec<_>>());
        let threads: std::collections::HashSet<_> = got.iter().map(|(_, t)| *t).collect();
        assert!(
            threads.len() < 50,
            "no helper was reused: {}",
            threads.len()
        );
    }

    #[test]
    fn many_blocking_jobs_each_get_a_thread() {
        // Jobs that wait for each other must not queue behind one another.
        let n = 20;
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(n + 1));
        for _ in 0..n {
            let b = barrier.clone();
            thread("t", move || {
                b.wait();
            })
            .unwrap();
        }
        barrier.wait();
    }
}
