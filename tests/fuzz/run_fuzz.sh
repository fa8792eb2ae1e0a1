#!/bin/sh
# Runs one libFuzzer target for a bounded time on a copy of its seed corpus (the repository is
# never written), replaying tests/fuzz/crashes/<target>/ first. Fails on any crash, leak,
# timeout or broken invariant, and prints the reproducer.
#
#   run_fuzz.sh TARGET_BINARY FUZZ_SOURCE_DIR SECONDS [DICT]
#
# CREDPROXY_FUZZ_SECONDS overrides SECONDS; CREDPROXY_FUZZ_JOBS runs that many processes in
# parallel (libFuzzer -jobs/-workers); CREDPROXY_FUZZ_KEEP=DIR keeps the grown corpus in DIR.
# CREDPROXY_FUZZ_SEED=N fixes libFuzzer's seed, so a run repeats what an earlier one with the
# same seed did (the ctest runs use a fixed seed; 0 or unset: a new random seed each run).
set -eu
abs() { echo "$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"; }
bin=$(abs "$1") src=$(abs "$2") secs=${CREDPROXY_FUZZ_SECONDS:-$3} dict=${4:+$(abs "$4")}
name=$(basename "$bin")
jobs=${CREDPROXY_FUZZ_JOBS:-1}
work=$(mktemp -d "${TMPDIR:-/tmp}/$name.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir "$work/corpus" "$work/artifacts"
cp "$src/corpus/$name/"* "$work/corpus/"
set -- -max_total_time="$secs" -timeout=5 -rss_limit_mb=2048 -max_len=4096 \
    -print_final_stats=1 -artifact_prefix="$work/artifacts/"
[ -n "$dict" ] && set -- "$@" -dict="$dict"
seed=${CREDPROXY_FUZZ_SEED:-0}
[ "$seed" != 0 ] && set -- "$@" -seed="$seed"
[ "$jobs" -gt 1 ] && set -- "$@" -jobs="$jobs" -workers="$jobs"
dirs="$work/corpus"
[ -d "$src/crashes/$name" ] && dirs="$dirs $src/crashes/$name"
echo "$name: fuzzing for ${secs}s from $(ls "$work/corpus" | wc -l) seeds"
rc=0
# shellcheck disable=SC2086
(cd "$work" && "$bin" "$@" $dirs) || rc=$?
if [ "$jobs" -gt 1 ]; then
    tail -n 30 "$work"/fuzz-*.log 2>/dev/null || true
fi
echo "$name: corpus grew from $(ls "$src/corpus/$name" | wc -l) to $(ls "$work/corpus" | wc -l) inputs"
if [ -n "${CREDPROXY_FUZZ_KEEP:-}" ]; then
    mkdir -p "$CREDPROXY_FUZZ_KEEP" && cp "$work/corpus/"* "$CREDPROXY_FUZZ_KEEP/"
fi
if [ "$rc" != 0 ] || [ -n "$(ls "$work/artifacts")" ]; then
    for f in "$work/artifacts/"*; do
        [ -f "$f" ] || continue
        echo "$name: reproducer $(basename "$f") (base64; save it under tests/fuzz/crashes/$name/):"
        base64 "$f"
    done
    echo "$name: FAILED (libFuzzer exit $rc)"
    exit 1
fi
