#!/usr/bin/env bash
# THE test command: installs what is missing, then runs format check, clippy, the Rust tests
# (nextest, profile ci) and the end-to-end suite (official Python SDK against the built binary).
#
#   bash scripts/test.sh              # every step, in order, stopping at the first failure
#   bash scripts/test.sh e2e          # only the named steps: setup fmt clippy nextest build e2e e2e_pg e2b_latest smoke bench
#
# Env: CI=true runs every Rust test (nextest profile ci): a missing backend fails the run.
#      Locally, tests whose backend is missing are not selected (the reason is printed).
#      STACYVM_RELEASE=1 builds and tests the release binary instead of the debug one.
#      PYTEST_ARGS="-k exec -x" is passed to pytest.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export REPO_ROOT
cd "$REPO_ROOT"

# shellcheck source=scripts/lib/common.sh
. "$REPO_ROOT/scripts/lib/common.sh"
# shellcheck source=scripts/lib/setup.sh
. "$REPO_ROOT/scripts/lib/setup.sh"

ALL_STEPS=(setup fmt clippy nextest build e2e e2e_pg e2b_latest smoke bench)
if [ "$#" -gt 0 ]; then
    STEPS=("$@")
else
    STEPS=("${ALL_STEPS[@]}")
fi

if [ "${STACYVM_RELEASE:-0}" = "1" ]; then
    BUILD_FLAGS=(--release)
    DEFAULT_BIN="$REPO_ROOT/target/release/stacyvm"
else
    BUILD_FLAGS=()
    DEFAULT_BIN="$REPO_ROOT/target/debug/stacyvm"
fi
export STACYVM_BIN="${STACYVM_BIN:-$DEFAULT_BIN}"

# A backend that cannot be set up fails CI; locally its tests are left out, with a reason.
backend_unavailable() {
    if is_ci; then
        die "$1 is required in CI but could not be set up"
    fi
    info "warning: $1 unavailable; its tests are not selected"
}

step_setup() {
    have cargo || die "cargo not found (the Rust toolchain is expected on the machine)"
    cargo nextest --version >/dev/null 2>&1 || die "cargo-nextest not found"
    setup_python
    setup_node || backend_unavailable node
    setup_agent || die "building the agent (crates/stacyvm-agent) failed"
    setup_docker || backend_unavailable docker
    setup_postgres || backend_unavailable postgres
    setup_qemu || backend_unavailable qemu
    setup_registry || backend_unavailable docker-registry
    setup_bwrap || backend_unavailable bwrap
    setup_chromium || backend_unavailable chromium
    setup_tmux || backend_unavailable tmux
}

step_fmt() {
    cargo fmt --all -- --check
}

step_clippy() {
    cargo clippy --workspace --all-targets -- -D warnings
}

# Tests needing a backend are selected by nextest profiles and fail without it
# (.config/nextest.toml). Under CI every test runs (profile ci); locally the fast set runs, then
# the set of each backend found here.
# Every test step needs the agent (background processes on mock and docker): build it unless
# step setup did in this run.
need_agent() {
    [ -n "${STACYVM_AGENT:-}" ] || setup_agent || die "building the agent (crates/stacyvm-agent) failed"
}

step_nextest() {
    need_agent
    # The Postgres tests read the DSN step setup exports; this step run alone starts the cluster.
    if [ -z "${STACYVM_TEST_PG_DSN:-}" ]; then
        setup_postgres || backend_unavailable postgres
    fi
    if is_ci; then
        cargo nextest run --workspace --profile ci
    else
        cargo nextest run --workspace
        local profile
        for profile in $(ready_backends); do
            cargo nextest run --workspace --profile "$profile"
        done
    fi
    # The guest agent is its own workspace (static build, own lockfile).
    (cd "$REPO_ROOT/crates/stacyvm-agent" && cargo test)
}

step_build() {
    cargo build -p stacyvm "${BUILD_FLAGS[@]}"
    [ -x "$STACYVM_BIN" ] || die "binary $STACYVM_BIN was not produced"
}

