//! The files API over the agent. Paths are cleaned here (relative to `/`, `..` above the root
//! refused) before they reach the guest; content moves in [`FILE_CHUNK`] pieces so files of
//! any size stay within the frame limit.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::DateTime;
use stacyvm_protocol::agent::{AgentFileInfo, ErrorCode, GuestMsg, HostMsg, FILE_CHUNK};
use stacyvm_protocol::base64;
use stacyvm_types::{format_rfc3339_secs, FileInfo};

use super::conn::{AbortOnDrop, AgentConn, ConnError};
use super::unexpected;
use crate::walk::{clean_file_path, clean_path};
use crate::ProviderError;

/// Per-request deadline for file operations (one chunk, one listing).
const FILE_OP_TIMEOUT: Duration = Duration::from_secs(120);

/// Maps a failed agent call; `given` is the caller's path for `FileNotFound`.
pub(crate) fn map_err(e: ConnError, given: &str) -> ProviderError {
    match e {
        ConnError::Agent {
            code: ErrorCode::NotFound,
            ..
        } => ProviderError::FileNotFound(given.to_string()),
        ConnError::Agent {
            code: ErrorCode::InvalidInput,
            message,
        } => ProviderError::InvalidInput(message),
        ConnError::Agent { message, .. } => ProviderError::internal(message),
        e => super::call_failed(e),
    }
}

fn to_info(f: AgentFileInfo) -> FileInfo {
    let t = DateTime::from_timestamp(f.mtime, 0).unwrap_or_default();
    FileInfo {
        mode: format!("{:o}", f.perm()),
        size: i64::try_from(f.size).unwrap_or(i64::MAX),
        is_dir: f.is_dir,
        mod_time: format_rfc3339_secs(&t),
        path: f.path,
    }
}

pub(super) async fn call(
    conn: &AgentConn,
    msg: HostMsg,
    given: &str,
) -> Result<GuestMsg, ProviderError> {
    conn.call(msg, FILE_OP_TIMEOUT)
        .await
        .map_err(|e| map_err(e, given))
}

pub(super) async fn expect_ok(
    conn: &AgentConn,
    msg: HostMsg,
    given: &str,
) -> Result<(), ProviderError> {
    match call(conn, msg, given).await? {
        GuestMsg::Ok => Ok(()),
        m => Err(unexpected(m)),
    }
}

pub(crate) async fn write(
    conn: &AgentConn,
    given: &str,
    content: Bytes,
    mode: Option<&str>,
) -> Result<(), ProviderError> {
    let path = clean_file_path(given)?;
    let mode = crate::write_mode(mode)?; // `None`: the agent picks 0644
    let handle = match call(conn, HostMsg::WriteOpen { path, mode }, given).await? {
        GuestMsg::Opened { handle } => handle,
        m => return Err(unexpected(m)),
    };
    let mut sent = Ok(());
    for chunk in content.chunks(FILE_CHUNK) {
        let data = base64::encode(chunk);
        sent = expect_ok(conn, HostMsg::WriteChunk { handle, data }, given).await;
        if sent.is_err() {
            break;
        }
    }
    let commit = sent.is_ok();
    let closed = expect_ok(conn, HostMsg::WriteClose { handle, commit }, given).await;
    sent.and(closed)
}

pub(crate) async fn read(conn: &AgentConn, given: &str) -> Result<Bytes, ProviderError> {
    let path = clean_path(given)?;
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let msg = HostMsg::Read {
            path: path.clone(),
            offset: buf.len() as u64,
            len: FILE_CHUNK as u64,
        };
        match call(conn, msg, given).await? {
            GuestMsg::Data { data, eof } => {
                let bytes = base64::decode(&data)
                    .ok_or_else(|| ProviderError::internal("agent sent invalid base64"))?;
                let empty = bytes.is_empty();
                buf.extend_from_slice(&bytes);
                if eof || empty {
                    return Ok(Bytes::from(buf));
                }
            }
            m => return Err(unexpected(m)),
        }
    }
}

pub(crate) async fn list(conn: &AgentConn, given: &str) -> Result<Vec<FileInfo>, ProviderError> {
    let path = clean_path(if given.trim().is_empty() { "/" } else { given })?;
    match call(conn, HostMsg::List { path }, given).await? {
        GuestMsg::Entries { files } => Ok(files.into_iter().map(to_info).collect()),
        m => Err(unexpected(m)),
    }
}

pub(crate) async fn stat(conn: &AgentConn, given: &str) -> Result<FileInfo, ProviderError> {
    let path = clean_path(given)?;
    match call(conn, HostMsg::Stat { path }, given).await? {
        GuestMsg::Stat { file } => Ok(to_info(file)),
        m => Err(unexpected(m)),
    }
}

