//! Background processes (sandbox-model.md §1). The registry lives where the process runs (the
//! sandbox's agent, reached through its provider, local or on a worker); this layer validates
//! at the edge, routes, and publishes events. It keeps no per-process state of its own, so a
//! restarted control plane sees every process again.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use stacyvm_provider::{ExecRequest, ProcessSpec, Provider, RecordStream};
use stacyvm_store::ExecLog;
use stacyvm_types::{
    parse_go_duration, EventKind, ExecMode, OutputRecord, Pid, ProcessInfo, ProcessState, PtySize,
    Sandbox, SandboxId, Signal,
};

use super::bounds::{check_len, MAX_NAME};
use super::exec::{check_exec_size, ExecParams};
use super::Service;
use crate::error::{ServiceError, ServiceResult};
use crate::events::EventData;

/// What a client asks to start (the body of `POST /sandboxes/{id}/processes`): what an exec
/// takes (its `timeout` `""` or `"0s"` = none), and the process's own fields.
#[derive(Debug, Clone, Default)]
pub struct ProcessParams {
    pub exec: ExecParams,
    pub tag: String,
    pub stdin: bool,
    pub pty: Option<PtySize>,
}

/// Sandboxes whose running processes this control plane has looked for (once per sandbox, so
/// processes started before a restart get their exit events too) and the processes it watches.
#[derive(Default)]
pub(super) struct ExitWatch {
    resumed: std::sync::Mutex<std::collections::HashSet<SandboxId>>,
    watched: std::sync::Mutex<std::collections::HashSet<(SandboxId, Pid)>>,
}

/// Bound on the resumed set: past it the set starts over (a sandbox is then looked at again,
/// which costs one list call and watches nothing twice).
const MAX_RESUMED: usize = 100_000;

fn locked<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Background processes of sandboxes.
#[derive(Clone, Copy)]
pub struct Processes<'a> {
    svc: &'a Service,
}

impl Service {
    pub fn processes(&self) -> Processes<'_> {
        Processes { svc: self }
    }
}

/// The part of a start request that does not depend on the sandbox: checked before routing.
fn spec(
    p: &ProcessParams,
    settings: &crate::settings::ProcessSettings,
) -> ServiceResult<ProcessSpec> {
    let mode = ExecMode::parse(&p.exec.mode).ok_or_else(|| {
        ServiceError::bad_request(format!("unsupported exec mode {:?}", p.exec.mode))
    })?;
    if p.exec.command.trim().is_empty() {
        return Err(ServiceError::bad_request("command is required"));
    }
    check_exec_size(&p.exec)?;
    check_len("tag", &p.tag, MAX_NAME)?;
    let timeout = match p.exec.timeout.trim() {
        "" => None,
        t => {
            let d = parse_go_duration(t)
                .map_err(|e| ServiceError::bad_request(format!("invalid timeout: {e}")))?;
            if d.is_negative() {
                return Err(ServiceError::bad_request("timeout cannot be negative"));
            }
            d.to_std().filter(|d| !d.is_zero())
        }
    };
    if let Some(size) = p.pty {
        if !size.valid() {
            return Err(ServiceError::bad_request(format!(
                "pty size {}x{} is out of range (1..={} each)",
                size.cols,
                size.rows,
                stacyvm_types::MAX_PTY_DIM
            )));
        }
    }
    Ok(ProcessSpec {
        exec: ExecRequest {
            command: p.exec.command.clone(),
            args: p.exec.args.clone(),
            mode,
            env: p.exec.env.clone(),
            workdir: Some(p.exec.workdir.trim().to_string()).filter(|w| !w.is_empty()),
            timeout,
            user: super::exec::check_user(&p.exec.user)?,
        },
        tag: p.tag.clone(),
        stdin: p.stdin,
        pty: p.pty,
        output_buffer: settings.output_buffer,
        retain_exited: settings.retain_exited,
    })
}

