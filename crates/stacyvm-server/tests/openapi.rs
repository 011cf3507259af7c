//! The generated OpenAPI document against the router and the real answers:
//! 1. the document is served and well formed (refs resolve, ids unique, path parameters and
//!    security declared, every error code the sources emit is in `Error.code`);
//! 2. every documented path + method reaches a handler, and every other method on a documented
//!    path answers 405 (no undocumented method hides on a known path);
//! 3. no route bypasses the document: routes are only added through `utoipa_axum::routes!`
//!    (which documents them), never with a plain `.route(..)`;
//! 4. real answers of the main routes validate against the schemas the document gives them
//!    (property names, required fields, types, closed objects), so a view and its documented
//!    type cannot part.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use axum::http::{Method, StatusCode};
use common::TestApp;
use serde_json::{json, Value};

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "patch", "head", "options", "trace",
];

type Routes = BTreeSet<(String, String)>;

async fn document(app: &TestApp) -> Value {
    let r = app.get("/api/v1/openapi.json").send().await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let doc = r.json();
    if let Some(path) = std::env::var_os("STACYVM_OPENAPI_DUMP") {
        // For comparing documents by hand (docs/architecture.md, "OpenAPI").
        std::fs::write(path, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
    }
    doc
}

/// `(METHOD, /api/v1 path)` of every operation.
fn routes(doc: &Value) -> Routes {
    let base = doc["servers"][0]["url"].as_str().expect("servers[0].url");
    let mut out = Routes::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for m in item.as_object().unwrap().keys() {
            if METHODS.contains(&m.as_str()) {
                out.insert((m.to_uppercase(), format!("{base}{path}")));
            }
        }
    }
    out
}