/// The agent walks the guest under its own limits (entries, time; `InvalidInput` past them);
/// dropping this future cancels the walk there.
pub(crate) async fn glob<T: AsRef<AgentConn> + Send + Sync + 'static>(
    owner: Arc<T>,
    pattern: &str,
) -> Result<Vec<String>, ProviderError> {
    let pattern = clean_path(pattern)?;
    let conn = (*owner).as_ref();
    let msg = HostMsg::Glob {
        pattern: pattern.clone(),
    };
    let (id, mut rx) = conn.start(msg).await.map_err(|e| map_err(e, &pattern))?;
    let guard = AbortOnDrop::new(owner.clone(), HostMsg::Cancel { target: id }).forgetting(id);
    let answer = tokio::time::timeout(FILE_OP_TIMEOUT, rx.recv()).await;
    conn.forget(id);
    let answer = match answer {
        // Still walking: the guard tells the agent to stop.
        Err(_) => return Err(map_err(ConnError::Timeout, &pattern)),
        Ok(a) => {
            guard.disarm();
            a
        }
    };
    match answer {
        None => Err(map_err(ConnError::Closed, &pattern)),
        Some(GuestMsg::Matches { paths }) => Ok(paths),
        Some(GuestMsg::Error { code, message }) => {
            Err(map_err(ConnError::Agent { code, message }, &pattern))
        }
        Some(m) => Err(unexpected(m)),
    }
}

pub(crate) async fn delete(
    conn: &AgentConn,
    given: &str,
    recursive: bool,
) -> Result<(), ProviderError> {
    let path = clean_path(given)?;
    if path == "/" {
        return Err(crate::walk::refuse_root(given, "delete"));
    }
    expect_ok(conn, HostMsg::Delete { path, recursive }, given).await
}

pub(crate) async fn rename(conn: &AgentConn, old: &str, new: &str) -> Result<(), ProviderError> {
    let from = clean_path(old)?;
    let to = clean_path(new)?;
    if from == "/" || to == "/" {
        return Err(ProviderError::InvalidInput(
            "cannot move the sandbox root".into(),
        ));
    }
    expect_ok(conn, HostMsg::Move { from, to }, old).await
}

pub(crate) async fn chmod(conn: &AgentConn, given: &str, mode: &str) -> Result<(), ProviderError> {
    let path = clean_path(given)?;
    let mode = crate::mode_arg(mode)?;
    expect_ok(conn, HostMsg::Chmod { path, mode }, given).await
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::io::Write;

    use stacyvm_protocol::agent::{encode_frame, read_frame, GuestFrame, HostFrame};

    use super::*;

    /// A fake agent that answers the hello, then only reports what the host sends.
    fn silent_agent(mut s: std::os::unix::net::UnixStream) -> std::sync::mpsc::Receiver<HostFrame> {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            while let Ok(Some(frame)) = read_frame::<_, HostFrame>(&mut s) {
                if matches!(frame.msg, HostMsg::Hello { .. }) {
                    let msg = GuestMsg::HelloAck {
                        version: 2,
                        agent_version: "test".into(),
                    };
                    let out = encode_frame(&GuestFrame { id: frame.id, msg }).unwrap();
                    s.write_all(&out).unwrap();
                } else if tx.send(frame).is_err() {
                    return;
                }
            }
        });
        rx
    }

    /// A glob whose caller goes away is cancelled in the guest (the agent stops its walk).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dropping_a_glob_cancels_it_in_the_guest() {
        let (host, guest) = std::os::unix::net::UnixStream::pair().unwrap();
        let seen = silent_agent(guest);
        host.set_nonblocking(true).unwrap();
        let stream = tokio::net::UnixStream::from_std(host).unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let conn = Arc::new(
            AgentConn::handshake(stream, "test", deadline)
                .await
                .unwrap(),
        );
        let walk = glob(conn.clone(), "/workspace/*/*");
        assert!(tokio::time::timeout(Duration::from_millis(200), walk)
            .await
            .is_err());
        let frames: Vec<HostFrame> = (0..2)
            .map(|_| seen.recv_timeout(Duration::from_secs(5)).unwrap())
            .collect();
        let HostMsg::Glob { pattern } = &frames[0].msg else {
            panic!("{frames:?}");
        };
        assert_eq!(pattern, "/workspace/*/*");
        assert_eq!(
            frames[1].msg,
            HostMsg::Cancel {
                target: frames[0].id
            }
        );
    }

    #[test]
    fn paths() {
        assert_eq!(
            clean_path("/workspace/./a//b").ok().as_deref(),
            Some("/workspace/a/b")
        );
        assert_eq!(
            clean_path("workspace/x/../y").ok().as_deref(),
            Some("/workspace/y")
        );
        assert!(matches!(
            clean_path("../../etc/passwd"),
            Err(ProviderError::InvalidInput(_))
        ));
        assert!(matches!(
            clean_path("/a\0b"),
            Err(ProviderError::InvalidInput(_))
        ));
    }

    #[test]
    fn info_conversion() {
        let f = to_info(AgentFileInfo {
            path: "/workspace/a".into(),
            size: 3,
            mode: 0o100755,
            is_dir: false,
            mtime: 0,
        });
        assert_eq!(f.mode, "755");
        assert_eq!(f.mod_time, "1970-01-01T00:00:00Z");
    }
}
