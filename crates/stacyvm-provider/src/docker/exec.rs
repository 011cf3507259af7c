//! Commands through the exec API: live demultiplexed output, exit codes, deadlines.
//!
//! Docker cannot kill an exec. Every exec therefore carries a unique marker variable in its
//! environment, which its children inherit; killing "the command" means killing every process
//! carrying the marker, and the process groups they lead. See [`DockerProvider::kill_marked`].

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bollard::container::LogOutput;
use bollard::errors::Error as DockerError;
use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use bytes::Bytes;
use futures_util::StreamExt;
use stacyvm_types::{StreamChunk, StreamKind};
use tokio::time::Instant;

use super::container::WORKSPACE;
use super::image::random_hex;
use super::{api_err, is_status, DockerProvider};
use crate::walk::clean_path;
use crate::{ChunkSender, ExecRequest, ProviderError};

/// Environment variable naming an exec's processes.
pub(crate) const MARKER_VAR: &str = "STACYVM_EXEC_ID";
/// How often a running exec is checked for its main process having exited.
const POLL: Duration = Duration::from_millis(250);
/// After the main process exits, output is read this long before leftovers are killed.
const LINGER: Duration = Duration::from_millis(200);
/// After leftovers are killed, output is read at most this long more.
const DRAIN: Duration = Duration::from_secs(2);
/// Deadline for the provider's own helper commands (file operations, kills).
const HELPER_TIMEOUT: Duration = Duration::from_secs(60);
/// Prefix of the message Docker prints when the process could not be started at all.
const OCI_FAILED: &[u8] = b"OCI runtime exec failed";

/// Output of a helper command.
pub(super) struct Captured {
    pub code: i32,
    pub stderr: Vec<u8>,
}

impl Captured {
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).trim().to_string()
    }
}

/// Output and input of an attached exec.
pub(super) type ExecOutput =
    Pin<Box<dyn futures_util::Stream<Item = Result<LogOutput, DockerError>> + Send>>;
pub(super) type ExecInput = Pin<Box<dyn tokio::io::AsyncWrite + Send>>;

impl DockerProvider {
    /// Creates and starts an exec attached to its streams; `err` maps the Engine API's errors.
    pub(super) async fn start_attached(
        &self,
        cid: &str,
        opts: CreateExecOptions<String>,
        err: impl Fn(DockerError) -> ProviderError,
    ) -> Result<(String, ExecOutput, ExecInput), ProviderError> {
        let exec_id = self.docker.create_exec(cid, opts).await.map_err(&err)?.id;
        let start = StartExecOptions {
            detach: false,
            tty: false,
            output_capacity: Some(64 * 1024),
        };
        match self
            .docker
            .start_exec(&exec_id, Some(start))
            .await
            .map_err(&err)?
        {
            StartExecResults::Attached { output, input } => Ok((exec_id, output, input)),
            StartExecResults::Detached => Err(ProviderError::internal("exec started detached")),
        }
    }
}

/// Where output goes: the caller's channel, or buffers for helpers.
enum Sink {
    Chan(ChunkSender),
    Buf { out: Vec<u8>, err: Vec<u8> },
}

enum Push {
    Sent,
    Gone,
    Late,
}

impl Sink {
    async fn push(&mut self, stream: StreamKind, data: Bytes, deadline: Option<Instant>) -> Push {
        match self {
            Sink::Chan(tx) => {
                let chunk = StreamChunk {
                    stream,
                    data: data.to_vec(),
                };
                let send = tx.send(chunk);
                let sent = match deadline {
                    Some(d) => match tokio::time::timeout_at(d, send).await {
                        Ok(r) => r,
                        Err(_) => return Push::Late,
                    },
                    None => send.await,
                };
                if sent.is_ok() {
                    Push::Sent
                } else {
                    Push::Gone
                }
            }
            Sink::Buf { out, err } => {
                match stream {
                    StreamKind::Stdout => out.extend_from_slice(&data),
                    StreamKind::Stderr => err.extend_from_slice(&data),
                }
                Push::Sent
            }
        }
    }
}

/// One command to run.
struct Job {
    argv: Vec<String>,
    env: Vec<String>,
    workdir: String,
    user: Option<String>,
    timeout: Option<Duration>,
    /// Whether a deadline or a lost caller kills the processes (not for the kill helper itself).
    sweep: bool,
}

fn receiver_gone() -> ProviderError {
    ProviderError::internal("exec output receiver closed")
}

fn no_nul(s: &str) -> Result<(), ProviderError> {
    if s.contains('\0') {
        Err(ProviderError::InvalidInput(
            "command, arguments and environment must not contain NUL bytes".into(),
        ))
    } else {
        Ok(())
    }
}

