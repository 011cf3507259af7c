//! `network_mode: user`: `pasta` (Debian `passt`) gives the sandbox's network namespace a tap
//! interface with the host's addressing and carries its connections through ordinary host
//! sockets, without privileges in the namespace and without a bridge or iptables.
//!
//! - Only the preview port is forwarded into the sandbox (`-t 127.0.0.1/<host port>:3000`,
//!   bound on the host's loopback only); pasta's defaults would forward every port the
//!   sandbox binds, and every host port into the sandbox (`-T auto`), so both are `none`.
//! - `--no-map-gw`: by default pasta maps the gateway address to the host's loopback, which
//!   would let the sandbox reach services listening on the host's `127.0.0.1` (the control
//!   plane's API, a database). Outbound connections go where the host's would.
//! - pasta joins the sandbox's cgroups (destroy kills it with the rest; it counts against the
//!   sandbox's limits) and runs as root: this pasta version drops to `nobody` before it opens
//!   the namespace, which then fails.

use std::path::Path;
use std::process::Stdio;

use tokio::process::Command;

use super::cgroup::Cgroups;
use super::{sys, Settings};
use crate::ProviderError;

/// The sandbox port a preview reaches (as on the microvm).
pub(super) const PREVIEW_PORT: u16 = 3000;

/// The host pid of the sandbox's PID 1 (the agent): bwrap's only child.
fn agent_pid(bwrap: u32) -> Option<u32> {
    std::fs::read_to_string(format!("/proc/{bwrap}/task/{bwrap}/children"))
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// A loopback port nobody listens on now (a moment later someone might: pasta then fails and
/// so does the spawn, which the caller may retry).
fn free_port() -> std::io::Result<u16> {
    let l = std::net::TcpListener::bind(("127.0.0.1", 0))?;
    Ok(l.local_addr()?.port())
}

/// Starts pasta on the network namespace of the sandbox whose bwrap is `bwrap`; the host
/// port forwarded to [`PREVIEW_PORT`].
pub(super) async fn attach(
    settings: &Settings,
    bwrap: u32,
    groups: &Cgroups,
    console: &Path,
) -> Result<u16, ProviderError> {
    let fail = |e| ProviderError::internal_with("starting the sandbox's network failed", e);
    let pid = agent_pid(bwrap)
        .ok_or_else(|| ProviderError::internal("the sandbox's first process is gone"))?;
    let port = free_port().map_err(fail)?;
    let log = std::fs::OpenOptions::new()
        .append(true)
        .open(console)
        .map_err(fail)?;
    let mut cmd = Command::new(&settings.pasta);
    cmd.args(["--config-net", "--quiet", "--runas", "0", "-t"])
        .arg(format!("127.0.0.1/{port}:{PREVIEW_PORT}"))
        .args(["-u", "none", "-T", "none", "-U", "none", "--no-map-gw"])
        .arg(pid.to_string())
        .env_clear()
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(fail)?)
        .stderr(log);
    sys::prepare_child(&mut cmd, groups.procs_files()?, Vec::new());
    // pasta goes to the background once the namespace is configured; its parent's exit says
    // whether that worked.
    let status = cmd.status().await.map_err(|e| {
        ProviderError::Unavailable(format!(
            "starting pasta ({}) failed: {e} (apt-get install passt)",
            settings.pasta.display()
        ))
    })?;
    if !status.success() {
        return Err(ProviderError::Unavailable(format!(
            "pasta could not set up the sandbox's network ({status})"
        )));
    }
    Ok(port)
}
