//! Garbage collection: everything not reachable from a name goes, and so does everything a
//! crash left in `tmp/` or as a temp file next to the index. Runs under the exclusive store
//! lock, so nothing it removes is in use by a pull, import or rootfs build of this store.

use std::collections::BTreeSet;
use std::fs;

use crate::error::ImageError;
use crate::fsutil::{freeable_bytes, remove_any, sorted_entries};
use crate::layout::{Layout, StoredImage};
use crate::refs;

/// What a collection removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    pub blobs_removed: usize,
    pub layers_removed: usize,
    pub rootfs_removed: usize,
    /// Leftovers of interrupted pulls, imports and writes.
    pub temp_removed: usize,
    /// Disk space given back (files no other entry of the store still links to).
    pub bytes_freed: u64,
}

pub(crate) fn collect(layout: &Layout) -> Result<GcReport, ImageError> {
    let ctx = "collecting garbage";
    let _refs_lock = refs::lock(layout)?;
    let index = refs::load(layout)?;
    let mut blobs = BTreeSet::new();
    let mut layers = BTreeSet::new();
    let mut rootfs = BTreeSet::new();
    for (name, entry) in &index.refs {
        // A name whose image cannot be read would make its blobs look unreachable: stop rather
        // than delete what might be recoverable.
        let image = StoredImage::load(layout, &entry.manifest).map_err(|e| {
            ImageError::corrupt(
                format!("image {name}"),
                format!("{e}; remove the name and run gc again"),
            )
        })?;
        blobs.insert(entry.manifest.hex().to_string());
        rootfs.insert(entry.manifest.hex().to_string());
        blobs.insert(image.manifest.config.digest.hex().to_string());
        for l in &image.manifest.layers {
            blobs.insert(l.digest.hex().to_string());
        }
        for d in &image.config.rootfs.diff_ids {
            layers.insert(d.hex().to_string());
        }
    }

    let mut report = GcReport::default();
    // Root filesystems first: their files are links into the layers, so space only comes back
    // once the layer goes too, and counting in this order counts each byte once.
    let sweeps: [(_, _, &mut usize); 3] = [
        (layout.rootfs_dir(), &rootfs, &mut report.rootfs_removed),
        (layout.layers_dir(), &layers, &mut report.layers_removed),
        (layout.blobs_dir(), &blobs, &mut report.blobs_removed),
    ];
    let mut freed = 0;
    let mut temp = 0;
    for (dir, keep, count) in sweeps {
        for e in sorted_entries(&dir).map_err(ImageError::io(ctx))? {
            let name = e.file_name().to_string_lossy().into_owned();
            if keep.contains(&name) {
                continue;
            }
            let path = e.path();
            freed += freeable_bytes(&path);
            remove_any(&path).map_err(ImageError::io(ctx))?;
            if crate::digest::Digest::from_hex(&name).is_ok() {
                *count += 1;
            } else {
                temp += 1;
            }
        }
    }
    for e in sorted_entries(&layout.tmp_dir()).map_err(ImageError::io(ctx))? {
        freed += freeable_bytes(&e.path());
        remove_any(&e.path()).map_err(ImageError::io(ctx))?;
        temp += 1;
    }
    for e in sorted_entries(&layout.refs_dir()).map_err(ImageError::io(ctx))? {
        if !refs::is_live_file(&e.file_name().to_string_lossy()) {
            fs::remove_file(e.path()).map_err(ImageError::io(ctx))?;
            temp += 1;
        }
    }
    report.bytes_freed = freed;
    report.temp_removed = temp;
    Ok(report)
}

#[cfg(test)]
#[path = "gc_tests.rs"]
mod tests;
