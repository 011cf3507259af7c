//! The file operations on guest paths (glob lives in `glob.rs`, off the request loop). The host
//! has already cleaned the paths; here they only need to be absolute.

use std::collections::HashMap;
use std::fs::{self, File, Metadata};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use stacyvm_protocol::agent::{AgentFileInfo, ErrorCode, GuestMsg, HostMsg, FILE_CHUNK};
use stacyvm_protocol::base64;

/// Open writes of the current session, by handle.
#[derive(Default)]
pub struct Writes {
    next: u64,
    open: HashMap<u64, PendingWrite>,
}

pub struct PendingWrite {
    file: File,
    tmp: PathBuf,
    target: PathBuf,
    mode: u32,
}

impl Writes {
    /// Drops every unfinished write and its temporary file.
    pub fn clear(&mut self) {
        for (_, w) in self.open.drain() {
            let _ = fs::remove_file(&w.tmp);
        }
    }
}

type Reply = Result<GuestMsg, (ErrorCode, String)>;

fn err(code: ErrorCode, msg: impl Into<String>) -> (ErrorCode, String) {
    (code, msg.into())
}

/// Maps an I/O failure on `path` to a protocol error; messages name only guest paths.
fn io_err(path: &str, e: &io::Error) -> (ErrorCode, String) {
    use io::ErrorKind as K;
    let code = match e.kind() {
        K::NotFound => ErrorCode::NotFound,
        K::NotADirectory
        | K::IsADirectory
        | K::DirectoryNotEmpty
        | K::AlreadyExists
        | K::InvalidInput
        | K::PermissionDenied
        | K::ReadOnlyFilesystem => ErrorCode::InvalidInput,
        _ => ErrorCode::Io,
    };
    (code, format!("{path}: {e}"))
}

fn absolute(path: &str) -> Result<&Path, (ErrorCode, String)> {
    if path.starts_with('/') && !path.contains('\0') {
        Ok(Path::new(path))
    } else {
        Err(err(
            ErrorCode::InvalidInput,
            format!("path must be absolute: {path:?}"),
        ))
    }
}

pub fn info(path: String, m: &Metadata) -> AgentFileInfo {
    AgentFileInfo {
        path,
        size: m.len(),
        mode: m.mode(),
        is_dir: m.is_dir(),
        mtime: m.mtime(),
    }
}

/// Follows symlinks, falling back to the link itself when it dangles.
fn meta(p: &Path) -> io::Result<Metadata> {
    fs::metadata(p).or_else(|_| fs::symlink_metadata(p))
}

pub fn handle(msg: HostMsg, writes: &mut Writes) -> GuestMsg {
    let r = match msg {
        HostMsg::WriteOpen { path, mode } => write_open(&path, mode, writes),
        HostMsg::WriteChunk { handle, data } => write_chunk(handle, &data, writes),
        HostMsg::WriteClose { handle, commit } => write_close(handle, commit, writes),
        HostMsg::Read { path, offset, len } => read(&path, offset, len),
        HostMsg::List { path } => list(&path),
        HostMsg::Stat { path } => stat(&path),
        HostMsg::Delete { path, recursive } => delete(&path, recursive),
        HostMsg::Move { from, to } => rename(&from, &to),
        HostMsg::Chmod { path, mode } => chmod(&path, mode),
        other => Err(err(
            ErrorCode::InvalidInput,
            format!("not a file operation: {other:?}"),
        )),
    };
    r.unwrap_or_else(|(code, message)| GuestMsg::Error { code, message })
}

fn write_open(path: &str, mode: Option<u32>, writes: &mut Writes) -> Reply {
    let p = absolute(path)?;
    let (Some(dir), Some(name)) = (p.parent(), p.file_name()) else {
        return Err(err(
            ErrorCode::InvalidInput,
            format!("is a directory: {path}"),
        ));
    };
    if fs::metadata(p).is_ok_and(|m| m.is_dir()) {
        return Err(err(
            ErrorCode::InvalidInput,
            format!("is a directory: {path}"),
        ));
    }
    let mode = mode.unwrap_or(0o644);
    if mode > 0o7777 {
        return Err(err(
            ErrorCode::InvalidInput,
            format!("invalid mode {mode:o}"),
        ));
    }
    fs::create_dir_all(dir).map_err(|e| io_err(path, &e))?;
    writes.next += 1;
    let handle = writes.next;
    let tmp = dir.join(format!(".{}.stacyvm-{handle}.tmp", name.to_string_lossy()));
    let file = File::create(&tmp).map_err(|e| io_err(path, &e))?;
    writes.open.insert(
        handle,
        PendingWrite {
            file,
            tmp,
            target: p.to_path_buf(),
            mode,
        },
    );
    Ok(GuestMsg::Opened { handle })
}

