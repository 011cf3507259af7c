//! Guest networking. Off by default (no NIC at all); `user` mode gives outbound access through
//! QEMU's user-mode stack, with guest port 3000 forwarded to a loopback host port for the
//! preview URL.

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
}
