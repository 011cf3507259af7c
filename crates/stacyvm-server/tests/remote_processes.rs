//! Background processes through [`RemoteProvider`]: every call goes over loopback HTTP to an
//! in-process worker (the real `stacyvm-worker` router) with the in-memory process provider
//! (`common::fake_procs`) behind it. Checks the seven methods, the process errors across the
//! wire, byte-exact output and that a dropped reader releases the worker's read.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::fake_procs::FakeProcs;
use futures_util::StreamExt;
use stacyvm_config::Config;
use stacyvm_provider::{
    ExecRequest, MockProvider, ProcessSpec, Provider, ProviderError, ProviderRegistry, SandboxSpec,
};
use stacyvm_server::remote::{Endpoint, RemoteProvider, RpcCredentials, WorkerClient};
use stacyvm_store::{SqliteStore, Store};
use stacyvm_types::{
    GoDuration, OutputRecord, OutputStream, ProcessState, PtySize, SandboxId, Signal,
};
use stacyvm_worker::{rpc_router, WorkerConfig, WorkerOverrides, WorkerState};
use tokio::net::TcpListener;

const WORKER: &str = "worker-a";
const TOKEN: &str = "dev-worker-a-token-dev-worker-a-token";

struct StaticToken;

impl RpcCredentials for StaticToken {
    fn credential_for(&self, _worker_id: &str) -> Result<Option<String>, String> {
        Ok(Some(TOKEN.into()))
    }
}

struct Remote {
    provider: RemoteProvider,
    fake: Arc<FakeProcs>,
    runtime: String,
    worker: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Drop for Remote {
    fn drop(&mut self) {
        self.worker.abort();
    }
}

async fn remote() -> Remote {
    remote_with(false).await
}

/// Starts whose `follow` the old-worker fixture took out.
static FOLLOWS_FORGOTTEN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// A worker from before `follow` on `worker.process_start`: the field is taken out of the
/// request before the real router sees it.
async fn forget_follow(req: axum::extract::Request) -> axum::extract::Request {
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    let mut v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    if v["method"] == "worker.process_start" {
        if let Some(params) = v.get_mut("params").and_then(|p| p.as_object_mut()) {
            if params.remove("follow").is_some() {
                FOLLOWS_FORGOTTEN.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
    }
    let body = axum::body::Body::from(serde_json::to_vec(&v).unwrap());
    axum::extract::Request::from_parts(parts, body)
}

async fn remote_with(old_worker: bool) -> Remote {
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "worker:\n  id: {WORKER}\n  control_plane_url: \"http://127.0.0.1:9\"\n\
         providers:\n  default: mock\n  mock:\n    enabled: true\n\
         auth:\n  worker_token: \"{TOKEN}\"\n"
    );
    let valid = Config::from_yaml_str(&yaml).unwrap().validate().unwrap();
    let cfg = WorkerConfig::from_config(&valid, WorkerOverrides::default()).unwrap();
    let mock = Arc::new(MockProvider::with_base_dir(dir.path().join("mock")));
    let fake = Arc::new(FakeProcs::new(mock));
    let mut providers = ProviderRegistry::new();
    providers.register(fake.clone() as Arc<dyn Provider>);
    providers.set_default("mock");
    let state = WorkerState::new(&cfg, providers).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let rpc_url = format!("http://{}", listener.local_addr().unwrap());
    let mut router = rpc_router(state);
    if old_worker {
        router = router.layer(axum::middleware::map_request(forget_follow));
    }
    let worker = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    let db = dir.path().join("stacyvm.db").display().to_string();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&db).await.unwrap());
    let client = Arc::new(WorkerClient::new(None, Arc::new(StaticToken)).unwrap());
    let sandbox_id = SandboxId::random();
    let provider = RemoteProvider {
        client,
        endpoint: Endpoint {
            worker_id: WORKER.into(),
            rpc_url,
        },
        store,
        provider: "mock".into(),
        sandbox_id: sandbox_id.clone(),
        lease_ttl: Duration::from_secs(300),
        ttl: GoDuration::from_secs(300),
        file_stream: true,
        watch: true,
        user: true,
        state: true,
    };
    let spawned = provider
        .spawn(&SandboxSpec {
            id: sandbox_id.to_string(),
            image: "alpine".into(),
            memory_mb: 64,
            vcpus: 1,
            owner_id: String::new(),
            metadata: Default::default(),
        })
        .await
        .unwrap();
    Remote {
        provider,
        fake,
        runtime: spawned.runtime_id,
        worker,
        _dir: dir,
    }
}

