//! Shell-style globbing of absolute paths: `*`, `?` and `[..]` within one component; names
//! starting with `.` match only a pattern that starts with `.`.
//!
//! The literal prefix before the first wildcard resolves like any path. Below it the walk never
//! descends through a symlink (a link the pattern reaches is a match when it is the last
//! component, and is not entered otherwise), and it stops at [`LIMITS`] or when its cancel flag
//! is raised (the host's `Cancel`, or the host going away).

use std::collections::HashMap;
use std::fs;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use stacyvm_protocol::agent::{ErrorCode, GuestMsg};

use crate::session::{lock, Out};

/// How much one glob may look at.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Directory entries looked at.
    pub max_visits: usize,
    pub max_time: Duration,
}

/// The same limits as the host-side walks of the mock and docker providers; the time stays
/// well inside the host's per-request deadline for file operations.
pub const LIMITS: Limits = Limits {
    max_visits: 100_000,
    max_time: Duration::from_secs(10),
};

/// Why a walk stopped early.
#[derive(Debug, PartialEq, Eq)]
pub enum Stop {
    Cancelled,
    /// The message names the limit.
    OverBudget(String),
}

struct Budget<'a> {
    visits: usize,
    limits: Limits,
    started: Instant,
    cancel: &'a AtomicBool,
}

impl Budget<'_> {
    fn check(&self) -> Result<(), Stop> {
        if self.cancel.load(Ordering::Relaxed) {
            return Err(Stop::Cancelled);
        }
        if self.started.elapsed() > self.limits.max_time {
            return Err(Stop::OverBudget(format!(
                "glob stopped after {} s; narrow the pattern",
                self.limits.max_time.as_secs_f64()
            )));
        }
        Ok(())
    }

    fn visit(&mut self) -> Result<(), Stop> {
        self.visits += 1;
        if self.visits > self.limits.max_visits {
            return Err(Stop::OverBudget(format!(
                "glob stopped after visiting {} entries; narrow the pattern",
                self.limits.max_visits
            )));
        }
        self.check()
    }
}

/// Globs in progress in one session, by request id, for `Cancel`. Each runs on its own thread:
/// the request loop keeps answering (pings, other files) while a big walk goes on.
#[derive(Default, Clone)]
pub struct Globs(Arc<Mutex<HashMap<u64, Arc<AtomicBool>>>>);

impl Globs {
    /// Starts the glob of request `id`; the answer (`Matches` or `Error`) goes to `out`.
    pub fn start(&self, id: u64, pattern: String, out: Out) {
        if !pattern.starts_with('/') || pattern.contains('\0') {
            out.error(
                id,
                ErrorCode::InvalidInput,
                format!("path must be absolute: {pattern:?}"),
            );
            return;
        }
        let cancel = Arc::new(AtomicBool::new(false));
        lock(&self.0).insert(id, cancel.clone());
        let (globs, gout) = (self.clone(), out.clone());
        let started = std::thread::Builder::new().spawn(move || {
            let reply = match expand(&pattern, LIMITS, &cancel) {
                Ok(paths) => GuestMsg::Matches { paths },
                Err(Stop::OverBudget(message)) => GuestMsg::Error {
                    code: ErrorCode::InvalidInput,
                    message,
                },
                Err(Stop::Cancelled) => GuestMsg::Error {
                    code: ErrorCode::Io,
                    message: "glob cancelled".into(),
                },
            };
            lock(&globs.0).remove(&id);
            out.send(id, reply);
        });
        if let Err(e) = started {
            lock(&self.0).remove(&id);
            gout.error(
                id,
                ErrorCode::Busy,
                format!("cannot start a glob ({e}); retry later"),
            );
        }
    }

    /// Stops the glob of request `target`, if one runs.
    pub fn cancel(&self, target: u64) {
        if let Some(flag) = lock(&self.0).get(&target) {
            flag.store(true, Ordering::Relaxed);
        }
    }

    /// Stops every glob (the session ended).
    pub fn cancel_all(&self) {
        for flag in lock(&self.0).values() {
            flag.store(true, Ordering::Relaxed);
        }
    }
}

