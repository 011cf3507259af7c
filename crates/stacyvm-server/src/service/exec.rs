//! Command execution: synchronous (collected) and streamed.

use std::collections::BTreeMap;
use std::time::Instant;

use stacyvm_provider::{ExecRequest, ProviderError};
use stacyvm_store::ExecLog;
use stacyvm_types::{
    parse_go_duration, CappedOutput, EventKind, ExecMode, GoDuration, Sandbox, SandboxId,
    StreamChunk, StreamKind,
};
use tokio::sync::mpsc;

use super::Service;
use crate::error::{ServiceError, ServiceResult};
use crate::events::EventData;
use crate::metrics::{ExecKind, ExecOutcome};

/// Exec logs keep a prefix of the output.
const LOG_OUTPUT_CAP: usize = 64 << 10;
pub use stacyvm_types::TIMEOUT_EXIT_CODE;

#[derive(Debug, Clone, Default)]
pub struct ExecParams {
    pub command: String,
    pub args: Vec<String>,
    pub mode: String,
    pub env: BTreeMap<String, String>,
    pub workdir: String,
    pub timeout: String,
    /// Account of the sandbox to run as (a name or uid); empty = the default user.
    pub user: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ExecResult {
    pub exit_code: i32,
    pub stdout: String,
    pub stderr: String,
    pub duration: GoDuration,
    /// Output beyond `server.max_exec_output` was left out.
    pub truncated: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum StreamItem {
    Chunk(StreamChunk),
    /// Always the last item.
    Exit {
        exit_code: i32,
        duration: GoDuration,
        error: Option<String>,
    },
}

/// A running streamed command. Dropping it kills the command.
pub struct ExecStream {
    rx: mpsc::Receiver<StreamItem>,
}

impl ExecStream {
    pub async fn next(&mut self) -> Option<StreamItem> {
        self.rx.recv().await
    }
}

/// Commands in sandboxes: collected (`run`) or streamed (`stream`).
#[derive(Clone, Copy)]
pub struct Exec<'a> {
    svc: &'a Service,
}

impl Service {
    pub fn exec(&self) -> Exec<'_> {
        Exec { svc: self }
    }
}

/// Most exec log rows one history call answers.
pub const MAX_HISTORY: usize = 500;

