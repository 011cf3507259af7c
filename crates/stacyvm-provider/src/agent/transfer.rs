//! Streamed file transfer over the agent, in bounded memory whatever the file size: the
//! protocol's reads (`Read` at an offset) and writes (`WriteOpen`, `WriteChunk`, `WriteClose`)
//! already move a file in [`FILE_CHUNK`] pieces, so a stream holds one piece at a time instead
//! of gathering the file.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures_util::{stream, StreamExt};
use stacyvm_protocol::agent::{GuestMsg, HostMsg, FILE_CHUNK};
use stacyvm_protocol::base64;

use super::conn::{AbortOnDrop, AgentConn};
use super::files::{call, expect_ok};
use super::unexpected;
use crate::walk::{clean_file_path, clean_path};
use crate::{ByteStream, FileStream, ProviderError};

/// One piece of the file at `offset`, and whether the agent says nothing follows it.
async fn read_at(
    conn: &AgentConn,
    path: &str,
    given: &str,
    offset: u64,
) -> Result<(Bytes, bool), ProviderError> {
    let msg = HostMsg::Read {
        path: path.to_string(),
        offset,
        len: FILE_CHUNK as u64,
    };
    match call(conn, msg, given).await? {
        GuestMsg::Data { data, eof } => {
            let bytes = base64::decode(&data)
                .ok_or_else(|| ProviderError::internal("agent sent invalid base64"))?;
            Ok((Bytes::from(bytes), eof))
        }
        m => Err(unexpected(m)),
    }
}

/// A file being read: exactly the size announced up front (a file that grows meanwhile is cut
/// there; one that shrinks ends the body with an error, so the client sees it incomplete).
struct Reading<T: AsRef<AgentConn>> {
    owner: Arc<T>,
    path: String,
    given: String,
    size: u64,
    sent: u64,
    /// Read ahead while opening, so errors come before the first byte is promised.
    first: Option<(Bytes, bool)>,
    done: bool,
}

impl<T: AsRef<AgentConn>> Reading<T> {
    async fn next(&mut self) -> Option<Result<Bytes, ProviderError>> {
        while !self.done {
            let piece = match self.first.take() {
                Some(p) => Ok(p),
                None => read_at((*self.owner).as_ref(), &self.path, &self.given, self.sent).await,
            };
            let (data, eof) = match piece {
                Ok(p) => p,
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            };
            let take = (data.len() as u64).min(self.size - self.sent);
            let data = data.slice(..usize::try_from(take).unwrap_or(data.len()));
            self.sent += take;
            if self.sent == self.size {
                self.done = true;
            } else if eof || data.is_empty() {
                self.done = true;
                let short = ProviderError::internal(format!(
                    "{} shrank while it was read ({} of {} bytes)",
                    self.given, self.sent, self.size
                ));
                return Some(if data.is_empty() {
                    Err(short)
                } else {
                    Ok(data)
                });
            }
            if !data.is_empty() {
                return Some(Ok(data));
            }
        }
        None
    }
}

pub(crate) async fn read<T: AsRef<AgentConn> + Send + Sync + 'static>(
    owner: Arc<T>,
    given: &str,
) -> Result<FileStream, ProviderError> {
    let path = clean_path(given)?;
    let conn = (*owner).as_ref();
    let size = match call(conn, HostMsg::Stat { path: path.clone() }, given).await? {
        GuestMsg::Stat { file } if file.is_dir => return Err(ProviderError::is_a_directory(given)),
        GuestMsg::Stat { file } => file.size,
        m => return Err(unexpected(m)),
    };
    let first = read_at(conn, &path, given, 0).await?;
    let reading = Reading {
        owner,
        path,
        given: given.to_string(),
        size,
        sent: 0,
        first: Some(first),
        done: false,
    };
    let body = stream::unfold(reading, |mut r| async move {
        let item = r.next().await?;
        Some((item, r))
    });
    Ok(FileStream {
        size: Some(size),
        body: body.boxed(),
    })
}