fn spec(command: &str, stdin: bool, pty: Option<PtySize>) -> ProcessSpec {
    ProcessSpec {
        exec: ExecRequest {
            command: command.into(),
            ..ExecRequest::default()
        },
        tag: "t".into(),
        stdin,
        pty,
        output_buffer: Some(4096),
        retain_exited: Some(Duration::from_secs(60)),
    }
}

#[tokio::test]
async fn the_user_travels_to_workers_that_honour_it() {
    let mut r = remote().await;
    let rt = r.runtime.clone();
    let mut as_user = spec("id -u", false, None);
    as_user.exec.user = Some("user".into());
    r.provider
        .process_start(&rt, as_user.clone())
        .await
        .unwrap();
    r.provider
        .process_start(&rt, spec("id -u", false, None))
        .await
        .unwrap();
    assert_eq!(
        *r.fake.users.lock().unwrap(),
        [Some("user".to_string()), None]
    );
    // A worker without the capability would drop the field: refused before any RPC.
    r.provider.user = false;
    let e = r.provider.process_start(&rt, as_user).await.unwrap_err();
    assert!(matches!(e, ProviderError::NotSupported(_)), "{e:?}");
    assert_eq!(r.fake.users.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn processes_over_the_worker_rpc() {
    let r = remote().await;
    let (p, rt) = (&r.provider, r.runtime.as_str());
    let cat = p.process_start(rt, spec("cat", true, None)).await.unwrap();
    assert_eq!(cat.state, ProcessState::Running);
    assert_eq!(cat.tag, "t");
    let other = p
        .process_start(rt, spec("sleep 9", false, None))
        .await
        .unwrap();
    let list = p.process_list(rt).await.unwrap();
    assert_eq!(
        list.iter().map(|p| p.pid).collect::<Vec<_>>(),
        [other.pid, cat.pid]
    );
    assert_eq!(p.process_get(rt, cat.pid).await.unwrap().pid, cat.pid);

    // Exact bytes through stdin and output.
    let n = p
        .process_stdin(rt, cat.pid, Bytes::from_static(b"\x00\xff\n"), false)
        .await
        .unwrap();
    assert_eq!(n, 3);
    r.fake.emit(cat.pid, OutputStream::Stderr, b"e");
    let mut s = p.process_output(rt, cat.pid, 0, true).await.unwrap();
    assert_eq!(
        s.next().await.unwrap().unwrap(),
        OutputRecord::Data {
            seq: 0,
            stream: OutputStream::Stdout,
            data: b"\x00\xff\n".to_vec()
        }
    );
    assert_eq!(s.next().await.unwrap().unwrap().seq(), 3);
    p.process_stdin(rt, cat.pid, Bytes::new(), true)
        .await
        .unwrap();
    let exit = tokio::time::timeout(Duration::from_secs(5), s.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        exit,
        OutputRecord::Exit {
            seq: 4,
            exit_code: 0,
            signal: None
        }
    );
    assert!(
        s.next().await.is_none(),
        "the stream ends after the exit record"
    );
    // Resume past the first record: no duplicate.
    let rest: Vec<_> = p
        .process_output(rt, cat.pid, 1, false)
        .await
        .unwrap()
        .map(Result::unwrap)
        .collect()
        .await;
    assert_eq!(
        rest.iter().map(OutputRecord::seq).collect::<Vec<_>>(),
        [3, 4]
    );

    // The process errors cross the wire as themselves.
    let e = p.process_get(rt, 9999).await.unwrap_err();
    assert!(matches!(e, ProviderError::ProcessNotFound(9999)), "{e:?}");
    let e = p
        .process_stdin(rt, cat.pid, Bytes::from_static(b"x"), false)
        .await
        .unwrap_err();
    assert!(matches!(e, ProviderError::ProcessExited(_)), "{e:?}");
    let e = p
        .process_stdin(rt, other.pid, Bytes::from_static(b"x"), false)
        .await
        .unwrap_err();
    assert!(matches!(e, ProviderError::StdinClosed(_)), "{e:?}");
    let e = p
        .process_resize(rt, other.pid, PtySize { cols: 9, rows: 9 })
        .await
        .unwrap_err();
    assert!(matches!(e, ProviderError::NotAPty(_)), "{e:?}");
    let e = p.process_output(rt, 9999, 0, true).await.err().unwrap();
    assert!(matches!(e, ProviderError::ProcessNotFound(9999)), "{e:?}");

    let killed = p.process_signal(rt, other.pid, Signal::Kill).await.unwrap();
    assert_eq!(
        (killed.exit_code, killed.signal),
        (Some(137), Some(Signal::Kill))
    );

    let t = p
        .process_start(rt, spec("sh", false, Some(PtySize { cols: 80, rows: 24 })))
        .await
        .unwrap();
    p.process_resize(
        rt,
        t.pid,
        PtySize {
            cols: 120,
            rows: 40,
        },
    )
    .await
    .unwrap();
    assert_eq!(
        r.fake.pty_size(t.pid),
        Some(PtySize {
            cols: 120,
            rows: 40
        })
    );
}

#[tokio::test]
async fn a_dropped_remote_reader_releases_the_worker_read() {
    let r = remote().await;
    let (p, rt) = (&r.provider, r.runtime.as_str());
    let proc_ = p
        .process_start(rt, spec("sleep 9", false, None))
        .await
        .unwrap();
    let mut s = p.process_output(rt, proc_.pid, 0, true).await.unwrap();
    r.fake.emit(proc_.pid, OutputStream::Stdout, b"x");
    assert!(s.next().await.unwrap().is_ok());
    assert_eq!(r.fake.readers(proc_.pid), 1);
    drop(s);
    let released = common::wait_until(Duration::from_secs(5), || async {
        r.fake.readers(proc_.pid) == 0
    })
    .await;
    assert!(released, "the worker still reads for a gone client");
    assert_eq!(
        p.process_get(rt, proc_.pid).await.unwrap().state,
        ProcessState::Running
    );
}

/// Start+follow is one RPC; against a worker that predates it (a plain JSON answer) the
/// control plane reads separately, and the caller sees the same process and records.
#[tokio::test]
async fn start_follow_is_one_rpc_and_falls_back_for_an_older_worker() {
    for old_worker in [false, true] {
        let r = remote_with(old_worker).await;
        let (info, records) = r
            .provider
            .process_start_follow(&r.runtime, spec("cat", true, None))
            .await
            .unwrap();
        assert!(info.pid > 0, "{info:?}");
        // The fake's `cat` echoes its input and exits 0 once stdin closes.
        r.provider
            .process_stdin(&r.runtime, info.pid, Bytes::from_static(b"hello"), true)
            .await
            .unwrap();
        let all: Vec<OutputRecord> = records.map(Result::unwrap).collect().await;
        let out: Vec<u8> = all
            .iter()
            .filter_map(|rec| match rec {
                OutputRecord::Data { data, .. } => Some(data.clone()),
                _ => None,
            })
            .flatten()
            .collect();
        assert_eq!(out, b"hello", "old worker: {old_worker}");
        assert!(
            matches!(all.last(), Some(OutputRecord::Exit { exit_code: 0, .. })),
            "old worker {old_worker}: {all:?}"
        );
        // The fixture really played the old worker (and only when asked to).
        let forgotten = FOLLOWS_FORGOTTEN.load(std::sync::atomic::Ordering::SeqCst);
        assert_eq!(forgotten, usize::from(old_worker));
    }
}