impl Exec<'_> {
    /// The sandbox's exec log, newest first: every sync exec with its exit code, duration and
    /// output (each capped at 64 KiB), and every process start (exit code -1: its end is in
    /// the process's own record). A destroyed sandbox keeps its history until it is purged.
    pub async fn history(self, id: &SandboxId, limit: usize) -> ServiceResult<Vec<ExecLog>> {
        if limit == 0 || limit > MAX_HISTORY {
            return Err(ServiceError::bad_request(format!(
                "limit must be 1..={MAX_HISTORY}"
            )));
        }
        self.svc.sandboxes().get(id).await?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        Ok(self.svc.store.list_exec_logs(id, limit).await?)
    }

    async fn request(self, sb: &Sandbox, p: &ExecParams) -> ServiceResult<ExecRequest> {
        let mode = ExecMode::parse(&p.mode).ok_or_else(|| {
            ServiceError::bad_request(format!("unsupported exec mode {:?}", p.mode))
        })?;
        if p.command.trim().is_empty() {
            return Err(ServiceError::bad_request("command is required"));
        }
        check_exec_size(p)?;
        let limits = self.svc.quotas().limits_for(&sb.owner_id).await?;
        let timeout = if p.timeout.trim().is_empty() {
            self.svc.settings.limits.default_exec_timeout
        } else {
            parse_go_duration(p.timeout.trim())
                .map_err(|e| ServiceError::bad_request(format!("invalid timeout: {e}")))?
        };
        if timeout.is_negative() {
            return Err(ServiceError::bad_request("exec timeout cannot be negative"));
        }
        let max = limits.max_exec_timeout;
        if !max.is_zero() && timeout > max {
            return Err(ServiceError::ResourceLimit(format!(
                "exec timeout {timeout} exceeds max exec timeout {max}"
            )));
        }
        // No timeout asked: the max still bounds the command.
        let effective = if timeout.is_zero() { max } else { timeout };
        Ok(ExecRequest {
            command: p.command.clone(),
            args: p.args.clone(),
            mode,
            env: p.env.clone(),
            workdir: Some(p.workdir.trim().to_string()).filter(|w| !w.is_empty()),
            timeout: effective.to_std().filter(|d| !d.is_zero()),
            user: check_user(&p.user)?,
        })
    }

    pub async fn run(self, id: &SandboxId, p: ExecParams) -> ServiceResult<ExecResult> {
        let sb = self.svc.sandboxes().get_unpaused(id).await?;
        self.svc.activity.touch(id);
        let provider = self.svc.provider_for(&sb).await?;
        let req = self.request(&sb, &p).await?;
        let _slot = self
            .svc
            .sync_execs
            .acquire(id, self.svc.settings.max_sync_execs)?;
        let command_line = req.argv().join(" ");
        self.svc
            .events
            .publish(EventKind::ExecStarted, Some(id), None);
        let started = Instant::now();
        let (tx, mut rx) = mpsc::channel::<StreamChunk>(64);
        let cap = self.svc.settings.max_exec_output;
        // Drains to the end past the cap: the command runs to completion, as without it.
        let collect = async move {
            let mut output = CappedOutput::new(cap);
            while let Some(c) = rx.recv().await {
                output.push(c.stream, &c.data);
            }
            output.finish()
        };
        let mode = req.mode;
        let (res, output) = tokio::join!(provider.exec(sb.runtime_id(), req, tx), collect);
        let outcome = ExecOutcome::of(Some(&res));
        self.svc
            .metrics
            .exec_finished(ExecKind::Sync, mode, outcome);
        let elapsed = started.elapsed();
        let exit_code = match res {
            Ok(code) => code,
            Err(ProviderError::Timeout) => {
                self.svc
                    .ops
                    .observe("exec", &sb.provider, elapsed, Some("timeout"));
                self.svc.events.publish(
                    EventKind::ExecTimeout,
                    Some(id),
                    Some(EventData::failure("exec", &sb.provider, "exec timeout")),
                );
                return Err(ServiceError::Timeout(id.to_string()));
            }
            Err(e) => {
                let err = ServiceError::from(e);
                self.svc
                    .ops
                    .observe("exec", &sb.provider, elapsed, Some(&err.to_string()));
                self.svc.events.publish(
                    EventKind::ExecFailed,
                    Some(id),
                    Some(EventData::failure("exec", &sb.provider, err.to_string())),
                );
                return Err(err);
            }
        };
        let result = ExecResult {
            exit_code,
            stdout: output.stdout,
            stderr: output.stderr,
            duration: GoDuration::from_std(elapsed),
            truncated: output.truncated,
        };
        self.svc.ops.observe("exec", &sb.provider, elapsed, None);
        let log = ExecLog {
            sandbox_id: id.clone(),
            command: truncate(&command_line, LOG_OUTPUT_CAP),
            exit_code: i64::from(exit_code),
            stdout: truncate(&result.stdout, LOG_OUTPUT_CAP),
            stderr: truncate(&result.stderr, LOG_OUTPUT_CAP),
            duration_ms: i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX),
            created_at: chrono::Utc::now(),
        };
        if let Err(e) = self.svc.store.insert_exec_log(&log).await {
            tracing::warn!(sandbox_id = %id, error = %e, "exec log not stored");
        }
        self.svc
            .events
            .publish(EventKind::ExecCompleted, Some(id), None);
        Ok(result)
    }

    /// Starts a command and returns its live output. Validation and lookup errors come back
    /// before anything is streamed.
    pub async fn stream(self, id: &SandboxId, p: ExecParams) -> ServiceResult<ExecStream> {
        let sb = self.svc.sandboxes().get_unpaused(id).await?;
        self.svc.activity.touch(id);
        let provider = self.svc.provider_for(&sb).await?;
        let req = self.request(&sb, &p).await?;
        let (out_tx, out_rx) = mpsc::channel::<StreamItem>(64);
        let svc = self.svc.clone();
        let id = id.to_string();
        self.svc.tasks.spawn(async move {
            let started = Instant::now();
            let mode = req.mode;
            let (tx, mut rx) = mpsc::channel::<StreamChunk>(64);
            let forward_tx = out_tx.clone();
            let forward = async move {
                while let Some(c) = rx.recv().await {
                    if forward_tx.send(StreamItem::Chunk(c)).await.is_err() {
                        // Client went away: dropping `rx` makes the provider kill the command.
                        break;
                    }
                }
            };
            let run = async {
                tokio::select! {
                    r = provider.exec(sb.runtime_id(), req, tx) => Some(r),
                    () = svc.shutdown.cancelled() => None,
                }
            };
            let (res, ()) = tokio::join!(run, forward);
            let outcome = ExecOutcome::of(res.as_ref());
            svc.metrics.exec_finished(ExecKind::Stream, mode, outcome);
            let duration = GoDuration::from_std(started.elapsed());
            let last = match res {
                Some(Ok(code)) => {
                    svc.ops
                        .observe("exec_stream", &sb.provider, started.elapsed(), None);
                    vec![StreamItem::Exit {
                        exit_code: code,
                        duration,
                        error: None,
                    }]
                }
                Some(Err(ProviderError::Timeout)) => {
                    svc.ops.observe(
                        "exec_stream",
                        &sb.provider,
                        started.elapsed(),
                        Some("timeout"),
                    );
                    let msg = format!("exec timeout: {id}");
                    vec![
                        StreamItem::Chunk(StreamChunk {
                            stream: StreamKind::Stderr,
                            data: msg.clone().into_bytes(),
                        }),
                        StreamItem::Exit {
                            exit_code: TIMEOUT_EXIT_CODE,
                            duration,
                            error: Some(msg),
                        },
                    ]
                }
                Some(Err(e)) => {
                    let msg = ServiceError::from(e).to_string();
                    svc.ops
                        .observe("exec_stream", &sb.provider, started.elapsed(), Some(&msg));
                    vec![
                        StreamItem::Chunk(StreamChunk {
                            stream: StreamKind::Stderr,
                            data: msg.clone().into_bytes(),
                        }),
                        StreamItem::Exit {
                            exit_code: -1,
                            duration,
                            error: Some(msg),
                        },
                    ]
                }
                None => vec![StreamItem::Exit {
                    exit_code: -1,
                    duration,
                    error: Some("server shutting down".into()),
                }],
            };
            for item in last {
                if out_tx.send(item).await.is_err() {
                    break;
                }
            }
        });
        Ok(ExecStream { rx: out_rx })
    }
}

