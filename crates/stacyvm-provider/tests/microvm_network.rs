//! Guest networking of the microvm provider. `network_mode: user`: a server on guest port 3000
//! answers through the sandbox's forwarded loopback port, and the guest reaches a service on
//! the host's loopback through QEMU's gateway 10.0.2.2 (the only outbound target reachable on
//! these machines), for a restored clone and for a clone from the warm pool, each with its own
//! port; a guest server outlives a pause to disk and goes on in a memory snapshot's clone. The
//! default (`none`): the guest has no interface but `lo`.
//!
//! Needs `scripts/setup-microvm.sh`; without the assets the tests fail. The default nextest
//! profile leaves this binary out (profiles `vm` and `ci` select it).
#![cfg(feature = "microvm")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod microvm_support;

use std::time::Duration;

use stacyvm_provider::conformance::{exec_collect, sh, spec};
use stacyvm_provider::{MicrovmConfig, MicrovmProvider, Provider};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

use microvm_support::{config, image, BOOT_BOUND};

/// One VM test at a time in this process.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn spawn(p: &MicrovmProvider) -> String {
    timeout(BOOT_BOUND, p.spawn(&spec(&image())))
        .await
        .expect("spawn within bound")
        .expect("spawn")
        .runtime_id
}

async fn run(p: &MicrovmProvider, id: &str, script: &str) -> String {
    let c = timeout(Duration::from_secs(60), exec_collect(p, id, sh(script)))
        .await
        .expect("exec within bound");
    assert!(matches!(c.result, Ok(0)), "{script}: {c:?}");
    c.stdout_str()
}

/// `GET /` on a loopback port; `None` while nothing answers with a body (QEMU accepts on the
/// forwarded port even before the guest listens, then closes).
async fn http_get(port: u16) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await
        .ok()?;
    let mut buf = Vec::new();
    timeout(Duration::from_secs(10), s.read_to_end(&mut buf))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    text.contains("\r\n\r\n").then_some(text)
}

