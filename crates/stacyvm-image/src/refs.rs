//! The name index: `refs/index.json` maps canonical image names to manifest digests. One small
//! JSON file rewritten whole (temp + rename) under `refs/lock`, so readers never see a torn
//! index and two writers never lose each other's update.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::error::ImageError;
use crate::fsutil::{write_atomic, FileLock};
use crate::layout::Layout;

const INDEX_FILE: &str = "index.json";
const VERSION: u32 = 1;

#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct RefIndex {
    pub version: u32,
    pub refs: BTreeMap<String, RefEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RefEntry {
    pub manifest: Digest,
    /// When the name was (last) pointed at this manifest, seconds since the epoch.
    pub added_unix: u64,
}

impl RefEntry {
    pub(crate) fn now(manifest: Digest) -> Self {
        let added_unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        RefEntry {
            manifest,
            added_unix,
        }
    }
}

/// The current index (empty when none was written yet).
pub(crate) fn load(layout: &Layout) -> Result<RefIndex, ImageError> {
    let path = layout.refs_dir().join(INDEX_FILE);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok(RefIndex {
                version: VERSION,
                refs: BTreeMap::new(),
            })
        }
        Err(e) => return Err(ImageError::io("reading refs/index.json")(e)),
    };
    let index: RefIndex = serde_json::from_slice(&bytes)
        .map_err(|e| ImageError::corrupt("refs/index.json", e.to_string()))?;
    if index.version != VERSION {
        return Err(ImageError::unsupported(format!(
            "refs/index.json version {}",
            index.version
        )));
    }
    Ok(index)
}

/// Holds the index lock (blocking) while `f` edits the index, then writes it back.
pub(crate) fn update<T>(
    layout: &Layout,
    f: impl FnOnce(&mut RefIndex) -> Result<T, ImageError>,
) -> Result<T, ImageError> {
    let dir = layout.refs_dir();
    let _lock = lock(layout)?;
    let mut index = load(layout)?;
    let out = f(&mut index)?;
    let bytes = serde_json::to_vec_pretty(&index)
        .map_err(|e| ImageError::io("encoding refs/index.json")(io::Error::other(e)))?;
    write_atomic(&dir, INDEX_FILE, &bytes).map_err(ImageError::io("writing refs/index.json"))?;
    Ok(out)
}

/// The index lock alone, for gc's sweep of `refs/`.
pub(crate) fn lock(layout: &Layout) -> Result<FileLock, ImageError> {
    FileLock::acquire(&layout.refs_dir().join("lock"), true)
        .map_err(ImageError::io("locking refs/index.json"))
}

/// Whether `name` in `refs/` is one of ours rather than a leftover temp file.
pub(crate) fn is_live_file(name: &str) -> bool {
    name == INDEX_FILE || name == "lock"
}
