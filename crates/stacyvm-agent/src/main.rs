//! `stacyvm-agent`: the in-sandbox agent, and the data plane of background processes.
//!
//! Modes:
//! - default (microvm): started by the initramfs `/init`, it opens the virtio-serial port named
//!   [`PORT_NAME`], optionally chroots into the sandbox root filesystem, and serves the host's
//!   requests (stacyvm-protocol's `agent` module) until it is killed. The host may connect,
//!   disconnect and reconnect at any time; each connection starts with a version handshake.
//! - `--listen PATH` (docker, mock): binds a unix socket and serves every connection at once,
//!   each its own session. `--exit-with PATH` ends the agent once PATH is gone.
//! - `--bridge PATH`: relays stdin/stdout to the socket of a listening agent.
//!
//! In every mode the background processes (`procs`) belong to the agent, not to a connection:
//! they keep running and keep their output when the host goes away. SIGTERM kills their
//! process groups and ends the agent.

mod exec;
mod files;
mod glob;
mod identity;
mod listen;
mod port;
mod procs;
mod reaper;
mod session;
mod sys;
mod threads;
mod watch;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use stacyvm_protocol::agent::PORT_NAME;

/// How long to wait for the port device to appear (modules load asynchronously).
const PORT_WAIT: Duration = Duration::from_secs(60);

struct Args {
    root: Option<PathBuf>,
    port: String,
    device: Option<PathBuf>,
    listen: Option<PathBuf>,
    bridge: Option<PathBuf>,
    exit_with: Option<PathBuf>,
    workdir: PathBuf,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        root: None,
        port: PORT_NAME.to_string(),
        device: None,
        listen: None,
        bridge: None,
        exit_with: None,
        workdir: PathBuf::from("/workspace"),
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match a.as_str() {
            "--root" => args.root = Some(PathBuf::from(value("--root")?)),
            "--port" => args.port = value("--port")?,
            "--device" => args.device = Some(PathBuf::from(value("--device")?)),
            "--listen" => args.listen = Some(PathBuf::from(value("--listen")?)),
            "--bridge" => args.bridge = Some(PathBuf::from(value("--bridge")?)),
            "--exit-with" => args.exit_with = Some(PathBuf::from(value("--exit-with")?)),
            "--workdir" => args.workdir = PathBuf::from(value("--workdir")?),
            "--version" => {
                println!("stacyvm-agent {}", env!("CARGO_PKG_VERSION"));
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("stacyvm-agent: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(path) = &args.bridge {
        return match listen::bridge(path) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("stacyvm-agent: bridge to {}: {e}", path.display());
                ExitCode::from(1)
            }
        };
    }
    procs::configure(procs::Settings {
        default_workdir: args.workdir.clone(),
        // On the virtio port (microvm) the agent's environment is the initramfs's `/init`
        // (`PATH=/bin`), not the sandbox's: processes start from the defaults, as exec does.
        // Listening (mock, docker) it is the sandbox's own and is passed on.
        inherit_env: args.listen.is_some(),
    });
    if let Some(path) = &args.listen {
        return serve_socket(path, &args);
    }
    listen::housekeeping(args.exit_with.clone(), None);
    let device = match args.device {
        Some(d) => d,
        None => match port::find_device(&args.port, PORT_WAIT) {
            Some(d) => d,
            None => {
                eprintln!("stacyvm-agent: no virtio port named {}", args.port);
                return ExitCode::from(1);
            }
        },
    };
    let file = match port::open(&device) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("stacyvm-agent: open {}: {e}", device.display());
            return ExitCode::from(1);
        }
    };
    // Open the port first: the device node lives in the initramfs, not in the sandbox root.
    if let Err(code) = enter_root(args.root.as_deref()) {
        return code;
    }
    eprintln!(
        "stacyvm-agent {} listening on {}",
        env!("CARGO_PKG_VERSION"),
        device.display()
    );
    match session::serve(file) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("stacyvm-agent: {e}");
            ExitCode::from(1)
        }
    }
}

fn serve_socket(path: &std::path::Path, args: &Args) -> ExitCode {
    let listener = match listen::bind(path) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("stacyvm-agent: listen on {}: {e}", path.display());
            return ExitCode::from(1);
        }
    };
    if let Err(code) = enter_root(args.root.as_deref()) {
        return code;
    }
    // The socket path is the host's name for it; after a chroot it may not resolve any more.
    let socket = args.root.is_none().then(|| path.to_path_buf());
    listen::housekeeping(args.exit_with.clone(), socket);
    eprintln!(
        "stacyvm-agent {} listening on {}",
        env!("CARGO_PKG_VERSION"),
        path.display()
    );
    match listen::serve(listener) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("stacyvm-agent: {e}");
            ExitCode::from(1)
        }
    }
}

/// Chroots into the sandbox root, when one is given (both transports, after opening what lives
/// outside it).
fn enter_root(root: Option<&std::path::Path>) -> Result<(), ExitCode> {
    let Some(root) = root else {
        return Ok(());
    };
    std::os::unix::fs::chroot(root)
        .and_then(|()| std::env::set_current_dir("/"))
        .map_err(|e| {
            eprintln!("stacyvm-agent: chroot {}: {e}", root.display());
            ExitCode::from(1)
        })
}
