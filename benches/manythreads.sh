#!/usr/bin/env bash
# Issue #19's many-threads program (src/programs/c/manythreads.c) under every allocator,
# interleaved, REPS rounds: throughput, CPU time per operation, and RSS after the rounds and
# after IDLE_MS more with every thread idle; then each allocator's medians. Builds
# libtessera.so from this tree first.
#
#   benches/manythreads.sh [threads=256] [rounds=200] [reps=3]
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${1:-256} rounds=${2:-200} reps=${3:-3} idle_ms=${IDLE_MS:-2000}
target=${CARGO_TARGET_DIR:-target}
cargo build -q --release -p tessera-preload
lib="$target/release/libtessera.so"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cc -O2 -pthread benches/src/programs/c/manythreads.c -o "$work/manythreads"
d=/usr/lib/x86_64-linux-gnu
for _ in $(seq "$reps"); do
    for a in glibc jemalloc tcmalloc mimalloc tessera tessera-percpu tessera-auto; do
        case $a in
            glibc) env=() ;;
            jemalloc) env=(LD_PRELOAD=$d/libjemalloc.so.2) ;;
            tcmalloc) env=(LD_PRELOAD=$d/libtcmalloc_minimal.so.4) ;;
            mimalloc) env=(LD_PRELOAD=$d/libmimalloc.so.2) ;;
            tessera) env=(LD_PRELOAD=$lib TESSERA_CACHE=thread) ;;
            tessera-percpu) env=(LD_PRELOAD=$lib TESSERA_CACHE=percpu) ;;
            tessera-auto) env=(LD_PRELOAD=$lib TESSERA_CACHE=auto) ;;
        esac
        if [ "${env[0]:-}" != "" ] && [ ! -e "${env[0]#LD_PRELOAD=}" ]; then
            continue
        fi
        echo "$a $(env "${env[@]}" "$work/manythreads" "$threads" "$rounds" 1000 "$idle_ms")"
    done
done | tee "$work/runs"
echo "medians of $reps (allocator cpu_ns_op mops rss_idle_mib):"
for a in $(awk '{print $1}' "$work/runs" | awk '!seen[$0]++'); do
    median() {
        grep "^$a " "$work/runs" | tr ' ' '\n' | sed -n "s/^$1=//p" | sort -g |
            awk '{v[NR] = $1} END {print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2)}'
    }
    echo "$a $(median cpu_ns_op) $(median mops) $(median rss_idle_mib)"
done
