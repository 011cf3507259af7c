//! Host side of the agent protocol over any byte stream: the unix socket QEMU binds to a
//! microvm guest's virtio-serial port, the agent's listening socket for the mock, the stdio of
//! a `docker exec … --bridge` for docker. Requests are multiplexed by id; a reader task routes
//! each reply to its waiter, and dropping every waiter when the stream ends makes all
//! in-flight calls fail at once.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use stacyvm_protocol::agent::{
    decode_body, encode_frame, parse_header, ErrorCode, FrameError, GuestFrame, GuestMsg,
    HostFrame, HostMsg, Identity, AGENT_PROTOCOL_MIN_VERSION, AGENT_PROTOCOL_VERSION, EVENT_ID,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnError {
    #[error("agent connection closed")]
    Closed,
    #[error("agent did not answer in time")]
    Timeout,
    #[error("agent socket i/o")]
    Io(#[source] std::io::Error),
    #[error("agent frame")]
    Frame(#[source] FrameError),
    #[error("agent protocol: {0}")]
    Protocol(String),
    /// The agent refused the request.
    #[error("{message}")]
    Agent { code: ErrorCode, message: String },
}

/// Where the answers to one request go. A bounded waiter is dropped once `max` frames wait
/// unread: one slow reader must not make the host buffer everything a chatty process prints.
struct Waiter {
    tx: mpsc::UnboundedSender<GuestMsg>,
    budget: Option<Arc<Budget>>,
}

/// Frames queued for a bounded waiter, and whether it overran.
pub(crate) struct Budget {
    queued: AtomicUsize,
    max: usize,
    overrun: AtomicBool,
}

/// The answers to a bounded request ([`AgentConn::start_bounded`]). After `None`,
/// [`Self::overran`] tells an overrun (frames were dropped: ask again from where it stopped)
/// from the end of the connection.
pub(crate) struct BoundedRx {
    rx: mpsc::UnboundedReceiver<GuestMsg>,
    budget: Arc<Budget>,
}

impl BoundedRx {
    pub(crate) async fn recv(&mut self) -> Option<GuestMsg> {
        let m = self.rx.recv().await?;
        self.budget.queued.fetch_sub(1, Ordering::SeqCst);
        Some(m)
    }

    pub(crate) fn overran(&self) -> bool {
        self.budget.overrun.load(Ordering::SeqCst)
    }
}

type Waiters = Arc<Mutex<HashMap<u64, Waiter>>>;

/// The halves of whatever byte stream carries the protocol.
pub(crate) type ReadHalf = Box<dyn AsyncRead + Send + Unpin>;
pub(crate) type WriteHalf = Box<dyn AsyncWrite + Send + Unpin>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub(crate) struct AgentConn {
    writer: tokio::sync::Mutex<WriteHalf>,
    waiters: Waiters,
    next_id: AtomicU64,
    closed: Arc<AtomicBool>,
    reader: JoinHandle<()>,
    /// Tasks awaiting answers in the background ([`Self::expect_ok_later`]).
    watchers: Vec<JoinHandle<()>>,
    /// The negotiated protocol version.
    pub version: u32,
}

impl AsRef<AgentConn> for AgentConn {
    fn as_ref(&self) -> &AgentConn {
        self
    }
}

impl Drop for AgentConn {
    fn drop(&mut self) {
        self.reader.abort();
        for w in &self.watchers {
            w.abort();
        }
    }
}

/// Connects to `sock`, retrying while QEMU has not created it yet.
#[cfg_attr(not(feature = "microvm"), allow(dead_code, reason = "microvm only"))]
pub(crate) async fn connect(sock: &Path, deadline: Instant) -> Result<UnixStream, ConnError> {
    loop {
        match UnixStream::connect(sock).await {
            Ok(s) => return Ok(s),
            Err(e) if Instant::now() >= deadline => return Err(ConnError::Io(e)),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

impl AgentConn {
    /// Says hello and waits (until `deadline`) for the agent's answer: during a cold boot this
    /// is where the host waits for the guest.
    pub(crate) async fn handshake(
        stream: UnixStream,
        hostname: &str,
        deadline: Instant,
    ) -> Result<Self, ConnError> {
        let (r, w) = stream.into_split();
        Self::handshake_over(Box::new(r), Box::new(w), hostname, deadline).await
    }

    /// [`Self::handshake`] over any pair of halves (a docker exec's demultiplexed stdio).
    pub(crate) async fn handshake_over(
        r: ReadHalf,
        w: WriteHalf,
        hostname: &str,
        deadline: Instant,
    ) -> Result<Self, ConnError> {
        let waiters: Waiters = Arc::new(Mutex::new(HashMap::new()));
        let closed = Arc::new(AtomicBool::new(false));
        let reader = tokio::spawn(read_loop(r, waiters.clone(), closed.clone()));
        let mut conn = AgentConn {
            writer: tokio::sync::Mutex::new(w),
            waiters,
            next_id: AtomicU64::new(1),
            closed,
            reader,
            watchers: Vec::new(),
            version: 0,
        };
        let hello = HostMsg::Hello {
            min_version: AGENT_PROTOCOL_MIN_VERSION,
            max_version: AGENT_PROTOCOL_VERSION,
            hostname: hostname.to_string(),
        };
        let left = deadline.saturating_duration_since(Instant::now());
        match conn.call(hello, left).await? {
            GuestMsg::HelloAck { version, .. }
                if (AGENT_PROTOCOL_MIN_VERSION..=AGENT_PROTOCOL_VERSION).contains(&version) =>
            {
                conn.version = version;
                Ok(conn)
            }
            other => Err(ConnError::Protocol(format!(
                "unexpected handshake answer {other:?}"
            ))),
        }
    }

    /// Ends the connection now: every waiter (a following reader too) sees it closed. For
    /// transports that may not report the end themselves (an exec attach whose container is
    /// gone, under gVisor).
    #[cfg_attr(not(feature = "docker"), allow(dead_code, reason = "docker only"))]
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.reader.abort();
        lock(&self.waiters).clear();
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Sends `msg` and returns the id and the stream of everything the agent answers to it.
    /// The caller must [`Self::forget`] the id when done.
    pub(crate) async fn start(
        &self,
        msg: HostMsg,
    ) -> Result<(u64, mpsc::UnboundedReceiver<GuestMsg>), ConnError> {
        self.start_with(msg, None).await
    }

    /// [`Self::start`] for a request with many answers that may outpace its reader: at most
    /// `max` frames wait unread; past that the waiter is dropped (its answers are discarded)
    /// and the receiver says it overran.
    pub(crate) async fn start_bounded(
        &self,
        msg: HostMsg,
        max: usize,
    ) -> Result<(u64, BoundedRx), ConnError> {
        let budget = Arc::new(Budget {
            queued: AtomicUsize::new(0),
            max,
            overrun: AtomicBool::new(false),
        });
        let (id, rx) = self.start_with(msg, Some(budget.clone())).await?;
        Ok((id, BoundedRx { rx, budget }))
    }

    async fn start_with(
        &self,
        msg: HostMsg,
        budget: Option<Arc<Budget>>,
    ) -> Result<(u64, mpsc::UnboundedReceiver<GuestMsg>), ConnError> {
        if self.is_closed() {
            return Err(ConnError::Closed);
        }
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        let (tx, rx) = mpsc::unbounded_channel();
        lock(&self.waiters).insert(id, Waiter { tx, budget });
        // The reader may have ended (and cleared the waiters) since the check above.
        if self.is_closed() {
            self.forget(id);
            return Err(ConnError::Closed);
        }
        if let Err(e) = self.send(id, msg).await {
            self.forget(id);
            return Err(e);
        }
        Ok((id, rx))
    }

    pub(crate) fn forget(&self, id: u64) {
        lock(&self.waiters).remove(&id);
    }

    /// Awaits the single answer to request `id` in the background, within `timeout`. Anything
    /// but `Ok` marks the connection closed: the VM reports unhealthy and every later call
    /// fails. The agent handles frames in order, so whatever the host sends after request `id`
    /// runs after it in the guest.
    #[cfg_attr(not(feature = "microvm"), allow(dead_code, reason = "microvm only"))]
    pub(crate) fn expect_ok_later(
        &mut self,
        id: u64,
        mut rx: mpsc::UnboundedReceiver<GuestMsg>,
        timeout: Duration,
        what: &'static str,
    ) {
        let waiters = self.waiters.clone();
        let closed = self.closed.clone();
        self.watchers.retain(|w| !w.is_finished());
        self.watchers.push(tokio::spawn(async move {
            let answer = tokio::time::timeout(timeout, rx.recv()).await;
            lock(&waiters).remove(&id);
            if !matches!(answer, Ok(Some(GuestMsg::Ok))) {
                tracing::warn!(
                    what,
                    ?answer,
                    "the agent refused or did not answer; the VM is unhealthy"
                );
                closed.store(true, Ordering::SeqCst);
            }
        }));
    }

    async fn send(&self, id: u64, msg: HostMsg) -> Result<(), ConnError> {
        let frame = encode_frame(&HostFrame { id, msg }).map_err(ConnError::Frame)?;
        let mut w = self.writer.lock().await;
        w.write_all(&frame).await.map_err(ConnError::Io)?;
        // A bridged stream (docker exec stdin) may buffer.
        w.flush().await.map_err(ConnError::Io)
    }

    /// A request with exactly one answer; an agent `Error` becomes [`ConnError::Agent`].
    pub(crate) async fn call(
        &self,
        msg: HostMsg,
        timeout: Duration,
    ) -> Result<GuestMsg, ConnError> {
        let (id, mut rx) = self.start(msg).await?;
        let r = tokio::time::timeout(timeout, rx.recv()).await;
        self.forget(id);
        match r {
            Err(_) => Err(ConnError::Timeout),
            Ok(None) => Err(ConnError::Closed),
            Ok(Some(GuestMsg::Error { code, message })) => Err(ConnError::Agent { code, message }),
            Ok(Some(m)) => Ok(m),
        }
    }

    /// Sends a new identity (protocol version 2) and waits for the agent to apply it.
    #[cfg_attr(not(feature = "microvm"), allow(dead_code, reason = "microvm only"))]
    pub(crate) async fn identity(
        &self,
        identity: Identity,
        timeout: Duration,
    ) -> Result<(), ConnError> {
        if self.version < 2 {
            return Err(ConnError::Protocol(format!(
                "agent protocol {} has no identity message",
                self.version
            )));
        }
        match self.call(HostMsg::Identity(identity), timeout).await? {
            GuestMsg::Ok => Ok(()),
            other => Err(ConnError::Protocol(format!(
                "unexpected identity answer {other:?}"
            ))),
        }
    }

    /// Asks the agent to stop request `target` (kill an exec's process group, stop a glob);
    /// best effort.
    #[cfg_attr(not(feature = "microvm"), allow(dead_code, reason = "microvm only"))]
    pub(crate) async fn cancel(&self, target: u64) {
        self.notify(HostMsg::Cancel { target }).await;
    }

    /// Sends `msg` and ignores its answer; best effort.
    pub(crate) async fn notify(&self, msg: HostMsg) {
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        let _ = self.send(id, msg).await;
    }
}

/// How long the message of an abandoned request may take to go out.
const ABORT_TIMEOUT: Duration = Duration::from_secs(5);

/// Sends the agent `msg` unless disarmed: dropped with the future of a request whose caller
/// went away, it tells the agent to stop the work (`Cancel` a glob, discard a write with
/// `WriteClose`). Drop cannot await, so the message goes out on a task of its own, bounded by
/// [`ABORT_TIMEOUT`].
pub(crate) struct AbortOnDrop<T: AsRef<AgentConn> + Send + Sync + 'static> {
    owner: Option<Arc<T>>,
    msg: Option<HostMsg>,
    /// The abandoned request's waiter, dropped too.
    waiter: Option<u64>,
}

impl<T: AsRef<AgentConn> + Send + Sync + 'static> AbortOnDrop<T> {
    pub(crate) fn new(owner: Arc<T>, msg: HostMsg) -> Self {
        AbortOnDrop {
            owner: Some(owner),
            msg: Some(msg),
            waiter: None,
        }
    }

    /// Also forgets the waiter of request `id`.
    pub(crate) fn forgetting(mut self, id: u64) -> Self {
        self.waiter = Some(id);
        self
    }

    pub(crate) fn disarm(mut self) {
        self.owner = None;
    }
}

impl<T: AsRef<AgentConn> + Send + Sync + 'static> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        let (Some(owner), Some(msg), Ok(rt)) = (
            self.owner.take(),
            self.msg.take(),
            tokio::runtime::Handle::try_current(),
        ) else {
            return;
        };
        let waiter = self.waiter;
        rt.spawn(async move {
            let conn = (*owner).as_ref();
            if let Some(id) = waiter {
                conn.forget(id);
            }
            let _ = tokio::time::timeout(ABORT_TIMEOUT, conn.notify(msg)).await;
        });
    }
}

