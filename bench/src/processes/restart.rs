//! Benchmark P3: re-attach after a control-plane restart. A process prints a line every ~10 ms;
//! the control plane is killed with -9 and started again on the same config, database and port;
//! measured: from the restarted server answering `/ready` (polled every millisecond) to the
//! first output record of a read from the last seen `seq` + 1.

use std::time::{Duration, Instant};

use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

use super::client;
use crate::server::Server;
use crate::BenchError;

const COMMAND: &str = "i=0; while true; do echo line$i; i=$((i+1)); sleep 0.01; done";
const READY_POLL: Duration = Duration::from_millis(1);
const READY_DEADLINE: Duration = Duration::from_secs(60);
/// Output produced between the rounds (and before the first).
const BETWEEN: Duration = Duration::from_millis(300);

pub struct Round {
    /// kill -9 → the new server's first 200 from `/ready`.
    pub kill_to_ready: Duration,
    /// That 200 → the first resumed output record.
    pub ready_to_record: Duration,
    /// The resumed record starts where the last seen one ended (no byte lost or repeated).
    pub contiguous: bool,
}

/// The last record a client saw: its `seq` and length.
#[derive(Clone, Copy)]
struct Seen {
    seq: u64,
    len: u64,
}

/// Reads what is retained from `since` (no follow); the last data record, if any.
async fn catch_up(
    c: &Client,
    base: &str,
    sid: &str,
    pid: u64,
    since: u64,
) -> Result<Option<Seen>, BenchError> {
    let mut lines = client::output(c, base, sid, pid, since, false).await?;
    let mut last = None;
    while let Some(v) = lines.next().await? {
        if let Some(s) = data_record(&v)? {
            last = Some(s);
        }
    }
    Ok(last)
}

/// A data record's position; `None` for a gap; an exit record is an error (the printer
/// must still be running).
fn data_record(v: &Value) -> Result<Option<Seen>, BenchError> {
    match client::stream(v) {
        "stdout" | "stderr" | "pty" => Ok(Some(Seen {
            seq: client::seq(v),
            len: client::data_len(v),
        })),
        "exit" => Err(BenchError::Unexpected(format!(
            "the printing process exited: {v}"
        ))),
        _ => Ok(None),
    }
}

async fn wait_ready(server: &mut Server, c: &Client) -> Result<(), BenchError> {
    let url = format!("{}/ready", server.base);
    let start = Instant::now();
    loop {
        server.check_running()?;
        if let Ok(r) = c.get(&url).send().await {
            let ok = r.status() == StatusCode::OK;
            // The body too, so the output read reuses this connection.
            let _ = r.bytes().await;
            if ok {
                return Ok(());
            }
        }
        if start.elapsed() > READY_DEADLINE {
            return Err(BenchError::Server(format!(
                "/ready not 200 within {READY_DEADLINE:?} after the restart; log:\n{}",
                server.log_tail()
            )));
        }
        tokio::time::sleep(READY_POLL).await;
    }
}

/// `rounds` restarts of `server`, whose sandbox `sid` must outlive its control plane.
pub async fn measure(
    server: &mut Server,
    sid: &str,
    rounds: usize,
) -> Result<Vec<Round>, BenchError> {
    let c = crate::api::http_client()?;
    let base = server.base.clone();
    let pid = client::start(&c, &base, sid, &json!({ "command": COMMAND })).await?;
    tokio::time::sleep(BETWEEN).await;
    let mut seen = catch_up(&c, &base, sid, pid, 0)
        .await?
        .ok_or_else(|| BenchError::Unexpected("no output before the first restart".into()))?;
    let mut out = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        tokio::time::sleep(BETWEEN).await;
        // A fresh client each round: the old one's pooled connections die with the server.
        let c = crate::api::http_client()?;
        if let Some(s) = catch_up(&c, &base, sid, pid, seen.seq + 1).await? {
            seen = s;
        }
        let t_kill = Instant::now();
        server.kill9_and_respawn().await?;
        let c = crate::api::http_client()?;
        wait_ready(server, &c).await?;
        let t_ready = Instant::now();
        let mut lines = client::output(&c, &base, sid, pid, seen.seq + 1, true).await?;
        let first = loop {
            match lines.next().await? {
                Some(v) => {
                    if let Some(s) = data_record(&v)? {
                        break s;
                    }
                }
                None => {
                    return Err(BenchError::Unexpected(
                        "the resumed read ended without a record".into(),
                    ))
                }
            }
        };
        let ready_to_record = t_ready.elapsed();
        out.push(Round {
            kill_to_ready: t_ready - t_kill,
            ready_to_record,
            contiguous: first.seq == seen.seq + seen.len,
        });
        seen = first;
    }
    let c = crate::api::http_client()?;
    client::kill(&c, &base, sid, pid).await?;
    Ok(out)
}
