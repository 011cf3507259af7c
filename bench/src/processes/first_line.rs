//! Benchmark P1: start a background process and read its first output line, against the
//! 0.1 streamed exec of the same command (interleaved on one keep-alive connection).

use std::time::{Duration, Instant};

use reqwest::Client;
use serde_json::json;

use super::client::{self, Lines};
use crate::BenchError;

const COMMAND: &str = "echo hi";

pub struct Samples {
    /// POST …/processes → first stdout record of the follow read.
    pub process: Vec<Duration>,
    /// The POST …/processes alone (201 received).
    pub start: Vec<Duration>,
    /// POST …/processes?follow=true (start and read in one request) → first stdout record.
    pub follow: Vec<Duration>,
    /// POST …/exec `stream: true` → first stdout line.
    pub exec: Vec<Duration>,
    /// `GET /health` on the same connection: one HTTP round trip with next to no work.
    pub health: Vec<Duration>,
}

/// Reads lines until the first `stdout` one; an exit or the end first is an error.
async fn until_stdout(lines: &mut Lines, what: &str) -> Result<(), BenchError> {
    loop {
        match lines.next().await? {
            Some(v) if client::stream(&v) == "stdout" => return Ok(()),
            Some(v) if client::stream(&v) == "exit" => {
                return Err(BenchError::Unexpected(format!(
                    "{what}: exited before any stdout: {v}"
                )))
            }
            Some(_) => {}
            None => {
                return Err(BenchError::Unexpected(format!(
                    "{what}: ended before any stdout"
                )))
            }
        }
    }
}

async fn process_once(
    c: &Client,
    base: &str,
    sid: &str,
) -> Result<(Duration, Duration), BenchError> {
    let t = Instant::now();
    let pid = client::start(c, base, sid, &json!({ "command": COMMAND })).await?;
    let started = t.elapsed();
    let mut lines = client::output(c, base, sid, pid, 0, true).await?;
    until_stdout(&mut lines, "process output").await?;
    let took = t.elapsed();
    // Untimed: the rest (the exit record), so the next request reuses the connection.
    lines.drain().await?;
    Ok((took, started))
}

/// Start and read in one request: the Process object is the first line.
async fn follow_once(c: &Client, base: &str, sid: &str) -> Result<Duration, BenchError> {
    let t = Instant::now();
    let r = c
        .post(format!("{base}/sandboxes/{sid}/processes?follow=true"))
        .json(&json!({ "command": COMMAND }))
        .send()
        .await?;
    let mut lines = Lines::of("process start with follow", r).await?;
    until_stdout(&mut lines, "process start with follow").await?;
    let took = t.elapsed();
    lines.drain().await?;
    Ok(took)
}

async fn exec_once(c: &Client, base: &str, sid: &str) -> Result<Duration, BenchError> {
    let t = Instant::now();
    let r = c
        .post(format!("{base}/sandboxes/{sid}/exec"))
        .json(&json!({ "command": COMMAND, "stream": true }))
        .send()
        .await?;
    let mut lines = Lines::of("streamed exec", r).await?;
    until_stdout(&mut lines, "streamed exec").await?;
    let took = t.elapsed();
    lines.drain().await?;
    Ok(took)
}

/// `warmup` + `n` of each, alternating which goes first.
pub async fn measure(
    base: &str,
    sid: &str,
    n: usize,
    warmup: usize,
) -> Result<Samples, BenchError> {
    let c = crate::api::http_client()?;
    let mut s = Samples {
        process: Vec::with_capacity(n),
        start: Vec::with_capacity(n),
        follow: Vec::with_capacity(n),
        exec: Vec::with_capacity(n),
        health: Vec::with_capacity(n),
    };
    for i in 0..warmup + n {
        let ((p, st), e) = if i % 2 == 0 {
            let p = process_once(&c, base, sid).await?;
            (p, exec_once(&c, base, sid).await?)
        } else {
            let e = exec_once(&c, base, sid).await?;
            (process_once(&c, base, sid).await?, e)
        };
        let f = follow_once(&c, base, sid).await?;
        let h = crate::api::health(&c, base).await?;
        if i >= warmup {
            s.process.push(p);
            s.start.push(st);
            s.follow.push(f);
            s.exec.push(e);
            s.health.push(h);
        }
    }
    Ok(s)
}
