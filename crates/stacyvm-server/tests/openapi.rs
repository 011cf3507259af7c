//! Keeps `openapi.json` and the router in step, both ways:
//! 1. every path + method in the document reaches a handler (not the "no route" 404, not 405);
//! 2. every `.route(...)` in `src/http/*.rs`, with its nesting resolved from `router()`, is in the
//!    document — and nothing else is.
//!
//! The sources are read from disk at test time (not `include_str!`) so a new file under
//! `src/http/` is scanned without editing this test.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use axum::http::{Method, StatusCode};
use common::TestApp;
use serde_json::Value;

const DOC: &str = include_str!("../openapi.json");
const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "patch", "head", "options", "trace",
];

type Routes = BTreeSet<(String, String)>;

fn doc() -> Value {
    serde_json::from_str(DOC).expect("openapi.json is valid JSON")
}

/// `(METHOD, full path)` for every operation in the document.
fn doc_routes() -> Routes {
    let d = doc();
    let base = d["servers"][0]["url"]
        .as_str()
        .expect("servers[0].url")
        .trim_end_matches('/');
    let mut out = Routes::new();
    for (path, item) in d["paths"].as_object().expect("paths") {
        for m in item
            .as_object()
            .unwrap()
            .keys()
            .filter(|k| METHODS.contains(&k.as_str()))
        {
            out.insert((m.to_uppercase(), format!("{base}{path}")));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// A small reader for the route-building code in src/http. It understands exactly the shapes the
// router uses: `Router::new().route("P", get(h).post(h))`, `.merge(x)`, `.nest("P", x)`, where
// `x` is an inline expression, a `let` binding in the same function, or `[module::]function()`.
// Anything else it meets (`route_service`, `any(`, wildcards) fails loudly.
// ---------------------------------------------------------------------------------------------

fn http_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/http")
}

/// The file with comments and char literals blanked out (same length), string literals kept.
fn clean(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = b.to_vec();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'"' => i = string_end(b, i),
            b'/' if b.get(i + 1) == Some(&b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    out[i] = b' ';
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                while i < b.len() && !(b[i] == b'*' && b.get(i + 1) == Some(&b'/')) {
                    out[i] = b' ';
                    i += 1;
                }
                for _ in 0..2 {
                    if i < b.len() {
                        out[i] = b' ';
                        i += 1;
                    }
                }
            }
            b'\'' => {
                // A char literal ('x', '\n', '"'); otherwise a lifetime.
                let end = if b.get(i + 1) == Some(&b'\\') {
                    (i + 2..b.len()).find(|&j| b[j] == b'\'')
                } else if b.get(i + 2) == Some(&b'\'') {
                    Some(i + 2)
                } else {
                    None
                };
                match end {
                    Some(e) => {
                        out[i..=e].fill(b' ');
                        i = e + 1;
                    }
                    None => i += 1,
                }
            }
            _ => i += 1,
        }
    }
    String::from_utf8(out).expect("blanking keeps UTF-8 (only ASCII replaced)")
}

/// Index just past the string literal starting at `start`.
fn string_end(b: &[u8], start: usize) -> usize {
    let mut i = start + 1;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'"' => return i + 1,
            _ => i += 1,
        }
    }
    panic!("unterminated string literal");
}

/// Index of the bracket closing the one at `open`.
fn matching(s: &str, open: usize) -> usize {
    let b = s.as_bytes();
    let mut depth = 0i32;
    let mut i = open;
    while i < b.len() {
        match b[i] {
            b'"' => {
                i = string_end(b, i);
                continue;
            }
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' => {
                depth -= 1;
                if depth == 0 {
                    return i;
                }
            }
            _ => {}
        }
        i += 1;
    }
    panic!("unbalanced brackets");
}

