//! Image references, parsed the way Docker parses them (`distribution/reference` rules).

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use crate::digest::Digest;
use crate::error::ImageError;

/// The registry Docker assumes when a name has no host part.
pub const DEFAULT_REGISTRY: &str = "docker.io";
const DEFAULT_TAG: &str = "latest";
/// Docker's limit on `host/path` (tag and digest excluded).
const MAX_NAME_LEN: usize = 255;
const MAX_TAG_LEN: usize = 128;

/// A parsed image reference: `registry/repository[:tag][@digest]`, always fully qualified
/// (`busybox` is `docker.io/library/busybox:latest`). When both a tag and a digest are given,
/// the digest decides what is pulled and the tag is kept for display, as Docker does.
/// In serde it is the reference text, parsed (and so validated) on the way in.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ImageRef {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

impl ImageRef {
    /// Parses `s` with Docker's rules; see the module tests for the accepted shapes.
    pub fn parse(s: &str) -> Result<Self, ImageError> {
        let bad = |reason: &'static str| ImageError::InvalidReference {
            reference: s.chars().take(300).collect(),
            reason,
        };
        if s.is_empty() {
            return Err(bad("empty reference"));
        }
        let (name_tag, digest) = match s.split_once('@') {
            Some((n, d)) => (n, Some(d.parse::<Digest>().map_err(|_| bad("bad digest"))?)),
            None => (s, None),
        };
        // A ':' after the last '/' starts the tag; earlier ones belong to host:port.
        let last_slash = name_tag.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match name_tag[last_slash..].find(':') {
            Some(i) => (
                &name_tag[..last_slash + i],
                Some(&name_tag[last_slash + i + 1..]),
            ),
            None => (name_tag, None),
        };
        if let Some(t) = tag {
            if !valid_tag(t) {
                return Err(bad("bad tag"));
            }
        }
        let (registry, path) = match name.split_once('/') {
            Some((first, rest)) if looks_like_host(first) => (first, rest),
            _ => (DEFAULT_REGISTRY, name),
        };
        if !valid_host(registry) {
            return Err(bad("bad registry host"));
        }
        let registry = if registry == "index.docker.io" {
            DEFAULT_REGISTRY
        } else {
            registry
        };
        if path.is_empty() || !path.split('/').all(valid_path_component) {
            return Err(bad("repository must be lowercase path components"));
        }
        if registry == DEFAULT_REGISTRY && is_hex64(path) && tag.is_none() {
            return Err(bad(
                "a 64-hex name is ambiguous; use sha256:<hex> after '@'",
            ));
        }
        let repository = if registry == DEFAULT_REGISTRY && !path.contains('/') {
            format!("library/{path}")
        } else {
            path.to_string()
        };
        if registry.len() + 1 + repository.len() > MAX_NAME_LEN {
            return Err(bad("name longer than 255 characters"));
        }
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_string()),
            (None, Some(_)) => None,
            (None, None) => Some(DEFAULT_TAG.to_string()),
        };
        Ok(ImageRef {
            registry: registry.to_string(),
            repository,
            tag,
            digest,
        })
    }

    /// `host[:port]`, with Docker Hub as `docker.io`.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The path inside the registry (`library/busybox`).
    pub fn repository(&self) -> &str {
        &self.repository
    }

    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// The same repository at `digest` (tag dropped): how an index entry is fetched.
    pub fn with_digest(&self, digest: Digest) -> Self {
        ImageRef {
            registry: self.registry.clone(),
            repository: self.repository.clone(),
            tag: None,
            digest: Some(digest),
        }
    }

    /// Whether the registry is on this machine, where plain HTTP is allowed without asking.
    pub fn is_loopback_registry(&self) -> bool {
        let host = host_without_port(&self.registry);
        host == "localhost"
            || host == "[::1]"
            || host.parse::<Ipv4Addr>().is_ok_and(|ip| ip.is_loopback())
    }
}

impl FromStr for ImageRef {
    type Err = ImageError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ImageRef::parse(s)
    }
}

impl TryFrom<String> for ImageRef {
    type Error = ImageError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        ImageRef::parse(&s)
    }
}

impl From<ImageRef> for String {
    fn from(r: ImageRef) -> String {
        r.to_string()
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ImageRef({self})")
    }
}

/// Docker's rule: the first component is a host if it has a '.' or ':', is `localhost`, or has
/// upper case (repository paths never do).
fn looks_like_host(first: &str) -> bool {
    first.contains(['.', ':']) || first == "localhost" || first.chars().any(char::is_uppercase)
}

fn host_without_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |i| &host[..=i]);
    }
    host.split_once(':').map_or(host, |(h, _)| h)
}

