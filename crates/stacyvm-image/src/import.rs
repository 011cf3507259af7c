//! Importing images without a registry: `docker save` archives (the legacy layout and the OCI
//! layout Docker 25+ writes inside them, optionally gzip-compressed) and OCI image layout
//! directories. Every blob is checked against the digest that names it; legacy layers, which
//! are named by nothing verifiable, are checked against the config's diff_ids when unpacked.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use crate::digest::{Digest, HashingReader};
use crate::error::ImageError;
use crate::fsutil::safe_relative;
use crate::reference::ImageRef;
use crate::spec::{
    Descriptor, DockerSaveEntry, Index, ManifestOrIndex, ANNOTATION_IMAGE_NAME,
    ANNOTATION_REF_NAME, OCI_CONFIG, OCI_LAYER_TAR,
};
use crate::stage::{check, synthesize_manifest, Staging};

/// Symlink hops followed inside an archive (legacy `docker save` links duplicate layers).
const MAX_LINK_HOPS: usize = 8;

/// Stages everything at `path` and returns `(name, manifest digest)` pairs to commit.
pub(crate) fn import(
    staging: &mut Staging,
    path: &Path,
    tag: Option<&ImageRef>,
) -> Result<Vec<(String, Digest)>, ImageError> {
    let shown = path.display().to_string();
    let meta = fs::metadata(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => ImageError::not_found(shown.clone()),
        _ => ImageError::io(format!("reading {shown}"))(e),
    })?;
    let source = if meta.is_dir() {
        Source::Dir(path.to_path_buf())
    } else {
        extract(staging, path, &shown)?
    };
    let images = if source.exists("index.json") && source.exists("oci-layout") {
        oci_layout(staging, &source, &shown)?
    } else if source.exists("manifest.json") {
        docker_legacy(staging, &source, &shown)?
    } else {
        return Err(ImageError::corrupt(
            shown,
            "neither an OCI layout (oci-layout, index.json) nor a docker save archive (manifest.json)",
        ));
    };
    if images.is_empty() {
        return Err(ImageError::not_found(format!("images in {shown}")));
    }
    if tag.is_some() && images.len() > 1 {
        return Err(ImageError::InvalidReference {
            reference: tag.map(ToString::to_string).unwrap_or_default(),
            reason: "a tag can only be given when the archive holds one image",
        });
    }
    let mut out = Vec::new();
    for (mut names, manifest) in images {
        if let Some(t) = tag {
            names.push(t.clone());
        }
        if names.is_empty() {
            return Err(ImageError::InvalidReference {
                reference: format!("{shown} (image {})", manifest.short()),
                reason: "the archive does not name this image; give it a tag",
            });
        }
        staging.prepare(&manifest, &names[0].to_string())?;
        out.extend(names.into_iter().map(|n| (n.to_string(), manifest.clone())));
    }
    Ok(out)
}

/// The files an import reads: a directory on disk, or an archive unpacked into staging.
enum Source {
    Dir(PathBuf),
    Archive {
        files: HashMap<PathBuf, (PathBuf, Digest, u64)>,
        links: HashMap<PathBuf, PathBuf>,
    },
}

impl Source {
    fn exists(&self, rel: &str) -> bool {
        match self {
            Source::Dir(d) => d.join(rel).is_file(),
            Source::Archive { .. } => self.archive_file(rel).is_some(),
        }
    }

    /// Resolves `rel` inside an archive, following its symlinks without leaving it.
    fn archive_file(&self, rel: &str) -> Option<&(PathBuf, Digest, u64)> {
        let Source::Archive { files, links } = self else {
            return None;
        };
        let mut cur = safe_relative(Path::new(rel))?;
        for _ in 0..MAX_LINK_HOPS {
            if let Some(f) = files.get(&cur) {
                return Some(f);
            }
            let target = links.get(&cur)?;
            cur = join_inside(cur.parent().unwrap_or(Path::new("")), target)?;
        }
        None
    }

