//! The shared provider suite (`stacyvm_provider::conformance`) against Docker: once on the
//! default runtime (runc), once on gVisor (`runsc`) when the daemon has it registered
//! (`scripts/setup-docker.sh --runsc`). Without runsc those tests print a notice and pass,
//! unless `STACYVM_REQUIRE_RUNSC=1`.
#![cfg(feature = "docker")]
#![allow(clippy::unwrap_used)]

mod docker_support;

use docker_support::{has_runsc, provider, IMAGE};
use stacyvm_provider::{DockerConfig, DockerProvider};

async fn runc() -> Option<DockerProvider> {
    provider(DockerConfig::default()).await
}

async fn runsc() -> Option<DockerProvider> {
    let p = provider(DockerConfig::default()).await?;
    drop(p);
    if !has_runsc().await {
        let required = std::env::var("STACYVM_REQUIRE_RUNSC").is_ok_and(|v| v == "1");
        assert!(
            !required,
            "STACYVM_REQUIRE_RUNSC=1 but docker has no runsc runtime"
        );
        eprintln!("NOTICE: skipping runsc conformance: no runsc runtime (scripts/setup-docker.sh --runsc)");
        return None;
    }
    // gVisor cannot set up its network stack on these hosts; see docs/docker-provider.md.
    let cfg = DockerConfig {
        runtime: "runsc".into(),
        network_mode: "none".into(),
        ..Default::default()
    };
    provider(cfg).await
}

mod runc {
    stacyvm_provider::provider_conformance_tests!(super::runc, super::IMAGE);
}

mod runsc {
    stacyvm_provider::provider_conformance_tests!(super::runsc, super::IMAGE);
}