impl Processes<'_> {
    /// The sandbox and the provider that runs it; the same lookups (and errors) as exec.
    /// Refuses a paused sandboxes (409 `SANDBOX_PAUSED`): its agent is frozen.
    async fn route(self, id: &SandboxId) -> ServiceResult<(Sandbox, Arc<dyn Provider>)> {
        let sb = self.svc.sandboxes().get_unpaused(id).await?;
        self.svc.activity.touch(id);
        let provider = self.svc.provider_for(&sb).await?;
        self.resume_watchers(&sb, &provider);
        Ok((sb, provider))
    }

    /// The first time this control plane routes a process call to `sb`, it looks for running
    /// processes it does not watch (started before a restart, or through another control
    /// plane) and watches them, in the background: the request does not wait for it.
    fn resume_watchers(self, sb: &Sandbox, provider: &Arc<dyn Provider>) {
        {
            let mut resumed = locked(&self.svc.exit_watch.resumed);
            if resumed.len() >= MAX_RESUMED {
                resumed.clear();
            }
            if !resumed.insert(sb.id.clone()) {
                return;
            }
        }
        let svc = self.svc.clone();
        let (id, provider, runtime_id) =
            (sb.id.clone(), provider.clone(), sb.runtime_id().to_string());
        self.svc.tasks.spawn(async move {
            let listed = tokio::select! {
                l = provider.process_list(&runtime_id) => l,
                () = svc.shutdown.cancelled() => return,
            };
            let procs = match listed {
                Ok(p) => p,
                Err(e) => {
                    tracing::debug!(sandbox_id = %id, error = %e, "exit watches not resumed");
                    // Try again with the next call.
                    locked(&svc.exit_watch.resumed).remove(&id);
                    return;
                }
            };
            for p in procs.iter().filter(|p| p.state == ProcessState::Running) {
                svc.processes()
                    .watch_exit(&id, provider.clone(), runtime_id.clone(), p);
            }
        });
    }

    /// Starts a process. It then belongs to the sandbox: it outlives this request and this
    /// control plane.
    pub async fn start(self, id: &SandboxId, p: ProcessParams) -> ServiceResult<ProcessInfo> {
        let spec = spec(&p, &self.svc.settings.processes)?;
        let (sb, provider) = self.route(id).await?;
        let command_line = spec.exec.argv().join(" ");
        let info = provider
            .process_start(sb.runtime_id(), spec)
            .await
            .map_err(ServiceError::from)?;
        self.started(id, provider, sb.runtime_id(), command_line, &info);
        Ok(info)
    }

    /// [`Self::start`], and the output from 0 as [`Self::output`] follows it, in one provider
    /// call (one worker RPC for a remote sandbox).
    pub async fn start_following(
        self,
        id: &SandboxId,
        p: ProcessParams,
    ) -> ServiceResult<(ProcessInfo, RecordStream)> {
        let spec = spec(&p, &self.svc.settings.processes)?;
        let (sb, provider) = self.route(id).await?;
        let command_line = spec.exec.argv().join(" ");
        let (info, records) = provider
            .process_start_follow(sb.runtime_id(), spec)
            .await
            .map_err(ServiceError::from)?;
        self.started(id, provider, sb.runtime_id(), command_line, &info);
        Ok((info, records))
    }

    /// What follows every start: the event, the audit row, the exit watch.
    fn started(
        self,
        id: &SandboxId,
        provider: Arc<dyn Provider>,
        runtime_id: &str,
        command_line: String,
        info: &ProcessInfo,
    ) {
        self.svc.events.publish(
            EventKind::ProcessStarted,
            Some(id),
            Some(EventData::process(info)),
        );
        // Audit trail as for exec: the row records the start (the exit code is not known yet,
        // -1; the exit event carries it).
        let log = ExecLog {
            sandbox_id: id.clone(),
            command: command_line,
            exit_code: -1,
            stdout: String::new(),
            stderr: String::new(),
            duration_ms: 0,
            created_at: chrono::Utc::now(),
        };
        // Written behind the answer: the caller is waiting for its process, not for the audit
        // row (a tracked task, finished before shutdown).
        let svc = self.svc.clone();
        self.svc.tasks.spawn(async move {
            if let Err(e) = svc.store.insert_exec_log(&log).await {
                tracing::warn!(sandbox_id = %log.sandbox_id, error = %e, "exec log of a process start not stored");
            }
        });
        self.watch_exit(id, provider, runtime_id.to_string(), info);
    }

    /// Follows the process's output from its current end, discarding data, to publish its exit.
    /// Owned by the service's task tracker and cancelled on shutdown; it ends with the process,
    /// the sandbox (its stream fails) or the control plane. A restarted control plane resumes
    /// watching on its first process call to the sandbox ([`Self::resume_watchers`]).
    fn watch_exit(
        self,
        id: &SandboxId,
        provider: Arc<dyn Provider>,
        runtime_id: String,
        info: &ProcessInfo,
    ) {
        let key = (id.clone(), info.pid);
        if !locked(&self.svc.exit_watch.watched).insert(key.clone()) {
            return;
        }
        let svc = self.svc.clone();
        let id = id.clone();
        let pid = info.pid;
        let since = info.next_seq;
        let started = info.clone();
        self.svc.tasks.spawn(async move {
            let follow = async {
                let mut stream = match provider.process_output(&runtime_id, pid, since, true).await
                {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::debug!(sandbox_id = %id, pid, error = %e, "exit watch not started");
                        return None;
                    }
                };
                while let Some(rec) = stream.next().await {
                    match rec {
                        Ok(OutputRecord::Exit {
                            exit_code, signal, ..
                        }) => return Some((exit_code, signal)),
                        Ok(_) => {}
                        Err(e) => {
                            tracing::debug!(sandbox_id = %id, pid, error = %e, "exit watch ended");
                            return None;
                        }
                    }
                }
                None
            };
            let exit = tokio::select! {
                e = follow => e,
                () = svc.shutdown.cancelled() => None,
            };
            locked(&svc.exit_watch.watched).remove(&key);
            if let Some((exit_code, signal)) = exit {
                let mut ended = started;
                ended.state = ProcessState::Exited;
                ended.exit_code = Some(exit_code);
                ended.signal = signal;
                svc.events.publish(
                    EventKind::ProcessExited,
                    Some(&id),
                    Some(EventData::process(&ended)),
                );
            }
        });
    }

    /// Running and retained exited processes, newest first. A paused sandbox answers the list
    /// taken when it was paused (`activity.rs`).
    pub async fn list(self, id: &SandboxId) -> ServiceResult<Vec<ProcessInfo>> {
        if let Some(kept) = self.paused_list(id).await? {
            return Ok(kept);
        }
        let (sb, provider) = self.route(id).await?;
        Ok(provider.process_list(sb.runtime_id()).await?)
    }

    pub async fn get(self, id: &SandboxId, pid: Pid) -> ServiceResult<ProcessInfo> {
        if let Some(kept) = self.paused_list(id).await? {
            return kept
                .into_iter()
                .find(|p| p.pid == pid)
                .ok_or(ServiceError::ProcessNotFound(pid));
        }
        let (sb, provider) = self.route(id).await?;
        Ok(provider.process_get(sb.runtime_id(), pid).await?)
    }

    /// For a paused sandbox, its process list as kept at pause; after a control-plane restart
    /// the provider is asked (briefly: a frozen agent may not answer). `None` when not paused.
    async fn paused_list(self, id: &SandboxId) -> ServiceResult<Option<Vec<ProcessInfo>>> {
        let sb = self.svc.sandboxes().get(id).await?;
        if sb.state != stacyvm_types::SandboxState::Paused {
            return Ok(None);
        }
        if let Some(kept) = self.svc.activity.processes(id) {
            return Ok(Some(kept));
        }
        let provider = self.svc.provider_for(&sb).await?;
        let asked = tokio::time::timeout(
            std::time::Duration::from_secs(2),
            provider.process_list(sb.runtime_id()),
        )
        .await;
        match asked {
            Ok(Ok(list)) => {
                self.svc.activity.keep_processes(id, list.clone());
                Ok(Some(list))
            }
            _ => Err(ServiceError::SandboxPaused(format!(
                "sandbox {id} is paused and its process list was not kept (control plane \
                 restarted); resume it to list its processes"
            ))),
        }
    }

    /// Output records with `seq >= since`, in order; with `follow` the stream stays open until
    /// the exit record. Dropping the stream ends the read, never the process. Unknown pids fail
    /// here, before anything is streamed.
    pub async fn output(
        self,
        id: &SandboxId,
        pid: Pid,
        since: u64,
        follow: bool,
    ) -> ServiceResult<RecordStream> {
        let (sb, provider) = self.route(id).await?;
        Ok(provider
            .process_output(sb.runtime_id(), pid, since, follow)
            .await?)
    }

    /// Appends `data` to the process's stdin (closing it after with `close`); the bytes written.
    pub async fn stdin(
        self,
        id: &SandboxId,
        pid: Pid,
        data: Bytes,
        close: bool,
    ) -> ServiceResult<u64> {
        let (sb, provider) = self.route(id).await?;
        Ok(provider
            .process_stdin(sb.runtime_id(), pid, data, close)
            .await?)
    }

    /// `signal` with or without `SIG`; an unknown name is a 400.
    pub async fn signal(
        self,
        id: &SandboxId,
        pid: Pid,
        signal: &str,
    ) -> ServiceResult<ProcessInfo> {
        let sig = Signal::parse(signal).ok_or_else(|| {
            ServiceError::bad_request(format!(
                "unknown signal {signal:?} (one of {})",
                Signal::ALL.map(Signal::as_str).join(", ")
            ))
        })?;
        let (sb, provider) = self.route(id).await?;
        Ok(provider.process_signal(sb.runtime_id(), pid, sig).await?)
    }

    pub async fn resize(self, id: &SandboxId, pid: Pid, size: PtySize) -> ServiceResult<()> {
        if !size.valid() {
            return Err(ServiceError::bad_request(format!(
                "pty size {}x{} is out of range (1..={} each)",
                size.cols,
                size.rows,
                stacyvm_types::MAX_PTY_DIM
            )));
        }
        let (sb, provider) = self.route(id).await?;
        Ok(provider.process_resize(sb.runtime_id(), pid, size).await?)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::settings::ProcessSettings;

    fn params(command: &str) -> ProcessParams {
        with(command, ExecParams::default())
    }

    /// A start of `command` with these exec fields.
    fn with(command: &str, exec: ExecParams) -> ProcessParams {
        ProcessParams {
            exec: ExecParams {
                command: command.into(),
                ..exec
            },
            ..ProcessParams::default()
        }
    }

    #[test]
    fn users_are_names_or_uids() {
        let s = ProcessSettings {
            output_buffer: None,
            retain_exited: None,
        };
        let user = |u: &str| {
            let p = with(
                "id",
                ExecParams {
                    user: u.into(),
                    ..ExecParams::default()
                },
            );
            spec(&p, &s).map(|s| s.exec.user)
        };
        assert_eq!(user("").unwrap(), None);
        assert_eq!(user(" user ").unwrap().as_deref(), Some("user"));
        assert_eq!(user("1000").unwrap().as_deref(), Some("1000"));
        assert_eq!(user("www-data").unwrap().as_deref(), Some("www-data"));
        let long = "x".repeat(33);
        for bad in ["-x", "a b", "../etc", "a:b", "4294967295", long.as_str()] {
            assert!(
                matches!(user(bad), Err(ServiceError::BadRequest(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn start_requests_are_checked_at_the_edge() {
        let s = ProcessSettings {
            output_buffer: Some(4096),
            retain_exited: None,
        };
        let ok = spec(&params("sleep 1"), &s).unwrap();
        assert_eq!(ok.exec.timeout, None);
        assert_eq!(ok.output_buffer, Some(4096));
        for t in ["", "0s", " 0s "] {
            let p = with(
                "x",
                ExecParams {
                    timeout: t.into(),
                    ..ExecParams::default()
                },
            );
            assert_eq!(spec(&p, &s).unwrap().exec.timeout, None, "{t:?}");
        }
        let p = with(
            "x",
            ExecParams {
                timeout: "1m30s".into(),
                ..ExecParams::default()
            },
        );
        assert_eq!(
            spec(&p, &s).unwrap().exec.timeout,
            Some(std::time::Duration::from_secs(90))
        );
        let bad = [
            params(" "),
            with(
                "x",
                ExecParams {
                    mode: "python".into(),
                    ..ExecParams::default()
                },
            ),
            with(
                "x",
                ExecParams {
                    timeout: "-1s".into(),
                    ..ExecParams::default()
                },
            ),
            with(
                "x",
                ExecParams {
                    timeout: "soon".into(),
                    ..ExecParams::default()
                },
            ),
            ProcessParams {
                tag: "t".repeat(MAX_NAME + 1),
                ..params("x")
            },
            ProcessParams {
                pty: Some(PtySize { cols: 0, rows: 24 }),
                ..params("x")
            },
            with(
                "x",
                ExecParams {
                    args: vec!["a".repeat(200 * 1024)],
                    ..ExecParams::default()
                },
            ),
        ];
        for p in bad {
            assert!(
                matches!(spec(&p, &s), Err(ServiceError::BadRequest(_))),
                "{p:?}"
            );
        }
    }
}
