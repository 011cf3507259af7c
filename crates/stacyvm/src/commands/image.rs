//! `stacyvm image pull|import|ls|rm|gc`: the local OCI image store (docs/images.md) that the
//! `bwrap` and `microvm` providers take root filesystems from. It works on the store's
//! directory directly (the store locks it), so no server needs to run.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use stacyvm_config::{Config, ImagesSection};
use stacyvm_image::{ImageRef, ImageSummary};

#[derive(Debug, Args)]
pub struct ImageArgs {
    /// The store's directory (default: images.root, else /var/lib/stacyvm/images).
    #[arg(long, global = true, env = "STACYVM_IMAGES_ROOT")]
    pub root: Option<PathBuf>,
    #[command(subcommand)]
    pub command: ImageCommand,
}

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Pull an image from its registry (`busybox`, `host:5000/app:v1`, `repo@sha256:…`).
    Pull { reference: String },
    /// Import a `docker save` archive (tar or tar.gz) or an OCI layout directory.
    Import {
        path: PathBuf,
        /// Name for an archive that names no image (and an extra name for one that does).
        #[arg(long)]
        tag: Option<String>,
    },
    /// List the images in the store.
    Ls {
        /// One JSON object per image.
        #[arg(long)]
        json: bool,
    },
    /// Remove an image's name (its data goes at the next `gc`).
    Rm { reference: String },
    /// Delete what no image name reaches any more, and leftovers of interrupted writes.
    Gc,
}

pub async fn run(a: ImageArgs) -> anyhow::Result<ExitCode> {
    let section = settings()?;
    let root = a.root.clone().unwrap_or_else(|| section.root_dir());
    let store = section.open_store(root)?;
    match a.command {
        ImageCommand::Pull { reference } => {
            let r = parse(&reference)?;
            let s = store.pull(&r, &section.credentials()).await?;
            println!("{}", line(&s));
        }
        ImageCommand::Import { path, tag } => {
            let tag = tag.as_deref().map(parse).transpose()?;
            for s in store.import(&path, tag.as_ref()).await? {
                println!("{}", line(&s));
            }
        }
        ImageCommand::Ls { json } => {
            for s in store.list().await? {
                if json {
                    println!("{}", serde_json::to_string(&summary_json(&s))?);
                } else {
                    println!("{}", line(&s));
                }
            }
        }
        ImageCommand::Rm { reference } => {
            store.remove(&parse(&reference)?).await?;
            println!("removed {reference}");
        }
        ImageCommand::Gc => {
            let r = store.gc().await?;
            println!(
                "removed {} blobs, {} layers, {} root filesystems, {} leftovers; {} bytes freed",
                r.blobs_removed, r.layers_removed, r.rootfs_removed, r.temp_removed, r.bytes_freed
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `images.*` of the configuration (defaults without a file).
fn settings() -> anyhow::Result<ImagesSection> {
    let cfg = Config::load()
        .context("loading configuration")?
        .validate()
        .context("invalid configuration")?;
    Ok(cfg.images.clone())
}

fn parse(reference: &str) -> anyhow::Result<ImageRef> {
    Ok(ImageRef::parse(reference)?)
}

fn line(s: &ImageSummary) -> String {
    format!(
        "{}  {}  {} layers  {} bytes",
        s.names.join(","),
        s.manifest_digest,
        s.layers,
        s.size
    )
}

fn summary_json(s: &ImageSummary) -> serde_json::Value {
    serde_json::json!({
        "names": s.names,
        "manifest_digest": s.manifest_digest.to_string(),
        "config_digest": s.config_digest.to_string(),
        "size": s.size,
        "created": s.created,
        "layers": s.layers,
    })
}
