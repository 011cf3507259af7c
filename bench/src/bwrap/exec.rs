//! Issue 15, figure 2: exec overhead on bwrap. The mock exec benchmark's interleaved loop
//! (`crate::exec`) against one bwrap sandbox: a sync `POST …/exec {"command":"true"}` (the
//! agent runs `sh -c true` inside, busybox's sh) against a direct fork of the same binary on the
//! host (`/bin/busybox sh -c true`, the binary the test image is made of), and `GET /health`.

use std::path::Path;

use serde_json::json;

use super::Env;
use crate::exec::{interleaved, report, Opts};
use crate::pg::Db;
use crate::server::Server;
use crate::{api, BenchError};

/// The host's busybox-static: the same binary the test image's `/bin/sh` is.
const BUSYBOX: &str = "/bin/busybox";

pub async fn run(bin: &Path, env_opts: &super::Opts, o: &Opts) -> Result<(), BenchError> {
    println!("\n## Issue 15.2: exec of `true` on bwrap: HTTP sync exec vs direct fork");
    println!(
        "   one bwrap sandbox ({}), one keep-alive connection, {} warm-up + {} measured of each",
        env_opts.image, o.warmup, o.n
    );
    let env = Env::prepare(bin, env_opts).await?;
    let server = Server::start_full(bin, &env.providers(false), &Db::Sqlite, &env.extra()).await?;
    let measured = async {
        let c = api::http_client()?;
        let body = json!({"image": env.image, "provider": "bwrap", "ttl": "1h"});
        let (id, _) = api::spawn_json(&c, &server.base, &body).await?;
        let m = interleaved(&server.base, &id, &[BUSYBOX, "sh", "-c", "true"], o).await;
        let destroyed = api::destroy(&c, &server.base, &id).await;
        let m = m?;
        destroyed?;
        Ok::<_, BenchError>(m)
    }
    .await;
    let log_tail = server.log_tail();
    server.stop().await?;
    let m =
        measured.map_err(|e| BenchError::Unexpected(format!("{e}\nserver log:\n{log_tail}")))?;
    report(
        &m,
        "HTTP exec (bwrap, sh -c true)",
        "direct /bin/busybox sh -c true",
    )?;
    println!("   left after the run: {}", env.leftovers());
    Ok(())
}