/// Writes `body` through one open write; the agent replaces the target only on commit, so a
/// body that fails (or a caller that goes away: the write is discarded then too) leaves the
/// old file. Returns the bytes written.
pub(crate) async fn write<T: AsRef<AgentConn> + Send + Sync + 'static>(
    owner: Arc<T>,
    given: &str,
    mut body: ByteStream,
    mode: Option<&str>,
) -> Result<u64, ProviderError> {
    let path = clean_file_path(given)?;
    let mode = crate::write_mode(mode)?;
    let conn = (*owner).as_ref();
    let handle = match call(conn, HostMsg::WriteOpen { path, mode }, given).await? {
        GuestMsg::Opened { handle } => handle,
        m => return Err(unexpected(m)),
    };
    let guard = AbortOnDrop::new(
        owner.clone(),
        HostMsg::WriteClose {
            handle,
            commit: false,
        },
    );
    let send = |piece: &[u8]| {
        let data = base64::encode(piece);
        expect_ok(conn, HostMsg::WriteChunk { handle, data }, given)
    };
    let sent = async {
        let mut buf = BytesMut::new();
        let mut n = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk?;
            n += chunk.len() as u64;
            buf.extend_from_slice(&chunk);
            while buf.len() >= FILE_CHUNK {
                send(&buf.split_to(FILE_CHUNK)).await?;
            }
        }
        if !buf.is_empty() {
            send(&buf).await?;
        }
        Ok(n)
    }
    .await;
    let commit = sent.is_ok();
    let closed = expect_ok(conn, HostMsg::WriteClose { handle, commit }, given).await;
    guard.disarm();
    let n = sent?;
    closed.map(|()| n)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::io::Write;
    use std::sync::mpsc;
    use std::time::Duration;

    use stacyvm_protocol::agent::{encode_frame, read_frame, AgentFileInfo, GuestFrame, HostFrame};

    use super::*;
    use crate::chunked;

    /// A fake agent holding one file in memory: answers the hello, stat, reads and writes, and
    /// reports every write message it gets.
    fn fake_agent(mut s: std::os::unix::net::UnixStream, file: Vec<u8>) -> mpsc::Receiver<HostMsg> {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let (mut file, mut pending) = (file, Vec::new());
            while let Ok(Some(frame)) = read_frame::<_, HostFrame>(&mut s) {
                let msg = match frame.msg.clone() {
                    HostMsg::Hello { .. } => GuestMsg::HelloAck {
                        version: 2,
                        agent_version: "test".into(),
                    },
                    HostMsg::Stat { path } => GuestMsg::Stat {
                        file: AgentFileInfo {
                            path,
                            size: file.len() as u64,
                            ..Default::default()
                        },
                    },
                    HostMsg::Read { offset, len, .. } => {
                        let start = (offset as usize).min(file.len());
                        let end = (start + len as usize).min(file.len());
                        GuestMsg::Data {
                            data: base64::encode(&file[start..end]),
                            eof: end == file.len(),
                        }
                    }
                    HostMsg::WriteOpen { .. } => GuestMsg::Opened { handle: 9 },
                    HostMsg::WriteChunk { data, .. } => {
                        pending.extend(base64::decode(&data).unwrap());
                        GuestMsg::Ok
                    }
                    HostMsg::WriteClose { commit, .. } => {
                        if commit {
                            file = std::mem::take(&mut pending);
                        }
                        GuestMsg::Ok
                    }
                    other => panic!("unexpected {other:?}"),
                };
                let _ = tx.send(frame.msg);
                let out = encode_frame(&GuestFrame { id: frame.id, msg }).unwrap();
                if s.write_all(&out).is_err() {
                    return;
                }
            }
        });
        rx
    }

    async fn conn(file: Vec<u8>) -> (Arc<AgentConn>, mpsc::Receiver<HostMsg>) {
        let (host, guest) = std::os::unix::net::UnixStream::pair().unwrap();
        let seen = fake_agent(guest, file);
        host.set_nonblocking(true).unwrap();
        let stream = tokio::net::UnixStream::from_std(host).unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let conn = AgentConn::handshake(stream, "test", deadline)
            .await
            .unwrap();
        seen.recv().unwrap();
        (Arc::new(conn), seen)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn files_move_in_protocol_pieces() {
        let data: Bytes = (0..3 * FILE_CHUNK + 5).map(|i| (i % 253) as u8).collect();
        let (c, seen) = conn(Vec::new()).await;
        let n = write(c.clone(), "/workspace/f", chunked(data.clone()), None)
            .await
            .unwrap();
        assert_eq!(n, data.len() as u64);
        let sizes: Vec<usize> = seen
            .try_iter()
            .filter_map(|m| match m {
                HostMsg::WriteChunk { data, .. } => Some(base64::decode(&data).unwrap().len()),
                _ => None,
            })
            .collect();
        assert_eq!(sizes, [FILE_CHUNK, FILE_CHUNK, FILE_CHUNK, 5]);
        let fs = read(c.clone(), "/workspace/f").await.unwrap();
        assert_eq!(fs.size, Some(data.len() as u64));
        assert_eq!(crate::collect(fs.body).await.unwrap(), data);
    }

    /// A write whose caller goes away is discarded in the guest.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_abandoned_write_is_discarded() {
        let (c, seen) = conn(b"old".to_vec()).await;
        let body = chunked(Bytes::from(vec![1u8; FILE_CHUNK + 1])).chain(stream::pending());
        let w = write(c.clone(), "/workspace/f", body.boxed(), None);
        assert!(tokio::time::timeout(Duration::from_millis(300), w)
            .await
            .is_err());
        let close = (0..10)
            .map_while(|_| seen.recv_timeout(Duration::from_secs(5)).ok())
            .find(|m| matches!(m, HostMsg::WriteClose { .. }));
        assert_eq!(
            close,
            Some(HostMsg::WriteClose {
                handle: 9,
                commit: false
            })
        );
        let back = crate::collect(read(c, "/workspace/f").await.unwrap().body).await;
        assert_eq!(back.unwrap().as_ref(), b"old");
    }
}
