//! `ImageError`: the one error type of the store, with a stable code per variant.

use std::io;

/// Everything the image store can fail with. Messages name images, digests and paths relative
/// to the store root, never the host layout around it; the underlying cause is the `source`.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The text is not an image reference Docker would accept.
    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidReference {
        reference: String,
        reason: &'static str,
    },
    /// A tag, manifest or blob the registry, archive or store does not have.
    #[error("{what} not found")]
    NotFound { what: String },
    /// Content whose SHA-256 (or size) is not what its descriptor says.
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },
    /// Content that cannot be read as what it claims to be: bad gzip/tar, bad JSON, a layer entry
    /// that would escape its directory.
    #[error("corrupt {what}: {reason}")]
    Corrupt { what: String, reason: String },
    /// The registry could not be reached or the transfer broke off.
    #[error("network error while {context}")]
    Network {
        context: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The registry refused the credentials (or asked for some and none were configured).
    #[error("not authorized to pull from {registry}")]
    Unauthorized { registry: String },
    /// Valid content the store does not handle (zstd layers, no linux/amd64 image, ...).
    #[error("unsupported {what}")]
    Unsupported { what: String },
    /// A local file operation failed.
    #[error("i/o error while {context}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

impl ImageError {
    /// A stable, machine-readable name for the variant, for API error bodies and exit codes.
    pub fn code(&self) -> &'static str {
        match self {
            ImageError::InvalidReference { .. } => "invalid_reference",
            ImageError::NotFound { .. } => "not_found",
            ImageError::DigestMismatch { .. } => "digest_mismatch",
            ImageError::Corrupt { .. } => "corrupt",
            ImageError::Network { .. } => "network",
            ImageError::Unauthorized { .. } => "unauthorized",
            ImageError::Unsupported { .. } => "unsupported",
            ImageError::Io { .. } => "io",
        }
    }

    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(io::Error) -> ImageError {
        let context = context.into();
        move |source| ImageError::Io { context, source }
    }

    /// `reason` often quotes the bad input (tar errors echo header bytes): keep it short and
    /// printable.
    pub(crate) fn corrupt(what: impl Into<String>, reason: impl Into<String>) -> ImageError {
        const MAX: usize = 160;
        let reason: String = reason.into();
        let mut clean: String = reason
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .take(MAX)
            .collect();
        if reason.chars().count() > MAX {
            clean.push('…');
        }
        ImageError::Corrupt {
            what: what.into(),
            reason: clean,
        }
    }

    pub(crate) fn not_found(what: impl Into<String>) -> ImageError {
        ImageError::NotFound { what: what.into() }
    }

    pub(crate) fn unsupported(what: impl Into<String>) -> ImageError {
        ImageError::Unsupported { what: what.into() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_has_a_distinct_code() {
        let all = [
            ImageError::InvalidReference {
                reference: String::new(),
                reason: "x",
            },
            ImageError::not_found("x"),
            ImageError::DigestMismatch {
                what: String::new(),
                expected: String::new(),
                actual: String::new(),
            },
            ImageError::corrupt("x", "y"),
            ImageError::Network {
                context: String::new(),
                source: "x".into(),
            },
            ImageError::Unauthorized {
                registry: String::new(),
            },
            ImageError::unsupported("x"),
            ImageError::io("x")(io::Error::other("y")),
        ];
        let mut codes: Vec<_> = all.iter().map(ImageError::code).collect();
        let long = ImageError::corrupt("x", "\u{1b}[31m".to_string() + &"a".repeat(500));
        let shown = long.to_string();
        assert!(shown.len() < 200 && !shown.contains('\u{1b}'), "{shown}");
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), all.len());
    }
}
