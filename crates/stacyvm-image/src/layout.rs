//! Where things live under the store root, and reading the JSON blobs an image is made of.
//!
//! ```text
//! lock                       flock: shared by pull/import/rootfs, exclusive for gc
//! blobs/sha256/<hex>         content-addressed blobs (manifests, configs, layer tars)
//! layers/sha256/<diff-id>/   each layer unpacked once, keyed by its uncompressed digest
//! rootfs/<manifest-hex>/     flattened root filesystems, made on first use
//! refs/index.json            image name -> manifest digest
//! refs/lock                  flock serialising index.json updates
//! tmp/                       everything in progress; gc empties it
//! ```

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::digest::Digest;
use crate::error::ImageError;
use crate::spec::{ConfigFile, Manifest, ManifestOrIndex};

/// Manifests and configs are read whole; real ones are kilobytes.
const MAX_JSON_BLOB: u64 = 16 * 1024 * 1024;

#[derive(Clone, Debug)]
pub(crate) struct Layout {
    root: PathBuf,
}

impl Layout {
    pub(crate) fn new(root: PathBuf) -> Self {
        Layout { root }
    }

    pub(crate) fn create(&self) -> io::Result<()> {
        for d in [
            self.blobs_dir(),
            self.layers_dir(),
            self.rootfs_dir(),
            self.refs_dir(),
            self.tmp_dir(),
        ] {
            fs::create_dir_all(d)?;
        }
        Ok(())
    }

    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    pub(crate) fn lock_file(&self) -> PathBuf {
        self.root.join("lock")
    }

    pub(crate) fn blobs_dir(&self) -> PathBuf {
        self.root.join("blobs").join("sha256")
    }

    pub(crate) fn blob(&self, d: &Digest) -> PathBuf {
        self.blobs_dir().join(d.hex())
    }

    pub(crate) fn layers_dir(&self) -> PathBuf {
        self.root.join("layers").join("sha256")
    }

    pub(crate) fn layer(&self, diff_id: &Digest) -> PathBuf {
        self.layers_dir().join(diff_id.hex())
    }

    pub(crate) fn rootfs_dir(&self) -> PathBuf {
        self.root.join("rootfs")
    }

    pub(crate) fn rootfs(&self, manifest: &Digest) -> PathBuf {
        self.rootfs_dir().join(manifest.hex())
    }

    pub(crate) fn refs_dir(&self) -> PathBuf {
        self.root.join("refs")
    }

    pub(crate) fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }
}

/// Somewhere blobs can be found: the store itself, or a transaction that sees its own staged
/// blobs before the store's.
pub(crate) trait BlobSource {
    fn blob_path(&self, d: &Digest) -> Option<PathBuf>;
}

impl BlobSource for Layout {
    fn blob_path(&self, d: &Digest) -> Option<PathBuf> {
        let p = self.blob(d);
        p.is_file().then_some(p)
    }
}

/// Reads a manifest or config blob whole; `what` names it in errors.
pub(crate) fn read_json_blob(
    src: &dyn BlobSource,
    d: &Digest,
    what: &str,
) -> Result<Vec<u8>, ImageError> {
    let path = src
        .blob_path(d)
        .ok_or_else(|| ImageError::not_found(format!("{what} {d}")))?;
    let len = fs::metadata(&path)
        .map_err(ImageError::io(format!("reading {what} {d}")))?
        .len();
    if len > MAX_JSON_BLOB {
        return Err(ImageError::corrupt(
            format!("{what} {d}"),
            format!("{len} bytes is too large"),
        ));
    }
    fs::read(&path).map_err(ImageError::io(format!("reading {what} {d}")))
}

/// An image as stored: its manifest and parsed config.
pub(crate) struct StoredImage {
    pub manifest: Manifest,
    pub config: ConfigFile,
}

impl StoredImage {
    pub(crate) fn load(src: &dyn BlobSource, manifest: &Digest) -> Result<Self, ImageError> {
        let bytes = read_json_blob(src, manifest, "manifest")?;
        let manifest = match ManifestOrIndex::parse(&bytes, &format!("manifest {manifest}"))? {
            ManifestOrIndex::Manifest(m) => m,
            ManifestOrIndex::Index(_) => {
                return Err(ImageError::corrupt(
                    format!("manifest {manifest}"),
                    "an image name points at an index",
                ))
            }
        };
        let cd = &manifest.config.digest;
        let config = ConfigFile::parse(
            &read_json_blob(src, cd, "image config")?,
            &format!("image config {cd}"),
        )?;
        if config.rootfs.diff_ids.len() != manifest.layers.len() {
            return Err(ImageError::corrupt(
                format!("image config {cd}"),
                format!(
                    "{} diff_ids for {} layers",
                    config.rootfs.diff_ids.len(),
                    manifest.layers.len()
                ),
            ));
        }
        Ok(StoredImage { manifest, config })
    }

    /// Config plus layers, compressed, as registries and `docker image ls` count size.
    pub(crate) fn size(&self) -> u64 {
        self.manifest.config.size + self.manifest.layers.iter().map(|l| l.size).sum::<u64>()
    }
}
