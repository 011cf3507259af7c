//! A provider with background processes kept in memory, over the mock (which does everything
//! else). Commands: `cat` echoes its input (until stdin closes, then exits 0), `exit N` exits
//! at once, `print TEXT` writes TEXT and keeps running; anything else runs silently until
//! signalled. Tests drive output with [`FakeProcs::emit`] and exits with [`FakeProcs::finish`].

#![allow(dead_code, clippy::unwrap_used)]

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::StreamExt;
use stacyvm_provider::{
    ByteStream, ChunkSender, ExecRequest, FileStream, MockProvider, ProcessSpec, Provider,
    ProviderError, RecordStream, SandboxSpec, Spawned,
};
use stacyvm_types::{
    FileInfo, OutputRecord, OutputStream, Pid, ProcessInfo, ProcessState, PtySize, SandboxState,
    Signal,
};
use tokio::sync::watch;

struct Proc {
    info: ProcessInfo,
    records: Vec<(u64, OutputStream, Vec<u8>)>,
    stdin_open: bool,
    size: Option<PtySize>,
    changed: watch::Sender<u64>,
}

#[derive(Default)]
struct Table {
    /// runtime id → pid → process
    procs: HashMap<String, BTreeMap<Pid, Proc>>,
    next_pid: Pid,
}

pub struct FakeProcs {
    pub mock: Arc<MockProvider>,
    table: Arc<Mutex<Table>>,
    /// The `user` of every start, in order.
    pub users: Mutex<Vec<Option<String>>>,
    /// Pause freezes, then answers `Unavailable`: a worker that died before it replied.
    pub pause_then_vanish: std::sync::atomic::AtomicBool,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Proc {
    fn write(&mut self, stream: OutputStream, data: &[u8]) {
        if data.is_empty() || self.info.state == ProcessState::Exited {
            return;
        }
        let stream = if self.info.pty {
            OutputStream::Pty
        } else {
            stream
        };
        self.records
            .push((self.info.next_seq, stream, data.to_vec()));
        self.info.next_seq += data.len() as u64;
        self.changed.send_modify(|n| *n += 1);
    }

    fn exit(&mut self, code: i32, signal: Option<Signal>) {
        if self.info.state == ProcessState::Exited {
            return;
        }
        self.info.state = ProcessState::Exited;
        self.info.exit_code = Some(code);
        self.info.signal = signal;
        self.info.ended_at_ms = Some(now_ms());
        self.stdin_open = false;
        self.changed.send_modify(|n| *n += 1);
    }
}

impl FakeProcs {
    pub fn new(mock: Arc<MockProvider>) -> Self {
        FakeProcs {
            mock,
            table: Arc::default(),
            users: Mutex::default(),
            pause_then_vanish: Default::default(),
        }
    }

    fn with<R>(
        &self,
        runtime: &str,
        pid: Pid,
        f: impl FnOnce(&mut Proc) -> Result<R, ProviderError>,
    ) -> Result<R, ProviderError> {
        let mut t = self.table.lock().unwrap();
        let p = t
            .procs
            .get_mut(runtime)
            .and_then(|m| m.get_mut(&pid))
            .ok_or(ProviderError::ProcessNotFound(pid))?;
        f(p)
    }

    /// The runtime that holds `pid` (tests know the pid, not the runtime id).
    fn runtime_of(&self, pid: Pid) -> String {
        let t = self.table.lock().unwrap();
        t.procs
            .iter()
            .find(|(_, m)| m.contains_key(&pid))
            .map(|(r, _)| r.clone())
            .unwrap()
    }

    /// Output from process `pid` (in whichever sandbox holds it).
    pub fn emit(&self, pid: Pid, stream: OutputStream, data: &[u8]) {
        let rt = self.runtime_of(pid);
        self.with(&rt, pid, |p| {
            p.write(stream, data);
            Ok(())
        })
        .unwrap();
    }

    pub fn finish(&self, pid: Pid, code: i32) {
        let rt = self.runtime_of(pid);
        self.with(&rt, pid, |p| {
            p.exit(code, None);
            Ok(())
        })
        .unwrap();
    }

    pub fn pty_size(&self, pid: Pid) -> Option<PtySize> {
        let rt = self.runtime_of(pid);
        self.with(&rt, pid, |p| Ok(p.size)).unwrap()
    }