fn valid_host(host: &str) -> bool {
    let (name, port) = if host.starts_with('[') {
        match host.find(']') {
            Some(i) => (&host[..=i], host[i + 1..].strip_prefix(':')),
            None => return false,
        }
    } else {
        match host.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (host, None),
        }
    };
    if let Some(p) = port {
        if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
    }
    if let Some(inner) = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
        return inner.parse::<std::net::Ipv6Addr>().is_ok();
    }
    !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn valid_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-')) {
            return false;
        }
    }
    true
}

/// `[\w][\w.-]{0,127}`
fn valid_tag(t: &str) -> bool {
    let word = |x: u8| x.is_ascii_alphanumeric() || x == b'_';
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_TAG_LEN
        && word(b[0])
        && b.iter().all(|&x| word(x) || x == b'.' || x == b'-')
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(s: &str) -> String {
        ImageRef::parse(s)
            .unwrap_or_else(|e| panic!("{s}: {e}"))
            .to_string()
    }

    const D: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

    #[test]
    fn docker_hub_short_names_are_expanded() {
        assert_eq!(canon("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(canon("busybox:1.36"), "docker.io/library/busybox:1.36");
        assert_eq!(canon("library/busybox"), "docker.io/library/busybox:latest");
        assert_eq!(canon("user/app:v1"), "docker.io/user/app:v1");
        assert_eq!(
            canon("index.docker.io/busybox"),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(
            canon("docker.io/busybox"),
            "docker.io/library/busybox:latest"
        );
    }

    #[test]
    fn hosts_ports_and_digests() {
        assert_eq!(canon("localhost/app"), "localhost/app:latest");
        assert_eq!(canon("localhost:5000/a/b:t"), "localhost:5000/a/b:t");
        assert_eq!(canon("127.0.0.1:5000/app:v1"), "127.0.0.1:5000/app:v1");
        assert_eq!(canon("[::1]:5000/app"), "[::1]:5000/app:latest");
        assert_eq!(canon("ghcr.io/o/r/x:1"), "ghcr.io/o/r/x:1");
        assert_eq!(
            canon(&format!("busybox@{D}")),
            format!("docker.io/library/busybox@{D}")
        );
        assert_eq!(
            canon(&format!("reg.example:443/app:v2@{D}")),
            format!("reg.example:443/app:v2@{D}")
        );
        let r = ImageRef::parse(&format!("app@{D}")).expect("parse");
        assert_eq!(r.tag(), None);
        assert_eq!(r.digest().map(Digest::as_str), Some(D));
    }

    #[test]
    fn separators_in_path_components() {
        assert_eq!(canon("x/a.b_c__d-e--f"), "docker.io/x/a.b_c__d-e--f:latest");
        // A '.' in the first component makes it a host, which '_' cannot be part of.
        for bad in ["a..b", "a___b", "_a", "a-", "a/.b", "a.b_c/g"] {
            assert!(ImageRef::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn bad_references_are_rejected_with_a_reason() {
        for bad in [
            "",
            "Busybox",
            "busybox:",
            "busybox:-x",
            "busybox@sha256:abc",
            "busybox@md5:abc",
            "a//b",
            "/busybox",
            "busybox/",
            "host:port/app",
            "[::1/app",
            "bad host/app",
            "app:tag with space",
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        ] {
            match ImageRef::parse(bad) {
                Err(ImageError::InvalidReference { reason, .. }) => assert!(!reason.is_empty()),
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
        let long = format!("x/{}", "a".repeat(300));
        assert!(ImageRef::parse(&long).is_err());
        assert!(ImageRef::parse(&format!("a:{}", "t".repeat(129))).is_err());
    }

    #[test]
    fn serde_round_trips_the_canonical_text_and_validates() {
        let r: ImageRef = serde_json::from_str("\"busybox\"").expect("deserialize");
        assert_eq!(
            serde_json::to_string(&r).expect("serialize"),
            "\"docker.io/library/busybox:latest\""
        );
        assert!(serde_json::from_str::<ImageRef>("\"Bad Ref\"").is_err());
    }

    #[test]
    fn loopback_registries() {
        for (s, want) in [
            ("localhost:5000/a", true),
            ("127.0.0.1:1/a", true),
            ("127.8.0.1/a", true),
            ("[::1]:5000/a", true),
            ("busybox", false),
            ("10.0.0.1:5000/a", false),
            ("localhost.example.com/a", false),
        ] {
            let r = ImageRef::parse(s).expect("parse");
            assert_eq!(r.is_loopback_registry(), want, "{s}");
        }
    }
}
