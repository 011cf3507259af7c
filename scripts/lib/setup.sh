# shellcheck shell=bash
# Machine setup for scripts/test.sh: every dependency the test suite needs is installed and
# started here, so a fresh Debian 12 machine (as root) passes without manual steps.
# Each setup_* function is idempotent: a second run finds everything present and does nothing.
# Source after common.sh.

TEST_IMAGE="stacyvm-test/busybox:latest"

# ---------------------------------------------------------------------------------------------
# Python: a venv at $REPO_ROOT/.venv with tests/e2e/requirements.txt installed.
# ---------------------------------------------------------------------------------------------
VENV_DIR="$REPO_ROOT/.venv"

setup_python() {
    have python3 || apt_install python3 || die "python3 is missing"
    if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
        apt_install python3-venv || die "python3-venv is missing"
    fi
    if ! "$VENV_DIR/bin/python" -c 'import sys' >/dev/null 2>&1; then
        info "creating venv at $VENV_DIR"
        rm -rf "$VENV_DIR"
        python3 -m venv "$VENV_DIR" || die "python3 -m venv failed"
    fi
    local req="$REPO_ROOT/tests/e2e/requirements.txt" stamp="$VENV_DIR/.requirements.sha256" sum
    sum="$(sha256sum "$req" | cut -d' ' -f1)"
    if [ "$(cat "$stamp" 2>/dev/null)" != "$sum" ]; then
        info "pip install -r tests/e2e/requirements.txt"
        "$VENV_DIR/bin/python" -m pip install -q --disable-pip-version-check -r "$req" \
            || die "pip install of e2e requirements failed"
        echo "$sum" >"$stamp"
    fi
    "$VENV_DIR/bin/python" -c 'import stacyvm, pytest, httpx, websockets' \
        || die "e2e Python requirements are not importable"
}

# The newest `e2b` from PyPI beside the pinned one (the E2B canary, step e2b_latest): the
# e2e requirements without the pin, upgraded on every run.
E2B_LATEST_VENV="$REPO_ROOT/.venv-e2b-latest"

setup_e2b_latest() {
    if ! "$E2B_LATEST_VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
        rm -rf "$E2B_LATEST_VENV"
        python3 -m venv "$E2B_LATEST_VENV" || return 1
    fi
    grep -v '^e2b==' "$REPO_ROOT/tests/e2e/requirements.txt" | grep -v '^schemathesis' \
        >"$E2B_LATEST_VENV/requirements.txt"
    "$E2B_LATEST_VENV/bin/python" -m pip install -q --disable-pip-version-check \
        -r "$E2B_LATEST_VENV/requirements.txt" --upgrade e2b || return 1
    "$E2B_LATEST_VENV/bin/python" -c 'import e2b, importlib.metadata as m; print(m.version("e2b"))'
}

# ---------------------------------------------------------------------------------------------
# HOOK setup_node: node and npm (Debian's nodejs, node 20) and the E2B JS SDK pinned in
# tests/e2e/e2b_js/package-lock.json, installed with `npm ci` into its node_modules (gitignored)
# for tests/e2e/test_e2b_js.py. `npm ci` runs again only when the lock file changes.
# ---------------------------------------------------------------------------------------------
E2B_JS_DIR="$REPO_ROOT/tests/e2e/e2b_js"

# Called as `setup_node || ...`, so errexit is off in here: every step checks explicitly.
setup_node() {
    if ! have node || ! have npm; then
        apt_install nodejs npm || return 1
    fi
    if ! have node || ! have npm; then
        info "node: node or npm is still missing after apt-get install nodejs npm"
        return 1
    fi
    local lock="$E2B_JS_DIR/package-lock.json" stamp="$E2B_JS_DIR/node_modules/.package-lock.sha256" sum
    [ -f "$lock" ] || { info "node: $lock is missing"; return 1; }
    sum="$(sha256sum "$lock" | cut -d' ' -f1)" || return 1
    if [ "$(cat "$stamp" 2>/dev/null)" != "$sum" ] || [ ! -f "$E2B_JS_DIR/node_modules/e2b/package.json" ]; then
        info "npm ci in tests/e2e/e2b_js ($(node --version))"
        if ! (cd "$E2B_JS_DIR" && npm ci --no-audit --no-fund --loglevel=error) \
            >"$WORK_DIR/npm-ci.log" 2>&1; then
            tail -30 "$WORK_DIR/npm-ci.log" >&2
            return 1
        fi
        echo "$sum" >"$stamp" || return 1
    fi
    (cd "$E2B_JS_DIR" && node --input-type=module -e "await import('e2b')") || {
        info "node: the e2b package in $E2B_JS_DIR does not load"
        return 1
    }
}

