//! The shared provider suite and the shared containment list (`conformance::containment`, also
//! run on docker) against bwrap sandboxes (selected by the `bwrap` nextest profile: needs root,
//! bubblewrap, busybox-static, `cc` and the agent; fails without them).
#![cfg(feature = "bwrap")]
#![allow(clippy::unwrap_used)]

mod bwrap_support;

async fn fresh() -> bwrap_support::Fixture {
    bwrap_support::fixture().await
}

mod shared {
    stacyvm_provider::provider_conformance_tests!(super::fresh, super::bwrap_support::IMAGE);
}

mod containment {
    stacyvm_provider::provider_containment_tests!(super::fresh, super::bwrap_support::IMAGE);
}
