//! Sandbox paths (cleaning) and limits on walks over a sandbox's file tree (globs), shared by
//! the backends that walk on the host side (the mock's directory, the docker provider's tar
//! downloads).
//!
//! A walk runs on the blocking pool, where nothing can abort it from outside, so it carries a
//! [`WalkBudget`]: at most [`MAX_VISITS`] directory entries, at most [`MAX_TIME`], and a cancel
//! flag that [`blocking`] raises when the caller's future is dropped (the HTTP client went
//! away). A walk that runs out of entries or time fails with `InvalidInput` naming the limit:
//! the glob answer is a bare list of paths, so there is no way to say "truncated", and a
//! silently partial list would read as "these are all the matches".

#[cfg(feature = "docker")]
use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::ProviderError;

/// Directory entries one glob may look at. A pattern matching more than a few thousand paths
/// is a mistake; this leaves room for big trees and still ends within a second or two.
pub(crate) const MAX_VISITS: usize = 100_000;
/// Wall-clock time one glob may take.
pub(crate) const MAX_TIME: Duration = Duration::from_secs(10);

/// What a walk may still spend.
pub(crate) struct WalkBudget {
    visits: usize,
    max_visits: usize,
    started: Instant,
    max_time: Duration,
    cancel: Arc<AtomicBool>,
}

impl WalkBudget {
    pub(crate) fn new(cancel: Arc<AtomicBool>) -> Self {
        Self::with_limits(MAX_VISITS, MAX_TIME, cancel)
    }

    pub(crate) fn with_limits(
        max_visits: usize,
        max_time: Duration,
        cancel: Arc<AtomicBool>,
    ) -> Self {
        WalkBudget {
            visits: 0,
            max_visits,
            started: Instant::now(),
            max_time,
            cancel,
        }
    }

    /// Counts one entry looked at; fails once the walk is over any limit.
    pub(crate) fn visit(&mut self) -> Result<(), ProviderError> {
        self.visits += 1;
        if self.visits > self.max_visits {
            return Err(ProviderError::InvalidInput(format!(
                "glob stopped after visiting {} entries; narrow the pattern",
                self.max_visits
            )));
        }
        self.check()
    }

    /// Fails when the caller went away or the time is up.
    pub(crate) fn check(&self) -> Result<(), ProviderError> {
        if self.cancel.load(Ordering::Relaxed) {
            return Err(ProviderError::internal(
                "glob cancelled: the caller went away",
            ));
        }
        if self.started.elapsed() > self.max_time {
            return Err(ProviderError::InvalidInput(format!(
                "glob stopped after {} s; narrow the pattern",
                self.max_time.as_secs_f64()
            )));
        }
        Ok(())
    }

    /// `r` failing its reads (with an I/O error) once this walk is cancelled or out of time,
    /// so a walk blocked on one long read (a big file inside a tar) stops too. After such an
    /// error, [`Self::check`] names the reason.
    #[cfg(feature = "docker")]
    pub(crate) fn guard<R: Read>(&self, r: R) -> Guarded<R> {
        Guarded {
            inner: r,
            cancel: self.cancel.clone(),
            deadline: self.started + self.max_time,
        }
    }
}

/// See [`WalkBudget::guard`].
#[cfg(feature = "docker")]
pub(crate) struct Guarded<R> {
    inner: R,
    cancel: Arc<AtomicBool>,
    deadline: Instant,
}

#[cfg(feature = "docker")]
impl<R: Read> Read for Guarded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.cancel.load(Ordering::Relaxed) || Instant::now() > self.deadline {
            return Err(io::Error::other("walk stopped"));
        }
        self.inner.read(buf)
    }
}

/// Raises its flag when dropped.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Runs `walk` on the blocking pool with a fresh budget. Dropping the returned future (the
/// request was abandoned) raises the budget's cancel flag, so the walk stops at its next
/// entry instead of running on for nobody.
pub(crate) async fn blocking<T, F>(walk: F) -> Result<T, ProviderError>
where
    T: Send + 'static,
    F: FnOnce(&mut WalkBudget) -> Result<T, ProviderError> + Send + 'static,
{
    let cancel = Arc::new(AtomicBool::new(false));
    let _stop_when_dropped = CancelOnDrop(cancel.clone());
    let mut budget = WalkBudget::new(cancel);
    tokio::task::spawn_blocking(move || walk(&mut budget))
        .await
        .map_err(|e| ProviderError::internal_with("file task failed", e))?
}

