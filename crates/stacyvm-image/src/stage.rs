//! A staging area for one pull or import. Blobs are downloaded or copied into `tmp/txn-*`,
//! verified, and their layers unpacked there; only when everything checked out does `commit`
//! rename them into `blobs/` and `layers/` and, last, point the names at the manifest. Dropping
//! a `Staging` (any error, a cancelled future) removes the directory, so a failed pull leaves
//! nothing behind; a crash leaves `tmp/txn-*`, which gc removes.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::PathBuf;

use crate::digest::{Digest, Sha256};
use crate::error::ImageError;
use crate::fsutil::{fsync_dir, syncfs};
use crate::layout::{BlobSource, Layout, StoredImage};
use crate::refs::{self, RefEntry};
use crate::spec::{OCI_CONFIG, OCI_MANIFEST};
use crate::unpack::unpack_layer;

/// Config media types of container images (anything else is an OCI artifact, not runnable).
const IMAGE_CONFIGS: &[&str] = &[OCI_CONFIG, "application/vnd.docker.container.image.v1+json"];
const FOREIGN_LAYER: &str = "foreign";

pub(crate) struct Staging {
    layout: Layout,
    dir: tempfile::TempDir,
    blobs: BTreeMap<Digest, PathBuf>,
    layers: BTreeMap<Digest, PathBuf>,
    seq: u64,
}

impl BlobSource for Staging {
    fn blob_path(&self, d: &Digest) -> Option<PathBuf> {
        self.blobs
            .get(d)
            .cloned()
            .or_else(|| self.layout.blob_path(d))
    }
}

impl Staging {
    pub(crate) fn new(layout: &Layout) -> Result<Self, ImageError> {
        let dir = tempfile::Builder::new()
            .prefix("txn-")
            .tempdir_in(layout.tmp_dir())
            .map_err(ImageError::io("creating a staging directory under tmp/"))?;
        Ok(Staging {
            layout: layout.clone(),
            dir,
            blobs: BTreeMap::new(),
            layers: BTreeMap::new(),
            seq: 0,
        })
    }

    pub(crate) fn has_blob(&self, d: &Digest) -> bool {
        self.blob_path(d).is_some()
    }

    /// A fresh path inside the staging directory.
    pub(crate) fn scratch_path(&mut self, prefix: &str) -> PathBuf {
        self.seq += 1;
        self.dir.path().join(format!("{prefix}-{}", self.seq))
    }

    /// Registers a file already inside the staging directory whose content hashes to `d`.
    pub(crate) fn adopt(&mut self, d: Digest, path: PathBuf) {
        self.blobs.entry(d).or_insert(path);
    }