    fn read_small(&self, rel: &str, shown: &str) -> Result<Vec<u8>, ImageError> {
        let what = format!("{rel} in {shown}");
        let path = match self {
            Source::Dir(d) => {
                let rel = safe_relative(Path::new(rel))
                    .ok_or_else(|| ImageError::corrupt(&what, "path escapes the layout"))?;
                d.join(rel)
            }
            Source::Archive { .. } => self
                .archive_file(rel)
                .map(|f| f.0.clone())
                .ok_or_else(|| ImageError::not_found(&what))?,
        };
        fs::read(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => ImageError::not_found(&what),
            _ => ImageError::io(format!("reading {what}"))(e),
        })
    }

    /// Puts the file at `rel` in staging, checked against `expected` when given.
    fn stage(
        &self,
        staging: &mut Staging,
        rel: &str,
        expected: Option<(&Digest, u64)>,
        shown: &str,
    ) -> Result<Digest, ImageError> {
        let what = format!("{rel} in {shown}");
        if let Some((d, _)) = expected {
            if staging.has_blob(d) {
                return Ok(d.clone());
            }
        }
        match self {
            Source::Dir(dir) => {
                let p = safe_relative(Path::new(rel))
                    .map(|r| dir.join(r))
                    .ok_or_else(|| ImageError::corrupt(&what, "path escapes the layout"))?;
                let f = File::open(&p).map_err(|e| match e.kind() {
                    io::ErrorKind::NotFound => ImageError::not_found(&what),
                    _ => ImageError::io(format!("reading {what}"))(e),
                })?;
                staging.stage_reader(f, expected, &what)
            }
            Source::Archive { .. } => {
                let (path, actual, len) = self
                    .archive_file(rel)
                    .ok_or_else(|| ImageError::not_found(&what))?;
                if let Some((d, size)) = expected {
                    check(&what, d, size, actual, *len)?;
                }
                staging.adopt(actual.clone(), path.clone());
                Ok(actual.clone())
            }
        }
    }
}

/// `base/target` with `..` resolved, or `None` when it climbs out of the archive.
fn join_inside(base: &Path, target: &Path) -> Option<PathBuf> {
    if target.is_absolute() {
        return None;
    }
    let mut out = base.to_path_buf();
    for c in target.components() {
        match c {
            std::path::Component::Normal(n) => out.push(n),
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            _ => return None,
        }
    }
    Some(out)
}

/// Unpacks the regular files of the archive into staging, hashing each on the way (so blobs can
/// be adopted without a second copy), and records its symlinks.
fn extract(staging: &mut Staging, path: &Path, shown: &str) -> Result<Source, ImageError> {
    let file = File::open(path).map_err(ImageError::io(format!("reading {shown}")))?;
    let mut buffered = BufReader::new(file);
    let head = buffered
        .fill_buf()
        .map_err(ImageError::io(format!("reading {shown}")))?;
    let reader: Box<dyn Read> = if head.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::MultiGzDecoder::new(buffered))
    } else {
        Box::new(buffered)
    };
    let corrupt = |e: io::Error| ImageError::corrupt(shown, e.to_string());
    let mut archive = tar::Archive::new(reader);
    let mut files = HashMap::new();
    let mut links = HashMap::new();
    for entry in archive.entries().map_err(corrupt)? {
        let mut entry = entry.map_err(corrupt)?;
        let raw = entry.path().map_err(corrupt)?.into_owned();
        let Some(rel) = safe_relative(&raw) else {
            return Err(ImageError::corrupt(
                shown,
                format!("entry {} escapes the archive", raw.display()),
            ));
        };
        match entry.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let dest = staging.scratch_path("archive");
                let mut out =
                    File::create(&dest).map_err(ImageError::io(format!("unpacking {shown}")))?;
                let mut hashing = HashingReader::new(&mut entry);
                crate::unpack::copy_entry(&mut hashing, &mut out, shown, &|| {
                    format!("unpacking {shown}")
                })?;
                let (digest, len) = hashing.finish().map_err(corrupt)?;
                files.insert(rel, (dest, digest, len));
            }
            tar::EntryType::Symlink => {
                if let Ok(Some(target)) = entry.link_name() {
                    links.insert(rel, target.into_owned());
                }
            }
            _ => {}
        }
    }
    Ok(Source::Archive { files, links })
}

