//! The mock's glob walks the sandbox's host directory: it must stay inside it and stay small
//! whatever links the sandbox holds (a command can make any link, the mock confines nothing).
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::symlink;
use std::time::Duration;

use stacyvm_provider::Provider;

mod mock_support;
use mock_support::{fixture, spawn, write};

/// Well above what a confined walk of a few entries takes, far below a walk of the host.
const BOUND: Duration = Duration::from_secs(10);

/// A link to the host's `/` is reported, never entered: `/**/*` is `/*/*` and ends at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn glob_does_not_walk_through_a_link_to_the_host_root() {
    let f = fixture();
    let (id, root) = spawn(&f.p).await;
    write(&f.p, &id, "/workspace/a.txt", b"a", None).await;
    write(&f.p, &id, "/workspace/d/b.txt", b"b", None).await;
    symlink("/", root.join("workspace/root")).unwrap();
    symlink("..", root.join("workspace/d/up")).unwrap();
    for pattern in [
        "/**/*",
        "/*/*/*",
        "/workspace/*/etc",
        "/workspace/*/*/*",
        "/workspace/d/*/*/*",
    ] {
        let got = tokio::time::timeout(BOUND, f.p.glob(&id, pattern))
            .await
            .unwrap_or_else(|_| panic!("{pattern}: still walking after {BOUND:?}"))
            .unwrap();
        assert!(
            got.iter()
                .all(|p| !p.starts_with("/workspace/root/") && !p.contains("/up/")),
            "{pattern}: {got:?}"
        );
    }
    let all = f.p.glob(&id, "/**/*").await.unwrap();
    assert_eq!(
        all,
        ["/workspace/a.txt", "/workspace/d", "/workspace/root"],
        "`**` is `*`: one level"
    );
    assert_eq!(
        f.p.glob(&id, "/workspace/*/*").await.unwrap(),
        ["/workspace/d/b.txt", "/workspace/d/up"]
    );
    // The literal prefix may go through a link inside the sandbox, as any path may.
    symlink("d", root.join("workspace/alias")).unwrap();
    assert_eq!(
        f.p.glob(&id, "/workspace/alias/*.txt").await.unwrap(),
        ["/workspace/alias/b.txt"]
    );
    assert!(f.p.glob(&id, "/workspace/root/*").await.unwrap().is_empty());
}

/// A pattern that would look at more entries than the budget allows is refused with a
/// message that says so, instead of running on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn glob_over_budget_is_a_clear_error() {
    let f = fixture();
    let (id, root) = spawn(&f.p).await;
    // 400 × 300 = 120,000 entries two levels down, more than one glob may visit.
    let ws = root.join("workspace/big");
    for i in 0..400 {
        let d = ws.join(format!("d{i}"));
        std::fs::create_dir_all(&d).unwrap();
        for j in 0..300 {
            std::fs::File::create(d.join(format!("f{j}"))).unwrap();
        }
    }
    let res = f.p.glob(&id, "/workspace/big/*/*").await;
    let err = res.map(|v| v.len()).unwrap_err();
    assert!(
        matches!(&err, stacyvm_provider::ProviderError::InvalidInput(m)
            if m.contains("narrow the pattern")),
        "{err:?}"
    );
    // A narrower pattern over the same tree still answers.
    let one = f.p.glob(&id, "/workspace/big/d7/f1*").await.unwrap();
    assert_eq!(one.len(), 111, "f1, f10..f19, f100..f199");
}
