//! Unpacking one layer tar (plain or gzip) into a directory, refusing anything that would write
//! outside it. Whiteout markers (`.wh.*`) are kept as plain files; `flatten` interprets them.

use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::{lchown, symlink, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tar::EntryType;

use crate::digest::{Digest, HashingReader};
use crate::error::ImageError;
use crate::fsutil::{ensure_dir, remove_any, resolve_nofollow, safe_relative, NonDir};

const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];
const XZ_MAGIC: &[u8] = &[0xfd, b'7', b'z', b'X', b'Z', 0x00];
const BZIP2_MAGIC: &[u8] = b"BZh";

/// Unpacks the layer blob at `blob` into the empty directory `dest` and checks that the
/// uncompressed stream hashes to `diff_id`. `what` names the layer in errors.
pub(crate) fn unpack_layer(
    blob: &Path,
    dest: &Path,
    diff_id: &Digest,
    what: &str,
) -> Result<(), ImageError> {
    let file = File::open(blob).map_err(ImageError::io(format!("opening {what}")))?;
    let mut buffered = BufReader::with_capacity(64 * 1024, file);
    let head = buffered
        .fill_buf()
        .map_err(ImageError::io(format!("reading {what}")))?;
    // Sniff rather than trust the media type: `docker save` and OCI layouts label plain tars
    // inconsistently, and the bytes cannot lie.
    let decoded: Box<dyn Read> = if head.starts_with(GZIP_MAGIC) {
        Box::new(flate2::read::MultiGzDecoder::new(buffered))
    } else if head.starts_with(ZSTD_MAGIC) {
        return Err(ImageError::unsupported(format!(
            "zstd compression of {what}"
        )));
    } else if head.starts_with(XZ_MAGIC) || head.starts_with(BZIP2_MAGIC) {
        return Err(ImageError::unsupported(format!(
            "xz/bzip2 compression of {what}"
        )));
    } else {
        Box::new(buffered)
    };
    let mut hashing = HashingReader::new(decoded);
    let mut unpacker = Unpacker {
        dest,
        what,
        dirs: Vec::new(),
        chown: true,
    };
    {
        let mut archive = tar::Archive::new(&mut hashing);
        let entries = archive
            .entries()
            .map_err(|e| ImageError::corrupt(what, e.to_string()))?;
        for entry in entries {
            let entry = entry.map_err(|e| ImageError::corrupt(what, e.to_string()))?;
            unpacker.entry(entry)?;
        }
    }
    let (actual, _) = hashing
        .finish()
        .map_err(|e| ImageError::corrupt(what, e.to_string()))?;
    if &actual != diff_id {
        return Err(ImageError::DigestMismatch {
            what: format!("uncompressed {what}"),
            expected: diff_id.to_string(),
            actual: actual.to_string(),
        });
    }
    unpacker.finish_dirs()
}

struct Unpacker<'a> {
    dest: &'a Path,
    what: &'a str,
    /// Directory modes, applied last so a read-only directory does not block its own entries.
    dirs: Vec<(PathBuf, u32)>,
    /// Cleared after the first EPERM: only root can give files away, and an unprivileged store
    /// keeps its own ownership.
    chown: bool,
}