/// `blobs/sha256/<hex>` for a digest.
fn blob_rel(d: &Digest) -> String {
    format!("blobs/sha256/{}", d.hex())
}

/// An OCI image layout: `index.json` names manifests (or indexes) whose blobs sit under
/// `blobs/`. Names come from the index annotations, or from a Docker `manifest.json` alongside.
fn oci_layout(
    staging: &mut Staging,
    src: &Source,
    shown: &str,
) -> Result<Vec<(Vec<ImageRef>, Digest)>, ImageError> {
    let index_bytes = src.read_small("index.json", shown)?;
    let index: Index = serde_json::from_slice(&index_bytes)
        .map_err(|e| ImageError::corrupt(format!("index.json in {shown}"), e.to_string()))?;
    // Docker's own list of tags, keyed by config digest, when the archive came from docker save.
    let mut docker_tags: BTreeMap<String, Vec<String>> = BTreeMap::new();
    if src.exists("manifest.json") {
        for e in docker_entries(src, shown)? {
            let key = e.config.rsplit('/').next().unwrap_or_default().to_string();
            docker_tags.entry(key).or_default().extend(e.repo_tags);
        }
    }
    let mut images: Vec<(Vec<ImageRef>, Digest)> = Vec::new();
    for entry in &index.manifests {
        let (manifest, config) = stage_oci_image(staging, src, entry, shown)?;
        let mut names = Vec::new();
        for key in [ANNOTATION_IMAGE_NAME, ANNOTATION_REF_NAME] {
            // A bare tag in ref.name cannot be named without a repository; skip it.
            if let Some(n) = entry.annotations.get(key).filter(|n| n.contains('/')) {
                names.push(ImageRef::parse(n)?);
                break;
            }
        }
        for t in docker_tags.get(config.hex()).into_iter().flatten() {
            names.push(ImageRef::parse(t)?);
        }
        names.sort();
        names.dedup();
        match images.iter_mut().find(|(_, m)| *m == manifest) {
            Some((existing, _)) => existing.extend(names),
            None => images.push((names, manifest)),
        }
    }
    Ok(images)
}

/// Stages one index entry's image (resolving an index to linux/amd64); returns the manifest and
/// config digests.
fn stage_oci_image(
    staging: &mut Staging,
    src: &Source,
    entry: &Descriptor,
    shown: &str,
) -> Result<(Digest, Digest), ImageError> {
    let mut desc = entry.clone();
    for _ in 0..2 {
        let d = src.stage(
            staging,
            &blob_rel(&desc.digest),
            Some((&desc.digest, desc.size)),
            shown,
        )?;
        let what = format!("manifest {d} in {shown}");
        let bytes = crate::layout::read_json_blob(staging, &d, "manifest")?;
        match ManifestOrIndex::parse(&bytes, &what)? {
            ManifestOrIndex::Manifest(m) => {
                for b in std::iter::once(&m.config).chain(&m.layers) {
                    src.stage(
                        staging,
                        &blob_rel(&b.digest),
                        Some((&b.digest, b.size)),
                        shown,
                    )?;
                }
                return Ok((d, m.config.digest));
            }
            ManifestOrIndex::Index(i) => {
                desc = i.pick_host_platform().cloned().ok_or_else(|| {
                    ImageError::unsupported(format!(
                        "platform: {what} has no image for this platform"
                    ))
                })?;
            }
        }
    }
    Err(ImageError::unsupported(format!("nested index in {shown}")))
}

