#!/usr/bin/env bash
# A/B of two release `stacyvm` binaries in one window, alternating, so machine noise hits both:
# spawn+destroy at 32 clients and exec overhead (two rounds each), then remote vs local.
#
#   cargo build --release -p stacyvm -p stacyvm-bench --bins
#   bash bench/ab.sh /path/to/baseline/stacyvm target/release/stacyvm
#
# Prints figures only; run it with nothing else busy on the machine (see docs/benchmarks.md).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
BASE="${1:?usage: bench/ab.sh BASELINE_BIN NEW_BIN}"
NEW="${2:?usage: bench/ab.sh BASELINE_BIN NEW_BIN}"
BENCH=target/release/stacyvm-bench
REMOTE=target/release/remote

load() { cut -d' ' -f1 /proc/loadavg; }
for round in $(seq 1 "${ROUNDS:-2}"); do
    for side in base new; do
        bin="$BASE"; [ "$side" = new ] && bin="$NEW"
        echo "=== round $round $side ($bin) $(date +%T) load $(load)"
        "$BENCH" spawn --bin "$bin" --levels 32 | grep -E "^\s*(clients|32)|target"
        "$BENCH" exec --bin "$bin" | grep -E "overhead|target"
    done
done
for side in base new; do
    bin="$BASE"; [ "$side" = new ] && bin="$NEW"
    echo "=== remote $side $(date +%T) load $(load)"
    "$REMOTE" --bin "$bin" --stream-mib 20 --file-mib 20 | grep -E "overhead|target"
done
