//! Property tests of the mock's path confinement (hardening harness, docs/testing.md): in a
//! sandbox tree full of generated symlinks (relative and absolute, into the tree, above it,
//! to the host root, dangling, in loops), no path a client can send resolves to anything
//! outside the sandbox root.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use proptest::prelude::*;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use super::files::glob;
use super::paths::{clean, resolve};
use crate::walk::WalkBudget;

/// A path component a client might send, weighted towards the tricky ones.
fn component() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => Just("..".to_string()),
        1 => Just(".".to_string()),
        1 => Just(String::new()),
        4 => prop::sample::select(vec!["a", "b", "l1", "l2", "l3", "up", "abs"]).prop_map(str::to_string),
        1 => "[a-z.]{1,4}",
    ]
}

fn sandbox_path() -> impl Strategy<Value = String> {
    (any::<bool>(), prop::collection::vec(component(), 0..8)).prop_map(|(absolute, parts)| {
        format!("{}{}", if absolute { "/" } else { "" }, parts.join("/"))
    })
}

/// Where a generated link points.
fn link_target() -> impl Strategy<Value = String> {
    prop_oneof![
        // The kernel refuses an empty link target.
        sandbox_path().prop_map(|p| if p.is_empty() { ".".to_string() } else { p }),
        Just("/".to_string()),
        Just("/etc".to_string()),
        Just("../../..".to_string()),
        Just("l1".to_string()),
        Just("../l2".to_string()),
    ]
}

/// The sandbox root (canonical) with dirs `a`, `a/b`, a file `a/f`, and links `l1`, `a/l2`,
/// `a/b/l3` to the given targets, plus `up` (→ ..) and `abs` (→ an absolute path in the root).
fn tree(targets: &[String; 3]) -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().expect("tempdir");
    let outer = d.path().canonicalize().expect("canonical");
    let root = outer.join("root");
    fs::create_dir_all(root.join("a/b")).expect("dirs");
    fs::write(root.join("a/f"), b"x").expect("file");
    // A sibling of the root that a link escaping by one level would reach.
    fs::create_dir_all(outer.join("secret")).expect("dirs");
    for (link, target) in ["l1", "a/l2", "a/b/l3"].iter().zip(targets) {
        symlink(target, root.join(link)).expect("symlink");
    }
    symlink("..", root.join("a/up")).expect("symlink");
    symlink(root.join("a/b"), root.join("abs")).expect("symlink");
    (d, root)
}

/// A glob pattern component: wildcards, classes (some malformed), and the tree's names.
fn pattern_component() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("*".to_string()),
        Just("**".to_string()),
        Just("?".to_string()),
        Just("[ab]*".to_string()),
        Just("[".to_string()),
        Just("[!a]".to_string()),
        Just("..".to_string()),
        prop::sample::select(vec!["a", "b", "f", "l1", "l2", "l3", "up", "abs"])
            .prop_map(str::to_string),
    ]
}

fn inside(root: &Path, p: &Path) -> bool {
    p.starts_with(root)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn no_path_resolves_outside_the_root(
        targets in [link_target(), link_target(), link_target()],
        path in sandbox_path(),
        follow in any::<bool>(),
    ) {
        let (_d, root) = tree(&targets);
        if let Ok(r) = resolve(&root, &path, follow) {
            prop_assert!(inside(&root, &r.host), "{path:?} → {:?}", r.host);
            // What the OS makes of the result must stay inside too: every link on the way
            // was resolved, so only a final unfollowed link may point elsewhere.
            let checked = if follow || r.is_root() { r.host.clone() } else { r.host.parent().map_or(root.clone(), Path::to_path_buf) };
            if let Ok(real) = checked.canonicalize() {
                prop_assert!(inside(&root, &real), "{path:?} → {real:?}");
            }
        }
    }

    /// Lexical cleaning: never a `..` or `.` or empty component in the result, and cleaning
    /// again changes nothing.
    #[test]
    fn cleaning_is_lexical_and_idempotent(path in sandbox_path()) {
        if let Ok(parts) = clean(&path) {
            prop_assert!(parts.iter().all(|p| !p.is_empty() && p != "." && p != ".."));
            prop_assert_eq!(clean(&parts.join("/")).ok(), Some(parts));
        }
    }

    /// Any text at all: an answer or an error.
    #[test]
    fn any_text_is_answered(path in "\\PC{0,64}") {
        let (_d, root) = tree(&["a".into(), "b".into(), "/".into()]);
        let _ = resolve(&root, &path, true);
    }

    /// Globs among the same links: every match names something inside the root (a match may
    /// be a link itself; what contains it is inside), and nothing is walked through a link.
    #[test]
    fn no_glob_match_leaves_the_root(
        targets in [link_target(), link_target(), link_target()],
        parts in prop::collection::vec(pattern_component(), 1..6),
    ) {
        let (_d, root) = tree(&targets);
        let pattern = format!("/{}", parts.join("/"));
        let mut budget = WalkBudget::new(Arc::new(AtomicBool::new(false)));
        if let Ok(found) = glob(&root, &pattern, &mut budget) {
            for m in found {
                prop_assert!(m.starts_with('/') && !m.split('/').any(|c| c == ".."), "{pattern} → {m}");
                let host = root.join(m.trim_start_matches('/'));
                let parent = host.parent().map_or(root.clone(), Path::to_path_buf);
                let real = parent.canonicalize().expect("a match's directory exists");
                prop_assert!(inside(&root, &real), "{pattern} → {m} in {real:?}");
            }
        }
    }
}
