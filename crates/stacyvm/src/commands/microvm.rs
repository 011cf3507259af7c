//! `stacyvm microvm prepare`: the microvm provider's assets (kernel, initramfs with the agent,
//! the test image's disk). The work is `scripts/setup-microvm.sh`, embedded, so an installed
//! binary and a checkout produce the same files; `--check` only reports what is there.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use anyhow::Context;
use clap::{Args, Subcommand};
use stacyvm_config::Config;
use stacyvm_provider::MicrovmConfig;

const SCRIPT: &str = include_str!("../../../../scripts/setup-microvm.sh");
const DEFAULT_IMAGE: &str = "stacyvm-test/busybox:latest";

#[derive(Debug, Args)]
pub struct MicrovmArgs {
    #[command(subcommand)]
    pub command: MicrovmCommand,
}

#[derive(Debug, Subcommand)]
pub enum MicrovmCommand {
    /// Fetch the guest kernel, build the initramfs (busybox + stacyvm-agent) and the test
    /// image's disk, as scripts/setup-microvm.sh does (needs root for apt-get).
    Prepare(PrepareArgs),
}

#[derive(Debug, Args)]
pub struct PrepareArgs {
    /// Output directory (default: providers.microvm.data_dir, else /var/lib/stacyvm/microvm).
    #[arg(long, env = "STACYVM_MICROVM_DIR")]
    pub dir: Option<PathBuf>,
    /// Rebuild every asset even when present.
    #[arg(long)]
    pub force: bool,
    /// Only report which assets are present; exit 1 when one is missing.
    #[arg(long)]
    pub check: bool,
    /// A prebuilt static stacyvm-agent to put into the initramfs (needed without a checkout).
    #[arg(long, env = "STACYVM_MICROVM_AGENT")]
    pub agent: Option<PathBuf>,
    /// Image whose disk is prepared (and checked).
    #[arg(long, env = "STACYVM_MICROVM_TEST_IMAGE", default_value = DEFAULT_IMAGE)]
    pub image: String,
}

pub fn run(a: MicrovmArgs) -> anyhow::Result<ExitCode> {
    match a.command {
        MicrovmCommand::Prepare(p) => prepare(p),
    }
}

/// The data dir and the kernel / initramfs paths the provider would use.
struct Assets {
    dir: PathBuf,
    kernel: PathBuf,
    initrd: PathBuf,
    qemu: String,
}

fn assets(dir: Option<PathBuf>) -> anyhow::Result<Assets> {
    // The config is read only for the microvm paths; a broken file is an error, a missing one
    // is not (Config::load falls back to defaults).
    let m = Config::load()
        .context("loading configuration")?
        .providers
        .microvm;
    let dir = dir.unwrap_or_else(|| {
        PathBuf::from(match m.data_dir.trim() {
            "" => stacyvm_provider::MICROVM_DEFAULT_DATA_DIR,
            d => d,
        })
    });
    let or = |given: &str, name: &str| match given.trim() {
        "" => dir.join(name),
        p => PathBuf::from(p),
    };
    Ok(Assets {
        kernel: or(&m.kernel_path, "vmlinux"),
        initrd: or(&m.initrd_path, "initramfs.cpio.gz"),
        qemu: m.qemu_path,
        dir,
    })
}

fn on_path(name: &str) -> bool {
    if name.contains('/') {
        return Path::new(name).is_file();
    }
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
}

/// Prints one line per asset; true when all are present.
fn check(a: &Assets, image: &str) -> bool {
    let disk = a
        .dir
        .join("images")
        .join(MicrovmConfig::image_disk_name(image));
    let rows = [
        (format!("qemu ({})", a.qemu), on_path(&a.qemu)),
        (format!("kernel {}", a.kernel.display()), a.kernel.is_file()),
        (
            format!("initramfs {}", a.initrd.display()),
            a.initrd.is_file(),
        ),
        (
            format!("agent {}", a.dir.join("stacyvm-agent").display()),
            a.dir.join("stacyvm-agent").is_file(),
        ),
        (format!("image {image}: {}", disk.display()), disk.is_file()),
    ];
    for (what, ok) in &rows {
        println!("{} {what}", if *ok { "present" } else { "missing" });
    }
    rows.iter().all(|(_, ok)| *ok)
}

/// Where the agent's source is: `$STACYVM_REPO_ROOT`, else the checkout this binary was built
/// from when it is still there; an installed binary has none.
fn repo_root() -> Option<PathBuf> {
    if let Some(root) = std::env::var_os("STACYVM_REPO_ROOT") {
        return Some(PathBuf::from(root));
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.join("crates/stacyvm-agent/Cargo.toml")
        .is_file()
        .then_some(root)
}

fn prepare(p: PrepareArgs) -> anyhow::Result<ExitCode> {
    let a = assets(p.dir)?;
    if p.check {
        return Ok(if check(&a, &p.image) {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    }
    let mut cmd = Command::new("bash");
    // `bash -c` with $0 set: the script's usage line names the command.
    cmd.arg("-c")
        .arg(SCRIPT)
        .arg("stacyvm microvm prepare")
        .env("STACYVM_MICROVM_DIR", &a.dir)
        .env("STACYVM_MICROVM_TEST_IMAGE", &p.image)
        .env(
            "STACYVM_REPO_ROOT",
            repo_root().unwrap_or_else(|| PathBuf::from("/nonexistent")),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    if p.force {
        cmd.arg("--force");
    }
    if let Some(agent) = &p.agent {
        cmd.env("STACYVM_MICROVM_AGENT", agent);
    }
    let mut child = cmd.spawn().context("starting bash")?;
    // Progress lines as they come (stderr is inherited and passes through unbuffered).
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines() {
            println!("{}", line.context("reading the script's output")?);
        }
    }
    let status = child.wait().context("waiting for the setup script")?;
    if !status.success() {
        anyhow::bail!("preparing the microvm assets failed ({status})");
    }
    for (what, path) in [("kernel", &a.kernel), ("initramfs", &a.initrd)] {
        if !path.starts_with(&a.dir) {
            println!(
                "note: providers.microvm.{what} path is {}, outside {}",
                path.display(),
                a.dir.display()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_file_names_match_the_provider() {
        assert_eq!(
            MicrovmConfig::image_disk_name("stacyvm-test/busybox:latest"),
            "stacyvm-test_busybox_latest.ext4"
        );
    }

    #[test]
    fn the_embedded_script_takes_its_paths_from_the_environment() {
        for var in [
            "STACYVM_MICROVM_DIR",
            "STACYVM_REPO_ROOT",
            "STACYVM_MICROVM_AGENT",
            "STACYVM_MICROVM_TEST_IMAGE",
        ] {
            assert!(SCRIPT.contains(var), "{var}");
        }
    }
}
