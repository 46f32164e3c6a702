#!/usr/bin/env bash
# Remote frees, built order and shuffled (remote.c): the main thread's CPU ns per free of
# blocks a worker thread built, under tessera, mimalloc and jemalloc (those installed),
# REPS interleaved rounds, with the load average at the start and the end. Builds
# libtessera.so from this tree first.
#
#   benches/fastpath/remote.sh [reps=3]
set -euo pipefail
cd "$(dirname "$0")/../.."
reps=${1:-3}
target=${CARGO_TARGET_DIR:-target}
cargo build -q --release -p tessera-preload
libs=("$(realpath "$target/release/libtessera.so")")
for peer in /usr/lib/x86_64-linux-gnu/libmimalloc.so.2 /usr/lib/x86_64-linux-gnu/libjemalloc.so.2; do
    if [ -e "$peer" ]; then libs+=("$peer"); fi
done
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cc -O2 -pthread benches/fastpath/remote.c -o "$work/remote"
echo "load average at the start: $(cut -d' ' -f1-3 /proc/loadavg)"
for _ in $(seq "$reps"); do
    for order in shuffled ordered; do
        for lib in "${libs[@]}"; do
            echo "$(basename "$lib") $(LD_PRELOAD=$lib "$work/remote" "$order")"
        done
    done
done
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
