//! Guest networking. Off by default (no NIC at all); `user` mode gives outbound access through
//! QEMU's user-mode stack, with guest port 3000 forwarded to a loopback host port at boot for
//! the preview URL, and any other guest port forwarded the first time a preview asks for it
//! ([`Forwards`]: `hostfwd_add` through QEMU's monitor).

use std::collections::HashMap;

use serde_json::json;

use super::qmp::{Qmp, QmpError};
use super::settings::NetworkMode;

/// The guest port forwarded to the host for the preview URL.
pub(crate) const PREVIEW_GUEST_PORT: u16 = 3000;

/// QEMU arguments for the guest NIC, if any.
pub(crate) fn args(mode: NetworkMode, preview_port: Option<u16>) -> Vec<String> {
    match mode {
        NetworkMode::None => Vec::new(),
        NetworkMode::User => {
            let mut netdev = String::from("user,id=net0,restrict=off");
            if let Some(port) = preview_port {
                netdev.push_str(&format!(
                    ",hostfwd=tcp:127.0.0.1:{port}-:{PREVIEW_GUEST_PORT}"
                ));
            }
            vec![
                "-netdev".into(),
                netdev,
                "-device".into(),
                "virtio-net-device,netdev=net0".into(),
            ]
        }
    }
}

/// A free loopback TCP port for the preview forward (racy by nature; QEMU fails loudly if
/// another process takes it first).
pub(crate) fn free_port() -> Option<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").ok()?;
    l.local_addr().ok().map(|a| a.port())
}

/// Most guest ports one VM gets forwarded on demand: each is a listening socket in its QEMU.
pub(crate) const MAX_FORWARDS: usize = 64;

/// The guest ports of one VM forwarded after boot, to their loopback host ports.
#[derive(Debug, Default)]
pub(crate) struct Forwards {
    ports: tokio::sync::Mutex<HashMap<u16, u16>>,
}

/// Why a guest port could not be forwarded.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ForwardError {
    #[error("{MAX_FORWARDS} guest ports are forwarded already")]
    Full,
    #[error("no free loopback port")]
    NoPort,
    #[error("qemu refused the forward: {0}")]
    Refused(String),
    #[error(transparent)]
    Qmp(#[from] QmpError),
}

impl Forwards {
    /// The host port forwarded to `guest` port, adding the forward through `qmp` (QEMU's
    /// monitor) the first time. One forward at a time per VM, so a port is forwarded once.
    pub(crate) async fn get_or_add<'q>(
        &self,
        guest: u16,
        qmp: impl std::future::Future<Output = Result<QmpLease<'q>, QmpError>>,
    ) -> Result<u16, ForwardError> {
        let mut ports = self.ports.lock().await;
        if let Some(host) = ports.get(&guest) {
            return Ok(*host);
        }
        if ports.len() >= MAX_FORWARDS {
            return Err(ForwardError::Full);
        }
        let mut qmp = qmp.await?;
        // The free port may be taken between the probe and QEMU's bind: try a second one.
        let mut last = ForwardError::NoPort;
        for _ in 0..2 {
            let host = free_port().ok_or(ForwardError::NoPort)?;
            let line = hostfwd_add(host, guest);
            let reply = qmp
                .get()
                .execute(
                    "human-monitor-command",
                    Some(json!({ "command-line": line })),
                )
                .await?;
            // HMP commands answer their errors as text, not as QMP errors.
            match reply.as_str().map(str::trim) {
                Some("") | None => {
                    ports.insert(guest, host);
                    return Ok(host);
                }
                Some(text) => last = ForwardError::Refused(text.to_string()),
            }
        }
        Err(last)
    }
}

/// QEMU's monitor for one command: the VM's kept connection (pool clones) or a fresh one.
pub(crate) enum QmpLease<'a> {
    Kept(tokio::sync::MutexGuard<'a, Qmp>),
    Fresh(Qmp),
}

impl QmpLease<'_> {
    /// The monitor of `vm`: the connection it keeps (clones), or a new one.
    pub(crate) async fn of(vm: &super::boot::Vm) -> Result<QmpLease<'_>, QmpError> {
        Ok(match &vm.qmp {
            Some(kept) => QmpLease::Kept(kept.lock().await),
            None => {
                let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
                QmpLease::Fresh(Qmp::connect(&vm.paths.qmp_sock, deadline).await?)
            }
        })
    }

    pub(crate) fn get(&mut self) -> &mut Qmp {
        match self {
            QmpLease::Kept(g) => g,
            QmpLease::Fresh(q) => q,
        }
    }
}

/// The monitor command forwarding loopback `host` port to `guest` port of the `user` NIC.
fn hostfwd_add(host: u16, guest: u16) -> String {
    format!("hostfwd_add net0 tcp:127.0.0.1:{host}-:{guest}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn none_has_no_nic_and_user_forwards_3000() {
        assert!(args(NetworkMode::None, Some(1)).is_empty());
        let a = args(NetworkMode::User, Some(40123)).join(" ");
        assert!(a.contains("hostfwd=tcp:127.0.0.1:40123-:3000"), "{a}");
        assert!(a.contains("virtio-net-device"), "{a}");
    }

    #[test]
    fn forwards_name_the_nic_and_stay_on_loopback() {
        assert_eq!(
            hostfwd_add(40123, 8080),
            "hostfwd_add net0 tcp:127.0.0.1:40123-:8080"
        );
    }
}
