#!/usr/bin/env bash
# Runs every cargo-fuzz target for a bounded time (FUZZ_SECONDS each, default 60).
# Needs a nightly toolchain and cargo-fuzz; installs cargo-fuzz when missing.
# A crash leaves its input in fuzz/artifacts/<target>/: fix the bug, then copy the input into
# fuzz/regressions/ so that `cargo test` (ops/tests/hostile_inputs.rs) replays it forever.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${FUZZ_SECONDS:-60}"
rustup toolchain list | grep -q nightly || rustup toolchain install nightly --profile minimal
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
cd fuzz
for target in message cdt expression; do
    mkdir -p "corpus/$target"
    # Seed each corpus with the regression inputs so the fuzzer starts from known-hard cases.
    cp -n regressions/* "corpus/$target/" 2>/dev/null || true
    echo "== fuzzing $target for ${seconds}s"
    cargo +nightly fuzz run "$target" -- -max_total_time="$seconds" -rss_limit_mb=2048 2>&1 |
        grep -E "^#[0-9]+ +DONE|ERROR|panicked|crash-|Done [0-9]+ runs" || true
    if ls "artifacts/$target"/crash-* >/dev/null 2>&1; then
        echo "fuzz target $target crashed: see fuzz/artifacts/$target/" >&2
        exit 1
    fi
done
echo "fuzzing finished: no crashes"
