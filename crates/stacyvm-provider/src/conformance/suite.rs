//! The suite's check list, kept once. Backends run it three ways, all expanded from the list in
//! [`__provider_conformance_checks!`](crate::__provider_conformance_checks):
//!
//! - [`provider_conformance_tests!`](crate::provider_conformance_tests): one `#[tokio::test]`
//!   per check, named after it (mock, docker, and the remote provider in `stacyvm-server`);
//! - [`checks`]: the checks as values, for a runner of its own (the microvm suite shares one VM);
//! - [`run_all`]: every check in order, failures joined.
//!
//! Adding a check: write its `pub async fn(&dyn Provider, &str)` and add its name to the list.

use std::future::Future;
use std::pin::Pin;

use super::CheckFailure;
use crate::Provider;

/// What the generated tests run the checks on: a provider plus whatever keeps it alive
/// (temp dirs, an in-process worker). Every provider is its own fixture.
pub trait Fixture {
    fn provider(&self) -> &dyn Provider;
}

impl<P: Provider> Fixture for P {
    fn provider(&self) -> &dyn Provider {
        self
    }
}

/// A running check.
pub type CheckFuture<'a> = Pin<Box<dyn Future<Output = Result<(), CheckFailure>> + 'a>>;

/// One check of the suite: its name (also the generated test's) and its body, given a provider
/// and the image to spawn.
#[derive(Clone, Copy)]
pub struct Check {
    pub name: &'static str,
    pub run: for<'a> fn(&'a dyn Provider, &'a str) -> CheckFuture<'a>,
}

/// Calls `$crate::$callback!` with `$args` followed by the name of every check, in suite order:
/// the one list of checks.
#[doc(hidden)]
#[macro_export]
macro_rules! __provider_conformance_checks {
    ($callback:ident ! ($($args:tt)*)) => {
        $crate::$callback! {$($args)*
            lifecycle,
            unknown_sandbox,
            exec_exit_codes,
            exec_stderr,
            exec_argv_mode,
            exec_shell_args,
            exec_env,
            exec_workdir,
            exec_timeout,
            exec_streams_live,
            exec_concurrent,
            exec_slow_reader,
            files_binary_roundtrip,
            files_nested_parents,
            files_list,
            files_stat,
            files_glob,
            files_glob_links,
            files_move,
            files_chmod,
            files_delete,
            files_path_escape,
            files_stream_roundtrip,
            files_stream_errors,
            files_stream_large,
            watch_dir,
            process_output_streams,
            process_stdin,
            process_signal_timeout,
            process_list_and_errors,
            process_pty,
            process_reattach,
            process_large_and_gap,
            process_destroy,
            pause_keeps_processes,
            pause_then_destroy,
            volume_outlives_sandbox,
            snapshot_restores_files,
            logs,
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __provider_conformance_table {
    ($($check:ident),* $(,)?) => {
        vec![$($crate::conformance::Check {
            name: stringify!($check),
            run: |p, image| Box::pin($crate::conformance::$check(p, image)),
        }),*]
    };
}

/// Expands to one `#[tokio::test]` per check, each named after its check. `$fresh` is an async
/// fn returning an `impl Fixture` on a new provider; when the backend is missing it panics
/// (backend tests are selected by nextest profile, never skipped: docs/conventions.md). `$image`
/// is the image every check spawns. The calling crate needs `tokio` with `macros` and
/// `rt-multi-thread`.
///
/// ```ignore
/// mod shared {
///     stacyvm_provider::provider_conformance_tests!(super::fresh, "mock");
/// }
/// ```
#[macro_export]
macro_rules! provider_conformance_tests {
    ($fresh:path, $image:expr $(,)?) => {
        $crate::__provider_conformance_checks!(provider_conformance_tests!(@tests $fresh, $image;));
    };
    (@tests $fresh:path, $image:expr; $($check:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let fixture = $fresh().await;
                let p = $crate::conformance::Fixture::provider(&fixture);
                if let Err(e) = $crate::conformance::$check(p, $image).await {
                    panic!("{e}");
                }
            }
        )*
    };
}

/// Calls `$crate::$callback!` with `$args` followed by the name of every containment check
/// (`conformance::containment`): the one list for providers that isolate.
#[doc(hidden)]
#[macro_export]
macro_rules! __provider_containment_checks {
    ($callback:ident ! ($($args:tt)*)) => {
        $crate::$callback! {$($args)*
            contain_host_processes,
            contain_host_files,
            contain_devices,
            contain_kernel_interfaces,
            contain_network,
            contain_fork_bomb,
            contain_memory_hog,
            contain_other_sandboxes,
        }
    };
}

/// [`provider_conformance_tests!`](crate::provider_conformance_tests) for the containment
/// list: one `#[tokio::test]` per check, for a provider that isolates (docker, bwrap).
///
/// ```ignore
/// mod containment {
///     stacyvm_provider::provider_containment_tests!(super::fresh, super::IMAGE);
/// }
/// ```
#[macro_export]
macro_rules! provider_containment_tests {
    ($fresh:path, $image:expr $(,)?) => {
        $crate::__provider_containment_checks!(
            provider_conformance_tests!(@tests $fresh, $image;)
        );
    };
}

/// Every containment check, in list order.
pub fn containment_checks() -> Vec<Check> {
    crate::__provider_containment_checks!(__provider_conformance_table!())
}

/// Every check, in suite order.
pub fn checks() -> Vec<Check> {
    crate::__provider_conformance_checks!(__provider_conformance_table!())
}

/// Runs every check; returns all failures joined, if any.
pub async fn run_all(p: &dyn Provider, image: &str) -> Result<(), CheckFailure> {
    let mut failures = Vec::new();
    for check in checks() {
        if let Err(f) = (check.run)(p, image).await {
            failures.push(f.to_string());
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(CheckFailure {
            check: "run_all",
            message: failures.join("; "),
        })
    }
}