/// Starts busybox httpd on guest port 3000 serving the sandbox's hostname, and fetches it from
/// the host through the forwarded port.
async fn check_preview(p: &MicrovmProvider, id: &str) {
    let port = p
        .preview_port(id)
        .expect("a preview port with user networking");
    run(
        p,
        id,
        "mkdir -p /tmp/www && hostname > /tmp/www/index.html && httpd -p 3000 -h /tmp/www",
    )
    .await;
    let body = timeout(Duration::from_secs(30), async {
        loop {
            if let Some(r) = http_get(port).await {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("guest port 3000 of {id} not reachable on 127.0.0.1:{port}"));
    assert!(body.starts_with("HTTP/1."), "{body}");
    assert!(body.ends_with(&format!("{id}\n")), "{body}");
    // The preview proxy's target for guest port 3000 is that forward.
    assert_eq!(
        p.preview_target(id, 3000).await.unwrap(),
        Some(std::net::SocketAddr::from(([127, 0, 0, 1], port)))
    );
    // Any other port is forwarded the first time it is asked for (through QEMU's monitor),
    // once: asking again answers the same forward.
    let other = p
        .preview_target(id, 8080)
        .await
        .unwrap()
        .expect("guest port 8080 forwarded on demand");
    assert!(other.ip().is_loopback() && other.port() != port, "{other}");
    assert_eq!(p.preview_target(id, 8080).await.unwrap(), Some(other));
    run(
        p,
        id,
        "mkdir -p /tmp/w8 && echo on-8080 > /tmp/w8/index.html && httpd -p 8080 -h /tmp/w8",
    )
    .await;
    let body = timeout(Duration::from_secs(30), async {
        loop {
            if let Some(r) = http_get(other.port()).await {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("guest port 8080 of {id} not reachable on {other}"));
    assert!(body.ends_with("on-8080\n"), "{body}");
}

/// The guest fetches from a server on the host's loopback through the gateway 10.0.2.2.
async fn check_outbound(p: &MicrovmProvider, id: &str, host_port: u16) {
    let out = run(
        p,
        id,
        // nc, not wget: the image's static glibc busybox crashes in wget's name lookup.
        &format!(
            "ip -o addr show eth0; printf 'GET / HTTP/1.0\\r\\n\\r\\n' | timeout 20 nc 10.0.2.2 {host_port}"
        ),
    )
    .await;
    assert!(out.contains("10.0.2.15"), "{out}");
    assert!(out.ends_with("from-host\n"), "{out}");
}

/// A tiny HTTP server on the host's loopback, owned by the test (aborted on drop).
struct HostServer {
    port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl HostServer {
    async fn start() -> Self {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let mut buf = [0u8; 1024];
                let _ = timeout(Duration::from_secs(5), s.read(&mut buf)).await;
                let _ = s
                    .write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 10\r\n\r\nfrom-host\n")
                    .await;
            }
        });
        HostServer { port, task }
    }
}

impl Drop for HostServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_networking_forwards_preview_ports_and_reaches_the_host() {
    let cfg = config();
    let _serial = SERIAL.lock().await;
    let host = HostServer::start().await;
    let p = MicrovmProvider::new(MicrovmConfig {
        network_mode: "user".into(),
        warm_pool: 1,
        ..cfg
    })
    .expect("valid config");

    // Restored from the networked template (built by this spawn the first time).
    let a = spawn(&p).await;
    eprintln!("{a}: {:?}", p.boot_kind(&a));
    check_preview(&p, &a).await;
    check_outbound(&p, &a, host.port).await;

    // From the warm pool: its own forward, chosen when the clone was restored.
    let pool = timeout(BOOT_BOUND, async {
        while p.warm_count() == 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(pool.is_ok(), "the pool did not fill");
    let b = spawn(&p).await;
    assert_eq!(p.boot_kind(&b), Some("pooled"));
    assert_ne!(p.preview_port(&a), p.preview_port(&b));
    check_preview(&p, &b).await;
    check_outbound(&p, &b, host.port).await;
    // a's server still answers on a's port only.
    let again = http_get(p.preview_port(&a).unwrap()).await.unwrap();
    assert!(again.ends_with(&format!("{a}\n")), "{again}");

    timeout(Duration::from_secs(60), p.shutdown())
        .await
        .unwrap();
    for id in [&a, &b] {
        let port = p.preview_port(id).unwrap();
        timeout(Duration::from_secs(30), p.destroy(id))
            .await
            .unwrap()
            .unwrap();
        assert!(
            TcpStream::connect(("127.0.0.1", port)).await.is_err(),
            "port {port} still forwarded after destroy"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_network_interface_by_default() {
    let cfg = config();
    let _serial = SERIAL.lock().await;
    let p = MicrovmProvider::new(cfg).expect("valid config");
    let id = spawn(&p).await;
    assert_eq!(p.preview_port(&id), None);
    assert_eq!(p.preview_target(&id, 3000).await.unwrap(), None);
    let ifaces = run(&p, &id, "ls /sys/class/net").await;
    assert_eq!(ifaces.split_whitespace().collect::<Vec<_>>(), ["lo"]);
    timeout(Duration::from_secs(30), p.destroy(&id))
        .await
        .unwrap()
        .unwrap();
}

/// Fetches `GET /` on `port` until it answers (30 s), returning the body.
async fn fetch(port: u16) -> String {
    timeout(Duration::from_secs(30), async {
        loop {
            if let Some(r) = http_get(port).await {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("nothing answers on 127.0.0.1:{port}"))
}

/// With user networking, a guest server started before a pause to disk answers on the same
/// preview port after resume (the resumed QEMU forwards it again), and a clone of a memory
/// snapshot of that guest serves the same page, still running, on a forward of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_servers_survive_pause_and_memory_snapshots() {
    let _serial = SERIAL.lock().await;
    let p = MicrovmProvider::new(MicrovmConfig {
        network_mode: "user".into(),
        ..config()
    })
    .unwrap();
    let id = spawn(&p).await;
    check_preview(&p, &id).await;
    let port = p.preview_port(&id).unwrap();
    timeout(BOOT_BOUND, p.pause(&id))
        .await
        .unwrap()
        .expect("pause");
    assert!(http_get(port).await.is_none(), "a paused VM answered");
    timeout(BOOT_BOUND, p.resume(&id))
        .await
        .unwrap()
        .expect("resume");
    assert_eq!(p.preview_port(&id), Some(port));
    let body = fetch(port).await;
    assert!(body.ends_with(&format!("{id}\n")), "{body}");

    let sid = format!("snap-{}", &stacyvm_types::new_sandbox_id()[3..]);
    timeout(BOOT_BOUND, p.snapshot(&id, &sid))
        .await
        .unwrap()
        .expect("snapshot");
    let clone = timeout(
        BOOT_BOUND,
        p.spawn_from_snapshot(&spec(&image()), &[], &sid),
    )
    .await
    .unwrap()
    .expect("spawn from snapshot")
    .runtime_id;
    let cport = p.preview_port(&clone).expect("the clone's forward");
    assert_ne!(cport, port);
    // The httpd of the snapshot serves the page the source wrote (its hostname).
    let body = fetch(cport).await;
    assert!(body.ends_with(&format!("{id}\n")), "{body}");
    for s in [&clone, &id] {
        timeout(Duration::from_secs(30), p.destroy(s))
            .await
            .unwrap()
            .unwrap();
    }
    p.delete_snapshot(&sid).await.unwrap();
}
