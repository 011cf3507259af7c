#!/usr/bin/env bash
# Prepares a local Docker engine for the docker provider's tests. Idempotent: every step checks
# before it acts, so running it again is cheap.
#
#   scripts/setup-docker.sh            dockerd + the busybox test image
#   scripts/setup-docker.sh --runsc    the same, plus gVisor registered as runtime `runsc`
#
# Works offline: the test image is built from the host's static busybox with `docker import`,
# never pulled. Exits non-zero when dockerd cannot be brought up.
set -euo pipefail

IMAGE="${STACYVM_DOCKER_TEST_IMAGE:-stacyvm-test/busybox:latest}"
DOCKERD_LOG="${DOCKERD_LOG:-/tmp/dockerd.log}"
WANT_RUNSC=0
for arg in "$@"; do
    case "$arg" in
        --runsc) WANT_RUNSC=1 ;;
        *) echo "usage: $0 [--runsc]" >&2; exit 2 ;;
    esac
done

log() { printf '[setup-docker] %s\n' "$*"; }

APT_UPDATED=0
apt_install() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    [ "${#missing[@]}" -eq 0 ] && return 0
    if [ "$APT_UPDATED" -eq 0 ]; then
        log "apt-get update"
        DEBIAN_FRONTEND=noninteractive apt-get update -q >/tmp/setup-docker-apt.log 2>&1
        APT_UPDATED=1
    fi
    log "installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >>/tmp/setup-docker-apt.log 2>&1
}

docker_up() { docker info >/dev/null 2>&1; }

wait_docker() {
    local i
    for i in $(seq 1 60); do
        docker_up && return 0
        sleep 0.5
    done
    return 1
}

start_dockerd() {
    docker_up && return 0
    log "starting dockerd (log: $DOCKERD_LOG)"
    # setsid: the daemon must outlive this script and not share its process group.
    setsid nohup dockerd >"$DOCKERD_LOG" 2>&1 </dev/null &
    wait_docker || { tail -30 "$DOCKERD_LOG" | cut -c1-300 >&2; log "dockerd did not come up"; return 1; }
}

stop_dockerd() {
    local pid
    pid="$(cat /var/run/docker.pid 2>/dev/null || true)"
    [ -n "$pid" ] || return 0
    log "stopping dockerd (pid $pid)"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 60); do
        # dockerd removes its pid file last; starting again before that fails.
        kill -0 "$pid" 2>/dev/null || [ -e /var/run/docker.pid ] || return 0
        sleep 0.5
    done
}

build_image() {
    if docker image inspect "$IMAGE" >/dev/null 2>&1; then
        return 0
    fi
    local bb root
    bb="$(command -v busybox || true)"
    [ -n "$bb" ] || { log "busybox not found"; return 1; }
    if ! file -L "$bb" 2>/dev/null | grep -q 'statically linked'; then
        # Debian's busybox-static replaces /bin/busybox with a static build.
        [ -x /bin/busybox ] && bb=/bin/busybox
    fi
    root="$(mktemp -d)"
    mkdir -p "$root/bin" "$root/tmp" "$root/workspace" "$root/etc" "$root/proc" "$root/sys" "$root/dev" "$root/root"
    chmod 1777 "$root/tmp"
    cp "$bb" "$root/bin/busybox"
    # --install -s creates the applet symlinks; run it with the rootfs's own busybox path.
    chroot "$root" /bin/busybox --install -s /bin 2>/dev/null || {
        local applet
        for applet in $("$root/bin/busybox" --list); do
            [ -e "$root/bin/$applet" ] || ln -s busybox "$root/bin/$applet"
        done
    }
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/sh\n' >"$root/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
    log "building $IMAGE from $bb"
    tar -C "$root" -c . | docker import \
        -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        -c 'CMD ["/bin/sh"]' - "$IMAGE" >/dev/null
    rm -rf "$root"
}

setup_runsc() {
    apt_install runsc || { log "runsc is not installable here"; return 1; }
    local runsc
    runsc="$(command -v runsc)"
    if grep -q -- '--network=none' /etc/docker/daemon.json 2>/dev/null \
        && docker info --format '{{json .Runtimes}}' 2>/dev/null | grep -q '"runsc"'; then
        return 0
    fi
    mkdir -p /etc/docker
    # Merge into an existing daemon.json rather than overwrite it.
    python3 - "$runsc" <<'PY'
import json, os, sys
path = "/etc/docker/daemon.json"
cfg = {}
if os.path.exists(path):
    with open(path) as f:
        text = f.read().strip()
    cfg = json.loads(text) if text else {}
cfg.setdefault("runtimes", {})["runsc"] = {
    "path": sys.argv[1],
    # ptrace: no KVM needed. --network=none: runsc refuses to set up its netstack here
    # ("cannot run with network enabled in root network namespace"), so sandboxes on runsc
    # have no network whatever the container's network mode says.
    "runtimeArgs": ["--platform=ptrace", "--network=none"],
}
with open(path, "w") as f:
    json.dump(cfg, f, indent=2)
PY
    log "registered runsc in /etc/docker/daemon.json; restarting dockerd"
    stop_dockerd
    start_dockerd
}

apt_install docker.io busybox-static file
start_dockerd
build_image
if [ "$WANT_RUNSC" -eq 1 ]; then
    if setup_runsc && docker run --rm --runtime runsc --network none "$IMAGE" true >/dev/null 2>&1; then
        log "runsc works"
    else
        # Exit non-zero so CI stops here (scripts/lib/setup.sh); the gVisor tests, once
        # selected (nextest profiles gvisor, ci), would fail anyway.
        log "runsc registered but a test container failed; the gvisor tests will fail"
        log "docker ready; image $IMAGE (without a working runsc)"
        exit 1
    fi
fi
log "docker ready; image $IMAGE"