fn docker_entries(src: &Source, shown: &str) -> Result<Vec<DockerSaveEntry>, ImageError> {
    let bytes = src.read_small("manifest.json", shown)?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ImageError::corrupt(format!("manifest.json in {shown}"), e.to_string()))
}

/// The legacy `docker save` layout: `manifest.json` lists a config file and layer tars per
/// image. The store writes an OCI manifest for each so every image is stored the same way.
fn docker_legacy(
    staging: &mut Staging,
    src: &Source,
    shown: &str,
) -> Result<Vec<(Vec<ImageRef>, Digest)>, ImageError> {
    let mut images = Vec::new();
    for e in docker_entries(src, shown)? {
        // Config files are named after their digest (`<hex>.json` or `blobs/sha256/<hex>`):
        // check it.
        let named = digest_in_name(&e.config);
        let config = src.stage(staging, &e.config, None, shown)?;
        if let Some(n) = named.filter(|n| *n != config) {
            return Err(ImageError::DigestMismatch {
                what: format!("{} in {shown}", e.config),
                expected: n.to_string(),
                actual: config.to_string(),
            });
        }
        let config_desc = descriptor(
            OCI_CONFIG,
            config.clone(),
            blob_size(staging, &config, shown)?,
        );
        let mut layers = Vec::new();
        for l in &e.layers {
            let d = src.stage(staging, l, None, shown)?;
            if let Some(n) = digest_in_name(l).filter(|n| *n != d) {
                return Err(ImageError::DigestMismatch {
                    what: format!("{l} in {shown}"),
                    expected: n.to_string(),
                    actual: d.to_string(),
                });
            }
            layers.push(descriptor(
                OCI_LAYER_TAR,
                d.clone(),
                blob_size(staging, &d, shown)?,
            ));
        }
        let bytes = synthesize_manifest(config_desc, layers)?;
        let manifest = staging.stage_bytes(&bytes, None, "manifest")?;
        let names = e
            .repo_tags
            .iter()
            .map(|t| ImageRef::parse(t))
            .collect::<Result<Vec<_>, _>>()?;
        images.push((names, manifest));
    }
    Ok(images)
}

fn blob_size(staging: &Staging, d: &Digest, shown: &str) -> Result<u64, ImageError> {
    let p = crate::layout::BlobSource::blob_path(staging, d)
        .ok_or_else(|| ImageError::not_found(format!("blob {d} in {shown}")))?;
    fs::metadata(p)
        .map(|m| m.len())
        .map_err(ImageError::io(format!("reading {shown}")))
}

fn descriptor(media_type: &str, digest: Digest, size: u64) -> Descriptor {
    Descriptor {
        media_type: media_type.to_string(),
        digest,
        size,
        platform: None,
        annotations: BTreeMap::new(),
    }
}

/// The digest a file name claims: `blobs/sha256/<hex>` or `<hex>.json`.
fn digest_in_name(rel: &str) -> Option<Digest> {
    let base = rel.rsplit('/').next()?;
    let hex = base.strip_suffix(".json").unwrap_or(base);
    if rel.starts_with("blobs/sha256/") || base.ends_with(".json") {
        Digest::from_hex(hex).ok()
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_symlinks_resolve_inside_only() {
        assert_eq!(
            join_inside(Path::new("b"), Path::new("../a/layer.tar")),
            Some(PathBuf::from("a/layer.tar"))
        );
        assert_eq!(join_inside(Path::new(""), Path::new("../x")), None);
        assert_eq!(join_inside(Path::new("b"), Path::new("/etc/passwd")), None);
    }

    #[test]
    fn digests_in_docker_save_names() {
        let hex = "a".repeat(64);
        assert!(digest_in_name(&format!("{hex}.json")).is_some());
        assert!(digest_in_name(&format!("blobs/sha256/{hex}")).is_some());
        assert!(digest_in_name(&format!("{hex}/layer.tar")).is_none());
    }
}