/// Collected execs in flight per sandbox: each may hold up to `server.max_exec_output`, so
/// their number is what bounds the memory one sandbox's callers can pin.
#[derive(Default)]
pub(super) struct SyncExecs(std::sync::Mutex<std::collections::HashMap<SandboxId, usize>>);

/// One admitted collected exec; dropping it frees the place.
pub(super) struct SyncExecSlot<'a> {
    execs: &'a SyncExecs,
    id: SandboxId,
}

impl SyncExecs {
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<SandboxId, usize>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(super) fn acquire(&self, id: &SandboxId, max: usize) -> ServiceResult<SyncExecSlot<'_>> {
        let mut map = self.lock();
        let n = map.entry(id.clone()).or_default();
        if *n >= max {
            return Err(ServiceError::ResourceLimit(format!(
                "sandbox {id} already runs {max} collected execs (server.max_sync_execs); wait for \
                 one to finish, or stream the output"
            )));
        }
        *n += 1;
        Ok(SyncExecSlot {
            execs: self,
            id: id.clone(),
        })
    }
}

impl Drop for SyncExecSlot<'_> {
    fn drop(&mut self) {
        let mut map = self.execs.lock();
        if let Some(n) = map.get_mut(&self.id) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.id);
            }
        }
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// Longest single argument or `NAME=value` the kernel passes to a program (`MAX_ARG_STRLEN`).
const MAX_ARG_BYTES: usize = 128 * 1024 - 1;
/// Bound on the command, arguments and environment together. The kernel allows about a
/// quarter of the stack limit (2 MiB by default) including the sandbox's own environment.
const MAX_EXEC_BYTES: usize = 1024 * 1024;

/// The account to run as ([`stacyvm_types::validate_user`]): a 400 for anything that is no
/// user name or uid; empty = none.
pub(super) fn check_user(user: &str) -> ServiceResult<Option<String>> {
    stacyvm_types::validate_user(user)
        .map(|u| u.map(str::to_string))
        .map_err(|e| ServiceError::bad_request(format!("invalid user {:?}: {e}", user.trim())))
}

/// Refuses a command the kernel would refuse (`E2BIG`), with a 400 instead of a failed start.
pub(super) fn check_exec_size(p: &ExecParams) -> ServiceResult<()> {
    let env = p.env.iter().map(|(k, v)| k.len() + 1 + v.len());
    let sizes = [p.command.len()]
        .into_iter()
        .chain(p.args.iter().map(String::len))
        .chain(env);
    let mut total = 0usize;
    for n in sizes {
        if n > MAX_ARG_BYTES {
            return Err(ServiceError::bad_request(format!(
                "an argument or environment entry is {n} bytes; each may be at most {MAX_ARG_BYTES} \
                 (pass larger data through a file)"
            )));
        }
        total += n + 1;
    }
    if total > MAX_EXEC_BYTES {
        return Err(ServiceError::bad_request(format!(
            "command, arguments and environment are {total} bytes; together they may be at most \
             {MAX_EXEC_BYTES} (pass larger data through a file)"
        )));
    }
    Ok(())
}