fn write_chunk(handle: u64, data: &str, writes: &mut Writes) -> Reply {
    let bytes =
        base64::decode(data).ok_or_else(|| err(ErrorCode::InvalidInput, "chunk is not base64"))?;
    let w = writes
        .open
        .get_mut(&handle)
        .ok_or_else(|| err(ErrorCode::Unknown, format!("no open write {handle}")))?;
    if let Err(e) = w.file.write_all(&bytes) {
        let msg = io_err(&w.target.to_string_lossy(), &e);
        if let Some(w) = writes.open.remove(&handle) {
            let _ = fs::remove_file(&w.tmp);
        }
        return Err(msg);
    }
    Ok(GuestMsg::Ok)
}

fn write_close(handle: u64, commit: bool, writes: &mut Writes) -> Reply {
    let w = writes
        .open
        .remove(&handle)
        .ok_or_else(|| err(ErrorCode::Unknown, format!("no open write {handle}")))?;
    let target = w.target.to_string_lossy().into_owned();
    if !commit {
        let _ = fs::remove_file(&w.tmp);
        return Ok(GuestMsg::Ok);
    }
    let done = w
        .file
        .sync_data()
        .and_then(|()| fs::set_permissions(&w.tmp, fs::Permissions::from_mode(w.mode)))
        .and_then(|()| fs::rename(&w.tmp, &w.target));
    if let Err(e) = done {
        let _ = fs::remove_file(&w.tmp);
        return Err(io_err(&target, &e));
    }
    Ok(GuestMsg::Ok)
}

fn read(path: &str, offset: u64, len: u64) -> Reply {
    let p = absolute(path)?;
    let m = fs::metadata(p).map_err(|e| io_err(path, &e))?;
    if m.is_dir() {
        return Err(err(
            ErrorCode::InvalidInput,
            format!("is a directory: {path}"),
        ));
    }
    if !m.is_file() {
        return Err(err(
            ErrorCode::InvalidInput,
            format!("not a regular file: {path}"),
        ));
    }
    let mut f = File::open(p).map_err(|e| io_err(path, &e))?;
    f.seek(SeekFrom::Start(offset))
        .map_err(|e| io_err(path, &e))?;
    let want = usize::try_from(len).unwrap_or(FILE_CHUNK).min(FILE_CHUNK);
    let mut buf = Vec::with_capacity(want);
    Read::by_ref(&mut f)
        .take(want as u64)
        .read_to_end(&mut buf)
        .map_err(|e| io_err(path, &e))?;
    let eof = buf.len() < want || offset + buf.len() as u64 >= m.len();
    Ok(GuestMsg::Data {
        data: base64::encode(&buf),
        eof,
    })
}

fn join(dir: &str, name: &str) -> String {
    if dir.ends_with('/') {
        format!("{dir}{name}")
    } else {
        format!("{dir}/{name}")
    }
}

fn list(path: &str) -> Reply {
    let p = absolute(path)?;
    let rd = fs::read_dir(p).map_err(|e| io_err(path, &e))?;
    let mut files = Vec::new();
    for e in rd {
        let e = e.map_err(|e| io_err(path, &e))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if let Ok(m) = meta(&e.path()) {
            files.push(info(join(path, &name), &m));
        }
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(GuestMsg::Entries { files })
}

fn stat(path: &str) -> Reply {
    let p = absolute(path)?;
    let m = meta(p).map_err(|e| io_err(path, &e))?;
    Ok(GuestMsg::Stat {
        file: info(path.to_string(), &m),
    })
}

fn delete(path: &str, recursive: bool) -> Reply {
    let p = absolute(path)?;
    if p == Path::new("/") {
        return Err(err(ErrorCode::InvalidInput, "cannot delete the root"));
    }
    let m = match fs::symlink_metadata(p) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound && recursive => return Ok(GuestMsg::Ok),
        Err(e) => return Err(io_err(path, &e)),
    };
    let r = if m.is_dir() {
        if recursive {
            fs::remove_dir_all(p)
        } else {
            fs::remove_dir(p)
        }
    } else {
        fs::remove_file(p)
    };
    r.map_err(|e| io_err(path, &e))?;
    Ok(GuestMsg::Ok)
}

