//! The OCI image store shared by the `bwrap` and `microvm` providers.
//!
//! Images come from registries ([`ImageStore::pull`]) or from `docker save` archives and OCI
//! layout directories ([`ImageStore::import`]). Blobs are content-addressed and verified, layers
//! are unpacked once per digest, and [`ImageStore::rootfs`] flattens an image (whiteouts
//! applied) into a directory a provider can mount. See `docs/images.md` for the layout on disk
//! and its guarantees.

mod credentials;
mod digest;
mod error;
mod flatten;
mod fsutil;
mod gc;
mod import;
mod layout;
mod reference;
mod refs;
mod registry;
mod spec;
mod stage;
mod store;
#[cfg(test)]
mod testutil;
mod unpack;

pub use credentials::Credentials;
pub use digest::{Digest, InvalidDigest};
pub use error::ImageError;
pub use gc::GcReport;
pub use reference::{ImageRef, DEFAULT_REGISTRY};
pub use spec::RuntimeConfig;
pub use store::{ImageStore, ImageSummary, RootFs};
