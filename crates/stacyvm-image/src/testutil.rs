//! Test helpers shared by the unit tests and (through `#[path]`) the integration tests: layer
//! tars built entry by entry, including entries a well-behaved tar writer refuses to write.
//! Only std, tar, flate2 and ring, so it compiles in both places.

#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::io::Write;

/// Builds an uncompressed layer tar.
pub struct LayerBuilder {
    b: tar::Builder<Vec<u8>>,
}

impl Default for LayerBuilder {
    fn default() -> Self {
        LayerBuilder::new()
    }
}

impl LayerBuilder {
    pub fn new() -> Self {
        LayerBuilder {
            b: tar::Builder::new(Vec::new()),
        }
    }

    fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_mtime(1_700_000_000);
        h.set_uid(0);
        h.set_gid(0);
        h
    }

    /// Writes `path` straight into the header's name field, bypassing tar's own checks, so
    /// tests can build hostile archives (`../x`, `/etc/x`).
    fn append_raw(&mut self, mut h: tar::Header, path: &str, link: Option<&str>, data: &[u8]) {
        let name = &mut h.as_old_mut().name;
        name.fill(0);
        name[..path.len()].copy_from_slice(path.as_bytes());
        if let Some(l) = link {
            let ln = &mut h.as_old_mut().linkname;
            ln.fill(0);
            ln[..l.len()].copy_from_slice(l.as_bytes());
        }
        h.set_cksum();
        self.b.append(&h, data).expect("append");
    }

    pub fn dir(mut self, path: &str, mode: u32) -> Self {
        let h = Self::header(tar::EntryType::Directory, mode, 0);
        self.append_raw(h, &format!("{path}/"), None, &[]);
        self
    }

    pub fn file(mut self, path: &str, data: &[u8], mode: u32) -> Self {
        let h = Self::header(tar::EntryType::Regular, mode, data.len() as u64);
        self.append_raw(h, path, None, data);
        self
    }

    /// A regular file at a path no checked writer would accept.
    pub fn raw_file(self, path: &str, data: &[u8]) -> Self {
        self.file(path, data, 0o644)
    }

    /// An OCI whiteout: deletes `name` (a path) from the layers below.
    pub fn whiteout(self, path: &str) -> Self {
        let (dir, name) = match path.rsplit_once('/') {
            Some((d, n)) => (format!("{d}/"), n),
            None => (String::new(), path),
        };
        self.file(&format!("{dir}.wh.{name}"), b"", 0o644)
    }

    /// Marks directory `dir` opaque: the layers below contribute nothing to it.
    pub fn opaque(self, dir: &str) -> Self {
        self.file(&format!("{dir}/.wh..wh..opq"), b"", 0o644)
    }

    pub fn symlink(mut self, path: &str, target: &str) -> Self {
        let h = Self::header(tar::EntryType::Symlink, 0o777, 0);
        self.append_raw(h, path, Some(target), &[]);
        self
    }

    pub fn hardlink(mut self, path: &str, target: &str) -> Self {
        let h = Self::header(tar::EntryType::Link, 0o644, 0);
        self.append_raw(h, path, Some(target), &[]);
        self
    }

    pub fn build(self) -> Vec<u8> {
        self.b.into_inner().expect("finish tar")
    }
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).expect("gzip");
    e.finish().expect("gzip")
}

/// `sha256:<hex>` of `data`.
pub fn sha256(data: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, data);
    let hex: String = d.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}