fn rename(from: &str, to: &str) -> Reply {
    let src = absolute(from)?;
    let dst = absolute(to)?;
    fs::symlink_metadata(src).map_err(|e| io_err(from, &e))?;
    if let Some(parent) = dst.parent() {
        fs::create_dir_all(parent).map_err(|e| io_err(to, &e))?;
    }
    match fs::rename(src, dst) {
        Ok(()) => Ok(GuestMsg::Ok),
        // Across filesystems (say into a tmpfs): copy a regular file, then remove it.
        Err(e)
            if e.raw_os_error() == Some(libc::EXDEV)
                && fs::metadata(src).is_ok_and(|m| m.is_file()) =>
        {
            fs::copy(src, dst)
                .and_then(|_| fs::remove_file(src))
                .map_err(|e| io_err(to, &e))?;
            Ok(GuestMsg::Ok)
        }
        Err(e) => Err(io_err(from, &e)),
    }
}

fn chmod(path: &str, mode: u32) -> Reply {
    let p = absolute(path)?;
    if mode > 0o7777 {
        return Err(err(
            ErrorCode::InvalidInput,
            format!("invalid mode {mode:o}"),
        ));
    }
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).map_err(|e| io_err(path, &e))?;
    Ok(GuestMsg::Ok)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ok(m: GuestMsg) -> GuestMsg {
        assert!(!matches!(m, GuestMsg::Error { .. }), "{m:?}");
        m
    }

    fn refused(m: &GuestMsg) {
        assert!(
            matches!(
                m,
                GuestMsg::Error {
                    code: ErrorCode::InvalidInput,
                    ..
                }
            ),
            "{m:?}"
        );
    }

    #[test]
    fn chunked_write_read_list_move_delete() {
        let dir = std::env::temp_dir().join(format!("agent-files-{}", std::process::id()));
        let d = dir.to_string_lossy().into_owned();
        let mut w = Writes::default();
        let path = format!("{d}/a/b.bin");
        let GuestMsg::Opened { handle: h } = ok(super::handle(
            HostMsg::WriteOpen {
                path: path.clone(),
                mode: Some(0o600),
            },
            &mut w,
        )) else {
            panic!("not opened");
        };
        let data: Vec<u8> = (0..=255u8).cycle().take(FILE_CHUNK + 10).collect();
        for c in data.chunks(FILE_CHUNK) {
            ok(super::handle(
                HostMsg::WriteChunk {
                    handle: h,
                    data: base64::encode(c),
                },
                &mut w,
            ));
        }
        ok(super::handle(
            HostMsg::WriteClose {
                handle: h,
                commit: true,
            },
            &mut w,
        ));
        let mut back = Vec::new();
        loop {
            let GuestMsg::Data { data, eof } = ok(super::handle(
                HostMsg::Read {
                    path: path.clone(),
                    offset: back.len() as u64,
                    len: FILE_CHUNK as u64,
                },
                &mut w,
            )) else {
                panic!("no data");
            };
            back.extend(base64::decode(&data).unwrap());
            if eof {
                break;
            }
        }
        assert_eq!(back, data);
        let GuestMsg::Stat { file } =
            ok(super::handle(HostMsg::Stat { path: path.clone() }, &mut w))
        else {
            panic!("no stat");
        };
        assert_eq!(file.perm(), 0o600);
        let GuestMsg::Entries { files } = ok(super::handle(
            HostMsg::List {
                path: format!("{d}/a"),
            },
            &mut w,
        )) else {
            panic!("no list");
        };
        assert_eq!(files.len(), 1, "{files:?}");
        let to = format!("{d}/x/y/z.bin");
        ok(super::handle(
            HostMsg::Move {
                from: path.clone(),
                to: to.clone(),
            },
            &mut w,
        ));
        let r = super::handle(HostMsg::Stat { path }, &mut w);
        assert!(
            matches!(
                r,
                GuestMsg::Error {
                    code: ErrorCode::NotFound,
                    ..
                }
            ),
            "{r:?}"
        );
        let r = super::handle(
            HostMsg::Delete {
                path: format!("{d}/x"),
                recursive: false,
            },
            &mut w,
        );
        refused(&r);
        ok(super::handle(
            HostMsg::Delete {
                path: d.clone(),
                recursive: true,
            },
            &mut w,
        ));
        assert!(!dir.exists());
        let r = super::handle(
            HostMsg::Read {
                path: "rel".into(),
                offset: 0,
                len: 1,
            },
            &mut w,
        );
        refused(&r);
    }
}
