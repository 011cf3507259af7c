//! Live NDJSON `worker.exec_stream`: chunks arrive while the command runs, the stream ends with
//! the exit line, and a client that goes away takes its command with it.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{fake_cp, start_worker, Rpc, TOKEN, WORKER};
use serde_json::{json, Value};

async fn open_stream(url: &str, sb: &str, command: &str, timeout: &str) -> reqwest::Response {
    let mut params = json!({"sandbox_id": sb, "provider": "mock", "command": command});
    if !timeout.is_empty() {
        params["timeout"] = json!(timeout);
    }
    reqwest::Client::new()
        .post(format!("{url}/rpc"))
        .header("X-Worker-ID", WORKER)
        .header("X-Worker-Token", TOKEN)
        .header("X-Worker-Stream", "ndjson")
        .header("Accept", "application/x-ndjson")
        .json(&Rpc::envelope("worker.exec_stream", Some(params), None))
        .send()
        .await
        .unwrap()
}

/// Reads whole lines as they arrive.
struct LineReader {
    resp: reqwest::Response,
    buf: Vec<u8>,
}

impl LineReader {
    async fn next(&mut self) -> Option<Value> {
        loop {
            if let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=pos).collect();
                return Some(serde_json::from_slice(&line).unwrap());
            }
            match self.resp.chunk().await.unwrap() {
                Some(c) => self.buf.extend_from_slice(&c),
                None => {
                    assert!(self.buf.is_empty(), "trailing partial line");
                    return None;
                }
            }
        }
    }
}

#[tokio::test]
async fn first_chunk_arrives_before_the_command_ends() {
    let (cp, _) = fake_cp().await;
    let w = start_worker(&cp).await;
    let sb = "sb-00057e01";
    Rpc::new(&w.url).spawn(sb).await;

    let start = Instant::now();
    let resp = open_stream(&w.url, sb, "echo a; sleep 1; echo b >&2; exit 5", "").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        "application/x-ndjson"
    );
    let mut r = LineReader {
        resp,
        buf: Vec::new(),
    };
    let first = r.next().await.unwrap();
    let first_at = start.elapsed();
    assert_eq!(
        first,
        json!({"id": "req-worker.exec_stream", "worker_id": WORKER, "result": {"stream": "stdout", "data": "a\n"}})
    );
    assert!(
        first_at < Duration::from_millis(900),
        "first chunk only after {first_at:?}: not live"
    );
    let second = r.next().await.unwrap();
    assert_eq!(second["result"], json!({"stream": "stderr", "data": "b\n"}));
    assert!(start.elapsed() >= Duration::from_secs(1));
    let exit = r.next().await.unwrap();
    assert_eq!(
        exit,
        json!({"id": "req-worker.exec_stream", "worker_id": WORKER, "result": {"stream": "exit", "data": "", "exit_code": 5}})
    );
    assert!(r.next().await.is_none(), "nothing after the exit line");
}

#[tokio::test]
async fn timeout_sends_stderr_chunk_then_exit_124() {
    let (cp, _) = fake_cp().await;
    let w = start_worker(&cp).await;
    let sb = "sb-00057e02";
    Rpc::new(&w.url).spawn(sb).await;

    let resp = open_stream(&w.url, sb, "echo x; sleep 10", "300ms").await;
    let mut r = LineReader {
        resp,
        buf: Vec::new(),
    };
    let mut results = Vec::new();
    while let Some(v) = r.next().await {
        results.push(v["result"].clone());
    }
    assert_eq!(results.len(), 3, "{results:?}");
    assert_eq!(results[0], json!({"stream": "stdout", "data": "x\n"}));
    assert_eq!(
        results[1],
        json!({"stream": "stderr", "data": format!("exec timeout: {sb}")})
    );
    assert_eq!(
        results[2],
        json!({"stream": "exit", "data": "", "exit_code": 124})
    );
}

#[tokio::test]
async fn missing_sandbox_fails_before_streaming() {
    let (cp, _) = fake_cp().await;
    let w = start_worker(&cp).await;
    let resp = open_stream(&w.url, "sb-nothere", "echo hi", "").await;
    assert_eq!(resp.status(), 404);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["code"], "SANDBOX_NOT_FOUND");
}

#[tokio::test]
async fn destroy_mid_stream_ends_with_an_error_line() {
    let (cp, _) = fake_cp().await;
    let w = start_worker(&cp).await;
    let rpc = Rpc::new(&w.url);
    let sb = "sb-00057e03";
    rpc.spawn(sb).await;
    let resp = open_stream(&w.url, sb, "echo go; sleep 30", "").await;
    let mut r = LineReader {
        resp,
        buf: Vec::new(),
    };
    assert_eq!(r.next().await.unwrap()["result"]["data"], "go\n");
    let (s, _) = rpc
        .call_leased(
            "worker.destroy",
            json!({"sandbox_id": sb, "provider": "mock"}),
            common::lease(WORKER, sb, 1, 60),
        )
        .await;
    assert_eq!(s, 200);
    let last = tokio::time::timeout(Duration::from_secs(5), r.next())
        .await
        .expect("stream ends after destroy")
        .unwrap();
    assert_eq!(last["code"], "SANDBOX_NOT_FOUND", "{last}");
    assert!(last.get("result").is_none());
    assert!(r.next().await.is_none());
}

fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // Field 3 is the state; a zombie is dead, just not reaped yet.
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
            .unwrap_or(true),
        Err(_) => false,
    }
}

#[tokio::test]
async fn client_disconnect_kills_the_command() {
    let (cp, _) = fake_cp().await;
    let w = start_worker(&cp).await;
    let sb = "sb-00057e04";
    Rpc::new(&w.url).spawn(sb).await;

    let resp = open_stream(&w.url, sb, "echo $$ > pid; echo started; exec sleep 60", "").await;
    let mut r = LineReader {
        resp,
        buf: Vec::new(),
    };
    assert_eq!(r.next().await.unwrap()["result"]["data"], "started\n");
    let pid_file = w.mock.host_root(sb).unwrap().join("workspace/pid");
    let pid: u32 = std::fs::read_to_string(pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // Still running while the client listens.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(process_alive(pid), "command died before the disconnect");

    drop(r);
    let deadline = Instant::now() + Duration::from_secs(10);
    while process_alive(pid) {
        assert!(
            Instant::now() < deadline,
            "command {pid} still running 10s after the client went away"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
