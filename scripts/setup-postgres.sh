#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for the store's Postgres tests, listening on 127.0.0.1 only.
# Idempotent: a second run finds the cluster running and only prints the DSN again.
#
#   eval "$(scripts/setup-postgres.sh)"    # start (installing postgresql if missing), export
#                                          # STACYVM_TEST_PG_DSN=postgres://stacyvm:...@127.0.0.1:PORT/postgres
#   scripts/setup-postgres.sh --stop       # stop the cluster (data is kept)
#
# stdout carries only the `export` line; progress goes to stderr. The cluster lives in
# $STACYVM_WORK_DIR/pg (default .test-work/pg) and is owned by the `postgres` user when run as
# root, since initdb refuses root. Port: STACYVM_TEST_PG_PORT, default 54329 (the next free
# one if taken), remembered across runs. Role `stacyvm` has CREATEDB so each test can create
# and drop its own database. Every wait is bounded.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PG_WORK="${STACYVM_WORK_DIR:-$REPO_ROOT/.test-work}/pg"
DATA="$PG_WORK/data"
SOCK="$PG_WORK/sock"
LOG="$PG_WORK/postgres.log"
PORT_FILE="$PG_WORK/port"
PW_FILE="$PG_WORK/password"
ROLE=stacyvm

log() { printf '[setup-postgres] %s\n' "$*" >&2; }
fail() { log "FAILED: $*"; exit 1; }

APT_UPDATED=0
apt_install() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    [ "${#missing[@]}" -eq 0 ] && return 0
    if ! command -v apt-get >/dev/null || [ "$(id -u)" -ne 0 ]; then
        fail "need ${missing[*]}: install them (apt-get as root)"
    fi
    mkdir -p "$PG_WORK"
    if [ "$APT_UPDATED" -eq 0 ]; then
        log "apt-get update"
        DEBIAN_FRONTEND=noninteractive timeout 600 apt-get update -q >"$PG_WORK/apt.log" 2>&1 \
            || { tail -20 "$PG_WORK/apt.log" >&2; fail "apt-get update"; }
        APT_UPDATED=1
    fi
    log "apt-get install ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -q --no-install-recommends \
        "${missing[@]}" >>"$PG_WORK/apt.log" 2>&1 \
        || { tail -30 "$PG_WORK/apt.log" >&2; fail "apt-get install ${missing[*]}"; }
}

# The newest installed server's bin directory (Debian keeps them out of PATH).
pg_bindir() {
    local d
    d="$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -type d -name bin 2>/dev/null | sort -V | tail -n1)"
    if [ -n "$d" ] && [ -x "$d/initdb" ]; then
        echo "$d"
    elif command -v pg_config >/dev/null && [ -x "$(pg_config --bindir)/initdb" ]; then
        pg_config --bindir
    fi
}

# Runs a server binary as the cluster owner: `postgres` when we are root, else ourselves.
as_owner() {
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

running() { as_owner "$BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; }

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

choose_port() {
    local p="${STACYVM_TEST_PG_PORT:-54329}" i
    for ((i = 0; i < 50; i++)); do
        port_in_use "$p" || { echo "$p"; return 0; }
        p=$((p + 1))
    done
    fail "no free port from ${STACYVM_TEST_PG_PORT:-54329} upwards"
}

BIN="$(pg_bindir)"
if [ "${1:-}" = "--stop" ]; then
    if [ -n "$BIN" ] && [ -f "$DATA/PG_VERSION" ] && running; then
        log "stopping the cluster in $DATA"
        as_owner "$BIN/pg_ctl" -D "$DATA" -m fast -w -t 30 stop >&2
    fi
    exit 0
fi
[ "$#" -eq 0 ] || { echo "usage: $0 [--stop]" >&2; exit 2; }

if [ -z "$BIN" ]; then
    apt_install postgresql
    BIN="$(pg_bindir)"
    [ -n "$BIN" ] || fail "postgresql installed but no initdb found under /usr/lib/postgresql"
fi
command -v psql >/dev/null || apt_install postgresql-client

mkdir -p "$PG_WORK"
if [ "$(id -u)" -eq 0 ]; then
    id postgres >/dev/null 2>&1 || fail "user 'postgres' is missing (it comes with postgresql-common)"
    chown postgres: "$PG_WORK"
fi
chmod 700 "$PG_WORK"

if [ ! -f "$DATA/PG_VERSION" ]; then
    log "initdb $DATA"
    rm -rf "$DATA"
    # Local connections go through a socket directory only the owner can enter, so `trust` is
    # safe there; TCP needs the password.
    locale=(--no-locale)
    if locale -a 2>/dev/null | grep -qix 'c\.utf-\?8'; then locale=(--locale=C.UTF-8); fi
    as_owner "$BIN/initdb" -D "$DATA" -U postgres -E UTF8 "${locale[@]}" \
        --auth-local=trust --auth-host=scram-sha-256 >"$PG_WORK/initdb.log" 2>&1 \
        || { tail -20 "$PG_WORK/initdb.log" >&2; fail "initdb"; }
    rm -f "$PORT_FILE"
fi

if [ -f "$PORT_FILE" ]; then
    PORT="$(cat "$PORT_FILE")"
else
    PORT="$(choose_port)"
    echo "$PORT" >"$PORT_FILE"
fi

if ! running; then
    log "starting postgres on 127.0.0.1:$PORT (log: $LOG)"
    as_owner mkdir -p "$SOCK"
    [ ! -e "$LOG" ] || [ "$(id -u)" -ne 0 ] || chown postgres: "$LOG"
    as_owner "$BIN/pg_ctl" -D "$DATA" -l "$LOG" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -c port=$PORT -c unix_socket_directories=$SOCK -c max_connections=200" \
        start >&2 || { tail -30 "$LOG" >&2 || true; fail "pg_ctl start (port $PORT taken? delete $PORT_FILE)"; }
fi

if [ ! -s "$PW_FILE" ]; then
    (umask 077 && head -c 32 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 24 >"$PW_FILE")
fi
PASSWORD="$(cat "$PW_FILE")"

as_owner "$BIN/psql" -X -q -h "$SOCK" -p "$PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 \
    -v role="$ROLE" -v pw="$PASSWORD" >&2 <<'SQL' || fail "creating role $ROLE"
SELECT format('CREATE ROLE %I', :'role')
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'role') \gexec
ALTER ROLE :"role" LOGIN CREATEDB PASSWORD :'pw';
SQL

DSN="postgres://$ROLE:$PASSWORD@127.0.0.1:$PORT/postgres"
PGCONNECT_TIMEOUT=5 psql -X -q "$DSN" -c 'SELECT 1' >/dev/null \
    || fail "the cluster runs but $ROLE cannot log in over TCP"
log "ready: $ROLE@127.0.0.1:$PORT"
printf 'export STACYVM_TEST_PG_DSN=%q\n' "$DSN"
