//! Previews of a sandbox on a remote worker: [`RemotePreview`] hands the request to an
//! in-process worker (the real `stacyvm-worker` router, mock provider, previews of unisolated
//! providers allowed), which proxies it to the sandbox's port (a server on the host's loopback,
//! where the mock's ports are). Path, headers, streamed bodies both ways, an upgrade spliced
//! end to end, and the worker's refusals.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use futures_util::StreamExt;
use serde_json::{json, Value};
use stacyvm_config::Config;
use stacyvm_preview::{Detached, Spawn};
use stacyvm_provider::{MockProvider, Provider, ProviderRegistry, SandboxSpec};
use stacyvm_server::remote::{
    Endpoint, RemotePreview, RemotePreviewError, RemoteProvider, RpcCredentials, WorkerClient,
};
use stacyvm_store::{SqliteStore, Store};
use stacyvm_types::{GoDuration, SandboxId};
use stacyvm_worker::{rpc_router, WorkerConfig, WorkerOverrides, WorkerState};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const WORKER: &str = "worker-a";
const TOKEN: &str = "dev-worker-a-token-dev-worker-a-token";
const WAIT: Duration = Duration::from_secs(10);

struct Token(&'static str);

impl RpcCredentials for Token {
    fn credential_for(&self, _worker_id: &str) -> Result<Option<String>, String> {
        Ok(Some(self.0.into()))
    }
}

struct Tasks;

impl Spawn for Tasks {
    fn spawn_detached(&self, task: Detached) {
        tokio::spawn(task);
    }
}

struct Remote {
    rpc_url: String,
    sandbox: SandboxId,
    worker: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Drop for Remote {
    fn drop(&mut self) {
        self.worker.abort();
    }
}

impl Remote {
    fn preview(&self, sandbox: &SandboxId, port: u16, token: &'static str) -> RemotePreview {
        let client = Arc::new(WorkerClient::new(None, Arc::new(Token(token))).unwrap());
        let endpoint = Endpoint {
            worker_id: WORKER.into(),
            rpc_url: self.rpc_url.clone(),
        };
        RemotePreview::new(client, endpoint, sandbox.clone(), port)
    }
}

/// A worker holding one spawned sandbox.
async fn remote() -> Remote {
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "worker:\n  id: {WORKER}\n  control_plane_url: \"http://127.0.0.1:9\"\n\
         server:\n  preview_unisolated: true\n\
         providers:\n  default: mock\n  mock:\n    enabled: true\n\
         auth:\n  worker_token: \"{TOKEN}\"\n"
    );
    let valid = Config::from_yaml_str(&yaml).unwrap().validate().unwrap();
    let cfg = WorkerConfig::from_config(&valid, WorkerOverrides::default()).unwrap();
    let mut providers = ProviderRegistry::new();
    let mock = MockProvider::with_base_dir(dir.path().join("mock"));
    providers.register(Arc::new(mock) as Arc<dyn Provider>);
    providers.set_default("mock");
    let state = WorkerState::new(&cfg, providers).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let rpc_url = format!("http://{}", listener.local_addr().unwrap());
    let worker = tokio::spawn(async move {
        let _ = axum::serve(listener, rpc_router(state)).await;
    });
    let db = dir.path().join("stacyvm.db").display().to_string();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&db).await.unwrap());
    let sandbox = SandboxId::random();
    let provider = RemoteProvider {
        client: Arc::new(WorkerClient::new(None, Arc::new(Token(TOKEN))).unwrap()),
        endpoint: Endpoint {
            worker_id: WORKER.into(),
            rpc_url: rpc_url.clone(),
        },
        store,
        provider: "mock".into(),
        sandbox_id: sandbox.clone(),
        lease_ttl: Duration::from_secs(300),
        ttl: GoDuration::from_secs(300),
        file_stream: true,
        watch: true,
        user: true,
        state: true,
    };
    provider
        .spawn(&SandboxSpec {
            id: sandbox.to_string(),
            image: "alpine".into(),
            memory_mb: 64,
            vcpus: 1,
            owner_id: String::new(),
            metadata: Default::default(),
        })
        .await
        .unwrap();
    Remote {
        rpc_url,
        sandbox,
        worker,
        _dir: dir,
    }
}

