//! The request loop: reads frames from the port (or one connection of the `--listen` socket),
//! answers them, and resets whenever the host goes away. Replies to the port go through one
//! writer thread so frames never interleave; a `--listen` connection's are written under a lock
//! by the thread that has them (one thread hop less on every reply). Execs and directory
//! watches belong to their session and die with it; background processes (`procs`) belong to
//! the agent and outlive every session.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use stacyvm_protocol::agent::{
    decode_body, encode_frame, negotiate, parse_header, ErrorCode, GuestFrame, GuestMsg, HostFrame,
    HostMsg, EVENT_ID,
};

use crate::exec::{self, Running};
use crate::files::{self, Writes};
use crate::glob::Globs;
use crate::procs::{self, Reads};
use crate::watch::Watches;
use crate::{identity, port, sys};

/// Frames queued for the writer; bounded so a slow host slows exec output down.
const OUT_QUEUE: usize = 256;

/// Generation of frames that belong to no session (log lines): always sent.
const ANY_SESSION: u64 = 0;

/// A cheap handle for sending frames to the host, bound to one session: once the host
/// reconnects, frames of an earlier session are dropped, so a new session never sees replies
/// to request ids it did not send.
#[derive(Clone)]
pub struct Out {
    sink: Sink,
    current: Arc<AtomicU64>,
    session: u64,
}

/// Where encoded frames go.
#[derive(Clone)]
enum Sink {
    /// To the writer thread: the virtio port's writes may stall or fail while no host is
    /// attached, and the thread that replies must not wait for that.
    Queue(SyncSender<(u64, Vec<u8>)>),
    /// Written by the sending thread under the lock: a socket connection fails at once when its
    /// host goes, and a slow host slows the sender, as the bounded queue did.
    Direct(Arc<Mutex<Direct>>),
}

struct Direct {
    stream: UnixStream,
    /// Once the host is gone, later frames are dropped.
    dead: bool,
}

impl Out {
    /// A handle for the current session.
    fn bound(&self) -> Out {
        Out {
            session: self.current.load(Ordering::SeqCst),
            ..self.clone()
        }
    }

    /// Ends the current session: its pending and future frames are dropped.
    fn next_session(&self) {
        self.current.fetch_add(1, Ordering::SeqCst);
    }

    /// Whether frames sent through this handle still reach the host.
    pub fn is_current(&self) -> bool {
        self.session == ANY_SESSION || self.session == self.current.load(Ordering::SeqCst)
    }

    pub fn send(&self, id: u64, msg: GuestMsg) {
        self.send_all(id, [msg]);
    }

    /// Sends `msgs` in order; to a socket in one write (a read's last records and its end
    /// reach the host together).
    pub fn send_all<const N: usize>(&self, id: u64, msgs: [GuestMsg; N]) {
        if !self.is_current() {
            return;
        }
        let mut frames = Vec::new();
        for msg in msgs {
            match encode_frame(&GuestFrame { id, msg }) {
                Ok(b) => match &self.sink {
                    // The writer only stops when the process does.
                    Sink::Queue(tx) => {
                        let _ = tx.send((self.session, b));
                    }
                    Sink::Direct(_) => frames.extend_from_slice(&b),
                },
                Err(e) => eprintln!("stacyvm-agent: encoding a reply failed: {e}"),
            }
        }
        if let Sink::Direct(d) = &self.sink {
            let mut d = lock(d);
            if !frames.is_empty() && !d.dead && self.is_current() {
                d.dead = d.stream.write_all(&frames).is_err();
            }
        }
    }

    pub fn error(&self, id: u64, code: ErrorCode, message: impl Into<String>) {
        self.send(
            id,
            GuestMsg::Error {
                code,
                message: message.into(),
            },
        );
    }

    /// A console line: to the guest console (stderr) and to the host.
    pub fn log(&self, line: impl Into<String>) {
        let line = line.into();
        eprintln!("stacyvm-agent: {line}");
        self.send(EVENT_ID, GuestMsg::Log { line });
    }
}

pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn writer(
    rx: Receiver<(u64, Vec<u8>)>,
    current: Arc<AtomicU64>,
    mut write: impl FnMut(&[u8]) -> io::Result<()>,
) {
    for (session, frame) in rx {
        if session != ANY_SESSION && session != current.load(Ordering::SeqCst) {
            continue;
        }
        if let Err(e) = write(&frame) {
            eprintln!("stacyvm-agent: write to the host failed: {e}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Per-connection state, dropped when the host disconnects.
struct Session {
    version: Option<u32>,
    writes: Writes,
    globs: Globs,
    /// Follow reads of processes in flight, for `Cancel`.
    reads: Reads,
    /// Directory watches, for `Cancel`; they end with the session.
    watches: Watches,
    out: Out,
}

impl Session {
    fn new(out: &Out) -> Self {
        Session {
            version: None,
            writes: Writes::default(),
            globs: Globs::default(),
            reads: Reads::default(),
            watches: Watches::default(),
            out: out.bound(),
        }
    }

    /// Ends this session: unfinished writes are discarded, its globs stopped and its commands
    /// killed (nobody is left to receive their output).
    fn end(mut self, running: &Running) -> Session {
        self.writes.clear();
        self.globs.cancel_all();
        self.out.next_session();
        // After the session switch, so their `ReadEnd`s never reach a new host.
        self.reads.cancel_all();
        self.watches.cancel_all();
        for pgid in lock(running).values() {
            sys::kill_group(*pgid);
        }
        Session::new(&self.out)
    }
}

/// Serves the port until an unrecoverable I/O error.
pub fn serve(port_file: File) -> io::Result<()> {
    let (tx, rx) = sync_channel(OUT_QUEUE);
    let mut wf = port_file.try_clone()?;
    let current = Arc::new(AtomicU64::new(ANY_SESSION + 1));
    let wcurrent = current.clone();
    std::thread::Builder::new().spawn(move || {
        writer(rx, wcurrent, |frame| {
            port::write_frame(&mut wf, frame).map(drop)
        })
    })?;
    let out = Out {
        sink: Sink::Queue(tx),
        current,
        session: ANY_SESSION,
    };
    let running: Running = Arc::new(Mutex::new(HashMap::new()));
    let mut rf = port_file;
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut session = Session::new(&out);
    let mut connected = false;
    loop {
        match port::read_some(&mut rf, &mut chunk)? {
            port::ReadOutcome::Idle => continue,
            port::ReadOutcome::Disconnected => {
                if connected {
                    eprintln!("stacyvm-agent: host disconnected");
                    session = session.end(&running);
                    buf.clear();
                    connected = false;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            port::ReadOutcome::Data(n) => {
                connected = true;
                buf.extend_from_slice(&chunk[..n]);
                if let Err(e) = drain_frames(&mut buf, &mut session, &running) {
                    // A desynchronised stream cannot be trusted any further: drop it and wait
                    // for the host to start over with a new handshake.
                    out.log(format!("protocol error, resetting session: {e}"));
                    buf.clear();
                    session = session.end(&running);
                }
            }
        }
    }
}

/// Serves one connection of the `--listen` socket until the host closes it (or breaks the
/// protocol); the connection is one session.
pub fn serve_stream(stream: UnixStream) -> io::Result<()> {
    let direct = Direct {
        stream: stream.try_clone()?,
        dead: false,
    };
    let out = Out {
        sink: Sink::Direct(Arc::new(Mutex::new(direct))),
        current: Arc::new(AtomicU64::new(ANY_SESSION + 1)),
        session: ANY_SESSION,
    };
    let running: Running = Arc::new(Mutex::new(HashMap::new()));
    let mut rs = stream;
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut session = Session::new(&out);
    loop {
        match rs.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if let Err(e) = drain_frames(&mut buf, &mut session, &running) {
                    eprintln!("stacyvm-agent: protocol error, closing the connection: {e}");
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    session.end(&running);
    let _ = rs.shutdown(std::net::Shutdown::Both);
    Ok(())
}

fn drain_frames(
    buf: &mut Vec<u8>,
    session: &mut Session,
    running: &Running,
) -> Result<(), stacyvm_protocol::agent::FrameError> {
    loop {
        let Some(header) = buf.first_chunk::<8>() else {
            return Ok(());
        };
        let len = parse_header(header)?;
        if buf.len() < 8 + len {
            return Ok(());
        }
        let parsed: Result<HostFrame, _> = decode_body(&buf[8..8 + len]);
        buf.drain(..8 + len);
        match parsed {
            Ok(frame) => handle(frame, session, running),
            // A well-framed body we cannot decode (a newer host's message): answer, go on.
            Err(e) => session.out.error(
                EVENT_ID,
                ErrorCode::InvalidInput,
                format!("bad request: {e}"),
            ),
        }
    }
}

fn handle(frame: HostFrame, session: &mut Session, running: &Running) {
    let id = frame.id;
    if let HostMsg::Hello {
        min_version,
        max_version,
        hostname,
    } = &frame.msg
    {
        // A hello always starts a new session: a host that reconnected quickly may never have
        // shown up as a hang-up on the port.
        if session.version.is_some() {
            let fresh = Session::new(&session.out);
            *session = std::mem::replace(session, fresh).end(running);
        }
        let out = session.out.clone();
        match negotiate(*min_version, *max_version) {
            Some(v) => {
                session.version = Some(v);
                if !hostname.is_empty() {
                    if let Err(e) = sys::set_hostname(hostname) {
                        out.log(format!("setting hostname failed: {e}"));
                    }
                }
                out.send(
                    id,
                    GuestMsg::HelloAck {
                        version: v,
                        agent_version: env!("CARGO_PKG_VERSION").to_string(),
                    },
                );
            }
            None => out.error(
                id,
                ErrorCode::Version,
                format!("no common protocol version in {min_version}..={max_version}"),
            ),
        }
        return;
    }
    let out = session.out.clone();
    if session.version.is_none() {
        out.error(id, ErrorCode::Version, "handshake required first");
        return;
    }
    match frame.msg {
        HostMsg::Hello { .. } => {}
        HostMsg::Ping => out.send(id, GuestMsg::Pong),
        HostMsg::Exec(start) => exec::start(id, start, out.clone(), running.clone()),
        HostMsg::Identity(identity) => {
            // The agent runs chrooted into the sandbox root.
            out.send(id, identity::apply(&identity, std::path::Path::new("/")));
        }
        HostMsg::Cancel { target } => {
            exec::cancel(target, running);
            session.globs.cancel(target);
            // Answered before the read's `ReadEnd`, which follows once the read noticed.
            out.send(id, GuestMsg::Ok);
            session.reads.cancel(target);
            session.watches.cancel(target);
        }
        msg @ (HostMsg::ProcStart(_)
        | HostMsg::ProcList
        | HostMsg::ProcGet { .. }
        | HostMsg::ProcRead { .. }
        | HostMsg::ReadCredit { .. }
        | HostMsg::ProcStdin { .. }
        | HostMsg::ProcSignal { .. }
        | HostMsg::ProcResize { .. }) => procs::handle(id, msg, &out, &session.reads),
        HostMsg::Glob { pattern } => session.globs.start(id, pattern, out),
        HostMsg::Watch { path, recursive } => session.watches.start(id, path, recursive, out),
        other => {
            let reply = files::handle(other, &mut session.writes);
            out.send(id, reply);
        }
    }
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
