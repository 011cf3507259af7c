//! `posix_spawn` for pipe processes. std's `Command` can only use `posix_spawn` for a command
//! with a working directory when it finds `posix_spawn_file_actions_addchdir_np` through
//! `dlsym`, which a static binary lacks; it then forks, and a fork copies the page tables of an
//! agent holding many processes (thousands of thread stacks): 20–30 ms per start at 1,000
//! processes instead of 2 ms. glibc's `posix_spawn` uses `CLONE_VM | CLONE_VFORK` instead.

use std::ffi::{CString, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;

/// A started child: its pid and the agent's ends of its pipes.
pub struct Spawned {
    pub pid: u32,
    pub stdin: Option<File>,
    pub stdout: File,
    pub stderr: File,
}

/// Starts `argv` in `cwd` with exactly `env`, in a new process group, stdout and stderr piped,
/// stdin piped or `/dev/null`; signal dispositions and mask at their defaults (the agent
/// ignores SIGPIPE, and an ignored signal would survive exec).
pub fn spawn(
    argv: &[String],
    env: &[(OsString, OsString)],
    cwd: &Path,
    stdin: bool,
) -> io::Result<Spawned> {
    let prog = argv
        .first()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty argv"))?;
    let path = resolve(prog, env, cwd)?;
    let cstr = |b: &[u8]| {
        CString::new(b).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in argument"))
    };
    let c_path = cstr(path.as_os_str().as_bytes())?;
    let c_cwd = cstr(cwd.as_os_str().as_bytes())?;
    let c_args = argv
        .iter()
        .map(|a| cstr(a.as_bytes()))
        .collect::<io::Result<Vec<_>>>()?;
    let c_env = env
        .iter()
        .map(|(k, v)| {
            let mut kv = k.clone().into_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            cstr(&kv)
        })
        .collect::<io::Result<Vec<_>>>()?;
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let (in_r, in_w) = if stdin {
        let (r, w) = pipe()?;
        (Some(r), Some(w))
    } else {
        (None, None)
    };
    let pid = raw_spawn(
        &c_path,
        &c_cwd,
        &c_args,
        &c_env,
        in_r.as_ref().map(AsRawFd::as_raw_fd),
        out_w.as_raw_fd(),
        err_w.as_raw_fd(),
    )?;
    Ok(Spawned {
        pid,
        stdin: in_w,
        stdout: out_r,
        stderr: err_r,
    })
}

/// Like `execvp`, with the child's `PATH`: a name without a slash is looked up there.
pub(super) fn resolve(prog: &str, env: &[(OsString, OsString)], cwd: &Path) -> io::Result<PathBuf> {
    if prog.contains('/') {
        return Ok(cwd.join(prog));
    }
    let path = env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| cwd.join(d).join(prog))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
}

fn pipe() -> io::Result<(File, File)> {
    let mut fds = [0; 2];
    #[allow(unsafe_code)]
    // SAFETY: `fds` is a valid out-array of two ints; on success both are new fds we own.
    let (r, w) = unsafe {
        if libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) != 0 {
            return Err(io::Error::last_os_error());
        }
        (
            File::from(OwnedFd::from_raw_fd(fds[0])),
            File::from(OwnedFd::from_raw_fd(fds[1])),
        )
    };
    Ok((r, w))
}

fn check(r: libc::c_int) -> io::Result<()> {
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(r))
    }
}

#[allow(unsafe_code)]
fn raw_spawn(
    path: &CString,
    cwd: &CString,
    args: &[CString],
    env: &[CString],
    stdin: Option<libc::c_int>,
    stdout: libc::c_int,
    stderr: libc::c_int,
) -> io::Result<u32> {
    let mut argv: Vec<*mut libc::c_char> = args.iter().map(|a| a.as_ptr().cast_mut()).collect();
    argv.push(std::ptr::null_mut());
    let mut envp: Vec<*mut libc::c_char> = env.iter().map(|a| a.as_ptr().cast_mut()).collect();
    envp.push(std::ptr::null_mut());
    let devnull = c"/dev/null";
    // SAFETY: every pointer handed to the posix_spawn family points into `path`, `cwd`,
    // `argv`, `envp` or `devnull`, all alive until this function returns; the attribute and
    // file-action objects are initialised before use and destroyed on every path below.
    unsafe {
        let mut fa: libc::posix_spawn_file_actions_t = std::mem::zeroed();
        let mut at: libc::posix_spawnattr_t = std::mem::zeroed();
        check(libc::posix_spawn_file_actions_init(&mut fa))?;
        if let Err(e) = check(libc::posix_spawnattr_init(&mut at)) {
            libc::posix_spawn_file_actions_destroy(&mut fa);
            return Err(e);
        }
        let result = (|| {
            let mut empty: libc::sigset_t = std::mem::zeroed();
            let mut all: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            libc::sigfillset(&mut all);
            check(libc::posix_spawnattr_setsigmask(&mut at, &empty))?;
            check(libc::posix_spawnattr_setsigdefault(&mut at, &all))?;
            check(libc::posix_spawnattr_setpgroup(&mut at, 0))?;
            let flags = libc::POSIX_SPAWN_SETPGROUP
                | libc::POSIX_SPAWN_SETSIGMASK
                | libc::POSIX_SPAWN_SETSIGDEF;
            check(libc::posix_spawnattr_setflags(
                &mut at,
                flags as libc::c_short,
            ))?;
            match stdin {
                Some(fd) => check(libc::posix_spawn_file_actions_adddup2(&mut fa, fd, 0))?,
                None => check(libc::posix_spawn_file_actions_addopen(
                    &mut fa,
                    0,
                    devnull.as_ptr(),
                    libc::O_RDONLY,
                    0,
                ))?,
            }
            check(libc::posix_spawn_file_actions_adddup2(&mut fa, stdout, 1))?;
            check(libc::posix_spawn_file_actions_adddup2(&mut fa, stderr, 2))?;
            check(libc::posix_spawn_file_actions_addchdir_np(
                &mut fa,
                cwd.as_ptr(),
            ))?;
            let mut pid: libc::pid_t = 0;
            check(libc::posix_spawn(
                &mut pid,
                path.as_ptr(),
                &fa,
                &at,
                argv.as_ptr(),
                envp.as_ptr(),
            ))?;
            Ok(u32::try_from(pid).unwrap_or(0))
        })();
        libc::posix_spawn_file_actions_destroy(&mut fa);
        libc::posix_spawnattr_destroy(&mut at);
        result
    }
}

/// Waits for child `pid` (spawned by [`spawn`]) to end.
#[allow(unsafe_code)]
pub fn wait(pid: u32) -> io::Result<ExitStatus> {
    use std::os::unix::process::ExitStatusExt;
    let pid = libc::pid_t::try_from(pid).map_err(|_| io::ErrorKind::InvalidInput)?;
    loop {
        let mut status = 0;
        // SAFETY: `status` is a valid out-pointer for the duration of the call.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            return Ok(ExitStatus::from_raw(status));
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}