/// Glob components with a wildcard (`*`, `?`, `[`); the others are looked up by name.
pub(crate) fn has_wildcard(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// Matching rules of one pattern component, as Go's `filepath.Match`: `*` may match a
/// leading dot, never a `/`.
pub(crate) const MATCH: glob::MatchOptions = glob::MatchOptions {
    case_sensitive: true,
    require_literal_separator: true,
    require_literal_leading_dot: false,
};

/// Compiles one pattern component. Runs of `*` are one `*` (there is no `**` in a shell glob;
/// Go's `filepath.Glob` reads `**` as `*`, and the `glob` crate would read it as "any depth").
pub(crate) fn component(comp: &str) -> Result<glob::Pattern, ProviderError> {
    let mut single = String::with_capacity(comp.len());
    let mut in_class = false;
    for c in comp.chars() {
        if c == '*' && !in_class && single.ends_with('*') {
            continue;
        }
        match c {
            '[' if !in_class => in_class = true,
            ']' if in_class && !single.ends_with('[') => in_class = false,
            _ => {}
        }
        single.push(c);
    }
    glob::Pattern::new(&single)
        .map_err(|e| ProviderError::InvalidInput(format!("invalid glob pattern: {}", e.msg)))
}

/// The refusal to `what` (delete, move) the sandbox root, which `given` names.
pub(crate) fn refuse_root(given: &str, what: &str) -> ProviderError {
    ProviderError::InvalidInput(format!("cannot {what} the sandbox root: {given:?}"))
}

/// Cleans a sandbox path into an absolute one. Relative paths are relative to `/` (as in the
/// mock); `..` above the root is refused rather than clamped.
#[cfg(any(feature = "docker", feature = "microvm", feature = "bwrap"))]
pub(crate) fn clean_path(path: &str) -> Result<String, ProviderError> {
    if path.contains('\0') {
        return Err(ProviderError::InvalidInput(
            "path must not contain NUL bytes".into(),
        ));
    }
    let mut out: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if out.pop().is_none() {
                    return Err(ProviderError::InvalidInput(format!(
                        "path {path:?} escapes the sandbox"
                    )));
                }
            }
            p => out.push(p),
        }
    }
    Ok(format!("/{}", out.join("/")))
}

/// [`clean_path`] for a file to write: the root is a directory.
#[cfg(any(feature = "docker", feature = "microvm", feature = "bwrap"))]
pub(crate) fn clean_file_path(given: &str) -> Result<String, ProviderError> {
    let path = clean_path(given)?;
    if path == "/" {
        return Err(ProviderError::is_a_directory(given));
    }
    Ok(path)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::mpsc;

    use super::*;

    fn flag() -> Arc<AtomicBool> {
        Arc::new(AtomicBool::new(false))
    }

    #[test]
    fn visits_are_counted() {
        let mut b = WalkBudget::with_limits(3, Duration::from_secs(60), flag());
        for _ in 0..3 {
            b.visit().unwrap();
        }
        let err = b.visit().unwrap_err();
        assert!(
            matches!(&err, ProviderError::InvalidInput(m) if m.contains("3 entries")),
            "{err:?}"
        );
    }

    #[test]
    fn time_and_cancel_stop_a_walk() {
        let b = WalkBudget::with_limits(10, Duration::ZERO, flag());
        std::thread::sleep(Duration::from_millis(2));
        assert!(matches!(b.check(), Err(ProviderError::InvalidInput(_))));
        let cancel = flag();
        let b = WalkBudget::with_limits(10, Duration::from_secs(60), cancel.clone());
        b.check().unwrap();
        cancel.store(true, Ordering::Relaxed);
        assert!(matches!(b.check(), Err(ProviderError::Internal { .. })));
        #[cfg(feature = "docker")]
        assert!(b.guard(&b"data"[..]).read(&mut [0u8; 4]).is_err());
    }

    /// The walk of an abandoned request stops at its next check.
    #[tokio::test]
    async fn dropping_the_future_cancels_the_walk() {
        let (tx, rx) = mpsc::channel();
        let walk = blocking(move |b| {
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(30) {
                if b.check().is_err() {
                    let _ = tx.send(t.elapsed());
                    return Ok(());
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Ok(())
        });
        assert!(tokio::time::timeout(Duration::from_millis(100), walk)
            .await
            .is_err());
        let ran = rx
            .recv_timeout(Duration::from_secs(5))
            .expect("walk stopped");
        assert!(ran < Duration::from_secs(5), "{ran:?}");
    }

    #[test]
    fn components() {
        let p = component("**").unwrap();
        assert!(p.matches_with("a.txt", MATCH) && p.matches_with(".hidden", MATCH));
        assert!(component("a**b").unwrap().matches_with("axxb", MATCH));
        assert!(component("[*]x").unwrap().matches_with("*x", MATCH));
        assert!(!component("[*]x").unwrap().matches_with("ax", MATCH));
        assert!(component("[]*]").unwrap().matches_with("*", MATCH));
        assert!(matches!(
            component("[x"),
            Err(ProviderError::InvalidInput(_))
        ));
        assert!(!has_wildcard("plain") && has_wildcard("a?") && has_wildcard("[ab]"));
    }
}