impl Unpacker<'_> {
    fn entry<R: Read>(&mut self, mut e: tar::Entry<'_, R>) -> Result<(), ImageError> {
        let what = self.what;
        let raw = e
            .path()
            .map_err(|err| ImageError::corrupt(what, err.to_string()))?
            .into_owned();
        let Some(rel) = safe_relative(&raw) else {
            return Err(ImageError::corrupt(
                what,
                format!("entry {} escapes the layer", raw.display()),
            ));
        };
        let kind = e.header().entry_type();
        if rel.as_os_str().is_empty() || !is_filesystem_entry(kind) {
            return Ok(());
        }
        let io_ctx = || format!("unpacking {} of {what}", rel.display());
        let parent = rel.parent().unwrap_or(Path::new(""));
        ensure_dir(self.dest, parent, NonDir::Fail).map_err(|err| {
            if err.kind() == io::ErrorKind::InvalidData {
                ImageError::corrupt(
                    what,
                    format!("entry {} goes through a symlink or file", rel.display()),
                )
            } else {
                ImageError::io(io_ctx())(err)
            }
        })?;
        let target = self.dest.join(&rel);
        let header = e.header();
        let mode = header.mode().unwrap_or(0o644) & 0o7777;
        let owner = (header.uid().ok(), header.gid().ok());
        let mtime = header.mtime().ok();
        let device = (
            header.device_major().ok().flatten(),
            header.device_minor().ok().flatten(),
        );
        match kind {
            EntryType::Directory => {
                match fs::symlink_metadata(&target) {
                    Ok(m) if m.is_dir() => {}
                    _ => {
                        remove_any(&target).map_err(ImageError::io(io_ctx()))?;
                        fs::create_dir(&target).map_err(ImageError::io(io_ctx()))?;
                    }
                }
                self.set_owner(&target, owner)
                    .map_err(ImageError::io(io_ctx()))?;
                self.dirs.push((target, mode));
            }
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                remove_any(&target).map_err(ImageError::io(io_ctx()))?;
                let mut f = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&target)
                    .map_err(ImageError::io(io_ctx()))?;
                copy_entry(&mut e, &mut f, what, &io_ctx)?;
                self.set_owner(&target, owner)
                    .map_err(ImageError::io(io_ctx()))?;
                // After chown, which clears set-id bits.
                f.set_permissions(Permissions::from_mode(mode))
                    .map_err(ImageError::io(io_ctx()))?;
                if let Some(secs) = mtime {
                    let t = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
                    f.set_modified(t).map_err(ImageError::io(io_ctx()))?;
                }
            }
            EntryType::Symlink => {
                let link = link_name(&e, what)?;
                remove_any(&target).map_err(ImageError::io(io_ctx()))?;
                // The target is stored, never followed here, so it may point anywhere: it is
                // resolved inside the sandbox's root at run time.
                symlink(&link, &target).map_err(ImageError::io(io_ctx()))?;
                self.set_owner(&target, owner)
                    .map_err(ImageError::io(io_ctx()))?;
            }
            EntryType::Link => {
                let link = link_name(&e, what)?;
                let escapes = || {
                    ImageError::corrupt(
                        what,
                        format!("hard link {} escapes the layer", rel.display()),
                    )
                };
                let src_rel = safe_relative(&link)
                    .filter(|p| !p.as_os_str().is_empty())
                    .ok_or_else(escapes)?;
                let src = resolve_nofollow(self.dest, &src_rel)
                    .map_err(ImageError::io(io_ctx()))?
                    .ok_or_else(escapes)?;
                match fs::symlink_metadata(&src) {
                    Ok(m) if !m.is_dir() => {}
                    _ => {
                        return Err(ImageError::corrupt(
                            what,
                            format!("hard link {} has no earlier target", rel.display()),
                        ))
                    }
                }
                if src != target {
                    remove_any(&target).map_err(ImageError::io(io_ctx()))?;
                    fs::hard_link(&src, &target).map_err(ImageError::io(io_ctx()))?;
                }
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                remove_any(&target).map_err(ImageError::io(io_ctx()))?;
                let file_type = match kind {
                    EntryType::Char => rustix::fs::FileType::CharacterDevice,
                    EntryType::Block => rustix::fs::FileType::BlockDevice,
                    _ => rustix::fs::FileType::Fifo,
                };
                let dev = rustix::fs::makedev(device.0.unwrap_or(0), device.1.unwrap_or(0));
                let made = rustix::fs::mknodat(
                    rustix::fs::CWD,
                    &target,
                    file_type,
                    rustix::fs::Mode::from_raw_mode(mode),
                    dev,
                );
                match made {
                    Ok(()) => self
                        .set_owner(&target, owner)
                        .map_err(ImageError::io(io_ctx()))?,
                    // Device nodes need root; sandboxes get their /dev from the provider anyway.
                    Err(rustix::io::Errno::PERM) => {
                        tracing::debug!(entry = %rel.display(), "skipping device node (not root)");
                    }
                    Err(err) => return Err(ImageError::io(io_ctx())(err.into())),
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn set_owner(&mut self, path: &Path, owner: (Option<u64>, Option<u64>)) -> io::Result<()> {
        if !self.chown {
            return Ok(());
        }
        let uid = owner.0.and_then(|u| u32::try_from(u).ok());
        let gid = owner.1.and_then(|g| u32::try_from(g).ok());
        match lchown(path, uid, gid) {
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                self.chown = false;
                Ok(())
            }
            other => other,
        }
    }

    fn finish_dirs(self) -> Result<(), ImageError> {
        // Deepest first, so a parent turning read-only comes after its children.
        for (dir, mode) in self.dirs.iter().rev() {
            fs::set_permissions(dir, Permissions::from_mode(*mode)).map_err(ImageError::io(
                format!("setting directory modes of {}", self.what),
            ))?;
        }
        Ok(())
    }
}

/// Entry types that become files; pax/GNU extension headers are metadata.
fn is_filesystem_entry(kind: EntryType) -> bool {
    matches!(
        kind,
        EntryType::Directory
            | EntryType::Regular
            | EntryType::Continuous
            | EntryType::GNUSparse
            | EntryType::Symlink
            | EntryType::Link
            | EntryType::Char
            | EntryType::Block
            | EntryType::Fifo
    )
}

fn link_name<R: Read>(e: &tar::Entry<'_, R>, what: &str) -> Result<PathBuf, ImageError> {
    match e.link_name() {
        Ok(Some(l)) => Ok(l.into_owned()),
        Ok(None) => Err(ImageError::corrupt(what, "link entry without a target")),
        Err(err) => Err(ImageError::corrupt(what, err.to_string())),
    }
}

/// Copies entry data: a failed read is a corrupt layer (or archive), a failed write a local
/// i/o error.
pub(crate) fn copy_entry(
    e: &mut impl Read,
    out: &mut File,
    what: &str,
    io_ctx: &dyn Fn() -> String,
) -> Result<(), ImageError> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match e.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(ImageError::corrupt(what, err.to_string())),
        };
        out.write_all(&buf[..n]).map_err(ImageError::io(io_ctx()))?;
    }
}

#[cfg(test)]
#[path = "unpack_tests.rs"]
mod tests;
