//! Shared fixtures: a real `docker-registry` on loopback, plain-HTTP pushes into it, test
//! images built from tars, a connection-dropping proxy, and checks on what the store holds.

#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[path = "../../src/testutil.rs"]
pub mod testutil;

pub use testutil::{gzip, sha256, LayerBuilder};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";

/// The `docker-registry` binary. Missing, the test fails: these tests are selected only by the
/// `registry` and `ci` nextest profiles (.config/nextest.toml), which promise a registry.
pub fn registry_binary() -> PathBuf {
    let bin = std::env::var_os("DOCKER_REGISTRY_BIN")
        .map_or_else(|| PathBuf::from("/usr/bin/docker-registry"), PathBuf::from);
    assert!(
        bin.is_file(),
        "{} not found (apt-get install docker-registry, or set DOCKER_REGISTRY_BIN)",
        bin.display()
    );
    bin
}

/// What a test registry asks of its clients beyond plain HTTP on loopback.
#[derive(Default)]
pub struct Access {
    /// A login (htpasswd, bcrypt): every request without it is answered 401.
    pub login: Option<(String, String)>,
    /// HTTPS with a certificate from a CA made for the test, in a network namespace the test
    /// makes (the store talks plain HTTP to loopback registries, and tests use no address of
    /// the host but loopback).
    pub tls: bool,
}

/// A `docker-registry` on a free port; killed on drop. Plain HTTP on loopback unless
/// [`Access`] says otherwise.
pub struct Registry {
    child: Child,
    /// The namespace a TLS registry serves in (dropped after the registry).
    netns: Option<Netns>,
    pub addr: SocketAddr,
    /// The registry's storage root, for tests that tamper with what it serves.
    pub storage: PathBuf,
    /// PEM of the CA that signed the registry's certificate (with `tls`).
    pub ca_pem: Option<Vec<u8>>,
    scheme: &'static str,
    login: Option<(String, String)>,
    _dir: tempfile::TempDir,
    http: reqwest::Client,
}

impl Registry {
    pub async fn start() -> Registry {
        Registry::start_with(Access::default()).await
    }

