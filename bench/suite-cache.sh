#!/usr/bin/env bash
# Time the test suite twice: first with empty caches, as on a fresh machine, then again with the
# caches the first run filled. Run as root from the repository root after `bash .ci/run` has
# installed the system packages and .venv. Prints one line per run. pytest's output goes to
# bench/suite-cache-{cold,warm}.log.
#
#   bash bench/suite-cache.sh [WORKERS]
#
# WORKERS defaults to the value .ci/run uses: one per core, at most four.
set -euo pipefail

workers=${1:-$(nproc)}
if [ "$workers" -gt 4 ]; then
    workers=4
fi
caches=$(mktemp -d /var/tmp/suture-suite-cache.XXXXXX)
trap 'rm -rf "$caches"' EXIT

for run in cold warm; do
    started=$(date +%s)
    status=0
    SUTURE_TEST_CACHE="$caches/fixtures" XDG_CACHE_HOME="$caches/xdg" \
        .venv/bin/python -m pytest --integration -n "$workers" --dist loadfile -q \
        -p no:cacheprovider --durations=15 > "bench/suite-cache-$run.log" 2>&1 || status=$?
    elapsed=$(( $(date +%s) - started ))
    printf '%s: %d s, pytest exit %s, %s\n' "$run" "$elapsed" "$status" \
        "$(tail -n 1 "bench/suite-cache-$run.log")"
done