    /// Live readers of a process (receivers of its change channel).
    pub fn readers(&self, pid: Pid) -> usize {
        let rt = self.runtime_of(pid);
        self.with(&rt, pid, |p| Ok(p.changed.receiver_count()))
            .unwrap()
    }
}

/// Records of `p` with `seq >= since`, and the exit record when it has exited.
fn batch(p: &Proc, since: u64) -> (Vec<OutputRecord>, u64, bool) {
    let mut out: Vec<OutputRecord> = p
        .records
        .iter()
        .filter(|(seq, ..)| *seq >= since)
        .map(|(seq, stream, data)| OutputRecord::Data {
            seq: *seq,
            stream: *stream,
            data: data.clone(),
        })
        .collect();
    let next = out.last().map_or(since, |r| r.seq() + 1).max(since);
    let exited = p.info.state == ProcessState::Exited;
    if exited {
        out.push(OutputRecord::Exit {
            seq: p.info.next_seq,
            exit_code: p.info.exit_code.unwrap_or(-1),
            signal: p.info.signal,
        });
    }
    (out, next, exited)
}

#[async_trait::async_trait]
impl Provider for FakeProcs {
    fn name(&self) -> &str {
        self.mock.name()
    }
    /// The mock's, less `volumes` and `snapshots`: the fake forwards neither.
    fn capabilities(&self) -> Vec<&'static str> {
        let mut c = self.mock.capabilities();
        c.retain(|c| !["volumes", "snapshots"].contains(c));
        c
    }
    fn config_summary(&self) -> serde_json::Value {
        self.mock.config_summary()
    }
    fn isolated(&self) -> bool {
        false
    }
    async fn health(&self) -> Result<(), ProviderError> {
        self.mock.health().await
    }
    async fn spawn(&self, spec: &SandboxSpec) -> Result<Spawned, ProviderError> {
        self.mock.spawn(spec).await
    }
    async fn destroy(&self, runtime_id: &str) -> Result<(), ProviderError> {
        self.table.lock().unwrap().procs.remove(runtime_id);
        self.mock.destroy(runtime_id).await
    }
    async fn status(&self, runtime_id: &str) -> Result<SandboxState, ProviderError> {
        self.mock.status(runtime_id).await
    }
    async fn pause(&self, runtime_id: &str) -> Result<(), ProviderError> {
        self.mock.pause(runtime_id).await?;
        if self
            .pause_then_vanish
            .load(std::sync::atomic::Ordering::SeqCst)
        {
            return Err(ProviderError::Unavailable("worker RPC failed".into()));
        }
        Ok(())
    }
    async fn resume(&self, runtime_id: &str) -> Result<(), ProviderError> {
        self.mock.resume(runtime_id).await
    }
    async fn exec(
        &self,
        runtime_id: &str,
        req: ExecRequest,
        out: ChunkSender,
    ) -> Result<i32, ProviderError> {
        self.mock.exec(runtime_id, req, out).await
    }
    async fn write_file(
        &self,
        runtime_id: &str,
        path: &str,
        content: Bytes,
        mode: Option<&str>,
    ) -> Result<(), ProviderError> {
        self.mock.write_file(runtime_id, path, content, mode).await
    }
    async fn read_file(&self, runtime_id: &str, path: &str) -> Result<Bytes, ProviderError> {
        self.mock.read_file(runtime_id, path).await
    }
    async fn read_file_stream(
        &self,
        runtime_id: &str,
        path: &str,
    ) -> Result<FileStream, ProviderError> {
        self.mock.read_file_stream(runtime_id, path).await
    }
    async fn write_file_stream(
        &self,
        runtime_id: &str,
        path: &str,
        body: ByteStream,
        mode: Option<&str>,
    ) -> Result<u64, ProviderError> {
        self.mock
            .write_file_stream(runtime_id, path, body, mode)
            .await
    }
    async fn list_files(
        &self,
        runtime_id: &str,
        path: &str,
    ) -> Result<Vec<FileInfo>, ProviderError> {
        self.mock.list_files(runtime_id, path).await
    }
    async fn stat_file(&self, runtime_id: &str, path: &str) -> Result<FileInfo, ProviderError> {
        self.mock.stat_file(runtime_id, path).await
    }
    async fn glob(&self, runtime_id: &str, pattern: &str) -> Result<Vec<String>, ProviderError> {
        self.mock.glob(runtime_id, pattern).await
    }
    async fn delete_file(
        &self,
        runtime_id: &str,
        path: &str,
        recursive: bool,
    ) -> Result<(), ProviderError> {
        self.mock.delete_file(runtime_id, path, recursive).await
    }
    async fn move_file(&self, runtime_id: &str, old: &str, new: &str) -> Result<(), ProviderError> {
        self.mock.move_file(runtime_id, old, new).await
    }
    async fn chmod(&self, runtime_id: &str, path: &str, mode: &str) -> Result<(), ProviderError> {
        self.mock.chmod(runtime_id, path, mode).await
    }
    async fn logs(&self, runtime_id: &str, lines: usize) -> Result<Vec<String>, ProviderError> {
        self.mock.logs(runtime_id, lines).await
    }
    async fn preview_target(
        &self,
        runtime_id: &str,
        port: u16,
    ) -> Result<Option<SocketAddr>, ProviderError> {
        self.mock.preview_target(runtime_id, port).await
    }

