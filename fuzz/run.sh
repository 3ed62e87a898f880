#!/usr/bin/env bash
# Runs the fuzz targets of fuzz/ for a bounded time each, on stable Rust (no sanitizer).
#
#   fuzz/run.sh [SECONDS] [TARGET...]     # default: 30 s, every target
#
# Builds every target once (cargo fuzz builds in release, with debug assertions and overflow
# checks: see fuzz/Cargo.toml), then runs them FUZZ_JOBS at a time (default 1), each from the
# committed seeds in fuzz/corpus/<target>/ plus a working corpus of its own under FUZZ_WORK
# (default: a fresh temporary folder), so that the committed corpora never grow. libFuzzer
# writes a failing input to fuzz/artifacts/<target>/; the script then prints it and exits 1.
# One summary line per target: its run time and executions.
#
# FUZZ_DEV=1 builds and runs the dev profile of fuzz/Cargo.toml (opt-level 1: a faster build,
# fewer executions a second) instead of release.
# FUZZ_BUILD_ONLY=1 builds and stops (.ci/run builds in the background while the tests run).
# FUZZ_TARGET_DIR=dir builds there instead of cargo's usual target folder (fuzz/target, or
# CARGO_TARGET_DIR), so that a fuzz build running beside the main crate's never waits for its
# lock.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
[ -z "${FUZZ_TARGET_DIR:-}" ] || export CARGO_TARGET_DIR="$FUZZ_TARGET_DIR"

SECONDS_EACH="${1:-30}"
shift || true
ALL=(canonicalize route_match token_verify config_parse header_strip cookie_parse jwks_parse)
if [ "$#" -gt 0 ]; then TARGETS=("$@"); else TARGETS=("${ALL[@]}"); fi
JOBS="${FUZZ_JOBS:-1}"
WORK="${FUZZ_WORK:-$(mktemp -d)}"
mkdir -p "$WORK"

dict_of() {
    case "$1" in
        canonicalize | route_match) echo "fuzz/dict/path.dict" ;;
        config_parse) echo "fuzz/dict/toml.dict" ;;
        jwks_parse) echo "fuzz/dict/json.dict" ;;
        *) echo "" ;;
    esac
}

PROFILE=()
[ "${FUZZ_DEV:-0}" != 1 ] || PROFILE=(--dev)
cargo fuzz build --sanitizer none "${PROFILE[@]}"
[ "${FUZZ_BUILD_ONLY:-0}" != 1 ] || exit 0

run_one() {
    local t="$1"
    local dict
    dict="$(dict_of "$t")"
    mkdir -p "$WORK/corpus/$t"
    local args=(-max_total_time="$SECONDS_EACH" -max_len=4096 -rss_limit_mb=2048 -print_final_stats=1)
    [ -n "$dict" ] && args+=(-dict="$dict")
    local start=$SECONDS
    if cargo fuzz run --sanitizer none "${PROFILE[@]}" "$t" "$WORK/corpus/$t" "fuzz/corpus/$t" -- "${args[@]}" \
        >"$WORK/$t.log" 2>&1; then
        local execs
        execs="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$WORK/$t.log" | grep -o '[0-9]*$' || echo '?')"
        echo "    fuzz $t: $((SECONDS - start)) s, $execs executions, no finding"
    else
        echo "    fuzz $t: FINDING (log $WORK/$t.log)"
        grep -E 'panicked|Test unit written|SUMMARY|ERROR' "$WORK/$t.log" | head -20 || true
        return 1
    fi
}

failed=0
pids=()
for t in "${TARGETS[@]}"; do
    run_one "$t" &
    pids+=($!)
    if [ "${#pids[@]}" -ge "$JOBS" ]; then
        wait "${pids[0]}" || failed=1
        pids=("${pids[@]:1}")
    fi
done
for p in "${pids[@]}"; do
    wait "$p" || failed=1
done
exit "$failed"