/// Splits `s` at `sep` where it is outside brackets and strings.
fn split_top(s: &str, sep: u8) -> Vec<&str> {
    let b = s.as_bytes();
    let (mut parts, mut depth, mut last, mut i) = (Vec::new(), 0i32, 0, 0);
    while i < b.len() {
        match b[i] {
            b'"' => {
                i = string_end(b, i);
                continue;
            }
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' => depth -= 1,
            c if c == sep && depth == 0 => {
                parts.push(&s[last..i]);
                last = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    parts.push(&s[last..]);
    parts
}

/// The only string literal of `arg`, unescaped enough for paths.
fn literal(arg: &str) -> String {
    let a = arg.trim();
    assert!(
        a.starts_with('"') && a.ends_with('"') && a.len() >= 2,
        "expected a string literal, got {a:?}"
    );
    a[1..a.len() - 1].to_string()
}

struct Scanner {
    files: BTreeMap<String, String>,
}

/// A function body: `let` bindings and the tail expression.
struct Body {
    lets: BTreeMap<String, String>,
    tail: String,
}

impl Scanner {
    fn new() -> Self {
        let mut files = BTreeMap::new();
        for e in std::fs::read_dir(http_dir()).expect("src/http") {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "rs") {
                let name = p.file_stem().unwrap().to_string_lossy().into_owned();
                files.insert(name, clean(&std::fs::read_to_string(&p).unwrap()));
            }
        }
        Scanner { files }
    }

    fn body(&self, module: &str, func: &str) -> Body {
        let src = self
            .files
            .get(module)
            .unwrap_or_else(|| panic!("no src/http/{module}.rs"));
        let needle = format!("fn {func}(");
        let at = src
            .match_indices(&needle)
            .map(|(i, _)| i)
            .find(|&i| i == 0 || !src.as_bytes()[i - 1].is_ascii_alphanumeric())
            .unwrap_or_else(|| panic!("no fn {func} in src/http/{module}.rs"));
        let open = at + src[at..].find('{').unwrap();
        let inner = &src[open + 1..matching(src, open)];
        let mut stmts = split_top(inner, b';');
        let tail = stmts.pop().unwrap().trim().to_string();
        let mut lets = BTreeMap::new();
        for s in stmts {
            if let Some(rest) = s.trim().strip_prefix("let ") {
                if let Some((name, expr)) = rest.split_once('=') {
                    lets.insert(
                        name.trim().trim_start_matches("mut ").to_string(),
                        expr.trim().to_string(),
                    );
                }
            }
        }
        Body { lets, tail }
    }

    /// Routes served by `module::func()`.
    fn function(&self, module: &str, func: &str, prefix: &str, out: &mut Routes) {
        let body = self.body(module, func);
        self.expr(module, &body, &body.tail, prefix, out);
    }

    /// Routes added by a router-valued argument: a binding, a call, or an inline expression.
    fn operand(&self, module: &str, body: &Body, arg: &str, prefix: &str, out: &mut Routes) {
        self.expr(module, body, arg.trim(), prefix, out);
    }

    /// The receiver a method chain starts from: `Router::new()`, a binding, or a call.
    fn head(&self, module: &str, body: &Body, head: &str, prefix: &str, out: &mut Routes) {
        let h: String = head.chars().filter(|c| !c.is_whitespace()).collect();
        if h == "Router::new()" {
            return;
        }
        if let Some(e) = body.lets.get(&h) {
            return self.expr(module, body, e, prefix, out);
        }
        if let Some(call) = h.strip_suffix("()") {
            let call = call
                .trim_start_matches("super::")
                .trim_start_matches("self::");
            if !call.is_empty()
                && call
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
            {
                return match call.rsplit_once("::") {
                    Some((m, f)) => self.function(m, f, prefix, out),
                    None => self.function(module, call, prefix, out),
                };
            }
        }
        panic!("cannot tell which routes `{head}` (in {module}.rs) serves: teach tests/openapi.rs");
    }

    /// Walks `expr`: its receiver, then its top-level method chain.
    fn expr(&self, module: &str, body: &Body, expr: &str, prefix: &str, out: &mut Routes) {
        let b = expr.as_bytes();
        // The receiver ends at the first top-level `.`.
        let mut i = 0;
        while i < b.len() && b[i] != b'.' {
            match b[i] {
                b'"' => i = string_end(b, i),
                b'(' | b'[' | b'{' => i = matching(expr, i) + 1,
                _ => i += 1,
            }
        }
        self.head(module, body, &expr[..i], prefix, out);
        while i < b.len() {
            match b[i] {
                b'"' => {
                    i = string_end(b, i);
                    continue;
                }
                b'(' | b'[' | b'{' => {
                    i = matching(expr, i) + 1;
                    continue;
                }
                b'.' => {
                    let name: String = expr[i + 1..]
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    let after = i + 1 + name.len();
                    if b.get(after) == Some(&b'(') {
                        let close = matching(expr, after);
                        let args = &expr[after + 1..close];
                        match name.as_str() {
                            "route" => {
                                let parts = split_top(args, b',');
                                let path = format!("{prefix}{}", literal(parts[0]));
                                assert!(
                                    !path.contains('*'),
                                    "wildcard routes are not supported: {path}"
                                );
                                let methods = method_names(&parts[1..].join(","));
                                assert!(
                                    !methods.is_empty(),
                                    "no methods found for {path} in {module}.rs"
                                );
                                for m in methods {
                                    out.insert((m, path.clone()));
                                }
                            }
                            // A fallback service serves whatever its router routes.
                            "merge" | "fallback_service" => {
                                self.operand(module, body, args, prefix, out)
                            }
                            "nest" => {
                                let parts = split_top(args, b',');
                                let p = format!("{prefix}{}", literal(parts[0]));
                                self.operand(module, body, &parts[1..].join(","), &p, out);
                            }
                            // Wraps the routes already there (metrics); adds none.
                            "route_layer" => {}
                            "route_service" | "nest_service" => {
                                panic!(
                                    ".{name}(...) in {module}.rs: teach tests/openapi.rs about it"
                                )
                            }
                            _ => {}
                        }
                        i = close + 1;
                        continue;
                    }
                    i = after;
                }
                _ => i += 1,
            }
        }
    }
}

/// HTTP methods of a `MethodRouter` expression like `post(a).get(b)` (top level only).
fn method_names(expr: &str) -> Vec<String> {
    let b = expr.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'(' {
            i = matching(expr, i) + 1;
            continue;
        }
        if b[i].is_ascii_alphabetic()
            && (i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_'))
        {
            let name: String = expr[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            let after = i + name.len();
            if b.get(after) == Some(&b'(') {
                match name.as_str() {
                    n if METHODS.contains(&n) => out.push(n.to_uppercase()),
                    "any" | "on" | "any_service" | "on_service" => {
                        panic!("method router `{name}(` is not supported by tests/openapi.rs")
                    }
                    n if n.ends_with("_service") => panic!("method router `{n}(` is not supported"),
                    _ => {}
                }
            }
            i = after;
            continue;
        }
        i += 1;
    }
    out
}

fn source_routes() -> Routes {
    let s = Scanner::new();
    let mut out = Routes::new();
    s.function("mod", "router", "", &mut out);
    out
}

fn show(r: &Routes) -> String {
    r.iter()
        .map(|(m, p)| format!("  {m} {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn scanner_reads_the_router() {
    let src = source_routes();
    // Spot checks so a broken scanner cannot pass vacuously.
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
    ] {
        assert!(
            src.contains(&(m.to_string(), p.to_string())),
            "scanner missed {m} {p}:\n{}",
            show(&src)
        );
    }
    assert!(
        !src.contains(&("DELETE".to_string(), "/api/v1/workers/{id}".to_string())),
        "admin-only route leaked"
    );
    assert!(
        !src.contains(&("GET".to_string(), "/api/v1/admin/health".to_string())),
        "public-only route leaked"
    );
    // Every `.route("...")` in the sources was reached from `router()`.
    let s = Scanner::new();
    for (file, text) in &s.files {
        for (at, _) in text.match_indices(".route(") {
            let open = at + ".route".len();
            let args = &text[open + 1..matching(text, open)];
            let lit = literal(split_top(args, b',')[0]);
            assert!(
                src.iter().any(|(_, p)| p.ends_with(&lit)),
                "route {lit:?} in src/http/{file}.rs is not reached from router()"
            );
        }
    }
}

#[test]
fn every_source_route_is_documented_and_nothing_else() {
    let src = source_routes();
    let doc = doc_routes();
    let missing: Routes = src.difference(&doc).cloned().collect();
    assert!(
        missing.is_empty(),
        "routes served but missing from openapi.json:\n{}",
        show(&missing)
    );
    let stale: Routes = doc.difference(&src).cloned().collect();
    assert!(
        stale.is_empty(),
        "openapi.json documents routes the router does not define:\n{}",
        show(&stale)
    );
}

/// Whether `r` is the router's own "no such route" answer (not a handler's JSON 404).
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

#[tokio::test]
async fn every_documented_route_reaches_a_handler() {
    let app = TestApp::default_app().await;
    // The detectors themselves work.
    assert!(
        is_no_route(
            app.get("/api/v1/definitely-not-a-route")
                .send_streaming()
                .await
        )
        .await
    );
    assert_eq!(
        app.req(Method::PATCH, "/api/v1/sandboxes")
            .send_streaming()
            .await
            .status(),
        StatusCode::METHOD_NOT_ALLOWED
    );

    let mut bad = Vec::new();
    for (method, path) in doc_routes() {
        let concrete = path
            .split('/')
            .map(|seg| {
                if seg.starts_with('{') && seg.ends_with('}') {
                    "sb-00000000"
                } else {
                    seg
                }
            })
            .collect::<Vec<_>>()
            .join("/");
        let m = Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = app.req(m.clone(), &concrete);
        if m == Method::POST || m == Method::PUT {
            req = req.raw_json("{}");
        }
        // Body left unread: `/events` never ends.
        let resp = req.send_streaming().await;
        let status = resp.status();
        if status == StatusCode::METHOD_NOT_ALLOWED {
            bad.push(format!("{method} {path}: 405"));
        } else if is_no_route(resp).await {
            bad.push(format!("{method} {path}: no route (404 page not found)"));
        }
    }
    assert!(
        bad.is_empty(),
        "documented but not served:\n{}",
        bad.join("\n")
    );
}

#[tokio::test]
async fn document_is_served_verbatim() {
    let app = TestApp::default_app().await;
    let r = app.get("/api/v1/openapi.json").send().await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.text(), DOC);
}

/// Every `$ref` in `v` resolves inside `root`.
fn check_refs(root: &Value, v: &Value, bad: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                if k == "$ref" {
                    let r = x.as_str().unwrap_or("");
                    let ptr = r.strip_prefix('#').unwrap_or("!");
                    if root.pointer(ptr).is_none() {
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

#[test]
fn document_is_well_formed() {
    let d = doc();
    assert!(
        d["openapi"].as_str().unwrap().starts_with("3.0."),
        "OpenAPI 3.0.x"
    );
    let mut bad = Vec::new();
    check_refs(&d, &d, &mut bad);
    assert!(bad.is_empty(), "unresolved $refs: {bad:?}");

    let mut ids = BTreeSet::new();
    for (path, item) in d["paths"].as_object().unwrap() {
        let params: BTreeSet<&str> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .collect();
        for (m, op) in item.as_object().unwrap() {
            let id = op["operationId"]
                .as_str()
                .unwrap_or_else(|| panic!("{m} {path}: operationId"));
            assert!(ids.insert(id.to_string()), "duplicate operationId {id}");
            assert!(
                op["responses"].as_object().is_some_and(|r| !r.is_empty()),
                "{m} {path}: responses"
            );
            assert!(op["security"].is_array(), "{m} {path}: security");
            // Every path template parameter is declared.
            let declared: BTreeSet<String> = op["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| match p.get("$ref").and_then(Value::as_str) {
                    Some(r) => d.pointer(r.strip_prefix('#').unwrap()).unwrap().clone(),
                    None => p.clone(),
                })
                .filter(|p| p["in"] == "path")
                .map(|p| p["name"].as_str().unwrap().to_string())
                .collect();
            let want: BTreeSet<String> = params.iter().map(|s| s.to_string()).collect();
            assert_eq!(declared, want, "{m} {path}: path parameters");
        }
    }

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

    // Every error code the server can emit is in the Error schema.
    let codes: BTreeSet<String> = d["components"]["schemas"]["Error"]["properties"]["code"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    for c in emitted_codes() {
        assert!(
            codes.contains(&c),
            "error code {c} is emitted but not in the Error schema"
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
    ] {
        assert_eq!(
            d["components"]["schemas"][s]["additionalProperties"], false,
            "{s} must be closed"
        );
    }
}

/// Every upper-case `"CODE_LIKE"` string literal in src/http: the error codes handlers emit.
fn emitted_codes() -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for src in Scanner::new().files.values() {
        let b = src.as_bytes();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'"' {
                let end = string_end(b, i);
                let lit = &src[i + 1..end - 1];
                if lit.len() >= 5 && lit.bytes().all(|c| c.is_ascii_uppercase() || c == b'_') {
                    out.insert(lit.to_string());
                }
                i = end;
            } else {
                i += 1;
            }
        }
    }
    assert!(out.len() >= 10, "found only {out:?}");
    out
}