    pub async fn start_with(access: Access) -> Registry {
        let bin = registry_binary();
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = dir.path().join("storage");
        std::fs::create_dir(&storage).expect("mkdir");
        let netns = access.tls.then(Netns::create);
        let addr = match &netns {
            // Nothing else listens in a namespace made just now.
            Some(ns) => SocketAddr::new(ns.inside, 5000),
            None => SocketAddr::new([127, 0, 0, 1].into(), free_port([127, 0, 0, 1].into())),
        };
        let ip = addr.ip();
        let mut config = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
             http:\n  addr: {addr}\n",
            storage.display()
        );
        let mut http = reqwest::Client::builder();
        let mut ca_pem = None;
        if access.tls {
            let (ca, cert, key) = test_certificates(ip);
            std::fs::write(dir.path().join("server.pem"), cert).expect("write cert");
            std::fs::write(dir.path().join("server.key"), key).expect("write key");
            config.push_str(&format!(
                "  tls:\n    certificate: {0}/server.pem\n    key: {0}/server.key\n",
                dir.path().display()
            ));
            let root = reqwest::Certificate::from_pem(ca.as_bytes()).expect("ca");
            http = http.add_root_certificate(root);
            ca_pem = Some(ca.into_bytes());
        }
        if let Some((user, password)) = &access.login {
            let htpasswd = dir.path().join("htpasswd");
            // bcrypt is the only scheme the registry's htpasswd auth accepts.
            let out = Command::new("htpasswd")
                .args(["-Bbn", user, password])
                .output()
                .expect("htpasswd (apt-get install apache2-utils)");
            assert!(out.status.success(), "htpasswd: {out:?}");
            std::fs::write(&htpasswd, &out.stdout).expect("write htpasswd");
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: stacyvm-test\n    path: {}\n",
                htpasswd.display()
            ));
        }
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).expect("write config");
        let log = std::fs::File::create(dir.path().join("registry.log")).expect("log");
        let mut cmd = match &netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                // `ip netns exec` execs the registry: the child is the registry itself.
                c.args(["netns", "exec", &ns.name]).arg(&bin);
                c
            }
            None => Command::new(&bin),
        };
        let child = cmd
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn docker-registry");
        let mut reg = Registry {
            child,
            netns,
            addr,
            storage,
            ca_pem,
            scheme: if access.tls { "https" } else { "http" },
            login: access.login,
            _dir: dir,
            http: http.build().expect("client"),
        };
        reg.wait_ready().await;
        reg
    }

    /// `builder` with the registry's login, when it has one.
    fn authed(&self, builder: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.login {
            Some((u, p)) => builder.basic_auth(u, Some(p)),
            None => builder,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}://{}{path}", self.scheme, self.addr)
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let url = self.url("/v2/");
        loop {
            if let Ok(r) = self.authed(self.http.get(&url)).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                let log = std::fs::read_to_string(self._dir.path().join("registry.log"))
                    .unwrap_or_default();
                panic!("docker-registry exited with {status}: {log}");
            }
            assert!(
                Instant::now() < deadline,
                "docker-registry not ready after 30s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `127.0.0.1:<port>`, the registry part of image references.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Monolithic upload: POST to open an upload, PUT the bytes with their digest.
    pub async fn push_blob(&self, repo: &str, bytes: &[u8]) -> String {
        let digest = sha256(bytes);
        let url = self.url(&format!("/v2/{repo}/blobs/uploads/"));
        let r = self
            .authed(self.http.post(&url))
            .send()
            .await
            .expect("open upload");
        assert_eq!(
            r.status().as_u16(),
            202,
            "open upload: {:?}",
            r.text().await
        );
        let loc = r
            .headers()
            .get("location")
            .expect("location")
            .to_str()
            .expect("location text")
            .to_string();
        let loc = if loc.starts_with("http") {
            loc
        } else {
            self.url(&loc)
        };
        let sep = if loc.contains('?') { '&' } else { '?' };
        let r = self
            .authed(self.http.put(format!("{loc}{sep}digest={digest}")))
            .header("content-type", "application/octet-stream")
            .body(bytes.to_vec())
            .send()
            .await
            .expect("upload");
        assert_eq!(r.status().as_u16(), 201, "upload: {:?}", r.text().await);
        digest
    }

    pub async fn push_manifest(&self, repo: &str, reference: &str, media_type: &str, body: &[u8]) {
        let url = self.url(&format!("/v2/{repo}/manifests/{reference}"));
        let r = self
            .authed(self.http.put(&url))
            .header("content-type", media_type)
            .body(body.to_vec())
            .send()
            .await
            .expect("put manifest");
        assert_eq!(
            r.status().as_u16(),
            201,
            "put manifest: {:?}",
            r.text().await
        );
    }

    /// Pushes every blob of `img` and its manifest as `repo:tag`.
    pub async fn push_image(&self, repo: &str, tag: &str, img: &TestImage) {
        self.push_blob(repo, &img.config).await;
        for l in &img.blobs {
            self.push_blob(repo, l).await;
        }
        self.push_manifest(repo, tag, OCI_MANIFEST, &img.manifest)
            .await;
    }

    /// Where the registry keeps a blob's bytes (distribution's filesystem driver layout).
    pub fn blob_data(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").expect("sha256");
        self.storage
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port(ip: std::net::IpAddr) -> u16 {
    let l = TcpListener::bind((ip, 0)).expect("bind");
    l.local_addr().expect("addr").port()
}

/// A network namespace joined to this one by a veth pair on a private /30, removed on drop.
struct Netns {
    name: String,
    /// The namespace's end of the pair.
    inside: std::net::IpAddr,
}

impl Netns {
    fn create() -> Netns {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let id = (std::process::id() % 60) * 4 + n % 4;
        let name = format!("svmreg{}-{n}", std::process::id() % 100_000);
        let (host_if, ns_if) = (format!("svr{id}h"), format!("svr{id}n"));
        let (a, b) = ((id * 4) / 256, (id * 4) % 256);
        let host_ip = format!("10.231.{a}.{}", b + 1);
        let inside = format!("10.231.{a}.{}", b + 2);
        let ns = Netns {
            name: name.clone(),
            inside: inside.parse().expect("ip"),
        };
        let ip = |args: &[&str]| {
            let out = Command::new("ip")
                .args(args)
                .output()
                .expect("ip (iproute2)");
            assert!(out.status.success(), "ip {args:?}: {out:?}");
        };
        ip(&["netns", "add", &name]);
        ip(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if,
        ]);
        ip(&["link", "set", &ns_if, "netns", &name]);
        ip(&["addr", "add", &format!("{host_ip}/30"), "dev", &host_if]);
        ip(&["link", "set", &host_if, "up"]);
        let inner = ["netns", "exec", &name, "ip"];
        ip(&[
            &inner[..],
            &["addr", "add", &format!("{inside}/30"), "dev", &ns_if],
        ]
        .concat());
        ip(&[&inner[..], &["link", "set", &ns_if, "up"]].concat());
        ip(&[&inner[..], &["link", "set", "lo", "up"]].concat());
        ns
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace deletes the pair with it.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A CA made for the test and a server certificate it signed for `ip`: (CA PEM, certificate
/// PEM, key PEM).
fn test_certificates(ip: std::net::IpAddr) -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, SanType};
    let ca_key = KeyPair::generate().expect("ca key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).expect("ca cert");
    let key = KeyPair::generate().expect("key");
    let mut leaf = CertificateParams::new(Vec::<String>::new()).expect("params");
    leaf.subject_alt_names = vec![SanType::IpAddress(ip)];
    let cert = leaf.signed_by(&key, &ca_cert, &ca_key).expect("cert");
    (ca_cert.pem(), cert.pem(), key.serialize_pem())
}

/// An image as the test built it: layer blobs as served, and the documents naming them.
pub struct TestImage {
    pub config: Vec<u8>,
    pub blobs: Vec<Vec<u8>>,
    pub diff_ids: Vec<String>,
    pub manifest: Vec<u8>,
    pub manifest_digest: String,
}

fn descriptor(media_type: &str, bytes: &[u8]) -> serde_json::Value {
    serde_json::json!({"mediaType": media_type, "digest": sha256(bytes), "size": bytes.len()})
}

/// Builds an image from uncompressed layer tars (gzip-compressed when `compress`).
pub fn image(tars: &[Vec<u8>], compress: bool, arch: &str) -> TestImage {
    let blobs: Vec<Vec<u8>> = tars
        .iter()
        .map(|t| if compress { gzip(t) } else { t.clone() })
        .collect();
    image_from_blobs(tars, blobs, arch)
}

/// Like [`image`] but with the layer blobs given as served (to serve broken ones).
pub fn image_from_blobs(tars: &[Vec<u8>], blobs: Vec<Vec<u8>>, arch: &str) -> TestImage {
    let diff_ids: Vec<String> = tars.iter().map(|t| sha256(t)).collect();
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": arch,
        "os": "linux",
        "created": "2024-01-02T03:04:05Z",
        "config": {
            "Env": ["PATH=/bin", "GREETING=hi"],
            "Cmd": ["/bin/sh", "-c", "echo hi"],
            "Entrypoint": null,
            "WorkingDir": "/work",
            "User": "1000:1000",
        },
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .expect("config json");
    let layers: Vec<_> = blobs
        .iter()
        .map(|b| {
            let mt = if b.starts_with(&[0x1f, 0x8b]) {
                OCI_LAYER_GZIP
            } else {
                OCI_LAYER_TAR
            };
            descriptor(mt, b)
        })
        .collect();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor(OCI_CONFIG, &config),
        "layers": layers,
    }))
    .expect("manifest json");
    TestImage {
        manifest_digest: sha256(&manifest),
        config,
        blobs,
        diff_ids,
        manifest,
    }
}

/// Two layers: the second changes a file, deletes one with a whiteout, and makes `var/cache`
/// opaque.
pub fn two_layer_tars() -> Vec<Vec<u8>> {
    let base = LayerBuilder::new()
        .dir("etc", 0o755)
        .file("etc/hostname", b"base\n", 0o644)
        .file("etc/motd", b"welcome\n", 0o644)
        .file("bin/sh", b"#!fake shell\n", 0o755)
        .symlink("bin/ash", "/bin/sh")
        .dir("var/cache", 0o755)
        .file("var/cache/a", b"a", 0o644)
        .file("var/cache/b", b"b", 0o644)
        .build();
    let top = LayerBuilder::new()
        .file("etc/hostname", b"top\n", 0o644)
        .whiteout("etc/motd")
        .opaque("var/cache")
        .file("var/cache/c", b"c", 0o644)
        .dir("work", 0o755)
        .build();
    vec![base, top]
}

/// Checks a rootfs built from [`two_layer_tars`].
pub fn assert_two_layer_rootfs(root: &Path) {
    let read = |p: &str| std::fs::read(root.join(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
    assert_eq!(read("etc/hostname"), b"top\n");
    assert!(!root.join("etc/motd").exists(), "whiteout not applied");
    assert_eq!(read("bin/sh"), b"#!fake shell\n");
    assert_eq!(
        std::fs::read_link(root.join("bin/ash")).expect("symlink"),
        Path::new("/bin/sh")
    );
    let mut cache: Vec<_> = std::fs::read_dir(root.join("var/cache"))
        .expect("ls")
        .map(|e| e.expect("entry").file_name().into_string().expect("utf8"))
        .collect();
    cache.sort();
    assert_eq!(cache, ["c"], "opaque dir not applied");
    assert!(root.join("work").is_dir());
    let leftover_markers = walk(root)
        .into_iter()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(".wh."))
        })
        .count();
    assert_eq!(leftover_markers, 0, "whiteout markers in the rootfs");
}

