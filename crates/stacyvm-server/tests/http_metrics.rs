//! `/metrics/prometheus`: every series the original exposes keeps its name, type and labels,
//! and a request, a spawn, an exec and a worker RPC each move their own series.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use common::TestApp;
use serde_json::json;
use stacyvm_config::Config;
use stacyvm_provider::{MockProvider, ProviderRegistry};
use stacyvm_server::{router, worker_rpc, Service, Settings};
use stacyvm_store::{SqliteStore, Store};

/// Wire reference §7.6: the original's series, each a gauge with a `# HELP`.
const ORIGINAL: [&str; 39] = [
    "stacyvm_uptime_seconds",
    "stacyvm_runtime_goroutines",
    "stacyvm_runtime_memory_alloc_bytes",
    "stacyvm_runtime_memory_sys_bytes",
    "stacyvm_runtime_gc_cycles_total",
    "stacyvm_sandboxes_total",
    "stacyvm_sandboxes_by_provider_total",
    "stacyvm_sandboxes_by_worker_total",
    "stacyvm_provider_healthy",
    "stacyvm_provider_health_latency_milliseconds",
    "stacyvm_provider_runtime_sandboxes",
    "stacyvm_workers_total",
    "stacyvm_leases_total",
    "stacyvm_events_total",
    "stacyvm_event_subscribers",
    "stacyvm_event_history_size",
    "stacyvm_spawn_queue_depth",
    "stacyvm_spawn_queue_capacity",
    "stacyvm_spawn_queue_enqueued_total",
    "stacyvm_spawn_queue_dequeued_total",
    "stacyvm_spawn_queue_timeout_total",
    "stacyvm_spawn_queue_wait_milliseconds_sum",
    "stacyvm_spawn_queue_wait_milliseconds_count",
    "stacyvm_spawn_queue_wait_milliseconds_max",
    "stacyvm_owner_quotas_total",
    "stacyvm_owner_quota_overrides_total",
    "stacyvm_rate_limit_allowed_total",
    "stacyvm_rate_limit_blocked_total",
    "stacyvm_rate_limit_evicted_buckets_total",
    "stacyvm_rate_limit_active_buckets",
    "stacyvm_operation_success_total",
    "stacyvm_operation_failure_total",
    "stacyvm_operation_latency_milliseconds_sum",
    "stacyvm_operation_latency_milliseconds_count",
    "stacyvm_operation_latency_milliseconds_max",
    // Labelled ones, with a sample after a spawn.
    "stacyvm_sandboxes_total{state=\"running\"}",
    "stacyvm_provider_healthy{provider=\"mock\",default=\"true\"}",
    "stacyvm_workers_total{status=\"online\"}",
    "stacyvm_owner_quota_overrides_total{type=\"max_ttl\"}",
];

async fn scrape(app: &TestApp) -> String {
    let r = app.get("/api/v1/metrics/prometheus").send().await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    r.text()
}

/// The value of the sample whose name and labels are exactly `series`, if present.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter_map(|l| l.rsplit_once(' '))
        .find(|(name, _)| *name == series)
        .map(|(_, v)| v.parse().unwrap())
}

