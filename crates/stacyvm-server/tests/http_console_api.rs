//! The API the console's newer pages use (docs/console.md): `GET /metrics/history` counts
//! spawns, failures and latency in the current minute and samples running sandboxes by
//! worker; `GET /sandboxes?limit=&cursor=` pages the list, and without them answers as before.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;

use axum::http::StatusCode;
use common::TestApp;
use serde_json::{json, Value};

fn last_minute(h: &Value) -> &Value {
    h["minutes"].as_array().unwrap().last().unwrap()
}

#[tokio::test]
async fn history_counts_spawns_failures_and_latency_in_the_current_minute() {
    let app = TestApp::default_app().await;
    let h = app.get("/api/v1/metrics/history").send().await.json();
    assert_eq!(h["bucket_seconds"], 60);
    assert_eq!(h["minutes"].as_array().unwrap().len(), 60);
    assert_eq!(h["latency_ms"], json!({}));

    app.spawn_id().await;
    app.spawn_id().await;
    app.mock.fail_next("spawn", 1);
    let r = app
        .post("/api/v1/sandboxes")
        .json(&json!({"image": "alpine"}))
        .send()
        .await;
    assert!(
        r.status.is_server_error() || r.status.is_client_error(),
        "{}",
        r.text()
    );

    let r = app.get("/api/v1/metrics/history").send().await;
    assert_eq!(r.status, StatusCode::OK);
    let h = r.json();
    // A spawn finishing across a minute boundary lands in the earlier minute: sum them.
    let minutes = h["minutes"].as_array().unwrap();
    let spawns: u64 = minutes.iter().map(|m| m["spawns"].as_u64().unwrap()).sum();
    let failed: u64 = minutes
        .iter()
        .map(|m| m["spawn_failures"].as_u64().unwrap())
        .sum();
    assert_eq!((spawns, failed), (2, 1), "{h}");
    let lat = &h["latency_ms"]["mock"];
    assert_eq!(lat["count"], 2);
    assert!(lat["p50"].as_f64().unwrap() > 0.0);
    assert!(lat["p99"].as_f64().unwrap() >= lat["p50"].as_f64().unwrap());
    // Oldest first; the last minute is the current one.
    let start = |m: &Value| m["start"].as_str().unwrap().to_string();
    assert!(start(&minutes[0]) < start(last_minute(&h)));
    let now = chrono::Utc::now();
    let last = chrono::DateTime::parse_from_rfc3339(&start(last_minute(&h))).unwrap();
    assert!((now - last.with_timezone(&chrono::Utc)).num_seconds() < 61);
}

#[tokio::test]
async fn history_samples_running_sandboxes_by_worker() {
    let app = TestApp::default_app().await;
    app.spawn_id().await;
    let id = app.spawn_id().await;
    app.svc.system().sample_active().await;
    let h = app.get("/api/v1/metrics/history").send().await.json();
    assert_eq!(last_minute(&h)["active_by_worker"], json!({"local": 2}));
    // Minutes never sampled are null, not zero.
    assert_eq!(h["minutes"][0]["active_by_worker"], Value::Null);
    app.delete(&format!("/api/v1/sandboxes/{id}")).send().await;
    app.svc.system().sample_active().await;
    let h = app.get("/api/v1/metrics/history").send().await.json();
    assert_eq!(last_minute(&h)["active_by_worker"], json!({"local": 1}));
}

#[tokio::test]
async fn history_needs_the_api_key() {
    let app = TestApp::new().with_api_key("k").build().await;
    let r = app.get("/api/v1/metrics/history").send().await;
    r.assert_error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    let r = app.get("/api/v1/metrics/history").api_key("k").send().await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn pages_cover_the_list_once_newest_first() {
    let app = TestApp::default_app().await;
    for _ in 0..7 {
        app.spawn_id().await;
    }
    // Without paging parameters: the whole array, no paging headers.
    let r = app.get("/api/v1/sandboxes").send().await;
    assert!(r.header("x-next-cursor").is_none() && r.header("x-total-count").is_none());
    let whole: Vec<String> = r
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(whole.len(), 7);

    let mut got = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            None => "/api/v1/sandboxes?limit=3".to_string(),
            Some(c) => format!("/api/v1/sandboxes?limit=3&cursor={c}"),
        };
        let r = app.get(&path).send().await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        // The total is of the list as it is now: one more after the spawn below.
        let total = if pages == 0 { "7" } else { "8" };
        assert_eq!(r.header("x-total-count"), Some(total));
        let page = r.json();
        assert!(page.as_array().unwrap().len() <= 3);
        got.extend(
            page.as_array()
                .unwrap()
                .iter()
                .map(|s| s["id"].as_str().unwrap().to_string()),
        );
        pages += 1;
        match r.header("x-next-cursor") {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
        // A sandbox spawned between pages lands before the cursor: not in a later page.
        if pages == 1 {
            app.spawn_id().await;
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(got.len(), 7, "{got:?}");
    assert_eq!(got.iter().collect::<BTreeSet<_>>().len(), 7);
    // The same order as the whole list (created_at, then id, descending).
    assert_eq!(got, whole);

    // A cursor alone pages with the largest page: the rest of the 8 after the first 3.
    let first = app.get("/api/v1/sandboxes?limit=3").send().await;
    let third = first.json()[2]["id"].as_str().unwrap().to_string();
    let c_hdr = first.header("x-next-cursor").unwrap().to_string();
    assert!(c_hdr.ends_with(&third), "{c_hdr} names {third}");
    let r = app
        .get(&format!("/api/v1/sandboxes?cursor={c_hdr}"))
        .send()
        .await;
    assert_eq!(r.json().as_array().unwrap().len(), 5);
    assert!(r.header("x-next-cursor").is_none());
}

#[tokio::test]
async fn bad_paging_parameters_are_400() {
    let app = TestApp::default_app().await;
    for q in [
        "limit=0",
        "limit=1001",
        "limit=-1",
        "limit=x",
        "cursor=nonsense",
        "cursor=12.not-an-id",
    ] {
        let r = app.get(&format!("/api/v1/sandboxes?{q}")).send().await;
        r.assert_error(StatusCode::BAD_REQUEST, "BAD_REQUEST");
    }
    // Empty values are ignored: the unpaged answer.
    let r = app.get("/api/v1/sandboxes?limit=&cursor=").send().await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.header("x-total-count").is_none());
}