/// Every path under `root` (not following symlinks).
pub fn walk(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(p.clone());
            }
            out.push(p);
        }
    }
    out
}

/// Entries directly in `root/rel`, or 0 when it does not exist.
pub fn count(root: &Path, rel: &str) -> usize {
    std::fs::read_dir(root.join(rel)).map_or(0, |rd| rd.count())
}

/// The store holds nothing: no blob, layer, rootfs, name or temp file. What a failed first
/// pull or import must leave.
pub fn assert_store_empty(root: &Path) {
    for rel in ["blobs/sha256", "layers/sha256", "rootfs", "tmp"] {
        let left: Vec<_> = std::fs::read_dir(root.join(rel))
            .map(|rd| rd.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "{rel} holds {left:?}");
    }
    let index = root.join("refs/index.json");
    if index.exists() {
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&index).expect("read")).expect("json");
        assert_eq!(v["refs"], serde_json::json!({}), "names left: {v}");
    }
}

/// A TCP proxy to `upstream` that passes at most `limit` bytes of each response stream and then
/// closes the connection: a registry dropping mid-transfer. It counts the response bytes it
/// passed. Stops when the handle is dropped.
pub struct DroppingProxy {
    pub addr: SocketAddr,
    /// Response bytes passed to clients so far.
    pub served: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl DroppingProxy {
    /// A proxy that drops nothing, to count what clients download.
    pub async fn counting(upstream: SocketAddr) -> DroppingProxy {
        DroppingProxy::start(upstream, usize::MAX).await
    }

    pub async fn start(upstream: SocketAddr, limit: usize) -> DroppingProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind proxy");
        let addr = listener.local_addr().expect("addr");
        let served = Arc::new(AtomicUsize::new(0));
        let counter = served.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let counter = counter.clone();
                tokio::spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (mut cr, mut cw) = client.into_split();
                    let (mut sr, mut sw) = server.into_split();
                    let up = tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut cr, &mut sw).await;
                    });
                    let mut sent = 0;
                    let mut buf = vec![0u8; 16 * 1024];
                    while sent < limit {
                        let n = match sr.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n.min(limit - sent),
                        };
                        if cw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                        sent += n;
                        counter.fetch_add(n, Ordering::Relaxed);
                    }
                    up.abort();
                    // Dropping both halves closes the client's connection mid-response.
                });
            }
        });
        DroppingProxy { addr, served, task }
    }
}

impl Drop for DroppingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Deterministic incompressible bytes (xorshift), so gzip cannot shrink a "big" layer.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}
