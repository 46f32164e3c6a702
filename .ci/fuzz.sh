#!/usr/bin/env bash
# Fuzz smoke run: the alloc_ops target for a bounded time on stable (no sanitizer), after
# replaying the seed corpus. Installs cargo-fuzz if it is missing.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds="${FUZZ_SECONDS:-60}"
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
# The corpus directory gains inputs as the fuzzer runs; keep the committed seeds clean.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp corpus/alloc_ops/* "$work"/
if cargo fuzz run -s none alloc_ops "$work" -- -max_total_time="$seconds" -rss_limit_mb=4096; then
    echo "fuzz.sh: PASS alloc_ops ran ${seconds}s without a finding"
else
    echo "fuzz.sh: FAIL alloc_ops found a crash (see fuzz/artifacts/alloc_ops)"
    exit 1
fi
