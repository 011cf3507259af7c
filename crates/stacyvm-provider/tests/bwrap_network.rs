//! `network_mode: user` reaching out, on a network this test makes: a network namespace joined
//! to the host by a veth pair with private addresses, holding a TCP echo server and a DNS
//! responder that answers one A record. From inside a sandbox, a name resolves through the
//! configured resolver (`providers.bwrap.dns`), TCP reaches the echo server at the address it
//! resolved to, and a server on the host's loopback is reachable neither as `127.0.0.1` nor
//! through a host address. No traffic leaves the machine (so the sandbox's gateway, which is
//! the host's real one, is not tried; a unit test in `net.rs` pins `--no-map-gw`). Selected by
//! the `bwrap` nextest profile.
#![cfg(feature = "bwrap")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod bwrap_support;

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, TcpListener, UdpSocket};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bwrap_support::{fixture_with, sh_out, spawn};
use stacyvm_provider::Provider;

/// The name the responder knows.
const NAME: &str = "probe.stacyvm.test";
const ECHO_PORT: u16 = 7000;

/// A network namespace with a veth pair to the host; both are deleted on drop, also when the
/// test fails.
struct TestNet {
    ns: String,
    host_if: String,
    host_addr: Ipv4Addr,
    peer_addr: Ipv4Addr,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("ip (iproute2)");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl TestNet {
    fn new() -> TestNet {
        // Names and a /24 of their own per test process (interface names are at most 15 bytes).
        let tag = std::process::id() % 100_000;
        let octet = u8::try_from(tag % 200 + 20).unwrap();
        let net = TestNet {
            ns: format!("stacyvm-t{tag}"),
            host_if: format!("svh{tag}"),
            host_addr: Ipv4Addr::new(10, 213, octet, 1),
            peer_addr: Ipv4Addr::new(10, 213, octet, 2),
        };
        let peer_if = format!("svn{tag}");
        ip(&["netns", "add", &net.ns]);
        ip(&[
            "link",
            "add",
            &net.host_if,
            "type",
            "veth",
            "peer",
            "name",
            &peer_if,
        ]);
        ip(&["link", "set", &peer_if, "netns", &net.ns]);
        ip(&[
            "addr",
            "add",
            &format!("{}/24", net.host_addr),
            "dev",
            &net.host_if,
        ]);
        ip(&["link", "set", &net.host_if, "up"]);
        let peer = format!("{}/24", net.peer_addr);
        ip(&["-n", &net.ns, "addr", "add", &peer, "dev", &peer_if]);
        ip(&["-n", &net.ns, "link", "set", &peer_if, "up"]);
        ip(&["-n", &net.ns, "link", "set", "lo", "up"]);
        net
    }

    /// Runs `bind` on a thread inside the namespace: the sockets it makes belong there, and
    /// stay there wherever they are used afterwards.
    fn bind_in<T: Send + 'static>(&self, bind: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/run/netns/{}", self.ns);
        std::thread::spawn(move || {
            enter_netns(&path);
            bind()
        })
        .join()
        .unwrap()
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        // Deleting the namespace deletes its end of the pair, and with it the host's end.
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .status();
    }
}

#[expect(unsafe_code, reason = "std has no setns(2)")]
fn enter_netns(path: &str) {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(path).unwrap();
    // SAFETY: setns(2) takes a descriptor that stays open for the call and flags; it changes
    // only this thread's network namespace.
    let r = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
}

