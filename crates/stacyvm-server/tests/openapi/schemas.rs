//! Real answers against their documented schemas (see `tests/openapi.rs`, point 4).

use serde_json::{json, Value};

use super::common::{Resp, TestApp};
use super::document;

/// A small JSON Schema check for what the document uses: `$ref`, `type` (one or a list),
/// `enum`, `properties`, `required`, `additionalProperties`, `items`, `oneOf`/`anyOf`/`allOf`.
/// Objects with `properties` are closed unless `additionalProperties` says otherwise, so an
/// undocumented key fails too.
fn validate(doc: &Value, schema: &Value, v: &Value, at: &str, errs: &mut Vec<String>) {
    if let Some(r) = schema["$ref"].as_str() {
        let target = doc
            .pointer(r.trim_start_matches('#'))
            .expect("resolvable ref");
        return validate(doc, target, v, at, errs);
    }
    for all in schema["allOf"].as_array().into_iter().flatten() {
        validate(doc, all, v, at, errs);
    }
    for key in ["oneOf", "anyOf"] {
        if let Some(alts) = schema[key].as_array() {
            let ok = alts.iter().any(|s| {
                let mut e = Vec::new();
                validate(doc, s, v, at, &mut e);
                e.is_empty()
            });
            if !ok {
                errs.push(format!("{at}: {v} matches none of {key} {schema}"));
            }
        }
    }
    if let Some(t) = schema.get("type") {
        let types: Vec<&str> = match t {
            Value::String(s) => vec![s.as_str()],
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        let fits = |t: &str| match t {
            "null" => v.is_null(),
            "boolean" => v.is_boolean(),
            "string" => v.is_string(),
            "integer" => v.is_i64() || v.is_u64(),
            "number" => v.is_number(),
            "array" => v.is_array(),
            "object" => v.is_object(),
            _ => false,
        };
        if !types.iter().any(|t| fits(t)) {
            errs.push(format!("{at}: {v} is not of type {t}"));
            return;
        }
    }
    if let Some(e) = schema["enum"].as_array() {
        if !e.contains(v) {
            errs.push(format!("{at}: {v} not in {e:?}"));
        }
    }
    if let (Some(items), Some(a)) = (schema.get("items"), v.as_array()) {
        for (i, x) in a.iter().enumerate() {
            validate(doc, items, x, &format!("{at}[{i}]"), errs);
        }
    }
    let Some(obj) = v.as_object() else { return };
    let props = schema["properties"].as_object();
    for r in schema["required"].as_array().into_iter().flatten() {
        let r = r.as_str().unwrap();
        if !obj.contains_key(r) {
            errs.push(format!("{at}: required `{r}` missing in {v}"));
        }
    }
    for (k, x) in obj {
        match props.and_then(|p| p.get(k)) {
            Some(s) => validate(doc, s, x, &format!("{at}.{k}"), errs),
            None => match schema.get("additionalProperties") {
                Some(Value::Bool(true)) => {}
                Some(s @ Value::Object(_)) => validate(doc, s, x, &format!("{at}.{k}"), errs),
                _ if props.is_some() => errs.push(format!("{at}: `{k}` is not documented")),
                _ => {}
            },
        }
    }
}

/// Checks `r`, the answer of `method path`, against the document; returns its JSON.
fn check(doc: &Value, method: &str, path: &str, r: &Resp, errs: &mut Vec<String>) -> Value {
    let op = &doc["paths"][path][method];
    assert!(op.is_object(), "{method} {path} is not documented");
    let status = r.status.as_u16().to_string();
    let mut resp = &op["responses"][&status];
    if let Some(reference) = resp["$ref"].as_str() {
        resp = doc.pointer(reference.trim_start_matches('#')).unwrap();
    }
    assert!(
        resp.is_object(),
        "{method} {path}: status {status} is not documented ({})",
        r.text()
    );
    let ct = r.header("content-type").unwrap_or("").to_string();
    let media = ct.split(';').next().unwrap().trim();
    let schema = &resp["content"][media]["schema"];
    assert!(
        schema.is_object(),
        "{method} {path} {status}: no schema for {ct}"
    );
    let at = format!("{method} {path} {status}");
    let mut values = Vec::new();
    if media == "application/x-ndjson" {
        for line in r.text().lines() {
            values.push(serde_json::from_str(line).unwrap());
        }
    } else {
        values.push(r.json());
    }
    for v in &values {
        validate(doc, schema, v, &at, errs);
    }
    values.swap_remove(0)
}

#[tokio::test]
async fn answers_match_their_schemas() {
    let app = TestApp::default_app().await;
    let doc = document(&app).await;
    let mut errs = Vec::new();
    let e = &mut errs;
    let d = &doc;

    // Sandboxes.
    let spawn_body = json!({"image": "alpine", "owner_id": "alice", "metadata": {"k": "v"}});
    let r = app.post("/api/v1/sandboxes").json(&spawn_body).send().await;
    let sb = check(d, "post", "/sandboxes", &r, e);
    let id = sb["id"].as_str().unwrap().to_string();
    let p = |rest: &str| format!("/api/v1/sandboxes/{id}{rest}");
    let r = app
        .post("/api/v1/sandboxes/admission")
        .json(&spawn_body)
        .user("alice")
        .send()
        .await;
    check(d, "post", "/sandboxes/admission", &r, e);
    check(
        d,
        "get",
        "/sandboxes",
        &app.get("/api/v1/sandboxes").send().await,
        e,
    );
    check(
        d,
        "get",
        "/sandboxes",
        &app.get("/api/v1/sandboxes?limit=1").send().await,
        e,
    );
    check(
        d,
        "get",
        "/sandboxes/{id}",
        &app.get(&p("")).send().await,
        e,
    );
    let r = app
        .post(&p("/extend"))
        .json(&json!({"ttl": "5m"}))
        .send()
        .await;
    check(d, "post", "/sandboxes/{id}/extend", &r, e);
    // Pause and resume, with the lifecycle keys, and the paused refusal.
    let r = app
        .post("/api/v1/sandboxes")
        .json(&json!({"on_expire": "pause", "idle_timeout": "10m"}))
        .send()
        .await;
    let paused = check(d, "post", "/sandboxes", &r, e)["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = app
        .post(&format!("/api/v1/sandboxes/{paused}/pause"))
        .send()
        .await;
    check(d, "post", "/sandboxes/{id}/pause", &r, e);
    check(
        d,
        "get",
        "/sandboxes/{id}",
        &app.get(&format!("/api/v1/sandboxes/{paused}")).send().await,
        e,
    );
    let r = app
        .post(&format!("/api/v1/sandboxes/{paused}/exec"))
        .json(&json!({"command": "true"}))
        .send()
        .await;
    check(d, "post", "/sandboxes/{id}/exec", &r, e);
    let r = app
        .post(&format!("/api/v1/sandboxes/{paused}/resume"))
        .json(&json!({"ttl": "5m"}))
        .send()
        .await;
    check(d, "post", "/sandboxes/{id}/resume", &r, e);
    check(
        d,
        "get",
        "/sandboxes/{id}/logs",
        &app.get(&p("/logs")).send().await,
        e,
    );
    check(
        d,
        "get",
        "/sandboxes/{id}/stats",
        &app.get(&p("/stats")).send().await,
        e,
    );
    let r = app.get("/api/v1/sandboxes/sb-00000000").send().await;
    check(d, "get", "/sandboxes/{id}", &r, e);

    // Exec, collected and streamed.
    let r = app
        .post(&p("/exec"))
        .json(&json!({"command": "echo hi"}))
        .send()
        .await;
    check(d, "post", "/sandboxes/{id}/exec", &r, e);
    let body = json!({"command": "echo hi", "stream": true});
    let r = app.post(&p("/exec")).json(&body).send().await;
    check(d, "post", "/sandboxes/{id}/exec", &r, e);

    // Files.
    let files = "/sandboxes/{id}/files";
    let body = json!({"path": "/workspace/a.txt", "content": "x"});
    check(
        d,
        "post",
        files,
        &app.post(&p("/files")).json(&body).send().await,
        e,
    );
    let r = app
        .put(&p("/files?path=/workspace/b.txt"))
        .raw("application/octet-stream", "raw")
        .send()
        .await;
    check(d, "put", files, &r, e);
    let r = app
        .get(&p("/files/stat?path=/workspace/a.txt"))
        .send()
        .await;
    check(d, "get", "/sandboxes/{id}/files/stat", &r, e);
    let r = app.get(&p("/files/list?path=/workspace")).send().await;
    check(d, "get", "/sandboxes/{id}/files/list", &r, e);
    let r = app
        .get(&p("/files/glob?pattern=/workspace/*.txt"))
        .send()
        .await;
    check(d, "get", "/sandboxes/{id}/files/glob", &r, e);
    let body = json!({"old_path": "/workspace/b.txt", "new_path": "/workspace/c.txt"});
    let r = app.post(&p("/files/move")).json(&body).send().await;
    check(d, "post", "/sandboxes/{id}/files/move", &r, e);
    let body = json!({"path": "/workspace/c.txt", "mode": "0600"});
    let r = app.post(&p("/files/chmod")).json(&body).send().await;
    check(d, "post", "/sandboxes/{id}/files/chmod", &r, e);
    let r = app.get(&p("/files/stat?path=/workspace/nope")).send().await;
    check(d, "get", "/sandboxes/{id}/files/stat", &r, e);
    let r = app.delete(&p("/files?path=/workspace/c.txt")).send().await;
    check(d, "delete", files, &r, e);

    // Templates, with every optional field set.
    let t = json!({"name": "t1", "image": "alpine", "description": "d", "setup": ["true"],
        "allowed_hosts": ["example.com"], "env": {"A": "1"},
        "secrets": [{"name": "s", "inject_at": "/run/s"}]});
    check(
        d,
        "post",
        "/templates",
        &app.post("/api/v1/templates").json(&t).send().await,
        e,
    );
    check(
        d,
        "get",
        "/templates",
        &app.get("/api/v1/templates").send().await,
        e,
    );
    let r = app.get("/api/v1/templates/t1").send().await;
    check(d, "get", "/templates/{name}", &r, e);
    let r = app.put("/api/v1/templates/t1").json(&t).send().await;
    check(d, "put", "/templates/{name}", &r, e);
    let r = app.post("/api/v1/templates/t1/spawn").send().await;
    check(d, "post", "/templates/{name}/spawn", &r, e);
    let r = app.post("/api/v1/templates").json(&t).send().await;
    check(d, "post", "/templates", &r, e);
    let r = app.delete("/api/v1/templates/t1").send().await;
    check(d, "delete", "/templates/{name}", &r, e);

    // Volumes, and a spawn that mounts one (and its refusals).
    let r = app
        .post("/api/v1/volumes")
        .json(&json!({"name": "v1", "size_mb": 8}))
        .send()
        .await;
    check(d, "post", "/volumes", &r, e);
    let r = app
        .post("/api/v1/volumes")
        .json(&json!({"name": "v1"}))
        .send()
        .await;
    check(d, "post", "/volumes", &r, e);
    check(
        d,
        "get",
        "/volumes",
        &app.get("/api/v1/volumes").send().await,
        e,
    );
    let mount = json!({"volumes": [{"name": "v1", "mount_path": "/data"}]});
    let r = app.post("/api/v1/sandboxes").json(&mount).send().await;
    let vsb = r.json()["id"].as_str().unwrap_or_default().to_string();
    check(d, "post", "/sandboxes", &r, e);
    let r = app.post("/api/v1/sandboxes").json(&mount).send().await;
    check(d, "post", "/sandboxes", &r, e);
    let r = app.get("/api/v1/volumes/v1").send().await;
    check(d, "get", "/volumes/{name}", &r, e);
    let r = app.delete("/api/v1/volumes/v1").send().await;
    check(d, "delete", "/volumes/{name}", &r, e);
    app.delete(&format!("/api/v1/sandboxes/{vsb}")).send().await;
    let r = app.delete("/api/v1/volumes/v1").send().await;
    check(d, "delete", "/volumes/{name}", &r, e);
    let r = app.get("/api/v1/volumes/v1").send().await;
    check(d, "get", "/volumes/{name}", &r, e);

    // Snapshots and fork.
    let src = app.post("/api/v1/sandboxes").json(&json!({})).send().await;
    let src = src.json()["id"].as_str().unwrap_or_default().to_string();
    let r = app
        .post(&format!("/api/v1/sandboxes/{src}/snapshots"))
        .json(&json!({"name": "s"}))
        .send()
        .await;
    let sid = r.json()["id"].as_str().unwrap_or_default().to_string();
    check(d, "post", "/sandboxes/{id}/snapshots", &r, e);
    check(
        d,
        "get",
        "/snapshots",
        &app.get("/api/v1/snapshots").send().await,
        e,
    );
    let r = app.get(&format!("/api/v1/snapshots/{sid}")).send().await;
    check(d, "get", "/snapshots/{sid}", &r, e);
    let r = app
        .post("/api/v1/sandboxes")
        .json(&json!({"snapshot": sid}))
        .send()
        .await;
    check(d, "post", "/sandboxes", &r, e);
    let r = app
        .post(&format!("/api/v1/sandboxes/{src}/fork"))
        .send()
        .await;
    check(d, "post", "/sandboxes/{id}/fork", &r, e);
    let r = app.delete(&format!("/api/v1/snapshots/{sid}")).send().await;
    check(d, "delete", "/snapshots/{sid}", &r, e);
    let r = app.get(&format!("/api/v1/snapshots/{sid}")).send().await;
    check(d, "get", "/snapshots/{sid}", &r, e);

    // Quotas.
    let q = json!({"max_sandboxes": 2, "max_ttl": "1h", "max_exec_timeout": "30s"});
    let r = app.put("/api/v1/quotas/alice").json(&q).send().await;
    check(d, "put", "/quotas/{owner}", &r, e);
    check(
        d,
        "get",
        "/quotas/{owner}",
        &app.get("/api/v1/quotas/alice").send().await,
        e,
    );
    let r = app.get("/api/v1/quotas/alice/usage").send().await;
    check(d, "get", "/quotas/{owner}/usage", &r, e);
    check(
        d,
        "get",
        "/quotas/summary",
        &app.get("/api/v1/quotas/summary").send().await,
        e,
    );
    check(
        d,
        "get",
        "/quotas",
        &app.get("/api/v1/quotas").send().await,
        e,
    );
    let r = app.get("/api/v1/admin/quotas/alice").send().await;
    check(d, "get", "/admin/quotas/{owner}", &r, e);
    let r = app.delete("/api/v1/quotas/alice").send().await;
    check(d, "delete", "/quotas/{owner}", &r, e);

    // Workers.
    let hb = json!({"hostname": "w1", "providers": ["mock"], "capacity": {"max_sandboxes": 3}});
    let r = app
        .post("/api/v1/admin/workers/w1/heartbeat")
        .json(&hb)
        .send()
        .await;
    check(d, "post", "/admin/workers/{id}/heartbeat", &r, e);
    check(
        d,
        "get",
        "/workers",
        &app.get("/api/v1/workers").send().await,
        e,
    );
    check(
        d,
        "get",
        "/workers/{id}",
        &app.get("/api/v1/workers/local").send().await,
        e,
    );
    let r = app.post("/api/v1/admin/workers/w1/drain").send().await;
    check(d, "post", "/admin/workers/{id}/drain", &r, e);
    let r = app
        .post("/api/v1/admin/worker-tokens")
        .json(&json!({"worker_id": "w1"}))
        .send()
        .await;
    check(d, "post", "/admin/worker-tokens", &r, e);
    let r = app.delete("/api/v1/admin/workers/w1").send().await;
    check(d, "delete", "/admin/workers/{id}", &r, e);

    // System and admin.
    for path in [
        "/health",
        "/live",
        "/ready",
        "/providers",
        "/providers/mock",
        "/pool/status",
        "/snapshots",
        "/system/stats",
        "/metrics",
        "/metrics/history",
        "/diagnostics",
    ] {
        let r = app.get(&format!("/api/v1{path}")).send().await;
        let template = path.replace("/mock", "/{name}");
        check(d, "get", &template, &r, e);
    }
    let r = app.post("/api/v1/providers/test").send().await;
    check(d, "post", "/providers/test", &r, e);
    let r = app.get("/api/v1/admin/audit").send().await;
    let rows = check(d, "get", "/admin/audit", &r, e);
    assert!(
        rows.as_array().is_some_and(|a| !a.is_empty()),
        "audit rows: {rows}"
    );

    check(
        d,
        "delete",
        "/sandboxes/{id}",
        &app.delete(&p("")).send().await,
        e,
    );
    check(
        d,
        "delete",
        "/sandboxes",
        &app.delete("/api/v1/sandboxes").send().await,
        e,
    );
    assert!(
        errs.is_empty(),
        "answers off their schemas:\n{}",
        errs.join("\n")
    );
}

/// The watch's NDJSON lines against `WatchEvent` (a separate app: the mock needs this
/// checkout's agent). The stream ends once its directory is removed, so the body can be read
/// whole.
#[tokio::test]
async fn watch_lines_match_their_schema() {
    let app = TestApp::new().with_built_agent().build().await;
    let doc = document(&app).await;
    let id = app.spawn_id().await;
    let write = |path: &str| {
        app.post(&format!("/api/v1/sandboxes/{id}/files"))
            .json(&json!({"path": path, "content": "x"}))
    };
    assert_eq!(write("/workspace/w/seed").send().await.status.as_u16(), 200);
    let resp = app
        .get(&format!(
            "/api/v1/sandboxes/{id}/files/watch?path=/workspace/w&recursive=true"
        ))
        .send_streaming()
        .await;
    let (status, headers) = (resp.status(), resp.headers().clone());
    assert_eq!(
        write("/workspace/w/sub/a.txt").send().await.status.as_u16(),
        200
    );
    let r = app
        .delete(&format!(
            "/api/v1/sandboxes/{id}/files?path=/workspace/w&recursive=true"
        ))
        .send()
        .await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.text());
    let body = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        axum::body::to_bytes(resp.into_body(), usize::MAX),
    )
    .await
    .expect("the watch ends with its directory")
    .unwrap()
    .to_vec();
    let r = Resp {
        status,
        headers,
        body,
    };
    assert!(r.text().lines().count() >= 3, "{}", r.text());
    let mut errs = Vec::new();
    check(&doc, "get", "/sandboxes/{id}/files/watch", &r, &mut errs);
    assert!(
        errs.is_empty(),
        "lines off their schema:\n{}",
        errs.join("\n")
    );
}

#[test]
fn validator_catches_a_renamed_field() {
    let doc = json!({"components": {"schemas": {"S": {"type": "object",
        "required": ["a"], "properties": {"a": {"type": "string"}}}}}});
    let schema = json!({"$ref": "#/components/schemas/S"});
    let mut errs = Vec::new();
    validate(&doc, &schema, &json!({"a": "x"}), "ok", &mut errs);
    assert!(errs.is_empty(), "{errs:?}");
    validate(&doc, &schema, &json!({"b": "x"}), "renamed", &mut errs);
    assert_eq!(errs.len(), 2, "{errs:?}"); // `a` missing, `b` undocumented
}
