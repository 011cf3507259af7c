//! The process API calls the process benchmarks make (sandbox-model.md §1), and an NDJSON
//! line reader over a streamed response.

use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

use crate::BenchError;

/// `POST url` with a JSON body: the status, the raw body (for error messages) and the body as
/// JSON (`null` when it is not).
async fn post(
    c: &Client,
    url: String,
    body: &Value,
) -> Result<(StatusCode, Vec<u8>, Value), BenchError> {
    let r = c.post(url).json(body).send().await?;
    let status = r.status();
    let b = r.bytes().await?.to_vec();
    let v = serde_json::from_slice(&b).unwrap_or_default();
    Ok((status, b, v))
}

fn unexpected(what: &str, status: StatusCode, body: &[u8]) -> BenchError {
    BenchError::Unexpected(format!(
        "{what}: HTTP {status}: {}",
        String::from_utf8_lossy(body).trim()
    ))
}

/// `POST /sandboxes` with a JSON body; the id of the new sandbox and the worker it was placed
/// on.
pub async fn spawn(c: &Client, base: &str, body: &Value) -> Result<(String, String), BenchError> {
    let (status, b, v) = post(c, format!("{base}/sandboxes"), body).await?;
    let worker = v.get("worker_id").and_then(Value::as_str).unwrap_or("");
    match (status, v.get("id").and_then(Value::as_str)) {
        (StatusCode::CREATED, Some(id)) => Ok((id.to_string(), worker.to_string())),
        _ => Err(unexpected("spawn", status, &b)),
    }
}

/// `DELETE /sandboxes/{id}` (best effort at the end of a benchmark: the error is returned, the
/// caller decides whether it matters).
pub async fn destroy(c: &Client, base: &str, sid: &str) -> Result<(), BenchError> {
    crate::api::destroy(c, base, sid).await.map(|_| ())
}

/// `POST /sandboxes/{id}/processes`; the new process's pid.
pub async fn start(c: &Client, base: &str, sid: &str, body: &Value) -> Result<u64, BenchError> {
    let (status, b, v) = post(c, format!("{base}/sandboxes/{sid}/processes"), body).await?;
    match (status, v.get("pid").and_then(Value::as_u64)) {
        (StatusCode::CREATED, Some(pid)) => Ok(pid),
        _ => Err(unexpected("process start", status, &b)),
    }
}

/// `POST …/{pid}/signal` with `KILL` (cleanup; the answer is not needed).
pub async fn kill(c: &Client, base: &str, sid: &str, pid: u64) -> Result<(), BenchError> {
    let r = c
        .post(format!("{base}/sandboxes/{sid}/processes/{pid}/signal"))
        .json(&json!({"signal": "KILL"}))
        .send()
        .await?;
    let status = r.status();
    let b = r.bytes().await?;
    // 409: it had exited already, which is what was wanted.
    if status.is_success() || status == StatusCode::CONFLICT {
        Ok(())
    } else {
        Err(unexpected("process signal", status, &b))
    }
}

/// NDJSON lines of a streamed response, one JSON value each.
pub struct Lines {
    resp: reqwest::Response,
    buf: Vec<u8>,
}

impl Lines {
    /// Checks the status is 200 first (the body of another status is the error).
    pub async fn of(what: &str, resp: reqwest::Response) -> Result<Lines, BenchError> {
        let status = resp.status();
        if !status.is_success() {
            let b = resp.bytes().await?;
            return Err(unexpected(what, status, &b));
        }
        Ok(Lines {
            resp,
            buf: Vec::new(),
        })
    }

    /// The next line, `None` at the end of the body.
    pub async fn next(&mut self) -> Result<Option<Value>, BenchError> {
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return serde_json::from_slice(&line).map(Some).map_err(|e| {
                    BenchError::Unexpected(format!(
                        "NDJSON line {:?}: {e}",
                        String::from_utf8_lossy(&line)
                    ))
                });
            }
            match self.resp.chunk().await? {
                Some(c) => self.buf.extend_from_slice(&c),
                None => return Ok(None),
            }
        }
    }

    /// Reads to the end of the body, so the connection goes back to the pool.
    pub async fn drain(mut self) -> Result<(), BenchError> {
        while self.next().await?.is_some() {}
        Ok(())
    }
}

/// `GET …/{pid}/output?since=&follow=&encoding=base64`.
pub async fn output(
    c: &Client,
    base: &str,
    sid: &str,
    pid: u64,
    since: u64,
    follow: bool,
) -> Result<Lines, BenchError> {
    let r = c
        .get(format!(
            "{base}/sandboxes/{sid}/processes/{pid}/output?since={since}&follow={follow}&encoding=base64"
        ))
        .send()
        .await?;
    Lines::of("process output", r).await
}

/// The stream name of an output or exec line.
pub fn stream(v: &Value) -> &str {
    v.get("stream").and_then(Value::as_str).unwrap_or("")
}

/// Bytes of a base64 `data` field (its decoded length, without decoding).
pub fn data_len(v: &Value) -> u64 {
    let s = v.get("data").and_then(Value::as_str).unwrap_or("");
    let pad = s.bytes().rev().take_while(|&b| b == b'=').count();
    (s.len() / 4 * 3).saturating_sub(pad) as u64
}

pub fn seq(v: &Value) -> u64 {
    v.get("seq").and_then(Value::as_u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_len_is_the_decoded_length() {
        for (b64, n) in [
            ("", 0),
            ("aGk=", 2),
            ("aGkK", 3),
            ("aA==", 1),
            ("bGluZTEK", 6),
        ] {
            assert_eq!(data_len(&json!({"data": b64})), n, "{b64}");
        }
        assert_eq!(data_len(&json!({"stream": "exit"})), 0);
    }
}
