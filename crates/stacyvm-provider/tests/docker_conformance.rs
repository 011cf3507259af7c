//! The shared provider suite (`stacyvm_provider::conformance`) against Docker: once on the
//! default runtime (runc, module `runc`), once on gVisor (module `needs_gvisor`, which the
//! nextest profiles `gvisor` and `ci` select; it fails without a `runsc` runtime registered by
//! `scripts/setup-docker.sh --runsc`). Module `containment`: the shared escape and containment
//! list (`conformance::containment`, also run on bwrap) on runc, with the default limits.
#![cfg(feature = "docker")]
#![allow(clippy::unwrap_used)]

mod docker_support;

use docker_support::{provider, runsc_provider, IMAGE};
use stacyvm_provider::{DockerConfig, DockerProvider};

async fn runc() -> DockerProvider {
    provider(DockerConfig::default()).await
}

async fn runsc() -> DockerProvider {
    // gVisor cannot set up its network stack on these hosts; see docs/docker-provider.md.
    runsc_provider(DockerConfig {
        network_mode: "none".into(),
        ..Default::default()
    })
    .await
}

mod runc {
    stacyvm_provider::provider_conformance_tests!(super::runc, super::IMAGE);
}

mod needs_gvisor {
    stacyvm_provider::provider_conformance_tests!(super::runsc, super::IMAGE);
}

mod containment {
    stacyvm_provider::provider_containment_tests!(super::runc, super::IMAGE);
}