    async fn process_start(
        &self,
        runtime_id: &str,
        spec: ProcessSpec,
    ) -> Result<ProcessInfo, ProviderError> {
        self.mock.status(runtime_id).await?;
        self.users.lock().unwrap().push(spec.exec.user.clone());
        let mut t = self.table.lock().unwrap();
        t.next_pid += 1;
        let pid = 100 + t.next_pid;
        let mut p = Proc {
            info: ProcessInfo {
                pid,
                tag: spec.tag.clone(),
                command: spec.exec.command.clone(),
                args: spec.exec.args.clone(),
                pty: spec.pty.is_some(),
                stdin: spec.stdin,
                state: ProcessState::Running,
                exit_code: None,
                signal: None,
                started_at_ms: now_ms(),
                ended_at_ms: None,
                next_seq: 0,
            },
            records: Vec::new(),
            stdin_open: spec.stdin || spec.pty.is_some(),
            size: spec.pty,
            changed: watch::channel(0).0,
        };
        let cmd = spec.exec.command.trim();
        if let Some(code) = cmd.strip_prefix("exit ") {
            p.exit(code.trim().parse().unwrap_or(1), None);
        } else if let Some(text) = spec.exec.command.strip_prefix("print ") {
            p.write(OutputStream::Stdout, text.as_bytes());
        }
        let info = p.info.clone();
        t.procs
            .entry(runtime_id.to_string())
            .or_default()
            .insert(pid, p);
        Ok(info)
    }

    async fn process_list(&self, runtime_id: &str) -> Result<Vec<ProcessInfo>, ProviderError> {
        self.mock.status(runtime_id).await?;
        let t = self.table.lock().unwrap();
        Ok(t.procs
            .get(runtime_id)
            .map(|m| m.values().rev().map(|p| p.info.clone()).collect())
            .unwrap_or_default())
    }

    async fn process_get(&self, runtime_id: &str, pid: Pid) -> Result<ProcessInfo, ProviderError> {
        self.with(runtime_id, pid, |p| Ok(p.info.clone()))
    }

    async fn process_output(
        &self,
        runtime_id: &str,
        pid: Pid,
        since: u64,
        follow: bool,
    ) -> Result<RecordStream, ProviderError> {
        let rx = self.with(runtime_id, pid, |p| Ok(p.changed.subscribe()))?;
        let table = self.table.clone();
        let runtime = runtime_id.to_string();
        let state = (table, runtime, rx, since, false);
        let s = futures_util::stream::unfold(
            state,
            move |(table, runtime, mut rx, since, done)| async move {
                if done {
                    return None;
                }
                loop {
                    let got = {
                        let t = table.lock().unwrap();
                        let p = t.procs.get(&runtime).and_then(|m| m.get(&pid));
                        let Some(p) = p else {
                            let e = Err(ProviderError::SandboxNotFound(runtime.clone()));
                            return Some((vec![e], (table.clone(), runtime, rx, since, true)));
                        };
                        rx.borrow_and_update();
                        batch(p, since)
                    };
                    let (recs, next, exited) = got;
                    if !recs.is_empty() || exited || !follow {
                        let end = exited || !follow;
                        let recs = recs.into_iter().map(Ok).collect();
                        return Some((recs, (table, runtime, rx, next, end)));
                    }
                    if rx.changed().await.is_err() {
                        return None;
                    }
                }
            },
        )
        .flat_map(futures_util::stream::iter);
        Ok(s.boxed())
    }

    async fn process_stdin(
        &self,
        runtime_id: &str,
        pid: Pid,
        data: Bytes,
        close: bool,
    ) -> Result<u64, ProviderError> {
        self.with(runtime_id, pid, |p| {
            if p.info.state == ProcessState::Exited {
                return Err(ProviderError::ProcessExited(pid));
            }
            if !p.stdin_open {
                return Err(ProviderError::StdinClosed(pid));
            }
            if p.info.command.trim() == "cat" {
                p.write(OutputStream::Stdout, &data);
            }
            if p.info.pty && data.contains(&0x03) {
                p.exit(130, Some(Signal::Int));
            } else if close {
                p.stdin_open = false;
                if p.info.command.trim() == "cat" {
                    p.exit(0, None);
                }
            }
            Ok(data.len() as u64)
        })
    }

    async fn process_signal(
        &self,
        runtime_id: &str,
        pid: Pid,
        signal: Signal,
    ) -> Result<ProcessInfo, ProviderError> {
        self.with(runtime_id, pid, |p| {
            if !matches!(signal, Signal::Stop | Signal::Cont) {
                p.exit(128 + signal.number(), Some(signal));
            }
            Ok(p.info.clone())
        })
    }

    async fn process_resize(
        &self,
        runtime_id: &str,
        pid: Pid,
        size: PtySize,
    ) -> Result<(), ProviderError> {
        self.with(runtime_id, pid, |p| {
            if !p.info.pty {
                return Err(ProviderError::NotAPty(pid));
            }
            p.size = Some(size);
            Ok(())
        })
    }
}
