# shellcheck shell=bash
# Shared helpers for scripts/*.sh. Source, do not execute.
# Expects: set -euo pipefail in the caller, REPO_ROOT set.

: "${REPO_ROOT:?REPO_ROOT must be set before sourcing common.sh}"

# Scratch space for daemons, logs and fixtures; gitignored (/.test-work).
WORK_DIR="${STACYVM_WORK_DIR:-$REPO_ROOT/.test-work}"
mkdir -p "$WORK_DIR"

section() {
    printf '\n==================== %s ====================\n' "$*"
}

info() {
    printf '[test] %s\n' "$*"
}

die() {
    printf '[test] FAILED: %s\n' "$*" >&2
    exit 1
}

is_ci() {
    [ "${CI:-}" = "true" ] || [ "${CI:-}" = "1" ]
}

have() {
    command -v "$1" >/dev/null 2>&1
}

# `apt-get update` runs at most once per script run, and only when something must be installed.
_APT_UPDATED=0

pkg_installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

# apt_install PKG... installs only the packages not already present. Returns non-zero (with
# the log tail printed) on failure, so each caller decides whether that is fatal.
apt_install() {
    local missing=() p
    for p in "$@"; do
        pkg_installed "$p" || missing+=("$p")
    done
    [ "${#missing[@]}" -eq 0 ] && return 0
    if ! have apt-get || [ "$(id -u)" -ne 0 ]; then
        info "need packages ${missing[*]}: install them (apt-get as root)"
        return 1
    fi
    if [ "$_APT_UPDATED" -eq 0 ]; then
        info "apt-get update"
        if ! DEBIAN_FRONTEND=noninteractive apt-get update -q >"$WORK_DIR/apt-update.log" 2>&1; then
            tail -20 "$WORK_DIR/apt-update.log" >&2
            return 1
        fi
        _APT_UPDATED=1
    fi
    info "apt-get install ${missing[*]}"
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" \
        >"$WORK_DIR/apt-install.log" 2>&1; then
        tail -30 "$WORK_DIR/apt-install.log" >&2
        return 1
    fi
}

# wait_for SECONDS DESCRIPTION CMD...: poll CMD once a second until it succeeds or time runs out.
wait_for() {
    local secs="$1" what="$2" i
    shift 2
    for ((i = 0; i < secs; i++)); do
        if "$@" >/dev/null 2>&1; then
            return 0
        fi
        sleep 1
    done
    info "timed out after ${secs}s waiting for $what"
    return 1
}