# ---------------------------------------------------------------------------------------------
# HOOK setup_docker: Docker Engine answering on the default socket, plus the local test image
# $TEST_IMAGE (no registry is reachable, so it is imported from a busybox rootfs).
# ---------------------------------------------------------------------------------------------
DOCKERD_LOG="$WORK_DIR/dockerd.log"

# Called as `setup_docker || ...`, so errexit is off in here: every step checks explicitly.
setup_docker() {
    if ! have dockerd || ! have docker; then
        apt_install docker.io || return 1
    fi
    if ! docker info >/dev/null 2>&1; then
        info "starting dockerd (log: $DOCKERD_LOG)"
        # setsid: the daemon outlives this script so a second run reuses it.
        # STACYVM_DOCKERD_ARGS lets a host with odd storage pass e.g. --storage-driver=vfs.
        # shellcheck disable=SC2086
        setsid dockerd ${STACYVM_DOCKERD_ARGS:-} >"$DOCKERD_LOG" 2>&1 </dev/null &
        if ! wait_for 60 "docker info" docker info; then
            tail -30 "$DOCKERD_LOG" >&2 || true
            return 1
        fi
    fi
    build_test_image || return 1
    # gVisor (runsc) registered in dockerd: the provider conformance suite runs on it too.
    if ! DOCKERD_LOG="$DOCKERD_LOG" bash "$REPO_ROOT/scripts/setup-docker.sh" --runsc && is_ci; then
        info "gVisor (runsc) could not be set up"
        return 1
    fi
}

build_test_image() {
    if docker image inspect "$TEST_IMAGE" >/dev/null 2>&1; then
        info "image $TEST_IMAGE present"
        return 0
    fi
    apt_install busybox-static || return 1
    local bb root tarball applet
    bb="$(dpkg -L busybox-static | grep -E '/busybox$' | head -n1)"
    if [ ! -x "$bb" ]; then
        info "busybox-static installed but its binary was not found"
        return 1
    fi
    root="$WORK_DIR/busybox-rootfs"
    tarball="$WORK_DIR/busybox-rootfs.tar"
    rm -rf "$root" "$tarball"
    mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc,root,tmp,workspace,proc,sys,dev} || return 1
    chmod 1777 "$root/tmp"
    cp "$bb" "$root/bin/busybox" || return 1
    # Same links as `busybox --install -s`, but pointing at /bin/busybox inside the image rather
    # than at the host path of the binary that ran the install.
    while IFS= read -r applet; do
        [ "$applet" = "bin/busybox" ] && continue
        [ -e "$root/$applet" ] || ln -s /bin/busybox "$root/$applet"
    done < <("$bb" --list-full)
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' \
        >"$root/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
    tar -C "$root" --numeric-owner -cf "$tarball" . || return 1
    info "docker import $TEST_IMAGE"
    if ! docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'CMD ["/bin/sh"]' \
        "$tarball" "$TEST_IMAGE" >/dev/null; then
        info "docker import of $TEST_IMAGE failed"
        return 1
    fi
    if [ "$(docker run --rm "$TEST_IMAGE" /bin/sh -c 'echo ok' 2>&1)" != "ok" ]; then
        info "$TEST_IMAGE imported but 'docker run' of it failed (see $DOCKERD_LOG)"
        return 1
    fi
}

# ---------------------------------------------------------------------------------------------
# HOOK setup_postgres: scripts/setup-postgres.sh installs postgresql when missing, runs a
# cluster in $WORK_DIR/pg on loopback, and prints the export of STACYVM_TEST_PG_DSN, which the
# Postgres store tests read (each creates and drops its own database).
# ---------------------------------------------------------------------------------------------
setup_postgres() {
    local exports
    exports="$(STACYVM_WORK_DIR="$WORK_DIR" "$REPO_ROOT/scripts/setup-postgres.sh")" || return 1
    eval "$exports"
    [ -n "${STACYVM_TEST_PG_DSN:-}" ] || return 1
    export STACYVM_TEST_PG_DSN
}

# ---------------------------------------------------------------------------------------------
# HOOK setup_qemu: qemu-system-x86, the guest kernel, initramfs and root filesystems in
# $STACYVM_MICROVM_DIR (default /var/lib/stacyvm/microvm), where the microvm tests look.
# ---------------------------------------------------------------------------------------------
setup_qemu() {
    bash "$REPO_ROOT/scripts/setup-microvm.sh"
}

