#!/usr/bin/env bash
# Fuzz smoke run (issue #15, item 7): every target for a bounded time on stable with no
# sanitizer, after replaying its committed seeds; then, if a nightly toolchain is there or
# installs, a shorter pass under AddressSanitizer (cargo-fuzz's default sanitizer).
#
#   FUZZ_SECONDS       seconds per target, stable pass (default 20)
#   FUZZ_ASAN_SECONDS  seconds per target, ASan pass (default 10; 0 skips the pass)
#
# Targets: alloc_ops (alloc/realloc/free sequences), c_api (libtessera.so's C and C++ entry
# points with odd arguments), threads (two threads freeing each other's blocks), corrupt
# (a freed block corrupted in a forked child: tessera's report or right answers). alloc_ops,
# threads and corrupt run a second time with TESSERA_CACHE=percpu (the per-CPU caches).
#
# c_api is left out of the ASan pass: it exports `malloc` itself, as libtessera.so does, and
# ASan's runtime calls `malloc` (via `dlsym`) while it initialises, so our instrumented
# `malloc` runs a coverage callback before libFuzzer is set up (SIGSEGV at start). corrupt
# is left out too: under ASan, Tessera marks freed blocks as ASan's freed heap (issue #15
# item 4), so the target's deliberate write into a freed block is ASan's heap-use-after-free
# before Tessera can report it (the stable run above covers it). Under ASan, alloc_ops and
# threads keep Tessera as their global allocator with its blocks visible to ASan: a use after
# free or an overflow into a freed block inside Tessera's heap is ASan's report.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds="${FUZZ_SECONDS:-20}"
asan_seconds="${FUZZ_ASAN_SECONDS:-10}"
targets=(alloc_ops c_api threads corrupt)
asan_targets=(alloc_ops threads)
percpu_targets=(alloc_ops threads corrupt)

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

# The corpus directories gain inputs as the fuzzer runs; keep the committed seeds clean.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# run <label> <target> <seconds> <cargo arguments up to the target...>
run() {
    local label=$1 target=$2 secs=$3
    shift 3
    local dir="$work/$label-$target"
    mkdir -p "$dir"
    cp corpus/"$target"/* "$dir"/
    if cargo "$@" "$target" "$dir" -- -max_total_time="$secs" -rss_limit_mb=4096 \
        >"$work/log" 2>&1; then
        echo "fuzz.sh: PASS $label $target ${secs}s: $(grep -E '^#[0-9]+[[:space:]]+DONE' "$work/log" | tail -1)"
    else
        tail -n 60 "$work/log"
        echo "fuzz.sh: FAIL $label $target found a crash (see fuzz/artifacts/$target)"
        exit 1
    fi
}

cargo fuzz build -s none
for t in "${targets[@]}"; do
    run stable "$t" "$seconds" fuzz run -s none
done
# The per-CPU caches (issue #19): the targets whose threads allocate, with every thread on
# them (the mode is read at the first allocation, so the environment sets it).
for t in "${percpu_targets[@]}"; do
    TESSERA_CACHE=percpu run percpu "$t" "$seconds" fuzz run -s none
done

if [ "$asan_seconds" = 0 ]; then
    echo "fuzz.sh: ASan pass skipped (FUZZ_ASAN_SECONDS=0)"
    exit 0
fi
if ! cargo +nightly --version >/dev/null 2>&1 &&
    ! rustup toolchain install nightly --profile minimal; then
    echo "fuzz.sh: ASan pass skipped: the nightly toolchain did not install"
    exit 0
fi
if ! cargo +nightly fuzz build -s address; then
    echo "fuzz.sh: ASan pass skipped: the nightly ASan build failed (see above)"
    exit 0
fi
for t in "${asan_targets[@]}"; do
    run asan "$t" "$asan_seconds" +nightly fuzz run -s address
done
