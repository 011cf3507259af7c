//! mTLS on the RPC listener, with a throwaway CA and certificates made by the `openssl` CLI.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{config_with, fake_cp, mock_registry, Rpc, TOKEN, WORKER};
use serde_json::Value;
use stacyvm_worker::{run, WorkerOverrides};
use tokio_util::sync::CancellationToken;

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl CLI is installed");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn key(dir: &Path, name: &str) {
    openssl(
        dir,
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            name,
        ],
    );
}

fn ca(dir: &Path, name: &str) {
    key(dir, &format!("{name}.key"));
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-new",
            "-key",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.pem"),
            "-days",
            "2",
            "-subj",
            &format!("/CN={name}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
}

fn leaf(dir: &Path, name: &str, ca: &str, ext: &str) {
    key(dir, &format!("{name}.key"));
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-key",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            &format!("/CN={name}"),
        ],
    );
    std::fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-out",
            &format!("{name}.pem"),
            "-days",
            "2",
            "-extfile",
            &format!("{name}.ext"),
        ],
    );
}

struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        ca(d, "ca");
        ca(d, "rogue-ca");
        leaf(
            d,
            "server",
            "ca",
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n",
        );
        let client_ext = "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n";
        leaf(d, "client", "ca", client_ext);
        leaf(d, "rogue", "rogue-ca", client_ext);
        Pki { dir }
    }

    fn path(&self, f: &str) -> PathBuf {
        self.dir.path().join(f)
    }

    fn read(&self, f: &str) -> Vec<u8> {
        std::fs::read(self.path(f)).unwrap()
    }

    fn client(&self, identity: Option<&str>) -> reqwest::Client {
        let mut b = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(&self.read("ca.pem")).unwrap())
            .timeout(Duration::from_secs(10));
        if let Some(name) = identity {
            let mut pem = self.read(&format!("{name}.pem"));
            pem.extend(self.read(&format!("{name}.key")));
            b = b.identity(reqwest::Identity::from_pem(&pem).unwrap());
        }
        b.build().unwrap()
    }

    fn tls_yaml(&self, with_client_ca: bool) -> String {
        let mut y = format!(
            "  listen_addr: 127.0.0.1:0\n  rpc_tls:\n    enabled: true\n    server_cert_file: {}\n    server_key_file: {}\n",
            self.path("server.pem").display(),
            self.path("server.key").display()
        );
        if with_client_ca {
            y.push_str(&format!(
                "    client_ca_file: {}\n",
                self.path("ca.pem").display()
            ));
        }
        y
    }
}

/// Starts the worker; returns its advertised RPC URL and the shutdown token.
async fn start(worker_yaml: &str) -> (String, CancellationToken) {
    let (cp_url, cp) = fake_cp().await;
    let (_, reg) = mock_registry();
    let cfg = config_with(&cp_url, worker_yaml, WorkerOverrides::default()).with_providers(reg);
    let shutdown = CancellationToken::new();
    tokio::spawn(run(cfg, shutdown.clone()));
    let hb = cp.wait_heartbeat(10, |_| true).await;
    (
        hb.body["capacity"]["rpc_url"].as_str().unwrap().to_string(),
        shutdown,
    )
}

async fn rpc_status(client: &reqwest::Client, url: &str) -> Result<u16, reqwest::Error> {
    let r = client
        .post(format!("{url}/rpc"))
        .header("X-Worker-ID", WORKER)
        .header("X-Worker-Token", TOKEN)
        .json(&Rpc::envelope("worker.shutdown", None, None))
        .send()
        .await?;
    let status = r.status().as_u16();
    let _ = r.bytes().await?;
    Ok(status)
}