/// Existing paths matching `pattern`, sorted.
pub fn expand(pattern: &str, limits: Limits, cancel: &AtomicBool) -> Result<Vec<String>, Stop> {
    let mut budget = Budget {
        visits: 0,
        limits,
        started: Instant::now(),
        cancel,
    };
    let comps: Vec<&str> = pattern.split('/').filter(|c| !c.is_empty()).collect();
    let first_wild = comps
        .iter()
        .position(|c| has_wildcard(c))
        .unwrap_or(comps.len());
    let mut current = vec![String::new()];
    for (i, comp) in comps.iter().enumerate() {
        let mut next = Vec::new();
        for base in &current {
            budget.check()?;
            let dir = if base.is_empty() { "/" } else { base.as_str() };
            // Below the literal prefix only real directories are entered, never a link.
            if i > first_wild && !fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir()) {
                continue;
            }
            if !has_wildcard(comp) {
                next.push(format!("{base}/{comp}"));
                continue;
            }
            let Ok(rd) = fs::read_dir(dir) else { continue };
            for e in rd {
                budget.visit()?;
                let Ok(e) = e else { continue };
                let name = e.file_name().to_string_lossy().into_owned();
                if (name.starts_with('.') && !comp.starts_with('.')) || !matches(comp, &name) {
                    continue;
                }
                next.push(format!("{base}/{name}"));
            }
        }
        current = next;
    }
    let mut out = Vec::with_capacity(current.len());
    for p in current {
        budget.check()?;
        let p = if p.is_empty() { "/".to_string() } else { p };
        if fs::symlink_metadata(&p).is_ok() {
            out.push(p);
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

fn has_wildcard(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// Whether `name` matches the one-component `pattern`.
pub fn matches(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    match_at(&p, &n)
}

fn match_at(p: &[char], n: &[char]) -> bool {
    let Some((&first, rest)) = p.split_first() else {
        return n.is_empty();
    };
    match first {
        '*' => (0..=n.len()).any(|i| match_at(rest, &n[i..])),
        '?' => !n.is_empty() && match_at(rest, &n[1..]),
        '[' => match (class(rest), n.split_first()) {
            (Some((ok, after)), Some((&c, tail))) => ok(c) && match_at(after, tail),
            // An unclosed `[` is a literal.
            (None, Some((&c, tail))) => c == '[' && match_at(rest, tail),
            (_, None) => false,
        },
        c => n.first() == Some(&c) && match_at(rest, &n[1..]),
    }
}

type ClassFn<'a> = Box<dyn Fn(char) -> bool + 'a>;

/// Parses a bracket expression body (after `[`): a matcher and what follows `]`.
fn class(p: &[char]) -> Option<(ClassFn<'_>, &[char])> {
    let (negate, body) = match p.first() {
        Some('!') | Some('^') => (true, &p[1..]),
        _ => (false, p),
    };
    // A `]` first in the set is literal.
    let end = body.iter().skip(1).position(|&c| c == ']')? + 1;
    let set = &body[..end];
    let after = &body[end + 1..];
    let f = move |c: char| {
        let mut i = 0;
        let mut hit = false;
        while i < set.len() {
            if i + 2 < set.len() && set[i + 1] == '-' {
                hit |= set[i] <= c && c <= set[i + 2];
                i += 3;
            } else {
                hit |= set[i] == c;
                i += 1;
            }
        }
        hit != negate
    };
    Some((Box::new(f), after))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        assert!(matches("*.log", "a.log"));
        assert!(!matches("*.log", "a.txt"));
        assert!(matches("a?c", "abc"));
        assert!(matches("[ab]x", "bx"));
        assert!(!matches("[!ab]x", "bx"));
        assert!(matches("[a-c]*", "cat"));
        assert!(matches("[]]", "]"));
        assert!(matches("x[", "x["));
        assert!(matches("*", ""));
    }

    fn tree(tag: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("agent-glob-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("g")).expect("mkdir");
        dir
    }

    fn run(pattern: &str) -> Vec<String> {
        expand(pattern, LIMITS, &AtomicBool::new(false)).expect("glob")
    }

    #[test]
    fn expands_in_a_tree() {
        let dir = tree("plain");
        for f in ["a.log", "b.log", "c.txt", ".h.log"] {
            fs::write(dir.join("g").join(f), b"x").expect("write");
        }
        let d = dir.to_string_lossy();
        let got = run(&format!("{d}/g/*.log"));
        assert_eq!(got, [format!("{d}/g/a.log"), format!("{d}/g/b.log")]);
        assert!(run(&format!("{d}/*/*.none")).is_empty());
        assert_eq!(run(&format!("{d}/g/c.txt")), [format!("{d}/g/c.txt")]);
        fs::remove_dir_all(&dir).expect("cleanup");
    }

    /// A link to `/` (or a loop) is reported, never walked into.
    #[test]
    fn links_are_not_walked_into() {
        let dir = tree("links");
        std::os::unix::fs::symlink("/", dir.join("g/root")).expect("link");
        std::os::unix::fs::symlink("..", dir.join("g/up")).expect("link");
        fs::write(dir.join("g/f"), b"x").expect("write");
        let d = dir.to_string_lossy();
        let got = run(&format!("{d}/*/*"));
        assert_eq!(
            got,
            [
                format!("{d}/g/f"),
                format!("{d}/g/root"),
                format!("{d}/g/up")
            ]
        );
        assert!(run(&format!("{d}/*/root/*")).is_empty());
        assert!(run(&format!("{d}/g/*/*")).is_empty());
        // The literal prefix resolves like any path.
        assert!(run(&format!("{d}/g/up/g/*")).contains(&format!("{d}/g/up/g/f")));
        fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn budget_and_cancel_stop_the_walk() {
        let dir = tree("budget");
        for i in 0..20 {
            fs::write(dir.join(format!("g/f{i}")), b"x").expect("write");
        }
        let d = dir.to_string_lossy();
        let small = Limits {
            max_visits: 10,
            max_time: Duration::from_secs(60),
        };
        let r = expand(&format!("{d}/g/*"), small, &AtomicBool::new(false));
        assert!(
            matches!(&r, Err(Stop::OverBudget(m)) if m.contains("10 entries")),
            "{r:?}"
        );
        let r = expand(&format!("{d}/g/*"), LIMITS, &AtomicBool::new(true));
        assert_eq!(r, Err(Stop::Cancelled));
        let none = Limits {
            max_visits: 100,
            max_time: Duration::ZERO,
        };
        std::thread::sleep(Duration::from_millis(2));
        let r = expand(&format!("{d}/g/*"), none, &AtomicBool::new(false));
        assert!(matches!(r, Err(Stop::OverBudget(_))), "{r:?}");
        fs::remove_dir_all(&dir).expect("cleanup");
    }
}
