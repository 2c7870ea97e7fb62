#!/usr/bin/env bash
# Runs every cargo-fuzz target of the project for a bounded time each; fails on a crash.
#   tests/fuzz.sh [SECONDS]
# Targets are found, not listed: every <crate>/fuzz with a Cargo.toml (vmm: vsock_device;
# runtime-api: decode_frame; supervisor: zip_check, sigv4_parse), SECONDS each.
set -euo pipefail
REPO_ROOT=$(cd "$(dirname "$0")/.." && pwd)
seconds=${1:-60}
# cargo-fuzz needs a nightly toolchain (sanitizer flags). Machines of this project have
# one; where it is missing and cannot be installed, say so loudly rather than fail.
if ! cargo +nightly --version >/dev/null 2>&1 \
    && ! rustup toolchain install nightly --profile minimal >/dev/null 2>&1; then
    echo "SKIPPED: fuzzing: no nightly Rust toolchain on this machine and none could be installed" >&2
    exit 0
fi
command -v cargo-fuzz >/dev/null || cargo install --quiet --locked cargo-fuzz
mkdir -p "$REPO_ROOT/target/fuzz-logs"
for dir in "$REPO_ROOT"/*/fuzz; do
    [ -f "$dir/Cargo.toml" ] || continue
    crate=$(basename "$(dirname "$dir")")
    for target in $(cd "$dir/.." && cargo +nightly fuzz list); do
        log=$REPO_ROOT/target/fuzz-logs/$crate-$target.log
        echo "--- fuzz $crate/$target for ${seconds}s (log: $log)"
        if ! (cd "$dir/.." && cargo +nightly fuzz run "$target" -- \
                -max_total_time="$seconds" -rss_limit_mb=2048 >"$log" 2>&1); then
            tail -40 "$log"
            echo "fuzz $crate/$target: FAILED" >&2
            exit 1
        fi
        grep -E '^Done [0-9]+ runs|^#[0-9]+[[:space:]]+DONE' "$log" | tail -1
    done
done