fn show(r: &Routes) -> String {
    r.iter()
        .map(|(m, p)| format!("  {m} {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn document_is_served_and_well_formed() {
    let app = TestApp::default_app().await;
    let d = document(&app).await;
    assert!(d["openapi"].as_str().unwrap().starts_with("3.1."));
    let mut bad = Vec::new();
    check_refs(&d, &d, &mut bad);
    assert!(bad.is_empty(), "unresolved $refs: {bad:?}");

    // Spot checks so an empty or half document cannot pass.
    let all = routes(&d);
    for (m, p) in [
        ("POST", "/api/v1/sandboxes"),
        ("DELETE", "/api/v1/sandboxes"),
        ("POST", "/api/v1/sandboxes/{id}/exec"),
        ("PUT", "/api/v1/templates/{name}"),
        ("GET", "/api/v1/admin/audit"),
        ("GET", "/api/v1/admin/quotas/summary"),
        ("DELETE", "/api/v1/admin/workers/{id}"),
        ("GET", "/api/v1/providers/{name}"),
        ("POST", "/api/v1/worker/{id}/heartbeat"),
        ("GET", "/api/v1/openapi.json"),
        ("POST", "/api/v1/sandboxes/{id}/processes"),
        ("GET", "/api/v1/sandboxes/{id}/processes"),
        ("GET", "/api/v1/sandboxes/{id}/processes/{pid}"),
        ("GET", "/api/v1/sandboxes/{id}/processes/{pid}/output"),
        ("POST", "/api/v1/sandboxes/{id}/processes/{pid}/stdin"),
        ("POST", "/api/v1/sandboxes/{id}/processes/{pid}/signal"),
        ("POST", "/api/v1/sandboxes/{id}/processes/{pid}/resize"),
        ("GET", "/api/v1/sandboxes/{id}/processes/{pid}/attach"),
        ("POST", "/api/v1/sandboxes/{id}/pause"),
        ("POST", "/api/v1/sandboxes/{id}/resume"),
        ("GET", "/api/v1/sandboxes/{id}/files/watch"),
        ("GET", "/api/v1/sandboxes/{id}/execs"),
        ("GET", "/api/v1/metrics/history"),
        ("POST", "/api/v1/volumes"),
        ("GET", "/api/v1/volumes"),
        ("GET", "/api/v1/volumes/{name}"),
        ("DELETE", "/api/v1/volumes/{name}"),
        ("POST", "/api/v1/sandboxes/{id}/snapshots"),
        ("GET", "/api/v1/snapshots"),
        ("GET", "/api/v1/snapshots/{sid}"),
        ("DELETE", "/api/v1/snapshots/{sid}"),
        ("POST", "/api/v1/sandboxes/{id}/fork"),
    ] {
        assert!(
            all.contains(&(m.into(), p.into())),
            "{m} {p} missing:\n{}",
            show(&all)
        );
    }
    assert!(!all.contains(&("DELETE".into(), "/api/v1/workers/{id}".into())));
    assert!(!all.contains(&("GET".into(), "/api/v1/admin/health".into())));
    assert_eq!(all.len(), 91, "operations:\n{}", show(&all));

    let mut ids = BTreeSet::new();
    for (path, item) in d["paths"].as_object().unwrap() {
        let want: BTreeSet<String> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(str::to_string)
            .collect();
        for (m, op) in item.as_object().unwrap() {
            let id = op["operationId"].as_str().unwrap();
            assert!(ids.insert(id.to_string()), "duplicate operationId {id}");
            assert!(op["summary"].is_string(), "{m} {path}: summary");
            assert!(op["tags"].as_array().is_some_and(|t| t.len() == 1));
            assert!(op["security"].is_array(), "{m} {path}: security");
            for code in ["401", "500"] {
                assert!(op["responses"][code].is_object(), "{m} {path}: {code}");
            }
            let declared: BTreeSet<String> = op["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["in"] == "path")
                .map(|p| p["name"].as_str().unwrap().to_string())
                .collect();
            assert_eq!(declared, want, "{m} {path}: path parameters");
        }
    }
    // The routes mounted twice are told apart.
    assert_eq!(
        d["paths"]["/admin/quotas"]["get"]["operationId"],
        "listQuotasAdmin"
    );
    assert_eq!(d["paths"]["/admin/quotas"]["get"]["tags"], json!(["admin"]));
    assert_eq!(d["paths"]["/quotas"]["get"]["operationId"], "listQuotas");

    let schemes = d["components"]["securitySchemes"].as_object().unwrap();
    let headers: BTreeSet<&str> = schemes
        .values()
        .filter(|s| s["in"] == "header")
        .filter_map(|s| s["name"].as_str())
        .collect();
    for h in [
        "X-API-Key",
        "X-Admin-API-Key",
        "X-Worker-ID",
        "X-Worker-Token",
    ] {
        assert!(headers.contains(h), "security scheme for header {h}");
    }

    let codes: BTreeSet<&str> = d["components"]["schemas"]["Error"]["properties"]["code"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    for c in emitted_codes() {
        assert!(
            codes.contains(c.as_str()),
            "error code {c} is emitted but not documented"
        );
    }
    // The SDK-facing shapes are closed.
    for s in [
        "AdmissionDecision",
        "QuotaSummary",
        "Error",
        "ExecResult",
        "ExecStreamChunk",
        "ExecStreamExit",
        "OwnerQuota",
        "OwnerUsage",
    ] {
        assert_eq!(
            d["components"]["schemas"][s]["additionalProperties"], false,
            "{s} must be closed"
        );
    }
}

/// Every `$ref` in `v` resolves inside `root`.
fn check_refs(root: &Value, v: &Value, bad: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                if k == "$ref" {
                    let r = x.as_str().unwrap_or("");
                    if root.pointer(r.strip_prefix('#').unwrap_or("!")).is_none() {
                        bad.push(r.to_string());
                    }
                } else {
                    check_refs(root, x, bad);
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| check_refs(root, x, bad)),
        _ => {}
    }
}

/// The `.rs` files under `src/http`, recursively: `(path, text)`.
fn http_sources() -> Vec<(String, String)> {
    fn walk(dir: &Path, out: &mut Vec<(String, String)>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            // The E2B-compatible API is E2B's wire, not ours: its routes and codes are
            // described by docs/e2b.md and E2B's own spec, not by this document.
            if p.is_dir() && p.file_name().is_some_and(|n| n == "e2b") {
                continue;
            }
            // The console's static assets (docs/console.md) are pages, not API routes.
            if p.file_name().is_some_and(|n| n == "ui.rs") {
                continue;
            }
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push((
                    p.display().to_string(),
                    std::fs::read_to_string(&p).unwrap(),
                ));
            }
        }
    }
    let mut out = Vec::new();
    walk(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src/http"),
        &mut out,
    );
    assert!(out.len() >= 10);
    out
}

/// Every upper-case `"CODE_LIKE"` string literal in src/http: the error codes handlers emit.
fn emitted_codes() -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (_, src) in http_sources() {
        for lit in src.split('"').skip(1).step_by(2) {
            if lit.len() >= 5 && lit.bytes().all(|c| c.is_ascii_uppercase() || c == b'_') {
                out.insert(lit.to_string());
            }
        }
    }
    assert!(out.len() >= 10, "found only {out:?}");
    out
}