# ---------------------------------------------------------------------------------------------
# HOOK setup_registry: Debian's `docker-registry` (an OCI distribution registry); the image
# store's tests (crates/stacyvm-image, profile registry) start their own on loopback, some with
# a login whose bcrypt htpasswd file `htpasswd -B` (apache2-utils) writes.
# ---------------------------------------------------------------------------------------------
setup_registry() {
    [ -x /usr/bin/docker-registry ] || apt_install docker-registry || return 1
    have htpasswd || apt_install apache2-utils || return 1
    [ -x /usr/bin/docker-registry ]
}

# ---------------------------------------------------------------------------------------------
# HOOK setup_bwrap: bubblewrap, passt, e2fsprogs and busybox-static (the bwrap tests build their image from it),
# on a root machine with overlayfs and cgroups (docs/bwrap.md).
# ---------------------------------------------------------------------------------------------
setup_bwrap() {
    [ "$(id -u)" = 0 ] || { info "bwrap: the provider needs root"; return 1; }
    have bwrap || apt_install bubblewrap || return 1
    have pasta || apt_install passt || return 1
    dpkg -s busybox-static >/dev/null 2>&1 || apt_install busybox-static || return 1
    # The writable layer's disk quota (mkfs.ext4, loop devices) and the network tests' netns.
    have mkfs.ext4 || apt_install e2fsprogs || return 1
    have ip || apt_install iproute2 || return 1
    grep -qw overlay /proc/filesystems || modprobe overlay 2>/dev/null || {
        info "bwrap: overlayfs is not available"
        return 1
    }
}

# ---------------------------------------------------------------------------------------------
# HOOK setup_chromium: Debian's chromium, which the console's browser tests
# (tests/e2e/test_console.py) run headless and drive over the DevTools protocol.
# ---------------------------------------------------------------------------------------------
setup_chromium() {
    have chromium || apt_install chromium || return 1
    have chromium
}

# ---------------------------------------------------------------------------------------------
# HOOK setup_tmux: the real terminal the terminal tests run the binary in (`stacyvm shell` in
# tests/e2e/test_processes.py, `stacyvm top` in tests/e2e/test_top.py).
# ---------------------------------------------------------------------------------------------
setup_tmux() {
    have tmux || apt_install tmux || return 1
    have tmux
}

# ---------------------------------------------------------------------------------------------
# HOOK setup_agent: the static in-sandbox agent (crates/stacyvm-agent, its own workspace) built
# from this checkout and exported as STACYVM_AGENT: the mock runs it on the host and docker
# bind-mounts it into containers (docs/processes.md); tests and the e2e binary find it there.
# ---------------------------------------------------------------------------------------------
setup_agent() {
    local bin="$REPO_ROOT/crates/stacyvm-agent/target/x86_64-unknown-linux-gnu/release/stacyvm-agent"
    (cd "$REPO_ROOT/crates/stacyvm-agent" && cargo build --release --locked -q) || return 1
    [ -x "$bin" ] || return 1
    export STACYVM_AGENT="$bin"
}

# ---------------------------------------------------------------------------------------------
# ready_backends: the nextest backend profiles (.config/nextest.toml) whose backend answers here
# right now, one per line; cheap probes only, nothing is installed or started. What is missing
# goes to stderr.
# ---------------------------------------------------------------------------------------------
ready_backends() {
    if [ -n "${STACYVM_TEST_PG_DSN:-}" ]; then
        echo pg
    else
        info "postgres: STACYVM_TEST_PG_DSN is not set; profile pg not run" >&2
    fi
    if have docker && docker image inspect "$TEST_IMAGE" >/dev/null 2>&1; then
        echo docker
        if docker info --format '{{json .Runtimes}}' 2>/dev/null | grep -q '"runsc"'; then
            echo gvisor
        else
            info "gvisor: docker has no runsc runtime; profile gvisor not run" >&2
        fi
    else
        info "docker: no daemon or no image $TEST_IMAGE; profiles docker and gvisor not run" >&2
    fi
    local vm_dir="${STACYVM_MICROVM_DIR:-/var/lib/stacyvm/microvm}"
    if [ -x /usr/bin/docker-registry ] && have htpasswd; then
        echo registry
    else
        info "registry: /usr/bin/docker-registry or htpasswd (apache2-utils) is missing; profile registry not run" >&2
    fi
    if have qemu-system-x86_64 && [ -f "$vm_dir/vmlinux" ] && [ -f "$vm_dir/initramfs.cpio.gz" ]; then
        echo vm
    else
        info "vm: qemu-system-x86_64 or the assets in $vm_dir are missing; profile vm not run" >&2
    fi
    if [ "$(id -u)" = 0 ] && have bwrap && [ -x /bin/busybox ]; then
        echo bwrap
    else
        info "bwrap: not root, or bubblewrap or busybox-static missing; profile bwrap not run" >&2
    fi
}
