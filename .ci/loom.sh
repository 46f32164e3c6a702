#!/usr/bin/env bash
# Loom model checks of the lock-free protocols (remote-free word, run queues, parking, the
# idle-M wake-up protocol),
# compiled with `--cfg tessera_loom` in a target directory of their own.
set -euo pipefail
cd "$(dirname "$0")/.."
export RUSTFLAGS="--cfg tessera_loom"
export CARGO_TARGET_DIR="${LOOM_TARGET_DIR:-target/loom}"
cargo test -p tessera --release --lib loom
if grep -rq 'tessera_loom' sched/src 2>/dev/null; then
    cargo test -p tessera-sched --release --lib loom
fi
echo "loom.sh: PASS"
