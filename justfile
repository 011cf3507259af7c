# Index of dev commands; every recipe calls the same scripts CI runs.

# everything CI runs
test:
    bash scripts/test.sh

# install/start what the tests need (venv, docker, test image)
setup:
    bash scripts/test.sh setup

fmt:
    cargo fmt --all

lint:
    bash scripts/test.sh fmt clippy

# Rust tests: `ci` profile under CI=true, else the fast set plus each backend set found here
unit:
    bash scripts/test.sh nextest

# Rust tests that need a backend (.config/nextest.toml); they fail when it is missing.
# ARGS go to nextest, e.g. just test-pg "-p stacyvm-store".
# Postgres: without STACYVM_TEST_PG_DSN, starts the throwaway cluster (scripts/setup-postgres.sh).
test-pg ARGS="":
    { [ -n "${STACYVM_TEST_PG_DSN:-}" ] || eval "$(bash scripts/setup-postgres.sh)"; } && cargo nextest run --workspace --profile pg {{ARGS}}

# Docker Engine with the test image (scripts/setup-docker.sh)
test-docker ARGS="":
    cargo nextest run --workspace --profile docker {{ARGS}}

# Docker with the gVisor runtime (scripts/setup-docker.sh --runsc)
test-gvisor ARGS="":
    cargo nextest run --workspace --profile gvisor {{ARGS}}

# QEMU and the microvm assets (scripts/setup-microvm.sh)
test-vm ARGS="":
    cargo nextest run --workspace --profile vm {{ARGS}}

# The image store against a real OCI registry on loopback (Debian docker-registry).
test-registry ARGS="":
    cargo nextest run --workspace --profile registry {{ARGS}}

# bwrap sandboxes (root, bubblewrap, busybox-static; docs/bwrap.md)
test-bwrap ARGS="":
    cargo nextest run --workspace --profile bwrap {{ARGS}}

# end-to-end suite against the built binary; ARGS go to pytest, e.g. just e2e "-k exec"
e2e ARGS="":
    PYTEST_ARGS="{{ARGS}}" bash scripts/test.sh build e2e
