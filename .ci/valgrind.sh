#!/usr/bin/env bash
# CI stage: valgrind's memcheck sees tessera's blocks (issue #15, item 4).
#
# Builds the `tessera` tests with the `valgrind` feature (memcheck client requests) and runs
# `alloc/tests/sanitizer.rs`: a read of a freed block must be memcheck's "Invalid read", and
# an ordinary workload (small to huge blocks, zeroed, realloc, frees from other threads)
# must run with no error at all. Also checks that the feature builds into libtessera.so.
# Installs valgrind on a fresh Debian machine (apt-get only when it is missing).
# Respects CARGO_TARGET_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v valgrind >/dev/null; then
    echo "valgrind.sh: installing valgrind"
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq valgrind
fi
valgrind --version

cargo clippy -p tessera --features valgrind --all-targets -- -D warnings
cargo build -p tessera-preload --features valgrind
cargo test -p tessera --features valgrind --test sanitizer -- --nocapture
echo "valgrind.sh: PASS"