#[tokio::test]
async fn the_original_series_keep_their_names_types_and_labels() {
    let app = TestApp::default_app().await;
    app.spawn_id().await;
    let text = scrape(&app).await;
    for series in ORIGINAL {
        let name = series.split('{').next().unwrap();
        assert!(
            text.contains(&format!("# HELP {name} ")),
            "no HELP for {name}:\n{text}"
        );
        assert!(
            text.lines().any(|l| l == format!("# TYPE {name} gauge")),
            "{name} is not a gauge:\n{text}"
        );
        if series.contains('{') {
            assert!(value(&text, series).is_some(), "{series} missing:\n{text}");
        }
    }
    assert_eq!(
        value(&text, "stacyvm_sandboxes_total{state=\"running\"}"),
        Some(1.0)
    );
    assert_eq!(
        value(
            &text,
            "stacyvm_operation_success_total{operation=\"spawn\",provider=\"mock\"}"
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn a_request_a_spawn_and_an_exec_move_their_series() {
    let app = TestApp::default_app().await;
    let before = scrape(&app).await;
    let health = "stacyvm_http_request_duration_seconds_count{method=\"GET\",route=\"/api/v1/health\",status_class=\"2xx\"}";
    assert_eq!(value(&before, health), None, "no series before a request");

    app.get("/api/v1/health").send().await;
    app.get("/api/v1/health").send().await;
    let id = app.spawn_id().await;
    let exec = |body: serde_json::Value| {
        app.post(&format!("/api/v1/sandboxes/{id}/exec"))
            .json(&body)
            .send()
    };
    assert_eq!(
        exec(json!({"command": "true"})).await.status,
        StatusCode::OK
    );
    assert_eq!(
        exec(json!({"command": "sh", "args": ["-c", "exit 3"], "mode": "argv"}))
            .await
            .status,
        StatusCode::OK
    );
    // Unknown sandbox: a 4xx on the exec route; no command ran.
    app.post("/api/v1/sandboxes/sb-00000000/exec")
        .json(&json!({"command": "true"}))
        .send()
        .await
        .assert_error(StatusCode::NOT_FOUND, "NOT_FOUND");
    let text = scrape(&app).await;

    assert_eq!(value(&text, health), Some(2.0), "{text}");
    let route = |method: &str, route: &str, class: &str| {
        let s = format!(
            "stacyvm_http_request_duration_seconds_count{{method=\"{method}\",route=\"{route}\",status_class=\"{class}\"}}"
        );
        value(&text, &s)
    };
    assert_eq!(route("POST", "/api/v1/sandboxes", "2xx"), Some(1.0));
    // Labelled by the route's template, never by the sandbox id.
    assert_eq!(
        route("POST", "/api/v1/sandboxes/{id}/exec", "2xx"),
        Some(2.0)
    );
    assert_eq!(
        route("POST", "/api/v1/sandboxes/{id}/exec", "4xx"),
        Some(1.0)
    );
    assert!(
        !text.contains(&id),
        "a sandbox id leaked into a label:\n{text}"
    );
    assert!(text.contains(
        "stacyvm_http_request_duration_seconds_bucket{method=\"GET\",route=\"/api/v1/health\",status_class=\"2xx\",le=\"+Inf\"} 2"
    ));

    let op = |operation: &str, outcome: &str| {
        let s = format!(
            "stacyvm_operation_duration_seconds_count{{operation=\"{operation}\",provider=\"mock\",outcome=\"{outcome}\"}}"
        );
        value(&text, &s)
    };
    assert_eq!(op("spawn", "ok"), Some(1.0), "{text}");
    assert_eq!(op("spawn", "error"), Some(0.0));
    assert_eq!(op("exec", "ok"), Some(2.0));

    let execs = |labels: &str| value(&text, &format!("stacyvm_exec_total{{{labels}}}"));
    assert_eq!(
        execs("kind=\"sync\",mode=\"shell\",outcome=\"ok\""),
        Some(1.0)
    );
    assert_eq!(
        execs("kind=\"sync\",mode=\"argv\",outcome=\"exit_nonzero\""),
        Some(1.0)
    );
    assert_eq!(
        execs("kind=\"stream\",mode=\"shell\",outcome=\"ok\""),
        Some(0.0)
    );

    // The scrape itself is a request too; 404s from no route are not measured.
    app.get("/api/v1/nope").send().await;
    let again = scrape(&app).await;
    let prom = "stacyvm_http_request_duration_seconds_count{method=\"GET\",route=\"/api/v1/metrics/prometheus\",status_class=\"2xx\"}";
    assert_eq!(value(&again, prom), Some(2.0), "{again}");
    assert!(!again.contains("/api/v1/nope"), "{again}");
}

#[tokio::test]
async fn worker_rpcs_are_timed_by_method_and_outcome() {
    // A fake worker: the first drain succeeds, later ones answer 503 DRAINING.
    let calls = Arc::new(AtomicUsize::new(0));
    let fake = Router::new().route(
        "/rpc",
        post({
            let calls = calls.clone();
            move || async move {
                if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                    (StatusCode::OK, axum::Json(json!({"id": "x", "worker_id": "w1", "result": {}})))
                } else {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        axum::Json(json!({"id": "x", "worker_id": "w1", "error": "draining", "code": "DRAINING"})),
                    )
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let worker_url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, fake).await });
    // Nothing listens here: a call fails without an answer.
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead_url = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);

    let cfg = Config::from_yaml_str(
        "providers: {default: mock, mock: {enabled: true}}\nauth: {worker_token: shared-worker-token-0123456789}\n",
    )
    .unwrap()
    .validate()
    .unwrap();
    let (auth, client) = worker_rpc(&cfg).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(dir.path().join("db").to_str().unwrap())
            .await
            .unwrap(),
    );
    let mock = Arc::new(MockProvider::with_base_dir(dir.path().join("sb")));
    let mut providers = ProviderRegistry::new();
    providers.register(mock.clone());
    providers.set_default("mock");
    let svc = Service::with_worker_auth(
        store.clone(),
        providers,
        Settings::default(),
        Some(client),
        Some(auth),
        None,
    );
    let app = TestApp {
        router: router(svc.clone()),
        svc,
        store,
        mock,
        dir,
    };
    for (id, url) in [("w1", &worker_url), ("w2", &dead_url)] {
        let r = app
            .post(&format!("/api/v1/admin/workers/{id}/heartbeat"))
            .json(&json!({"hostname": "h", "status": "online", "capacity": {"rpc_url": url}}))
            .send()
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    }
    let drain = |id: &str| {
        app.post(&format!("/api/v1/admin/workers/{id}/drain"))
            .send()
    };
    assert_eq!(drain("w1").await.status, StatusCode::OK);
    assert_eq!(drain("w1").await.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(drain("w2").await.status, StatusCode::SERVICE_UNAVAILABLE);

    let text = scrape(&app).await;
    let rpc = |outcome: &str| {
        value(
            &text,
            &format!("stacyvm_worker_rpc_duration_seconds_count{{method=\"worker.shutdown\",outcome=\"{outcome}\"}}"),
        )
    };
    assert_eq!(rpc("ok"), Some(1.0), "{text}");
    assert_eq!(rpc("rejected"), Some(1.0));
    assert_eq!(rpc("failed"), Some(1.0));
    // Other methods have their series from the start.
    assert_eq!(
        value(
            &text,
            "stacyvm_worker_rpc_duration_seconds_count{method=\"worker.spawn\",outcome=\"ok\"}"
        ),
        Some(0.0)
    );
}