    /// Copies `r` into the staging area, checking digest and size when they are known, and
    /// returns the content digest. Read errors that mean bad data are `Corrupt`.
    pub(crate) fn stage_reader(
        &mut self,
        mut r: impl Read,
        expected: Option<(&Digest, u64)>,
        what: &str,
    ) -> Result<Digest, ImageError> {
        let path = self.scratch_path("blob");
        let mut out = File::create(&path).map_err(ImageError::io(format!("staging {what}")))?;
        let mut hash = Sha256::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match r.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof
                    ) =>
                {
                    return Err(ImageError::corrupt(what, e.to_string()))
                }
                Err(e) => return Err(ImageError::io(format!("reading {what}"))(e)),
            };
            hash.update(&buf[..n]);
            if let Some((d, size)) = expected {
                if hash.len() > size {
                    return Err(size_mismatch(what, d, size, hash.len()));
                }
            }
            out.write_all(&buf[..n])
                .map_err(ImageError::io(format!("staging {what}")))?;
        }
        let len = hash.len();
        let actual = hash.finish();
        if let Some((d, size)) = expected {
            check(what, d, size, &actual, len)?;
        }
        self.adopt(actual.clone(), path);
        Ok(actual)
    }

    pub(crate) fn stage_bytes(
        &mut self,
        bytes: &[u8],
        expected: Option<(&Digest, u64)>,
        what: &str,
    ) -> Result<Digest, ImageError> {
        self.stage_reader(bytes, expected, what)
    }

    /// Checks that the image at `manifest` is complete and unpacks the layers the store does not
    /// have yet. `name` is used in error messages.
    pub(crate) fn prepare(&mut self, manifest: &Digest, name: &str) -> Result<(), ImageError> {
        let image = StoredImage::load(self, manifest)?;
        let config_type = image.manifest.config.media_type.as_str();
        if !IMAGE_CONFIGS.contains(&config_type) {
            return Err(ImageError::unsupported(format!(
                "artifact type {config_type:?} of {name} (not a container image)"
            )));
        }
        for (layer, diff_id) in image
            .manifest
            .layers
            .iter()
            .zip(&image.config.rootfs.diff_ids)
        {
            let what = format!("layer {} of {name}", layer.digest);
            if layer.media_type.contains(FOREIGN_LAYER) {
                return Err(ImageError::unsupported(format!("foreign {what}")));
            }
            let blob = self
                .blob_path(&layer.digest)
                .ok_or_else(|| ImageError::not_found(what.clone()))?;
            if self.layers.contains_key(diff_id) || self.layout.layer(diff_id).is_dir() {
                continue;
            }
            let dest = self.scratch_path("layer");
            fs::create_dir(&dest).map_err(ImageError::io(format!("unpacking {what}")))?;
            unpack_layer(&blob, &dest, diff_id, &what)?;
            self.layers.insert(diff_id.clone(), dest);
        }
        Ok(())
    }

    /// Moves staged blobs and layers into the store, then points each name at its manifest.
    /// Every image must have gone through `prepare`.
    pub(crate) fn commit(self, names: &[(String, Digest)]) -> Result<(), ImageError> {
        let ctx = "committing to the store";
        syncfs(self.dir.path()).map_err(ImageError::io(ctx))?;
        for (d, path) in &self.blobs {
            fs::rename(path, self.layout.blob(d)).map_err(ImageError::io(ctx))?;
        }
        fsync_dir(&self.layout.blobs_dir()).map_err(ImageError::io(ctx))?;
        for (diff_id, path) in &self.layers {
            let dest = self.layout.layer(diff_id);
            match fs::rename(path, &dest) {
                Ok(()) => {}
                // Another pull unpacked the same layer first; theirs is as good as ours.
                Err(_) if dest.is_dir() => {}
                Err(e) => return Err(ImageError::io(ctx)(e)),
            }
        }
        fsync_dir(&self.layout.layers_dir()).map_err(ImageError::io(ctx))?;
        refs::update(&self.layout, |index| {
            for (name, manifest) in names {
                index
                    .refs
                    .insert(name.clone(), RefEntry::now(manifest.clone()));
            }
            Ok(())
        })
    }
}

fn size_mismatch(what: &str, d: &Digest, size: u64, got: u64) -> ImageError {
    ImageError::DigestMismatch {
        what: what.to_string(),
        expected: format!("{d} ({size} bytes)"),
        actual: format!("{got} bytes or more"),
    }
}

/// Compares content against its descriptor: size first (cheap, and a clearer message).
pub(crate) fn check(
    what: &str,
    d: &Digest,
    size: u64,
    actual: &Digest,
    len: u64,
) -> Result<(), ImageError> {
    if len != size {
        return Err(ImageError::DigestMismatch {
            what: what.to_string(),
            expected: format!("{d} ({size} bytes)"),
            actual: format!("{actual} ({len} bytes)"),
        });
    }
    if actual != d {
        return Err(ImageError::DigestMismatch {
            what: what.to_string(),
            expected: d.to_string(),
            actual: actual.to_string(),
        });
    }
    Ok(())
}

/// A manifest for images that arrive without one (legacy `docker save`), written the same way
/// every time so re-importing gives the same digest.
pub(crate) fn synthesize_manifest(
    config: crate::spec::Descriptor,
    layers: Vec<crate::spec::Descriptor>,
) -> Result<Vec<u8>, ImageError> {
    let m = crate::spec::Manifest {
        schema_version: 2,
        media_type: Some(OCI_MANIFEST.to_string()),
        config,
        layers,
    };
    serde_json::to_vec(&m).map_err(|e| ImageError::io("encoding a manifest")(io::Error::other(e)))
}