impl DockerProvider {
    pub(super) async fn run_exec(
        &self,
        runtime_id: &str,
        cid: &str,
        req: ExecRequest,
        out: ChunkSender,
    ) -> Result<i32, ProviderError> {
        let argv = req.argv();
        if argv.first().is_none_or(|p| p.trim().is_empty()) {
            return Err(ProviderError::InvalidInput("command is required".into()));
        }
        argv.iter().try_for_each(|a| no_nul(a))?;
        let mut env = Vec::with_capacity(req.env.len() + 1);
        for (k, v) in &req.env {
            if k.is_empty() || k.contains('=') || k == MARKER_VAR {
                return Err(ProviderError::InvalidInput(format!(
                    "invalid environment variable name {k:?}"
                )));
            }
            no_nul(k)?;
            no_nul(v)?;
            env.push(format!("{k}={v}"));
        }
        let workdir = match req.workdir.as_deref().map(str::trim) {
            None | Some("") => WORKSPACE.to_string(),
            Some(w) => {
                let dir = clean_path(w)?;
                let is_dir = matches!(self.path_stat(cid, &dir).await, Ok(Some(st)) if st.is_dir());
                if !is_dir {
                    return Err(ProviderError::InvalidInput(format!(
                        "workdir {w:?} is not a directory"
                    )));
                }
                dir
            }
        };
        let job = Job {
            argv,
            env,
            workdir,
            // Docker's exec switches users itself (name or uid, as `docker exec --user`).
            user: req.user.clone().filter(|u| !u.trim().is_empty()),
            timeout: req.timeout,
            sweep: true,
        };
        let mut sink = Sink::Chan(out);
        self.run_job(runtime_id, cid, job, &mut sink).await
    }

    /// Runs one of the provider's own helper commands (argv, no shell) and collects its output.
    pub(super) async fn exec_capture(
        &self,
        cid: &str,
        argv: Vec<String>,
        user: Option<&str>,
    ) -> Result<Captured, ProviderError> {
        let job = Job {
            argv,
            env: Vec::new(),
            workdir: "/".into(),
            user: user.map(str::to_string),
            timeout: Some(HELPER_TIMEOUT),
            sweep: true,
        };
        let mut sink = Sink::Buf {
            out: Vec::new(),
            err: Vec::new(),
        };
        let code = self.run_job(cid, cid, job, &mut sink).await?;
        let Sink::Buf { err, .. } = sink else {
            return Err(ProviderError::internal("helper output lost"));
        };
        Ok(Captured { code, stderr: err })
    }