/// "The server in the sandbox": answers with what it received.
async fn echo_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = axum::Router::new().fallback(|req: Request| async move {
        let (parts, body) = req.into_parts();
        let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
        let headers: BTreeMap<String, String> = parts
            .headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
            .collect();
        let v = json!({"method": parts.method.as_str(), "uri": parts.uri.to_string(),
            "headers": headers, "body": String::from_utf8_lossy(&body)});
        (
            StatusCode::CREATED,
            [("x-stacyvm-protocol", "planted")],
            axum::Json(v),
        )
            .into_response()
    });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    port
}

/// A request as the control plane's edge leaves it (`Via`, `X-Forwarded-Host`).
fn edge_request(method: &str, uri: &str, host: &str, body: Body) -> Request {
    Request::builder()
        .method(method)
        .uri(uri)
        .header("host", host)
        .header("via", stacyvm_preview::VIA)
        .header("x-forwarded-host", host)
        .header("x-forwarded-for", "10.0.0.7")
        .body(body)
        .unwrap()
}

async fn json_of(resp: axum::response::Response) -> Value {
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

#[tokio::test]
async fn requests_reach_the_sandbox_through_its_worker() {
    let r = remote().await;
    let port = echo_server().await;
    let host = format!("{port}-{}.localhost", r.sandbox);
    let mut req = edge_request("POST", "/a//b/../c/?q=1&x", &host, Body::from("hello"));
    for (k, v) in [
        ("content-type", "text/plain"),
        ("authorization", "Bearer app-token"),
        // A client's copies of the worker protocol's headers never count.
        ("x-worker-token", "guess"),
        ("x-stacyvm-preview-path", "/rpc"),
    ] {
        req.headers_mut().insert(k, v.parse().unwrap());
    }
    let resp = r
        .preview(&r.sandbox, port, TOKEN)
        .forward(req, &Tasks)
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert!(
        resp.headers().get("x-stacyvm-protocol").is_none(),
        "the sandbox's answer must not pass for the worker's"
    );
    let v = json_of(resp).await;
    assert_eq!(v["method"], "POST");
    // Exactly as sent: no dot-segment resolution, no trip to another worker route.
    assert_eq!(v["uri"], "/a//b/../c/?q=1&x");
    assert_eq!(v["body"], "hello");
    let h = &v["headers"];
    assert_eq!(h["host"], host.as_str());
    assert_eq!(h["authorization"], "Bearer app-token");
    assert_eq!(h["via"], stacyvm_preview::VIA);
    assert_eq!(h["x-forwarded-for"], "10.0.0.7");
    for gone in [
        "x-worker-id",
        "x-worker-token",
        "x-stacyvm-protocol",
        "x-stacyvm-preview-path",
    ] {
        assert!(h.get(gone).is_none(), "{gone} reached the sandbox: {h}");
    }
}

#[tokio::test]
async fn the_worker_refuses_what_it_must() {
    let r = remote().await;
    let port = echo_server().await;
    let host = format!("{port}-{}.localhost", r.sandbox);
    let get = || edge_request("GET", "/", &host, Body::empty());

    let refused = r
        .preview(
            &r.sandbox,
            port,
            "not-the-worker-token-not-the-worker-token",
        )
        .forward(get(), &Tasks)
        .await;
    assert!(
        matches!(refused, Err(RemotePreviewError::Refused(_))),
        "{refused:?}"
    );

    let stranger = SandboxId::random();
    let resp = r
        .preview(&stranger, port, TOKEN)
        .forward(get(), &Tasks)
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_eq!(json_of(resp).await["code"], "NOT_FOUND");

    let closed = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let resp = r
        .preview(&r.sandbox, closed, TOKEN)
        .forward(get(), &Tasks)
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    let v = json_of(resp).await;
    assert_eq!(v["code"], "PREVIEW_UPSTREAM_UNREACHABLE");
    assert!(!v["message"].as_str().unwrap().contains("127.0.0.1"), "{v}");

    let gone = Remote {
        rpc_url: "http://127.0.0.1:9".into(),
        sandbox: r.sandbox.clone(),
        worker: tokio::spawn(async {}),
        _dir: tempfile::tempdir().unwrap(),
    };
    let unreachable = gone
        .preview(&r.sandbox, port, TOKEN)
        .forward(get(), &Tasks)
        .await;
    assert!(
        matches!(unreachable, Err(RemotePreviewError::Unreachable { .. })),
        "{unreachable:?}"
    );
}

#[tokio::test]
async fn bodies_stream_both_ways_through_the_worker() {
    // Answers at once, then relays each request chunk as it arrives: buffering on either
    // side (control plane or worker) would deadlock.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = axum::Router::new().fallback(|req: Request| async move {
        let upload = req.into_body().into_data_stream();
        let first =
            futures_util::stream::once(async { Ok::<_, axum::Error>(Bytes::from("ready\n")) });
        Body::from_stream(first.chain(upload))
    });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let r = remote().await;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let upload =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|v| (v, rx)) });
    let host = format!("{port}-{}.localhost", r.sandbox);
    let req = edge_request("POST", "/upload", &host, Body::from_stream(upload));
    let resp = tokio::time::timeout(
        WAIT,
        r.preview(&r.sandbox, port, TOKEN).forward(req, &Tasks),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body().into_data_stream();
    let first = tokio::time::timeout(WAIT, body.next()).await.unwrap();
    assert_eq!(first.unwrap().unwrap(), "ready\n");
    for chunk in ["one\n", "two\n"] {
        tx.send(Ok(Bytes::from(chunk))).await.unwrap();
        let got = tokio::time::timeout(WAIT, body.next()).await.unwrap();
        assert_eq!(got.unwrap().unwrap(), chunk);
    }
    drop(tx);
    let end = tokio::time::timeout(WAIT, body.next()).await.unwrap();
    assert!(end.is_none());
}