#[tokio::test]
async fn client_certificates_are_required_and_verified() {
    let pki = Pki::new();
    let (url, shutdown) = start(&pki.tls_yaml(true)).await;
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");

    // A certificate from our CA: health and RPC work.
    let good = pki.client(Some("client"));
    let r = good.get(format!("{url}/health")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["worker_id"], WORKER);
    assert_eq!(rpc_status(&good, &url).await.unwrap(), 200);

    // No certificate, or one from another CA: refused at the TLS layer.
    for (name, client) in [
        ("no cert", pki.client(None)),
        ("rogue CA", pki.client(Some("rogue"))),
    ] {
        let r = client.get(format!("{url}/health")).send().await;
        match r {
            Err(_) => {}
            Ok(resp) => {
                // TLS 1.3 may report the refusal only when the body is read.
                assert!(resp.bytes().await.is_err(), "{name}: request went through");
            }
        }
    }

    // Plain HTTP to the TLS port gets nowhere.
    let plain = url.replace("https://", "http://");
    let r = reqwest::Client::new()
        .get(format!("{plain}/health"))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(r.is_err() || !r.unwrap().status().is_success());

    // The server still works for good clients after the failed handshakes.
    assert_eq!(
        good.get(format!("{url}/health"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    shutdown.cancel();
}

#[tokio::test]
async fn server_only_tls_accepts_clients_without_certificates() {
    let pki = Pki::new();
    let (url, shutdown) = start(&pki.tls_yaml(false)).await;
    assert!(url.starts_with("https://"));
    let anon = pki.client(None);
    assert_eq!(
        anon.get(format!("{url}/health"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // Still authenticated at the RPC layer.
    let r = anon
        .post(format!("{url}/rpc"))
        .header("X-Worker-ID", WORKER)
        .header("X-Worker-Token", "wrong")
        .json(&Rpc::envelope("worker.shutdown", None, None))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    shutdown.cancel();
}

#[tokio::test]
async fn bad_tls_files_fail_startup() {
    let (cp_url, _) = fake_cp().await;
    let (_, reg) = mock_registry();
    let yaml = "  listen_addr: 127.0.0.1:0\n  rpc_tls:\n    enabled: true\n    server_cert_file: /nonexistent/cert.pem\n    server_key_file: /nonexistent/key.pem\n";
    let cfg = config_with(&cp_url, yaml, WorkerOverrides::default()).with_providers(reg);
    let err = run(cfg, CancellationToken::new()).await.unwrap_err();
    assert!(
        matches!(err, stacyvm_worker::WorkerError::Tls(_)),
        "{err:?}"
    );
}

/// An `https` control plane whose certificate comes from `worker.rpc_tls.ca_file`'s CA.
#[tokio::test]
async fn https_control_plane_trusted_through_ca_file() {
    use std::sync::{Arc, Mutex};

    use axum::routing::post;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let pki = Pki::new();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(pki.path("server.pem"))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(pki.path("server.key")).unwrap();
    let tls = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let seen: Arc<Mutex<Vec<Value>>> = Arc::default();
    let seen2 = seen.clone();
    let router = axum::Router::new().route(
        "/api/v1/worker/{id}/heartbeat",
        post(move |axum::Json(body): axum::Json<Value>| {
            let seen = seen2.clone();
            async move {
                seen.lock().unwrap().push(body);
                axum::Json(serde_json::json!({}))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let (acceptor, router) = (acceptor.clone(), router.clone());
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        tower::ServiceExt::oneshot(router.clone(), req.map(axum::body::Body::new))
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });

    let cp_url = format!("https://127.0.0.1:{}", addr.port());
    let once = |ca: Option<PathBuf>| {
        let yaml = match &ca {
            Some(p) => format!("  rpc_tls:\n    ca_file: {}\n", p.display()),
            None => String::new(),
        };
        let flags = WorkerOverrides {
            once: true,
            ..Default::default()
        };
        config_with(&cp_url, &yaml, flags).with_providers(mock_registry().1)
    };
    // Without the CA the certificate is not trusted: the (first) heartbeat fails.
    assert!(run(once(None), CancellationToken::new()).await.is_err());
    assert!(seen.lock().unwrap().is_empty());
    run(once(Some(pki.path("ca.pem"))), CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(seen.lock().unwrap().len(), 1);
}

/// The preview route over mTLS: the credential check, a sandbox the worker holds, and an
/// upgrade spliced through the TLS connection to the sandbox's server (the mock's ports are
/// the host's loopback, so a server there stands in for it).
#[tokio::test]
async fn previews_pass_over_mtls_with_upgrades() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = upstream.local_addr().unwrap().port();
    tokio::spawn(async move {
        let (mut s, _) = upstream.accept().await.unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            assert_eq!(s.read(&mut byte).await.unwrap(), 1);
            head.push(byte[0]);
        }
        let head = String::from_utf8(head).unwrap().to_ascii_lowercase();
        assert!(head.starts_with("get /socket?x=1 "), "{head}");
        assert!(head.contains("host: 8080-sb-tls.localhost"), "{head}");
        assert!(!head.contains("x-worker-token"), "{head}");
        s.write_all(
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\n",
        )
        .await
        .unwrap();
        let mut buf = [0u8; 64];
        loop {
            let n = s.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            s.write_all(&buf[..n]).await.unwrap();
        }
    });

    let pki = Pki::new();
    let (cp_url, cp) = fake_cp().await;
    let (_, reg) = mock_registry();
    let cfg = common::config_full(
        &cp_url,
        &pki.tls_yaml(true),
        "server:\n  preview_unisolated: true\n",
        WorkerOverrides::default(),
    )
    .with_providers(reg);
    let shutdown = CancellationToken::new();
    tokio::spawn(run(cfg, shutdown.clone()));
    let hb = cp.wait_heartbeat(10, |_| true).await;
    let url = hb.body["capacity"]["rpc_url"].as_str().unwrap().to_string();
    assert!(hb.body["capabilities"]
        .as_array()
        .unwrap()
        .contains(&"preview".into()));

    let client = pki.client(Some("client"));
    let rpc = Rpc {
        http: client.clone(),
        url: format!("{url}/rpc"),
        worker: WORKER.into(),
        token: TOKEN.into(),
    };
    rpc.spawn("sb-tls").await;
    let preview = |token: &str| {
        client
            .get(format!("{url}/rpc/v1/preview/sb-tls/{port}"))
            .version(reqwest::Version::HTTP_11)
            .header("X-Worker-ID", WORKER)
            .header("X-Worker-Token", token)
            .header("X-StacyVM-Preview-Path", "/socket?x=1")
            .header("X-Forwarded-Host", "8080-sb-tls.localhost")
            .header("Connection", "Upgrade")
            .header("Upgrade", "echo")
    };
    let refused = preview("wrong-token").send().await.unwrap();
    assert_eq!(refused.status().as_u16(), 401);
    assert!(refused.headers().contains_key("x-stacyvm-protocol"));

    let resp = preview(TOKEN).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 101);
    let mut tunnel = resp.upgrade().await.unwrap();
    for msg in [&b"ping"[..], b"pong pong"] {
        tunnel.write_all(msg).await.unwrap();
        let mut got = vec![0u8; msg.len()];
        tokio::time::timeout(Duration::from_secs(10), tunnel.read_exact(&mut got))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, msg);
    }
    shutdown.cancel();
}
