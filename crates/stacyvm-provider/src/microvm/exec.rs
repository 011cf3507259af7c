//! Commands over the agent: live chunks forwarded as they come, the agent enforcing the
//! timeout (killing the process group), and a host-side deadline as a safety net.

use std::time::Duration;

use stacyvm_protocol::agent::{ErrorCode, ExecStart, GuestMsg, HostMsg, OutputStream};
use stacyvm_protocol::base64;
use stacyvm_types::{StreamChunk, StreamKind};

use super::agent_conn::{AgentConn, ConnError};
use super::files::map_err;
use crate::{ChunkSender, ExecRequest, ProviderError};

/// How long past its own timeout an exec may take before the host gives up on the agent.
const HOST_GRACE: Duration = Duration::from_secs(30);

pub(crate) fn start_of(req: &ExecRequest) -> ExecStart {
    ExecStart {
        argv: req.argv(),
        env: req.env.clone(),
        workdir: req.workdir.clone().unwrap_or_default(),
        timeout_ms: req
            .timeout
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)),
    }
}

/// Runs `req`; `Err(Unavailable)` when the agent goes away mid-command.
pub(crate) async fn run(
    conn: &AgentConn,
    req: ExecRequest,
    out: ChunkSender,
) -> Result<i32, ProviderError> {
    if req.command.is_empty() {
        return Err(ProviderError::InvalidInput(
            "command must not be empty".into(),
        ));
    }
    if req.user.is_some() {
        return Err(crate::agent::no_user_switch("microvm"));
    }
    let start = start_of(&req);
    let (id, mut rx) = conn
        .start(HostMsg::Exec(start))
        .await
        .map_err(|e| map_err(e, ""))?;
    let host_deadline = req
        .timeout
        .map(|t| tokio::time::Instant::now() + t + HOST_GRACE);
    let outcome = async {
        loop {
            let msg = tokio::select! {
                m = rx.recv() => m,
                () = out.closed() => {
                    conn.cancel(id).await;
                    return Err(ProviderError::internal("exec output receiver closed"));
                }
                () = sleep_until(host_deadline) => {
                    conn.cancel(id).await;
                    return Err(ProviderError::Timeout);
                }
            };
            match msg {
                Some(GuestMsg::Output { stream, data }) => {
                    let data = base64::decode(&data)
                        .ok_or_else(|| ProviderError::internal("agent sent invalid base64"))?;
                    let stream = match stream {
                        OutputStream::Stdout => StreamKind::Stdout,
                        OutputStream::Stderr => StreamKind::Stderr,
                    };
                    if out.send(StreamChunk { stream, data }).await.is_err() {
                        conn.cancel(id).await;
                        return Err(ProviderError::internal("exec output receiver closed"));
                    }
                }
                Some(GuestMsg::Exit { code }) => return Ok(code),
                Some(GuestMsg::TimedOut) => return Err(ProviderError::Timeout),
                Some(GuestMsg::Error { code, message }) => {
                    return Err(match code {
                        ErrorCode::InvalidInput => ProviderError::InvalidInput(message),
                        _ => ProviderError::internal(message),
                    })
                }
                Some(other) => {
                    return Err(ProviderError::internal(format!(
                        "unexpected agent answer {other:?}"
                    )))
                }
                None => return Err(map_err(ConnError::Closed, "")),
            }
        }
    }
    .await;
    conn.forget(id);
    outcome
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stacyvm_types::ExecMode;

    #[test]
    fn requests_map_to_agent_exec() {
        let req = ExecRequest {
            command: "echo".into(),
            args: vec!["a b".into()],
            mode: ExecMode::Argv,
            workdir: Some("/w".into()),
            timeout: Some(Duration::from_micros(10)),
            ..Default::default()
        };
        let s = start_of(&req);
        assert_eq!(s.argv, ["echo", "a b"]);
        assert_eq!(s.workdir, "/w");
        assert_eq!(
            s.timeout_ms,
            Some(1),
            "sub-millisecond timeouts must not become 0"
        );
        let s = start_of(&ExecRequest {
            command: "x".into(),
            ..Default::default()
        });
        assert_eq!(s.argv, ["sh", "-c", "x"]);
        assert_eq!(s.timeout_ms, None);
    }
}
