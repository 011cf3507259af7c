//! The shared provider suite (`stacyvm_provider::conformance`) against Docker: once on the
//! default runtime (runc), once on gVisor (`runsc`) when the daemon has it registered
//! (`scripts/setup-docker.sh --runsc`). Without runsc those tests print a notice and pass,
//! unless `STACYVM_REQUIRE_RUNSC=1`.
#![cfg(feature = "docker")]
#![allow(clippy::unwrap_used)]

mod docker_support;

use docker_support::{has_runsc, provider, IMAGE};
use stacyvm_provider::{conformance, DockerConfig, DockerProvider};

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

macro_rules! suite {
    ($runtime:ident: $($check:ident),* $(,)?) => {
        mod $runtime {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    let Some(p) = super::$runtime().await else { return };
                    if let Err(e) = conformance::$check(&p, IMAGE).await {
                        panic!("{e}");
                    }
                }
            )*

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn unknown_sandbox() {
                let Some(p) = super::$runtime().await else { return };
                if let Err(e) = conformance::unknown_sandbox(&p).await {
                    panic!("{e}");
                }
            }
        }
    };
}

suite!(runc:
    lifecycle,
    exec_exit_codes,
    exec_stderr,
    exec_argv_mode,
    exec_shell_args,
    exec_env,
    exec_workdir,
    exec_timeout,
    exec_streams_live,
    exec_concurrent,
    files_binary_roundtrip,
    files_nested_parents,
    files_list,
    files_stat,
    files_glob,
    files_move,
    files_chmod,
    files_delete,
    files_path_escape,
    files_stream_roundtrip,
    files_stream_errors,
    logs,
);

suite!(runsc:
    lifecycle,
    exec_exit_codes,
    exec_stderr,
    exec_argv_mode,
    exec_shell_args,
    exec_env,
    exec_workdir,
    exec_timeout,
    exec_streams_live,
    exec_concurrent,
    files_binary_roundtrip,
    files_nested_parents,
    files_list,
    files_stat,
    files_glob,
    files_move,
    files_chmod,
    files_delete,
    files_path_escape,
    files_stream_roundtrip,
    files_stream_errors,
    logs,
);
