//! The few API calls the benchmarks make, each returning its wall time.

use std::time::{Duration, Instant};

use reqwest::header::{HeaderValue, CONTENT_TYPE};
use reqwest::{Client, Method, StatusCode};

use crate::BenchError;

/// Spawn body of the throughput and exec benchmarks.
pub const SPAWN_BODY: &str = r#"{"image":"alpine","ttl":"5m"}"#;
/// Spawn body of the memory benchmark: the sandboxes must outlive the whole run.
pub const SPAWN_LONG_BODY: &str = r#"{"image":"alpine","ttl":"1h"}"#;
const EXEC_BODY: &str = r#"{"command":"true"}"#;

/// One keep-alive HTTP/1.1 connection pool; each benchmark client owns one.
pub fn http_client() -> Result<Client, BenchError> {
    Ok(Client::builder()
        .http1_only()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(64)
        .timeout(Duration::from_secs(60))
        .build()?)
}

async fn post(
    c: &Client,
    url: String,
    body: &'static str,
) -> Result<(StatusCode, Vec<u8>), reqwest::Error> {
    let r = c
        .post(url)
        .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
        .body(body)
        .send()
        .await?;
    let status = r.status();
    Ok((status, r.bytes().await?.to_vec()))
}

fn unexpected(what: &str, status: StatusCode, body: &[u8]) -> BenchError {
    BenchError::Unexpected(format!(
        "{what}: HTTP {status}: {}",
        String::from_utf8_lossy(body).trim()
    ))
}

fn json_field(body: &[u8], key: &str) -> Option<serde_json::Value> {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()?
        .get(key)
        .cloned()
}

/// Spawns a mock sandbox from a JSON body; returns its id.
pub async fn spawn(
    c: &Client,
    base: &str,
    body: &'static str,
) -> Result<(String, Duration), BenchError> {
    let t = Instant::now();
    let (status, b) = post(c, format!("{base}/sandboxes"), body).await?;
    let took = t.elapsed();
    if status != StatusCode::CREATED {
        return Err(unexpected("spawn", status, &b));
    }
    match json_field(&b, "id") {
        Some(serde_json::Value::String(id)) => Ok((id, took)),
        _ => Err(unexpected("spawn (no id)", status, &b)),
    }
}

pub async fn destroy(c: &Client, base: &str, id: &str) -> Result<Duration, BenchError> {
    let t = Instant::now();
    let r = c.delete(format!("{base}/sandboxes/{id}")).send().await?;
    let status = r.status();
    let b = r.bytes().await?;
    let took = t.elapsed();
    if status != StatusCode::OK {
        return Err(unexpected("destroy", status, &b));
    }
    Ok(took)
}

/// Synchronous exec of `true`; checks the exit code outside the timed section.
pub async fn exec_true(c: &Client, base: &str, id: &str) -> Result<Duration, BenchError> {
    let t = Instant::now();
    let (status, b) = post(c, format!("{base}/sandboxes/{id}/exec"), EXEC_BODY).await?;
    let took = t.elapsed();
    if status != StatusCode::OK {
        return Err(unexpected("exec", status, &b));
    }
    match json_field(&b, "exit_code").and_then(|v| v.as_i64()) {
        Some(0) => Ok(took),
        _ => Err(unexpected("exec (exit code not 0)", status, &b)),
    }
}

/// `GET /health`: the HTTP round trip with next to no work behind it.
pub async fn health(c: &Client, base: &str) -> Result<Duration, BenchError> {
    call(c, Method::GET, format!("{base}/health"), None).await
}

/// Any request expected to answer 2xx; returns its wall time.
pub async fn call(
    c: &Client,
    method: Method,
    url: String,
    body: Option<&'static str>,
) -> Result<Duration, BenchError> {
    let t = Instant::now();
    let mut req = c.request(method.clone(), &url);
    if let Some(b) = body {
        req = req
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .body(b);
    }
    let r = req.send().await?;
    let status = r.status();
    let b = r.bytes().await?;
    let took = t.elapsed();
    if !status.is_success() {
        return Err(unexpected(&format!("{method} {url}"), status, &b));
    }
    Ok(took)
}

/// `GET /sandboxes`: number of live sandboxes listed.
pub async fn list_count(c: &Client, base: &str) -> Result<(usize, Duration), BenchError> {
    let t = Instant::now();
    let r = c.get(format!("{base}/sandboxes")).send().await?;
    let status = r.status();
    let b = r.bytes().await?;
    let took = t.elapsed();
    if status != StatusCode::OK {
        return Err(unexpected("list", status, &b));
    }
    match serde_json::from_slice::<serde_json::Value>(&b) {
        Ok(serde_json::Value::Array(v)) => Ok((v.len(), took)),
        _ => Err(unexpected("list (not an array)", status, &b)),
    }
}

/// `POST /sandboxes` with any JSON body (image and provider chosen by the caller); the id and
/// the wall time of the request.
pub async fn spawn_json(
    c: &Client,
    base: &str,
    body: &serde_json::Value,
) -> Result<(String, Duration), BenchError> {
    let t = Instant::now();
    let r = c
        .post(format!("{base}/sandboxes"))
        .json(body)
        .send()
        .await?;
    let status = r.status();
    let b = r.bytes().await?;
    let took = t.elapsed();
    if status != StatusCode::CREATED {
        return Err(unexpected("spawn", status, &b));
    }
    match json_field(&b, "id") {
        Some(serde_json::Value::String(id)) => Ok((id, took)),
        _ => Err(unexpected("spawn (no id)", status, &b)),
    }
}

/// Synchronous exec of a shell command; its stdout and the wall time. A non-zero exit code is
/// an error.
pub async fn exec_stdout(
    c: &Client,
    base: &str,
    id: &str,
    command: &str,
) -> Result<(String, Duration), BenchError> {
    let t = Instant::now();
    let r = c
        .post(format!("{base}/sandboxes/{id}/exec"))
        .json(&serde_json::json!({ "command": command }))
        .send()
        .await?;
    let status = r.status();
    let b = r.bytes().await?;
    let took = t.elapsed();
    if status != StatusCode::OK {
        return Err(unexpected("exec", status, &b));
    }
    let stdout = json_field(&b, "stdout")
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    match json_field(&b, "exit_code").and_then(|v| v.as_i64()) {
        Some(0) => Ok((stdout, took)),
        _ => Err(unexpected("exec (exit code not 0)", status, &b)),
    }
}
