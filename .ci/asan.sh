#!/usr/bin/env bash
# CI stage: AddressSanitizer sees tessera's blocks (issue #15, item 4).
#
# Builds the `tessera` tests with `-Zsanitizer=address` (which `alloc/build.rs` turns into
# `cfg(tessera_asan)`: freed blocks poisoned as ASan's freed heap, allocated ones
# unpoisoned) and runs `alloc/tests/sanitizer.rs`: a read of a freed block must end in
# ASan's "heap-use-after-free" report, and an ordinary workload must run clean.
# Needs a nightly toolchain: installs one with rustup when it is missing; when that is not
# possible, skips with a note (exit 0). Respects CARGO_TARGET_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! cargo +nightly --version >/dev/null 2>&1; then
    if command -v rustup >/dev/null && rustup toolchain install nightly --profile minimal; then
        :
    else
        echo "asan.sh: note: no nightly toolchain and none could be installed; skipping"
        exit 0
    fi
fi
cargo +nightly --version

# The target is named so that build scripts and proc macros are not sanitized.
target=$(rustc -vV | sed -n 's/^host: //p')
RUSTFLAGS="-Zsanitizer=address" cargo +nightly test -p tessera --test sanitizer \
    --target "$target" -- --nocapture
echo "asan.sh: PASS"
