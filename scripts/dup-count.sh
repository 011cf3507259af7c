#!/bin/bash
# scripts/dup-count.sh [REV]: how many pairs of repeated production code `duplicates` finds at
# REV (default HEAD): tests (test files and inline `#[cfg(test)] mod … { }` blocks), benches,
# examples, conformance suites, docs and scripts removed, so the figure tracks the code that
# ships (issue 10 compares it across commits; compare only counts made by the same script).
set -euo pipefail
rev="${1:-HEAD}"
cd "$(dirname "${BASH_SOURCE[0]}")/.."
strip="$PWD/scripts/lib/strip-test-modules.py"
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
git archive "$rev" | tar -x -C "$dir"
cd "$dir"
rm -rf bench docs scripts tests sdk .ci
find . \( -type d \( -name tests -o -name examples -o -name benches -o -name conformance \) \) -prune -exec rm -rf {} +
find . -type f \( -name '*tests.rs' -o -name 'tests_*.rs' -o -name '*_test.rs' -o -name 'conformance.rs' \
    -o -name 'test_*.py' -o -name '*.md' \) -delete
python3 "$strip"
git init -q . 2>/dev/null || true
duplicates --repo . --most 200 --seconds 300 > pairs.txt
grep -c '' pairs.txt | xargs echo "lines:"
cat pairs.txt