step_e2e() {
    need_agent
    [ -x "$VENV_DIR/bin/python" ] || setup_python
    # test_e2b_js.py: the JS SDK's packages, when this step runs without step setup.
    [ -f "$E2B_JS_DIR/node_modules/e2b/package.json" ] || setup_node || backend_unavailable node
    [ -x "$STACYVM_BIN" ] || die "binary $STACYVM_BIN missing; run the build step first"
    local rc=0
    # shellcheck disable=SC2086
    "$VENV_DIR/bin/python" -m pytest "$REPO_ROOT/tests/e2e" -ra ${PYTEST_ARGS:-} || rc=$?
    case "$rc" in
        0) ;;
        5) die "pytest collected no tests (exit 5): the e2e suite must not be empty" ;;
        *) die "pytest exited with $rc" ;;
    esac
}

# A subset of the SDK suite with every server on its own fresh Postgres database (the full
# suite runs on SQLite in step e2e, which also runs the two-control-plane tests).
E2E_PG_FILES=(test_lifecycle.py test_exec.py test_files.py test_limits.py)
step_e2e_pg() {
    need_agent
    [ -x "$VENV_DIR/bin/python" ] || setup_python
    [ -x "$STACYVM_BIN" ] || die "binary $STACYVM_BIN missing; run the build step first"
    if [ -z "${STACYVM_TEST_PG_DSN:-}" ]; then
        setup_postgres || { backend_unavailable postgres; return 0; }
    fi
    local rc=0 files=()
    for f in "${E2E_PG_FILES[@]}"; do files+=("$REPO_ROOT/tests/e2e/$f"); done
    # shellcheck disable=SC2086
    STACYVM_E2E_DATABASE=postgres "$VENV_DIR/bin/python" -m pytest "${files[@]}" -ra ${PYTEST_ARGS:-} \
        || rc=$?
    [ "$rc" -eq 0 ] || die "pytest (e2e on postgres) exited with $rc"
}

# The E2B canary: the E2B SDK suite against the newest `e2b` on PyPI (step e2e runs the pinned
# one). E2B releases weekly, so a failure here is reported, not fatal, unless
# STACYVM_E2B_CANARY_STRICT=1: CI stays reproducible and a wire change is still seen at once.
step_e2b_latest() {
    need_agent
    [ -x "$STACYVM_BIN" ] || die "binary $STACYVM_BIN missing; run the build step first"
    local version rc=0
    if ! version="$(setup_e2b_latest)"; then
        info "warning: could not install the newest e2b from PyPI; canary not run"
        [ "${STACYVM_E2B_CANARY_STRICT:-0}" = "1" ] && die "e2b canary could not be installed"
        return 0
    fi
    info "e2b canary: e2b==$version"
    # shellcheck disable=SC2086
    "$E2B_LATEST_VENV/bin/python" -m pytest "$REPO_ROOT/tests/e2e/test_e2b_sdk.py" -ra \
        ${PYTEST_ARGS:-} || rc=$?
    if [ "$rc" -ne 0 ]; then
        [ "${STACYVM_E2B_CANARY_STRICT:-0}" = "1" ] && die "e2b canary (e2b==$version) failed"
        info "WARNING: the E2B suite FAILED against the newest e2b==$version (pinned: $(grep '^e2b==' "$REPO_ROOT/tests/e2e/requirements.txt")); see above"
    fi
}

# The staging guide's flow, in its three credential modes (shared, signed, mTLS).
step_smoke() {
    need_agent
    [ -x "$STACYVM_BIN" ] || die "binary $STACYVM_BIN missing; run the build step first"
    local mode
    for mode in "" --signed --mtls; do
        info "smoke-remote-worker ${mode:-(shared tokens)}"
        bash "$REPO_ROOT/scripts/smoke-remote-worker.sh" "$STACYVM_BIN" $mode \
            || die "smoke-remote-worker ${mode:-default} failed"
    done
}

# The benchmark program still runs (figures are printed, never asserted). Its processes
# benchmark runs the agent named by STACYVM_AGENT (need_agent) and starts a local worker.
step_bench() {
    need_agent
    cargo run -p stacyvm-bench "${BUILD_FLAGS[@]}" -- --quick --bin "$STACYVM_BIN"
}

START_ALL=$SECONDS
for step in "${STEPS[@]}"; do
    declare -F "step_$step" >/dev/null || die "unknown step '$step' (known: ${ALL_STEPS[*]})"
    section "$step"
    start=$SECONDS
    "step_$step"
    info "$step ok ($((SECONDS - start))s)"
done
section "all steps passed in $((SECONDS - START_ALL))s: ${STEPS[*]}"