    /// A helper whose processes are never swept (the sweep itself). Type-erased because it
    /// recurses: run_job → kill_marked → here → run_job.
    pub(super) fn exec_helper_unkillable<'a>(
        &'a self,
        cid: &'a str,
        argv: Vec<String>,
    ) -> Pin<Box<dyn Future<Output = Result<i32, ProviderError>> + Send + 'a>> {
        Box::pin(async move {
            let job = Job {
                argv,
                env: Vec::new(),
                workdir: "/".into(),
                user: None,
                timeout: Some(HELPER_TIMEOUT),
                sweep: false,
            };
            let mut sink = Sink::Buf {
                out: Vec::new(),
                err: Vec::new(),
            };
            self.run_job(cid, cid, job, &mut sink).await
        })
    }

    async fn run_job(
        &self,
        runtime_id: &str,
        cid: &str,
        mut job: Job,
        sink: &mut Sink,
    ) -> Result<i32, ProviderError> {
        let marker = random_hex();
        job.env.push(format!("{MARKER_VAR}={marker}"));
        let prog = job.argv.first().cloned().unwrap_or_default();
        let job_sweep = job.sweep;
        let opts = CreateExecOptions {
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            env: Some(job.env),
            cmd: Some(job.argv),
            working_dir: Some(job.workdir),
            user: job.user,
            ..Default::default()
        };
        let (exec_id, mut output, _input) = self
            .start_attached(cid, opts, |e| exec_err(runtime_id, e))
            .await?;

        let deadline = job.timeout.map(|d| Instant::now() + d);
        let closed = match &*sink {
            Sink::Chan(tx) => Some(tx.clone()),
            Sink::Buf { .. } => None,
        };
        let mut poll = tokio::time::interval_at(Instant::now() + POLL, POLL);
        let mut exited_at: Option<Instant> = None;
        let mut swept = false;
        // The first chunk is held back when it is Docker's "could not start" message.
        let mut held: Option<Bytes> = None;
        let mut first = true;
        let sweep = job_sweep;
        let kill = || async {
            if sweep {
                self.kill_marked(cid, &marker).await;
            }
        };
        loop {
            let expire = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            let gone = async {
                match &closed {
                    Some(tx) => tx.closed().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                item = output.next() => {
                    let (stream, data) = match item {
                        None => break,
                        Some(Ok(LogOutput::StdOut { message } | LogOutput::Console { message })) => {
                            (StreamKind::Stdout, message)
                        }
                        Some(Ok(LogOutput::StdErr { message })) => (StreamKind::Stderr, message),
                        Some(Ok(LogOutput::StdIn { .. })) => continue,
                        Some(Err(e)) => {
                            kill().await;
                            return Err(api_err("reading command output failed", e));
                        }
                    };
                    if std::mem::take(&mut first) && data.starts_with(OCI_FAILED) {
                        held = Some(data);
                        continue;
                    }
                    // More output: what was held back was the command's own, in order.
                    let earlier = held.take().map(|h| (StreamKind::Stdout, h));
                    let mut push = Push::Sent;
                    for (stream, data) in earlier.into_iter().chain([(stream, data)]) {
                        push = sink.push(stream, data, deadline).await;
                        if !matches!(push, Push::Sent) {
                            break;
                        }
                    }
                    match push {
                        Push::Sent => {}
                        Push::Gone => {
                            kill().await;
                            return Err(receiver_gone());
                        }
                        Push::Late => {
                            kill().await;
                            return Err(ProviderError::Timeout);
                        }
                    }
                }
                () = expire => {
                    kill().await;
                    return Err(ProviderError::Timeout);
                }
                () = gone => {
                    kill().await;
                    return Err(receiver_gone());
                }
                _ = poll.tick() => match exited_at {
                    None => {
                        if self.exec_state(&exec_id).await.is_some_and(|(running, _, _)| !running) {
                            exited_at = Some(Instant::now());
                        }
                    }
                    // The main process is gone but something it started still holds the
                    // output open: take it down too, as the command's own process group.
                    Some(t) if !swept && t.elapsed() >= LINGER => {
                        kill().await;
                        swept = true;
                    }
                    Some(t) if swept && t.elapsed() >= LINGER + DRAIN => break,
                    Some(_) => {}
                },
            }
        }

        let (code, pid) = self
            .wait_exit(&exec_id, deadline, closed.as_ref(), kill)
            .await?;
        let (code, text) = match held {
            // Docker's message when the process never started (pid 0): say it like a shell.
            Some(msg) if code == 126 && pid == 0 => {
                let (code, text) = start_failure(&prog, &msg);
                (
                    code,
                    Some((StreamKind::Stderr, Bytes::from(text.into_bytes()))),
                )
            }
            Some(msg) => (code, Some((StreamKind::Stdout, msg))),
            None => (code, None),
        };
        if let Some((stream, data)) = text {
            if let Push::Gone = sink.push(stream, data, deadline).await {
                return Err(receiver_gone());
            }
        }
        Ok(code)
    }

    /// Waits for the exec's main process to be reported finished; returns (exit code, pid).
    pub(super) async fn wait_exit<F, Fut>(
        &self,
        exec_id: &str,
        deadline: Option<Instant>,
        closed: Option<&ChunkSender>,
        kill: F,
    ) -> Result<(i32, i64), ProviderError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let mut pause = Duration::from_millis(5);
        loop {
            match self.exec_state(exec_id).await {
                Some((false, code, pid)) => {
                    return Ok((code.map_or(-1, |c| i32::try_from(c).unwrap_or(-1)), pid))
                }
                Some((true, _, _)) => {}
                None => return Err(ProviderError::internal("the exec disappeared")),
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                kill().await;
                return Err(ProviderError::Timeout);
            }
            if closed.is_some_and(|tx| tx.is_closed()) {
                kill().await;
                return Err(receiver_gone());
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(200));
        }
    }

    /// (running, exit code, pid) of an exec; `None` when Docker no longer knows it.
    async fn exec_state(&self, exec_id: &str) -> Option<(bool, Option<i64>, i64)> {
        match self.docker.inspect_exec(exec_id).await {
            Ok(i) => Some((i.running.unwrap_or(false), i.exit_code, i.pid.unwrap_or(0))),
            Err(e) => {
                tracing::debug!(error = %e, "inspecting an exec failed");
                None
            }
        }
    }
}

/// Exit code and message for a command Docker could not start (the mock's wording).
fn start_failure(prog: &str, oci_msg: &[u8]) -> (i32, String) {
    let msg = String::from_utf8_lossy(oci_msg);
    if msg.contains("not found") || msg.contains("no such file") {
        (127, format!("{prog}: command not found\n"))
    } else if msg.contains("permission denied") {
        (126, format!("{prog}: permission denied\n"))
    } else {
        (126, format!("{prog}: cannot execute\n"))
    }
}

fn exec_err(runtime_id: &str, e: bollard::errors::Error) -> ProviderError {
    if is_status(&e, 404) {
        return ProviderError::SandboxNotFound(runtime_id.to_string());
    }
    if is_status(&e, 409) {
        return ProviderError::Unavailable(format!("sandbox {runtime_id} is not running"));
    }
    api_err("starting the command failed", e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_failures_read_like_a_shell() {
        let nf = b"OCI runtime exec failed: exec failed: unable to start container process: exec: \"nope\": executable file not found in $PATH: unknown";
        assert_eq!(
            start_failure("nope", nf),
            (127, "nope: command not found\n".into())
        );
        let gv = b"OCI runtime exec failed: ... error finding executable \"nope\" in PATH [/bin]: no such file or directory: unknown";
        assert_eq!(start_failure("nope", gv).0, 127);
        let pd = b"OCI runtime exec failed: exec: \"/workspace\": permission denied: unknown";
        assert_eq!(start_failure("/workspace", pd).0, 126);
    }
}