/// Reads until the end of an HTTP head.
async fn read_head(s: &mut tokio::net::TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).await.unwrap(), 1, "closed in the head");
        head.push(byte[0]);
    }
    String::from_utf8(head).unwrap()
}

#[tokio::test]
async fn upgrades_are_spliced_end_to_end() {
    // The sandbox's server switches to a raw echo protocol.
    let upstream = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = upstream.local_addr().unwrap().port();
    tokio::spawn(async move {
        let (mut s, _) = upstream.accept().await.unwrap();
        let head = read_head(&mut s).await.to_ascii_lowercase();
        assert!(head.contains("upgrade: echo"), "{head}");
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

    // "The control plane": a real listener whose every request goes to the worker.
    let r = Arc::new(remote().await);
    let edge = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let edge_port = edge.local_addr().unwrap().port();
    let via_worker = r.clone();
    let app = axum::Router::new().fallback(move |req: Request| {
        let r = via_worker.clone();
        async move {
            r.preview(&r.sandbox, port, TOKEN)
                .forward(req, &Tasks)
                .await
                .unwrap()
        }
    });
    tokio::spawn(async move { axum::serve(edge, app).await.unwrap() });

    let mut c = tokio::net::TcpStream::connect(("127.0.0.1", edge_port))
        .await
        .unwrap();
    let req = format!(
        "GET /socket HTTP/1.1\r\nHost: {port}-{}.localhost\r\nConnection: Upgrade\r\n\
         Upgrade: echo\r\n\r\n",
        r.sandbox
    );
    c.write_all(req.as_bytes()).await.unwrap();
    let head = tokio::time::timeout(WAIT, read_head(&mut c)).await.unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    for msg in [&b"ping"[..], b"pong pong"] {
        c.write_all(msg).await.unwrap();
        let mut got = vec![0u8; msg.len()];
        tokio::time::timeout(WAIT, c.read_exact(&mut got))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, msg);
    }
}