/// Answers every A query for [`NAME`] with `addr`; other names NXDOMAIN, other types empty.
fn dns_responder(sock: UdpSocket, addr: Ipv4Addr) {
    let mut buf = [0u8; 512];
    while let Ok((n, from)) = sock.recv_from(&mut buf) {
        let q = &buf[..n];
        if n < 12 {
            continue;
        }
        // The question: labels up to the zero byte, then type and class.
        let mut i = 12;
        let mut labels = Vec::new();
        while i < n && q[i] != 0 {
            let len = usize::from(q[i]);
            labels.push(String::from_utf8_lossy(&q[i + 1..(i + 1 + len).min(n)]).into_owned());
            i += 1 + len;
        }
        let end = i + 5;
        if end > n {
            continue;
        }
        let qtype = u16::from_be_bytes([q[i + 1], q[i + 2]]);
        let known = labels.join(".").eq_ignore_ascii_case(NAME);
        let answer = known && qtype == 1;
        let mut r = Vec::with_capacity(end + 16);
        r.extend_from_slice(&q[..2]);
        r.extend_from_slice(if known { &[0x81, 0x80] } else { &[0x81, 0x83] });
        r.extend_from_slice(&[0, 1, 0, u8::from(answer), 0, 0, 0, 0]);
        r.extend_from_slice(&q[12..end]);
        if answer {
            r.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
            r.extend_from_slice(&addr.octets());
        }
        let _ = sock.send_to(&r, from);
    }
}

/// Sends each line back prefixed with `echo:`, one line per connection.
fn echo_server(l: TcpListener) {
    for mut c in l.incoming().flatten() {
        let mut line = String::new();
        let _ = BufReader::new(&c).read_line(&mut line);
        let _ = write!(c, "echo:{line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_network_resolves_and_connects_out_but_not_to_the_hosts_loopback() {
    let net = TestNet::new();
    let peer = net.peer_addr;
    let (udp, tcp) = net.bind_in(|| {
        let udp = UdpSocket::bind(("0.0.0.0", 53)).unwrap();
        (udp, TcpListener::bind(("0.0.0.0", ECHO_PORT)).unwrap())
    });
    std::thread::spawn(move || echo_server(tcp));
    std::thread::spawn(move || dns_responder(udp, peer));
    // What a sandbox must not reach: a service on the host's loopback only.
    let hidden = TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let hidden_port = hidden.local_addr().unwrap().port();
    let reached = Arc::new(AtomicUsize::new(0));
    std::thread::spawn({
        let reached = reached.clone();
        move || {
            for mut c in hidden.incoming().flatten() {
                reached.fetch_add(1, Ordering::SeqCst);
                let _ = c.write_all(b"HOST-LOOPBACK\n");
            }
        }
    });

    let f = fixture_with(|c| {
        c.network_mode = "user".into();
        c.dns = vec![peer.to_string()];
    })
    .await;
    let p = &*f.p;
    let id = spawn(p).await;
    let (_, conf) = sh_out(p, &id, "cat /etc/resolv.conf").await;
    assert_eq!(conf, format!("nameserver {peer}\n"));
    // A name, through the configured resolver (UDP out through pasta).
    let (_, found) = sh_out(
        p,
        &id,
        &format!("timeout 10 nslookup {NAME} | awk '/^Address/ {{a=$2}} END {{print a}}'"),
    )
    .await;
    assert_eq!(found.trim(), peer.to_string(), "resolved {found:?}");
    // TCP to the address it resolved to. The sandbox's side stays open until the answer is
    // in: this pasta (2023-03) does not pass the server's FIN on once the sandbox half-closed.
    let (code, echoed) = sh_out(
        p,
        &id,
        &format!(
            "(echo hello; sleep 1) | timeout 10 nc -w 5 {} {ECHO_PORT}",
            found.trim()
        ),
    )
    .await;
    assert_eq!((code, echoed.as_str()), (0, "echo:hello\n"));
    // The host's loopback service: not as 127.0.0.1 (the sandbox's own loopback), not through
    // a host address (pasta connects to it from the host, where it is not on that address).
    for target in ["127.0.0.1".to_string(), net.host_addr.to_string()] {
        let (_, got) = sh_out(
            p,
            &id,
            &format!("(echo x; sleep 1) | timeout 5 nc -w 2 {target} {hidden_port} 2>&1"),
        )
        .await;
        assert!(!got.contains("HOST-LOOPBACK"), "{target}: {got}");
    }
    assert_eq!(
        reached.load(Ordering::SeqCst),
        0,
        "the host's loopback was reached"
    );
    p.destroy(&id).await.unwrap();
}
