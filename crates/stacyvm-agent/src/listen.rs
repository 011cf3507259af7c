//! The socket transports: `--listen` serves every connection of a unix socket as its own
//! session (all sharing the one process registry), `--bridge` relays stdin/stdout to such a
//! socket (how the docker provider reaches an agent inside a container with `docker exec -i`),
//! and the housekeeping tick that runs in every mode.

use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::{procs, reaper, session, sys};

const TICK: Duration = Duration::from_millis(500);
/// How often `--exit-with` looks at its path.
const EXIT_WITH_POLL: Duration = Duration::from_secs(2);

/// Binds `path` (mode 0600), replacing a stale socket file; refuses to replace anything else.
pub fn bind(path: &Path) -> io::Result<UnixListener> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => std::fs::remove_file(path)?,
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket", path.display()),
            ))
        }
        Err(_) => {}
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let l = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(l)
}

/// Serves every connection concurrently; returns only on an accept error that is not transient.
pub fn serve(listener: UnixListener) -> io::Result<()> {
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                // Out of pids (a fork bomb in the sandbox): this connection is closed unserved,
                // and the listener lives on for the next one (spawn would panic and end it).
                let served = std::thread::Builder::new().spawn(move || {
                    if let Err(e) = session::serve_stream(stream) {
                        eprintln!("stacyvm-agent: connection: {e}");
                    }
                });
                if let Err(e) = served {
                    eprintln!("stacyvm-agent: cannot serve a connection: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EINTR | libc::ECONNABORTED | libc::EMFILE | libc::ENFILE)
                ) =>
            {
                eprintln!("stacyvm-agent: accept: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Relays this process's stdin to the socket at `path` and the socket to stdout, until either
/// side closes.
pub fn bridge(path: &Path) -> io::Result<()> {
    let s = UnixStream::connect(path)?;
    let mut to_agent = s.try_clone()?;
    let mut from_agent = s;
    std::thread::Builder::new().spawn(move || {
        let _ = copy(&mut io::stdin().lock(), &mut to_agent);
        // The host is done: nothing it still waits for can arrive.
        std::process::exit(0);
    })?;
    copy(&mut from_agent, &mut io::stdout().lock())
}

/// Like `io::copy`, but flushing after every chunk (the peer waits for whole frames).
fn copy(r: &mut impl Read, w: &mut impl Write) -> io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        w.write_all(&buf[..n])?;
        w.flush()?;
    }
}

/// Runs forever in the background: prunes exited processes, reaps orphans (as PID 1), and ends
/// the agent, killing its process groups, on SIGTERM or once `exit_with` is gone.
pub fn housekeeping(exit_with: Option<PathBuf>, socket: Option<PathBuf>) {
    if let Err(e) = sys::catch_termination() {
        eprintln!("stacyvm-agent: cannot catch SIGTERM: {e}");
    }
    std::thread::spawn(move || {
        let mut checked = Instant::now();
        loop {
            std::thread::sleep(TICK);
            procs::registry().prune();
            reaper::reap_orphans();
            let mut why = None;
            if sys::TERMINATED.load(std::sync::atomic::Ordering::SeqCst) {
                why = Some("terminated".to_string());
            }
            if checked.elapsed() >= EXIT_WITH_POLL {
                checked = Instant::now();
                if let Some(p) = exit_with.as_ref().filter(|p| !p.exists()) {
                    why = Some(format!("{} is gone", p.display()));
                }
            }
            if let Some(why) = why {
                eprintln!("stacyvm-agent: {why}: killing its processes and exiting");
                procs::registry().kill_all();
                if let Some(s) = &socket {
                    let _ = std::fs::remove_file(s);
                }
                std::process::exit(0);
            }
        }
    });
}
