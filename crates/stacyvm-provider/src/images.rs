//! A spawn's image from the OCI image store (docs/images.md), pulled when missing: what each
//! way a pull can fail answers. One table for the providers that take root filesystems from the
//! store, so an image fails the same way on all of them (and, through `wire.rs`, on a worker).

use stacyvm_image::ImageError;

use crate::ProviderError;

/// The provider error for `e`, met while getting `image` (as the caller wrote it) from the
/// store or its registry. Messages name the image and the registry, never host paths.
pub(crate) fn pull_error(image: &str, e: ImageError) -> ProviderError {
    let how = format!(
        "add it with `stacyvm image pull {image}` or `stacyvm image import <archive> --tag {image}`"
    );
    match e {
        // The caller's to fix: a name that does not exist. Registries answer 401 for a missing
        // repository as often as for a missing login, so a refusal is reported the same way.
        ImageError::NotFound { .. } => ProviderError::ImageNotFound(format!(
            "{image} is not in the image store and its registry does not have it; {how}"
        )),
        ImageError::Unauthorized { registry } => ProviderError::ImageNotFound(format!(
            "{image} is not in the image store and {registry} refused to let this server pull \
             it (images.registry_auth has no valid login for it); {how}"
        )),
        ImageError::InvalidReference { .. } | ImageError::Unsupported { .. } => {
            ProviderError::InvalidInput(format!("image {image}: {e}"))
        }
        // The registry is unreachable or served bad data: a later spawn may succeed.
        ImageError::Network { .. } => ProviderError::Unavailable(format!(
            "{image} is not in the image store and pulling it failed: {e}; {how}"
        )),
        ImageError::DigestMismatch { .. } | ImageError::Corrupt { .. } => {
            ProviderError::Unavailable(format!("image {image}: {e}"))
        }
        ImageError::Io { .. } => {
            ProviderError::internal_with(format!("preparing image {image} failed"), e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every store error has its provider error, and the commands that add an image are named
    /// wherever adding it by hand is the way out.
    #[test]
    fn every_store_error_maps() {
        let img = "127.0.0.1:5000/team/app:v1";
        let cases: Vec<(ImageError, &str, bool)> = vec![
            (
                ImageError::NotFound {
                    what: "manifest x".into(),
                },
                "ImageNotFound",
                true,
            ),
            (
                ImageError::Unauthorized {
                    registry: "127.0.0.1:5000".into(),
                },
                "ImageNotFound",
                true,
            ),
            (
                ImageError::InvalidReference {
                    reference: "X".into(),
                    reason: "upper case",
                },
                "InvalidInput",
                false,
            ),
            (
                ImageError::Unsupported {
                    what: "zstd layer".into(),
                },
                "InvalidInput",
                false,
            ),
            (
                ImageError::Network {
                    context: "fetching manifest x".into(),
                    source: "refused".into(),
                },
                "Unavailable",
                true,
            ),
            (
                ImageError::DigestMismatch {
                    what: "layer".into(),
                    expected: "a".into(),
                    actual: "b".into(),
                },
                "Unavailable",
                false,
            ),
            (
                ImageError::Corrupt {
                    what: "layer".into(),
                    reason: "bad gzip".into(),
                },
                "Unavailable",
                false,
            ),
            (
                ImageError::Io {
                    context: "x".into(),
                    source: std::io::Error::other("disk full"),
                },
                "Internal",
                false,
            ),
        ];
        for (e, kind, names_commands) in cases {
            let code = e.code();
            let p = pull_error(img, e);
            assert!(format!("{p:?}").starts_with(kind), "{code}: {p:?}");
            let shown = p.to_string();
            assert!(shown.contains(img), "{code}: {shown}");
            assert_eq!(
                shown.contains("stacyvm image pull"),
                names_commands,
                "{code}: {shown}"
            );
            assert!(!shown.contains("disk full"), "{shown}");
        }
    }
}
