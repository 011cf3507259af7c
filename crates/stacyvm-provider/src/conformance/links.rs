//! Globs over a sandbox holding links that lead out of it (to `/`) or back up (a loop): the
//! walk reports a link the pattern reaches and never walks into it, so it stays small and
//! inside the sandbox whatever links a command made.

use std::time::Duration;

use super::{run_sh, with_sandbox, CheckFailure};
use crate::Provider;

/// Well above what these small walks take on any backend.
const BOUND: Duration = Duration::from_secs(60);

pub async fn files_glob_links(p: &dyn Provider, image: &str) -> Result<(), CheckFailure> {
    with_sandbox("files_glob_links", p, image, |p, id| async move {
        // Relative paths: commands start in /workspace (on the mock that is its host directory).
        run_sh(
            p,
            &id,
            "mkdir -p d && echo x > d/b.txt && ln -s / root && ln -s .. d/up",
        )
        .await?;
        for pattern in ["/workspace/*/*", "/workspace/*/*/*", "/**/*"] {
            let got = tokio::time::timeout(BOUND, p.glob(&id, pattern)).await;
            let got = ok!(got.map_err(|_| format!("still walking after {BOUND:?}")));
            let got = ok!(got);
            ensure!(
                got.iter()
                    .all(|m| !m.starts_with("/workspace/root/") && !m.contains("/up/")),
                "{pattern} walked into a link: {:?}",
                got.iter().take(5).collect::<Vec<_>>()
            );
        }
        let mut got = ok!(p.glob(&id, "/workspace/*/*").await);
        got.sort();
        ensure!(
            got == ["/workspace/d/b.txt", "/workspace/d/up"],
            "/workspace/*/*: {got:?}"
        );
        let got = ok!(p.glob(&id, "/workspace/*").await);
        ensure!(
            got.iter().any(|m| m == "/workspace/root"),
            "the link itself is a match: {got:?}"
        );
        Ok(())
    })
    .await
}
