//! `network_mode: user`: `pasta` (Debian `passt`) gives the sandbox's network namespace a tap
//! interface with the host's addressing and carries its connections through ordinary host
//! sockets, without privileges in the namespace and without a bridge or iptables.
//!
//! - No port is forwarded into the sandbox (`-t none -u none`): pasta's defaults would forward
//!   every port the sandbox binds to the host. Previews connect from inside the sandbox's
//!   namespace instead ([`connect_inside`]), in both network modes.
//! - `--no-map-gw`: by default pasta maps the gateway address to the host's loopback, which
//!   would let the sandbox reach services listening on the host's `127.0.0.1` (the control
//!   plane's API, a database). Outbound connections go where the host's would.
//! - `-T none -U none`: pasta's default (`auto`) forwards the sandbox's connections to its own
//!   loopback ports to the same ports on the host's loopback, the other way in.
//! - pasta joins the sandbox's cgroups (destroy kills it with the rest; it counts against the
//!   sandbox's limits) and runs as root: this pasta version drops to `nobody` before it opens
//!   the namespace, which then fails.
//! - DNS: the sandbox's `/etc/resolv.conf` (written into its writable layer before it starts)
//!   names `providers.bwrap.dns`, else the host's non-loopback resolvers; queries are ordinary
//!   outbound UDP/TCP through pasta. pasta's own `--dns-forward` is not used: in this version
//!   its upstream is only the host's first `/etc/resolv.conf` entry (`-D` does not change it),
//!   so it could not honour the configured resolvers, and with `--no-map-gw` it drops a
//!   loopback resolver (systemd-resolved's `127.0.0.53`) just as we do.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::process::Stdio;

use tokio::process::Command;

use super::cgroup::Cgroups;
use super::{sys, Settings};
use crate::{PreviewConn, ProviderError, PREVIEW_CONNECT_TIMEOUT};

/// The host pid of the sandbox's PID 1 (the agent): bwrap's only child.
fn agent_pid(bwrap: u32) -> Option<u32> {
    std::fs::read_to_string(format!("/proc/{bwrap}/task/{bwrap}/children"))
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// pasta's arguments: see the module comment for why each forward is closed.
fn pasta_args(pid: u32) -> Vec<String> {
    let mut a: Vec<String> = [
        "--config-net",
        "--quiet",
        "--runas",
        "0",
        "-t",
        "none",
        "-u",
        "none",
        "-T",
        "none",
        "-U",
        "none",
        "--no-map-gw",
    ]
    .map(String::from)
    .to_vec();
    a.push(pid.to_string());
    a
}

/// The resolvers a `user` sandbox is given: `configured`, else the `nameserver`s of the host's
/// `resolv_conf` that the sandbox can reach (a loopback address is the sandbox's own loopback,
/// and the host's is closed to it on purpose).
pub(super) fn resolvers(configured: &[IpAddr], resolv_conf: &str) -> Vec<IpAddr> {
    if !configured.is_empty() {
        return configured.to_vec();
    }
    resolv_conf
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|a| a.trim().parse::<IpAddr>().ok())
        .filter(|a| !a.is_loopback() && !a.is_unspecified())
        .collect()
}

/// Writes `etc/resolv.conf` naming `servers` into the sandbox's writable layer `upper` (fresh,
/// not yet mounted, so nothing in it can be a link the sandbox planted). The file hides the
/// image's own, whatever it is (a link into `/run` included).
fn write_resolv_conf(upper: &Path, servers: &[IpAddr]) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    let etc = upper.join("etc");
    std::fs::DirBuilder::new().mode(0o755).create(&etc)?;
    let text: String = servers
        .iter()
        .map(|s| format!("nameserver {s}\n"))
        .collect();
    std::fs::write(etc.join("resolv.conf"), text)
}

/// Gives a `user` sandbox its resolvers: [`resolvers`] of `configured` and the host's
/// `/etc/resolv.conf`, written into its fresh layer `upper`.
pub(super) fn configure_dns(upper: &Path, configured: &[IpAddr]) -> Result<(), ProviderError> {
    let host = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let servers = resolvers(configured, &host);
    if servers.is_empty() {
        tracing::warn!(
            "bwrap: no resolver a sandbox can reach (the host's are loopback or none); \
             set providers.bwrap.dns"
        );
    }
    write_resolv_conf(upper, &servers)
        .map_err(|e| ProviderError::internal_with("writing the sandbox's resolv.conf failed", e))
}

