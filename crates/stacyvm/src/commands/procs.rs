//! Background-process commands: `ps` (list), `attach` (follow a process's output from the
//! start, stdin passed through) and `shell` (an interactive terminal, like `docker exec -it`).
//! Both attach over the attach WebSocket (sandbox-model.md §1).

use std::io::{Read, Write};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use super::client::Client;
use super::term;
use crate::cli::ClientArgs;

pub async fn ps(c: &ClientArgs, id: &str) -> anyhow::Result<ExitCode> {
    let v = Client::new(c)
        .call(
            reqwest::Method::GET,
            &format!("/sandboxes/{id}/processes"),
            None,
        )
        .await?;
    println!(
        "{:<8} {:<8} {:<6} {:<4} {:<16} {:<26} COMMAND",
        "PID", "STATE", "EXIT", "PTY", "TAG", "STARTED"
    );
    for p in v.as_array().cloned().unwrap_or_default() {
        let exit = match (&p["signal"], &p["exit_code"]) {
            (Value::String(s), _) => s.clone(),
            (_, Value::Number(n)) => n.to_string(),
            _ => "-".into(),
        };
        let mut command = p["command"].as_str().unwrap_or("").to_string();
        for a in p["args"].as_array().into_iter().flatten() {
            command.push(' ');
            command.push_str(a.as_str().unwrap_or(""));
        }
        println!(
            "{:<8} {:<8} {:<6} {:<4} {:<16} {:<26} {command}",
            p["pid"],
            p["state"].as_str().unwrap_or(""),
            exit,
            if p["pty"] == true { "yes" } else { "no" },
            p["tag"].as_str().unwrap_or(""),
            p["started_at"].as_str().unwrap_or(""),
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `stacyvm attach <id> <pid>`: output from `since=0` on, following; local stdin goes to the
/// process (EOF closes its stdin). Exits with the process's exit code.
pub async fn attach(c: &ClientArgs, id: &str, pid: u32) -> anyhow::Result<ExitCode> {
    let code = session(c, id, pid, false).await?;
    finish(code)
}

/// `stacyvm shell <id>`: a login shell on a terminal sized like this one, in raw mode, resized
/// on SIGWINCH; exits with the shell's exit code.
pub async fn shell(c: &ClientArgs, id: &str) -> anyhow::Result<ExitCode> {
    let code = open_shell(c, id).await?;
    finish(code)
}

/// The interactive shell of `stacyvm shell` (and `enter` in `stacyvm top`): returns the
/// shell's exit code once the terminal is back as it was, leaving nothing reading stdin.
pub(super) async fn open_shell(c: &ClientArgs, id: &str) -> anyhow::Result<i32> {
    let (cols, rows) = term::size().unwrap_or((80, 24));
    let term_name = std::env::var("TERM")
        .ok()
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| "xterm-256color".into());
    let body = json!({
        "command": "if command -v bash >/dev/null 2>&1; then exec bash -l; else exec sh -l; fi",
        "env": {"TERM": term_name},
        "tag": "shell",
        "pty": {"cols": cols, "rows": rows},
    });
    let p = Client::new(c)
        .call(
            reqwest::Method::POST,
            &format!("/sandboxes/{id}/processes"),
            Some(body),
        )
        .await?;
    let pid = p["pid"]
        .as_u64()
        .and_then(|p| u32::try_from(p).ok())
        .context("the server answered no pid")?;
    let raw = term::RawMode::enter();
    let code = session(c, id, pid, true).await;
    drop(raw);
    code
}

/// Ends the process with `code` once the terminal is restored and output flushed (the stdin
/// reader thread may still be blocked in a read).
fn finish(code: i32) -> ! {
    let _ = std::io::stdout().flush();
    std::process::exit(code)
}

fn ws_url(base: &str, id: &str, pid: u32) -> anyhow::Result<String> {
    let base = base.trim_end_matches('/');
    let rest = if let Some(r) = base.strip_prefix("http://") {
        format!("ws://{r}")
    } else if let Some(r) = base.strip_prefix("https://") {
        format!("wss://{r}")
    } else {
        bail!("--server must be an http:// or https:// URL, not {base:?}");
    };
    Ok(format!(
        "{rest}/api/v1/sandboxes/{id}/processes/{pid}/attach?since=0"
    ))
}

/// One attach session; the process's exit code, or 1 when the connection ended without one.
async fn session(c: &ClientArgs, id: &str, pid: u32, tty: bool) -> anyhow::Result<i32> {
    let mut req = ws_url(&c.server, id, pid)?
        .into_client_request()
        .context("building the attach request")?;
    if !c.api_key.is_empty() {
        req.headers_mut()
            .insert("X-API-Key", c.api_key.parse().context("API key header")?);
    }
    let ws = match tokio_tungstenite::connect_async(req).await {
        Ok((ws, _)) => ws,
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            let body = resp.body().as_deref().unwrap_or_default();
            let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
            bail!(
                "{} {}: {}",
                resp.status().as_u16(),
                v["code"].as_str().unwrap_or("ERROR"),
                v["message"].as_str().unwrap_or("attach refused")
            );
        }
        Err(e) => return Err(e).with_context(|| format!("attaching through {}", c.server)),
    };
    let (tx, rx) = ws.split();
    let (in_tx, in_rx) = tokio::sync::mpsc::channel::<Message>(16);
    // Local input. A terminal's keystrokes go as binary frames (low latency); piped input goes
    // through `…/stdin`, each piece answered before the next, so its EOF (`close=true`) cannot
    // overtake bytes still in flight on the socket.
    let input = in_tx.clone();
    let client = Client::new(c);
    let stdin_path = format!("/sandboxes/{id}/processes/{pid}/stdin");
    let rt = tokio::runtime::Handle::current();
    // Closed when the reader thread ends.
    let (reader_alive, reader_done) = tokio::sync::oneshot::channel::<()>();
    // A plain thread: a blocking read of stdin never holds up the runtime.
    std::thread::spawn(move || {
        let _alive = reader_alive;
        let mut stdin = std::io::stdin();
        let mut buf = vec![0u8; 8192];
        loop {
            // A terminal is waited on in short polls, so the thread ends with the session
            // rather than taking the next keystroke meant for whoever reads stdin after it
            // (`stacyvm top`, back from a shell).
            if tty {
                let ready = term::stdin_ready(100);
                if input.is_closed() {
                    return; // a ready key stays for the next reader
                }
                if !ready {
                    continue;
                }
            }
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) if tty => {
                    let m = Message::Binary(buf[..n].to_vec().into());
                    if input.blocking_send(m).is_err() {
                        return;
                    }
                }
                Ok(n) => {
                    if rt
                        .block_on(client.post_raw(&stdin_path, buf[..n].to_vec()))
                        .is_err()
                    {
                        // No stdin (or the process exited): the output still comes.
                        return;
                    }
                }
            }
        }
        if !tty {
            let close = format!("{stdin_path}?close=true");
            let _ = rt.block_on(client.post_raw(&close, Vec::new()));
        }
    });
    if tty {
        let resize = in_tx.clone();
        if let Ok(mut winch) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
        {
            tokio::spawn(async move {
                loop {
                    // Ends with the session (the receiver dropped), not at the next SIGWINCH.
                    tokio::select! {
                        s = winch.recv() => if s.is_none() { return },
                        () = resize.closed() => return,
                    }
                    if let Some((cols, rows)) = term::size() {
                        let m = json!({"type": "resize", "cols": cols, "rows": rows});
                        if resize
                            .send(Message::Text(m.to_string().into()))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                }
            });
        }
    }
    drop(in_tx);
    let code = pump(rx, tx, in_rx).await;
    if tty {
        // The input channel is gone with `pump`: the reader sees it within one poll. Waiting
        // for it means whoever reads the terminal next gets every key.
        let _ = tokio::time::timeout(Duration::from_secs(1), reader_done).await;
    }
    code
}

/// Output to stdout and input to the socket until the process's exit frame; `in_rx` is
/// dropped on return, which tells the stdin reader to stop.
async fn pump<R, T>(
    mut rx: R,
    mut tx: T,
    mut in_rx: tokio::sync::mpsc::Receiver<Message>,
) -> anyhow::Result<i32>
where
    R: Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
    T: Sink<Message> + Unpin,
{
    let mut out = std::io::stdout();
    loop {
        tokio::select! {
            msg = rx.next() => match msg {
                Some(Ok(Message::Binary(b))) => {
                    out.write_all(&b).context("writing output")?;
                    out.flush().context("writing output")?;
                }
                Some(Ok(Message::Text(t))) => {
                    let v: Value = serde_json::from_str(t.as_str()).unwrap_or(Value::Null);
                    if v["type"] == "exit" {
                        let code = v["exit_code"].as_i64().unwrap_or(1);
                        return Ok(i32::try_from(code).unwrap_or(1));
                    }
                }
                Some(Ok(Message::Close(_))) | None => return Ok(1),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e).context("attach connection"),
            },
            Some(m) = in_rx.recv() => {
                if tx.send(m).await.is_err() {
                    return Ok(1);
                }
            }
        }
    }
}
