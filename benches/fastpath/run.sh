#!/usr/bin/env bash
# The one-thread fast paths of C's malloc and free, thread caches against per-CPU caches
# (issue #19: the per-CPU pair no slower than 1.05x the thread caches'):
# 1. instructions and taken branches of one malloc hit and one free hit in each mode (gdb,
#    count.py: callgrind cannot see the per-CPU paths, valgrind refusing rseq), in pair.c
#    (frees that hit the per-CPU span memo) and scatter.c (issue #19's program with one
#    thread: the memo off, frees through the page map);
# 2. thread CPU ns per malloc+free pair (pair.c), REPS interleaved rounds of tessera thread,
#    tessera percpu and mimalloc, then each one's median and the per-CPU/thread ratio of the
#    medians, with the load average at the start and the end.
# Builds libtessera.so from this tree first.
#
#   benches/fastpath/run.sh [reps=7] [pairs=20000000]
set -euo pipefail
cd "$(dirname "$0")/../.."
reps=${1:-7} pairs=${2:-20000000}
target=${CARGO_TARGET_DIR:-target}
cargo build -q --release -p tessera-preload
lib=$(realpath "$target/release/libtessera.so")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cc -O2 benches/fastpath/pair.c -o "$work/pair"
cc -O2 benches/fastpath/scatter.c -o "$work/scatter"
# pair's calls all take the same path; scatter's vary (the mean of 100 of each).
for program in pair scatter; do
    calls=1
    if [ "$program" = scatter ]; then calls=100; fi
    for mode in thread percpu; do
        out=$(cd "$work" && PRE=$lib MODE=$mode CALLS=$calls gdb -q -batch \
            -x "$OLDPWD/benches/fastpath/count.py" "./$program" 2>&1)
        echo "$program instructions $mode $(grep '^COUNTS' <<<"$out" | cut -d' ' -f2-)"
        echo "$program taken branches $mode $(grep '^TAKEN' <<<"$out" | cut -d' ' -f2-)"
    done
done
echo "load average at the start: $(cut -d' ' -f1-3 /proc/loadavg)"
mimalloc=/usr/lib/x86_64-linux-gnu/libmimalloc.so.2
for _ in $(seq "$reps"); do
    echo "thread $(LD_PRELOAD=$lib TESSERA_CACHE=thread "$work/pair" "$pairs")"
    echo "percpu $(LD_PRELOAD=$lib TESSERA_CACHE=percpu "$work/pair" "$pairs")"
    if [ -e "$mimalloc" ]; then
        echo "mimalloc $(LD_PRELOAD=$mimalloc "$work/pair" "$pairs")"
    fi
done | tee "$work/runs"
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
median() {
    grep "^$1 " "$work/runs" | cut -d' ' -f2 | sort -g |
        awk '{v[NR] = $1} END {print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2)}'
}
t=$(median thread) p=$(median percpu)
echo "medians of $reps (CPU ns per pair): thread $t, percpu $p ($(awk "BEGIN {printf \"%.2f\", $p / $t}")x)$(
    [ -e "$mimalloc" ] && echo ", mimalloc $(median mimalloc)")"
