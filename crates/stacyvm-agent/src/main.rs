//! `stacyvm-agent`: runs inside a microvm guest, started by the initramfs `/init`. It opens the
//! virtio-serial port named [`PORT_NAME`], optionally chroots into the sandbox root filesystem,
//! and serves the host's requests (stacyvm-protocol's `agent` module) until it is killed. The
//! host may connect, disconnect and reconnect at any time; each connection starts with a
//! version handshake.

mod exec;
mod files;
mod glob;
mod identity;
mod port;
mod session;
mod sys;

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
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        root: None,
        port: PORT_NAME.to_string(),
        device: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match a.as_str() {
            "--root" => args.root = Some(PathBuf::from(value("--root")?)),
            "--port" => args.port = value("--port")?,
            "--device" => args.device = Some(PathBuf::from(value("--device")?)),
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
    if let Some(root) = &args.root {
        if let Err(e) =
            std::os::unix::fs::chroot(root).and_then(|()| std::env::set_current_dir("/"))
        {
            eprintln!("stacyvm-agent: chroot {}: {e}", root.display());
            return ExitCode::from(1);
        }
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
