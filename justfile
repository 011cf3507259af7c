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

unit:
    bash scripts/test.sh nextest

# end-to-end suite against the built binary; ARGS go to pytest, e.g. just e2e "-k exec"
e2e ARGS="":
    PYTEST_ARGS="{{ARGS}}" bash scripts/test.sh build e2e