/// Starts pasta on the network namespace of the sandbox whose bwrap is `bwrap`.
pub(super) async fn attach(
    settings: &Settings,
    bwrap: u32,
    groups: &Cgroups,
    console: &Path,
) -> Result<(), ProviderError> {
    let fail = |e| ProviderError::internal_with("starting the sandbox's network failed", e);
    let pid = agent_pid(bwrap)
        .ok_or_else(|| ProviderError::internal("the sandbox's first process is gone"))?;
    let log = std::fs::OpenOptions::new()
        .append(true)
        .open(console)
        .map_err(fail)?;
    let mut cmd = Command::new(&settings.pasta);
    cmd.args(pasta_args(pid))
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
    Ok(())
}

/// A connection to `port` on the sandbox's own loopback (`127.0.0.1`, then `::1`), for its
/// preview: the socket is made inside the sandbox's network namespace by a short-lived thread
/// that joins it (`setns(2)`), so every port is reachable in both network modes (`none` has
/// only `lo`) and nothing is forwarded or bound on the host. The connection then belongs to
/// the sandbox's namespace; it reaches nothing the sandbox itself could not.
pub(super) async fn connect_inside(bwrap: u32, port: u16) -> Result<PreviewConn, ProviderError> {
    let fail = |e| ProviderError::internal_with("entering the sandbox's network failed", e);
    let pid = agent_pid(bwrap)
        .ok_or_else(|| ProviderError::internal("the sandbox's first process is gone"))?;
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/net")).map_err(fail)?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("stacyvm-preview-netns".into())
        .spawn(move || {
            let joined = sys::enter_netns(&ns).map(|()| {
                let v4 = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
                let v6 = SocketAddr::from((Ipv6Addr::LOCALHOST, port));
                std::net::TcpStream::connect_timeout(&v4, PREVIEW_CONNECT_TIMEOUT).or_else(|e4| {
                    std::net::TcpStream::connect_timeout(&v6, PREVIEW_CONNECT_TIMEOUT)
                        .map_err(|_| e4)
                })
            });
            let _ = tx.send(joined);
        })
        .map_err(fail)?;
    let joined = rx
        .await
        .map_err(|_| ProviderError::internal("the preview connect thread died"))?;
    match joined.map_err(fail)? {
        Ok(s) => {
            let _ = s.set_nodelay(true);
            s.set_nonblocking(true).map_err(fail)?;
            tokio::net::TcpStream::from_std(s)
                .map(PreviewConn::Open)
                .map_err(fail)
        }
        Err(e) => Ok(PreviewConn::Unreachable(e)),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn pasta_forwards_nothing_and_keeps_the_host_loopback_closed() {
        let a = pasta_args(77).join(" ");
        for closed in ["-t none", "-u none", "-T none", "-U none", "--no-map-gw"] {
            assert!(a.contains(closed), "{closed} missing: {a}");
        }
        assert!(a.ends_with(" 77"), "{a}");
    }

    #[test]
    fn resolvers_are_configured_or_the_hosts_reachable_ones() {
        let host = "# comment\nnameserver 127.0.0.53\nnameserver 10.0.0.2\nnameserver ::1\n\
                    nameserver fd00::53\nsearch example\nnameserver junk\n";
        let want: Vec<IpAddr> = vec!["10.0.0.2".parse().unwrap(), "fd00::53".parse().unwrap()];
        assert_eq!(resolvers(&[], host), want);
        let set: Vec<IpAddr> = vec!["192.0.2.53".parse().unwrap()];
        assert_eq!(resolvers(&set, host), set);
        assert!(resolvers(&[], "nameserver 127.0.0.53\n").is_empty());
    }

    #[test]
    fn resolv_conf_goes_into_the_writable_layer() {
        let d = tempfile::tempdir().unwrap();
        let servers: Vec<IpAddr> = vec!["10.1.2.3".parse().unwrap()];
        write_resolv_conf(d.path(), &servers).unwrap();
        let text = std::fs::read_to_string(d.path().join("etc/resolv.conf")).unwrap();
        assert_eq!(text, "nameserver 10.1.2.3\n");
    }
}