async fn read_frame(r: &mut ReadHalf) -> Result<GuestFrame, ConnError> {
    let mut h = [0u8; 8];
    r.read_exact(&mut h).await.map_err(ConnError::Io)?;
    let len = parse_header(&h).map_err(ConnError::Frame)?;
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await.map_err(ConnError::Io)?;
    decode_body(&body).map_err(ConnError::Frame)
}

async fn read_loop(mut r: ReadHalf, waiters: Waiters, closed: Arc<AtomicBool>) {
    loop {
        match read_frame(&mut r).await {
            Ok(GuestFrame { id: EVENT_ID, msg }) => match msg {
                GuestMsg::Log { line } => {
                    tracing::debug!(target: "stacyvm::agent", "{line}")
                }
                other => tracing::warn!(?other, "unsolicited agent message"),
            },
            Ok(GuestFrame { id, msg }) => {
                let mut waiters = lock(&waiters);
                let Some(w) = waiters.get(&id) else {
                    continue;
                };
                if let Some(b) = &w.budget {
                    if b.queued.load(Ordering::SeqCst) >= b.max {
                        b.overrun.store(true, Ordering::SeqCst);
                        waiters.remove(&id);
                        continue;
                    }
                    b.queued.fetch_add(1, Ordering::SeqCst);
                }
                let _ = w.tx.send(msg);
            }
            Err(e) => {
                if !matches!(&e, ConnError::Io(io) if io.kind() == std::io::ErrorKind::UnexpectedEof)
                {
                    tracing::warn!(error = %e, source = ?std::error::Error::source(&e), "agent connection failed");
                }
                break;
            }
        }
    }
    closed.store(true, Ordering::SeqCst);
    // Dropping the senders ends every waiter's stream.
    lock(&waiters).clear();
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use stacyvm_protocol::agent::{ErrorCode, GuestFrame, HostFrame, Identity};

    use super::*;

    /// A fake agent: answers the hello, then answers the next request with `reply`.
    fn fake_agent(mut s: std::os::unix::net::UnixStream, reply: GuestMsg) {
        std::thread::spawn(move || {
            use std::io::Write;
            for answer in [None, Some(reply)] {
                let frame: HostFrame = match stacyvm_protocol::agent::read_frame(&mut s) {
                    Ok(Some(f)) => f,
                    _ => return,
                };
                let msg = answer.unwrap_or(GuestMsg::HelloAck {
                    version: AGENT_PROTOCOL_VERSION,
                    agent_version: "test".into(),
                });
                let out = encode_frame(&GuestFrame { id: frame.id, msg }).unwrap();
                s.write_all(&out).unwrap();
            }
            // Keep the socket open until the test ends.
            std::thread::sleep(Duration::from_secs(5));
        });
    }

    async fn conn_with(reply: GuestMsg) -> AgentConn {
        let (host, guest) = std::os::unix::net::UnixStream::pair().unwrap();
        fake_agent(guest, reply);
        host.set_nonblocking(true).unwrap();
        let stream = UnixStream::from_std(host).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        AgentConn::handshake(stream, "test", deadline)
            .await
            .unwrap()
    }

    async fn identity_answered_with(reply: GuestMsg) -> bool {
        let mut conn = conn_with(reply).await;
        let (id, rx) = conn
            .start(HostMsg::Identity(Identity::default()))
            .await
            .unwrap();
        conn.expect_ok_later(id, rx, Duration::from_secs(2), "identity");
        // Give the watcher time to see the answer.
        for _ in 0..50 {
            if conn.is_closed() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        conn.is_closed()
    }

    /// A pooled clone's identity is confirmed in the background: an `Ok` keeps the connection,
    /// a refusal closes it (the VM turns unhealthy and further calls fail).
    #[tokio::test]
    async fn identity_refusal_closes_the_connection() {
        assert!(!identity_answered_with(GuestMsg::Ok).await);
        let refused = GuestMsg::Error {
            code: ErrorCode::Io,
            message: "sethostname failed".into(),
        };
        assert!(identity_answered_with(refused).await);
    }
}