#[test]
fn no_route_bypasses_the_document() {
    let mut bad = Vec::new();
    for (file, src) in http_sources() {
        for needle in [
            ".route(",
            ".route_service(",
            ".nest_service(",
            "routing::get",
            "routing::post",
            "routing::{",
        ] {
            if src.contains(needle) {
                bad.push(format!("{file}: `{needle}`"));
            }
        }
        if src.contains(".routes(") {
            assert!(
                src.contains("routes!("),
                "{file}: `.routes(` without `routes!`"
            );
        }
    }
    assert!(
        bad.is_empty(),
        "add routes with `.routes(routes!(handler))` and `#[utoipa::path]` so they are \
         documented:\n{}",
        bad.join("\n")
    );
}

/// Whether `resp` is the router's own "no such route" answer (not a handler's JSON 404).
async fn is_no_route(resp: axum::response::Response) -> bool {
    if resp.status() != StatusCode::NOT_FOUND {
        return false;
    }
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    ct.starts_with("text/plain") && body.as_ref() == b"404 page not found\n"
}

fn concrete(path: &str) -> String {
    path.split('/')
        .map(|seg| {
            if seg.starts_with('{') && seg.ends_with('}') {
                "sb-00000000"
            } else {
                seg
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

#[tokio::test]
async fn every_documented_route_reaches_a_handler() {
    let app = TestApp::default_app().await;
    let doc = document(&app).await;
    // The detectors themselves work.
    assert!(
        is_no_route(
            app.get("/api/v1/definitely-not-a-route")
                .send_streaming()
                .await
        )
        .await
    );

    let documented = routes(&doc);
    let paths: BTreeSet<&String> = documented.iter().map(|(_, p)| p).collect();
    let mut bad = Vec::new();
    for path in paths {
        for method in ["GET", "PUT", "POST", "DELETE", "PATCH"] {
            let m = Method::from_bytes(method.as_bytes()).unwrap();
            let mut req = app.req(m.clone(), &concrete(path));
            if m == Method::POST || m == Method::PUT {
                req = req.raw_json("{}");
            }
            // Body left unread: `/events` never ends.
            let resp = req.send_streaming().await;
            let status = resp.status();
            let is_documented = documented.contains(&(method.to_string(), path.clone()));
            if !is_documented {
                // Worker credentials are checked before the method is (the auth layer wraps the
                // worker routes), so there any method answers the auth error: not a route.
                let worker_auth = path.starts_with("/api/v1/worker/")
                    && status == StatusCode::SERVICE_UNAVAILABLE;
                if status != StatusCode::METHOD_NOT_ALLOWED && !worker_auth {
                    bad.push(format!(
                        "{method} {path}: served ({status}) but not documented"
                    ));
                }
            } else if status == StatusCode::METHOD_NOT_ALLOWED {
                bad.push(format!("{method} {path}: documented but 405"));
            } else if is_no_route(resp).await {
                bad.push(format!("{method} {path}: documented but no route"));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "router and document disagree:\n{}",
        bad.join("\n")
    );
}

#[path = "openapi/schemas.rs"]
mod schemas;
