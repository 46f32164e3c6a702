#!/usr/bin/env bash
# CI stage: libtessera.so (alloc/preload) as the C and C++ allocator of real programs.
#
# Builds the library, then runs, each with a PASS/FAIL line and its time:
#   the shared objects the library needs (libc and the loader only); that the code programs
#   run lies in its hot part (callgrind, alloc/preload/hot-text.ld), and the constants they
#   do not read after the text;
#   C tests of every export (alloc/preload/tests/c), on tessera and, as a control, on glibc;
#   the C++ operators; bad pointers and heap attacks (attacks.c) that must abort with
#   tessera's report; sampled guarded allocations (guarded.c) catching an overflow and a use
#   after free; the library
#   loaded with dlopen; dlopen/dlclose of TLS modules under the preload; threads joined
#   after small-block work (join_churn.c, a hang once); a fork that leaves the parent's
#   memory as it was (fork_rss.c); an idle program's purger asleep (purger_idle.c);
#   python3 (a script, and 38 modules of CPython's regression tests), sqlite3,
#   redis-server, git and gcc under LD_PRELOAD, their output compared with plain glibc runs;
#   a heap profile read with `go tool pprof` (heap_profile.c), and one written on a signal
#   (prof_signal.c); the scheduler's profile tests, which use `go tool pprof` when go is
#   installed, as it is here; and a heavier threaded stress.
# Ends with one verdict line; exits non-zero if anything failed.
#
# Installs what it needs on a fresh Debian 12 machine (apt-get only when something is
# missing). Respects CARGO_TARGET_DIR. TESSERA_PRELOAD_KEEP=1 keeps the scratch directory
# (logs, test binaries, databases) for a look after a failure. Meant to finish in about a minute once the crate
# is built; the release build (fat LTO) comes first.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
TESTS=$ROOT/alloc/preload/tests
STAGE_START=$EPOCHREALTIME

WORK=$(mktemp -d "${TMPDIR:-/tmp}/tessera-preload.XXXXXX")
REDIS_PID=
cleanup() {
    if [ -n "$REDIS_PID" ] && kill -0 "$REDIS_PID" 2>/dev/null; then
        kill "$REDIS_PID" 2>/dev/null
        wait "$REDIS_PID" 2>/dev/null
    fi
    if [ "${TESSERA_PRELOAD_KEEP:-0}" = 1 ]; then
        echo "scratch directory kept: $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT

elapsed() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }'; }

PASSED=0
FAILED=0
FAILED_NAMES=()
# check NAME COMMAND...: runs COMMAND with its output in $WORK/NAME.log; prints PASS or
# FAIL with the time taken, the log's "info:" lines, and on failure the log's tail.
check() {
    local name=$1
    shift
    local log=$WORK/$name.log t0=$EPOCHREALTIME status
    if "$@" >"$log" 2>&1; then
        status=PASS
        PASSED=$((PASSED + 1))
    else
        status=FAIL
        FAILED=$((FAILED + 1))
        FAILED_NAMES+=("$name")
    fi
    printf '%s  %-26s %7ss\n' "$status" "$name" "$(elapsed "$t0")"
    grep '^info: ' "$log" | sed 's/^info: /      /'
    if [ "$status" = FAIL ]; then
        echo "      --- last lines of $name's output ---"
        tail -n 25 "$log" | sed 's/^/      | /'
    fi
}

info() { echo "info: $*"; }

# ---- tools ---------------------------------------------------------------------------------

PACKAGES=(gcc g++ python3 sqlite3 redis-server redis-tools git golang-go valgrind)
install_tools() {
    local missing=0 cmd
    for cmd in gcc g++ python3 sqlite3 redis-server redis-benchmark redis-cli git go valgrind; do
        command -v "$cmd" >/dev/null 2>&1 || missing=1
    done
    if [ "$missing" = 0 ]; then
        info "all tools present, apt-get skipped"
        return 0
    fi
    apt_install "${PACKAGES[@]}"
}

# Installs Debian packages, refreshing the package lists only if the first try fails: on a
# machine whose lists are current this saves the slowest step.
apt_install() {
    local sudo=
    [ "$(id -u)" = 0 ] || sudo=sudo
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get install -y --no-install-recommends "$@" ||
        { $sudo apt-get update && $sudo apt-get install -y --no-install-recommends "$@"; }
}

# ---- build -----------------------------------------------------------------------------------

LIB=
build_library() {
    # Cargo reports where it put the artifact, whatever CARGO_TARGET_DIR or the cargo
    # config say; take the path from its JSON messages rather than guessing.
    local messages=$WORK/cargo-messages.json
    cargo build --release -p tessera-preload --message-format=json-render-diagnostics \
        >"$messages" || return 1
    LIB=$(grep -o '"[^"]*/libtessera\.so"' "$messages" | tail -n 1 | tr -d '"')
    [ -n "$LIB" ] && [ -f "$LIB" ] || { echo "libtessera.so not found in cargo's output"; return 1; }
    info "$LIB ($(stat -c %s "$LIB") bytes)"
}

# The library adds no shared object a C program would not load anyway: libm cost git ~460
# KiB of RSS when two profiler calls pulled it in, libgcc_s ~100 KiB (the unwinder is linked
# in, hidden: alloc/preload/build.rs), and none of libgcc's unwinder symbols is exported
# (they would take the place of the program's own libgcc_s).
needed_libraries() {
    local needed exported
    needed=$(readelf -d "$LIB" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | sort | tr '\n' ' ')
    info "NEEDED: $needed"
    exported=$(nm -D --defined-only "$LIB" | grep -c ' _Unwind_')
    info "exported _Unwind_ symbols: $exported"
    [ "$needed" = "ld-linux-x86-64.so.2 libc.so.6 " ] && [ "$exported" = 0 ]
}

# The library's first read-only segment (its dynamic symbols, relocations and the
# allocator's own constants, which every program reads at start-up) stays smaller than one
# 64 KiB fault-around window, with std's constants and the unwind tables in a segment after
# the text that programs do not touch (alloc/preload/hot-text.ld): 44 KiB less resident in
# every process (issue #13, item 6). Checked on the file's program headers and sections.
cold_rodata() {
    local first text cold eh
    first=$(readelf -lW "$LIB" | awk '$1 == "LOAD" { print $5; exit }')
    text=$(readelf -SW "$LIB" | awk '$2 == ".text" { print $4 }')
    cold=$(readelf -SW "$LIB" | awk '$2 == ".rodata.cold" { print $4 }')
    eh=$(readelf -SW "$LIB" | awk '$2 == ".eh_frame" { print $4 }')
    [ -n "$first" ] && [ -n "$text" ] && [ -n "$cold" ] && [ -n "$eh" ] ||
        { echo "no first LOAD, .text, .rodata.cold or .eh_frame in $LIB"; return 1; }
    info "first read-only segment: $(($first / 1024)) KiB; .text at 0x$text," \
        ".rodata.cold at 0x$cold, .eh_frame at 0x$eh"
    [ $(($first)) -lt 65536 ] ||
        { echo "the first read-only segment fills a 64 KiB window"; return 1; }
    [ $((0x$cold)) -gt $((0x$text)) ] && [ $((0x$eh)) -gt $((0x$text)) ] ||
        { echo ".rodata.cold or .eh_frame is not after .text"; return 1; }
}

# The library's small zero-initialised statics, which every program touches, share a few
# pages ahead of the large arrays (`.bss.large`, alloc/preload/hot-text.ld): with the
# arrays between them, 3-4 pages more of the BSS were resident in every process (issue
# #13, item 6). Checked on the file's sections: `.bss` holds no array of 64 KiB or more.
small_statics() {
    local bss large
    bss=$(readelf -SW "$LIB" | awk '$2 == ".bss" { print $4, $6 }')
    large=$(readelf -SW "$LIB" | awk '$2 == ".bss.large" { print $4, $6 }')
    [ -n "$bss" ] && [ -n "$large" ] || { echo "no .bss or .bss.large in $LIB"; return 1; }
    set -- $bss $large
    info ".bss: $((0x$2 / 1024)) KiB at 0x$1; .bss.large: $((0x$4 / 1024)) KiB at 0x$3"
    local lo=$((0x$1)) hi=$((0x$1 + 0x$2)) big="" address size kind name
    while read -r address size kind name; do
        [ -n "$name" ] && [ "${kind,,}" = b ] || continue
        if ((0x$address >= lo && 0x$address < hi && 0x$size >= 65536)); then
            big+=" $name"
        fi
    done < <(nm -S --defined-only "$LIB")
    [ -z "$big" ] || { echo "large arrays left in .bss:$big"; return 1; }
}

# The code a program runs stays in the library's hot part (alloc/preload/hot-text.ld): a
# function that runs outside it makes its 64 KiB window of text resident in every process
# (issue #13, item 6). callgrind names every function of the library that ran in python3
# and in a git session (its children traced); each must lie between the start of .init and
# the script's `tessera_hot_text_end`. A failure names the functions, for the script.
hot_text() {
    local out=$WORK/hot-text
    mkdir -p "$out/repo" || return 1
    local script='import json; d = {str(i): [i] * (i % 9) for i in range(20000)}; print(len(json.dumps(d)))'
    LD_PRELOAD=$LIB valgrind --tool=callgrind --callgrind-out-file="$out/cg.py.%p" "$PY" -c "$script" ||
        return 1
    # Heap profiling off, no fork, no second thread: what every program runs, which must lie
    # in the script's tier 1.
    TESSERA_PROF_RATE=0 LD_PRELOAD=$LIB valgrind --tool=callgrind \
        --callgrind-out-file="$out/core.py.%p" "$PY" -c "$script" || return 1
    (
        cd "$out/repo" && export HOME=$out GIT_CONFIG_NOSYSTEM=1 && seq 1 5000 >numbers.txt &&
            LD_PRELOAD=$LIB valgrind --tool=callgrind --trace-children=yes \
                --callgrind-out-file="$out/cg.git.%p" sh -c \
                'git init -q . && git add . && git -c user.name=ci -c user.email=ci@x commit -q -m one && git gc -q'
    ) >/dev/null 2>&1 || { echo "git under callgrind failed"; return 1; }
    local start end core init_offset
    start=$(readelf -SW "$LIB" | awk '$2 == ".init" { print $4 }')
    init_offset=$(readelf -SW "$LIB" | awk '$2 == ".init" { print $5 }')
    end=$(nm "$LIB" | awk '$3 == "tessera_hot_text_end" { print $1 }')
    core=$(nm "$LIB" | awk '$3 == "tessera_core_text_end" { print $1 }')
    [ -n "$start" ] && [ -n "$end" ] && [ -n "$core" ] ||
        { echo "no .init, tessera_core_text_end or tessera_hot_text_end in $LIB"; return 1; }
    # Tier 1, and tier 2 up to the fork's sides, end inside the second 64 KiB window that
    # the text starts in, counted in the file (where large page-cache folios are aligned)
    # and in memory (where fault-around's windows are; the library is mapped at a 2 MiB
    # boundary): a program that does not fork keeps at most two windows of the text
    # resident, heap-profile samples, threads and all.
    local threads
    threads=$(nm "$LIB" | awk '$3 == "tessera_thread_text_end" { print $1 }')
    [ -n "$threads" ] || { echo "no tessera_thread_text_end in $LIB"; return 1; }
    local offset_limit=$(((0x$init_offset / 65536 + 2) * 65536))
    local address_limit=$(((0x$start / 65536 + 2) * 65536))
    info "two windows end at $(printf %#x $address_limit) (file offset $(printf %#x $offset_limit))"
    local tier_end tier_offset
    for tier_end in "$core" "$threads"; do
        tier_offset=$((0x$tier_end - 0x$start + 0x$init_offset))
        info "a tier ends at $(printf %#x $((0x$tier_end))) (file offset $(printf %#x $tier_offset))"
        [ "$tier_offset" -le "$offset_limit" ] && [ $((0x$tier_end)) -le "$address_limit" ] ||
            { echo "hot-text.ld's tiers spill into a third 64 KiB window"; return 1; }
    done
    # malloc and free start on a cache line (hot-text.ld: on a 16-byte boundary a pair
    # took 10% longer).
    local name address
    for name in malloc free; do
        address=$(nm -D --defined-only "$LIB" | awk -v n="$name" '$3 == n { print $1 }')
        [ -n "$address" ] && [ $((0x$address % 64)) = 0 ] ||
            { echo "$name at ${address:-nowhere}, not on a 64-byte boundary"; return 1; }
    done
    nm -S -C --defined-only "$LIB" >"$out/symbols.txt" || return 1
    # Every run's functions lie in the hot part, and those of the runs without profiling in
    # tier 1.
    cat >"$out/check.py" <<'EOF' || return 1
import glob, re, sys
out, start, end, runs = sys.argv[1], int(sys.argv[2], 16), int(sys.argv[3], 16), sys.argv[4]
# Every function of the library that ran, as callgrind names it (demangled, hash dropped).
ran = set()
for path in glob.glob(out + "/" + runs + ".*"):
    objects, names, obj = {}, {}, None
    for line in open(path, errors="replace"):
        m = re.match(r"^(c?ob|c?fn)=\((\d+)\)(?: (.*))?$", line.rstrip("\n"))
        if not m:
            continue
        kind, ident, name = m.groups()
        table = objects if kind.endswith("ob") else names
        if name is not None:
            table[ident] = name
        if kind == "ob":
            obj = objects.get(ident)
        elif kind == "fn" and obj and "libtessera" in obj:
            ran.add(names[ident].replace("'2", ""))
# Where each name lies in the library.
where = {}
for line in open(out + "/symbols.txt"):
    fields = line.rstrip("\n").split(" ", 3)
    if len(fields) == 4 and fields[2] in "tTwW":
        name = re.sub(r"::h[0-9a-f]{16}$", "", fields[3])
        where.setdefault(name, []).append(int(fields[0], 16))
outside = []
for name in sorted(ran):
    addresses = [int(name, 16)] if name.startswith("0x") else where.get(name, [])
    if addresses and not any(start <= a < end for a in addresses):
        outside.append(f"{name} at {', '.join(hex(a) for a in addresses)}")
part = "hot part" if runs == "cg" else "tier 1"
print(f"info: {len(ran)} functions of the library ran in the {runs} runs, {part} {start:#x}..{end:#x}")
for entry in outside:
    print(f"ran outside the {part}:", entry)
sys.exit(1 if outside or not ran else 0)
EOF
    "$PY" "$out/check.py" "$out" "$start" "$end" cg && "$PY" "$out/check.py" "$out" "$start" "$core" core
}

compile_tests() {
    local cflags=(-O2 -pthread -Wall -Wextra -Werror)
    # -fno-builtin: keep GCC from folding or eliding the allocation calls under test.
    gcc "${cflags[@]}" -fno-builtin -I"$ROOT/alloc/preload/include" -o "$WORK/exports" \
        "$TESTS/c/exports.c" &&
        gcc "${cflags[@]}" -fno-builtin -Wno-free-nonheap-object -o "$WORK/bad_free" \
            "$TESTS/c/bad_free.c" &&
        gcc "${cflags[@]}" -fno-builtin -o "$WORK/attacks" "$TESTS/c/attacks.c" &&
        gcc "${cflags[@]}" -fno-builtin -o "$WORK/guarded" "$TESTS/c/guarded.c" &&
        gcc "${cflags[@]}" -o "$WORK/dlopen" "$TESTS/c/dlopen.c" &&
        gcc "${cflags[@]}" -o "$WORK/tls_churn" "$TESTS/c/tls_churn.c" &&
        gcc "${cflags[@]}" -o "$WORK/late_free" "$TESTS/c/late_free.c" &&
        gcc "${cflags[@]}" -o "$WORK/join_churn" "$TESTS/c/join_churn.c" &&
        gcc "${cflags[@]}" -fno-builtin -o "$WORK/limit" "$TESTS/c/limit.c" &&
        gcc "${cflags[@]}" -fno-builtin -o "$WORK/idle_return" "$TESTS/c/idle_return.c" &&
        gcc "${cflags[@]}" -fno-builtin -o "$WORK/fork_rss" "$TESTS/c/fork_rss.c" &&
        gcc "${cflags[@]}" -fno-builtin -o "$WORK/purger_idle" "$TESTS/c/purger_idle.c" &&
        # No frame pointers (as distributions build): the profiler unwinds with .eh_frame.
        gcc "${cflags[@]}" -g -fomit-frame-pointer -fno-builtin -o "$WORK/heap_profile" \
            "$TESTS/c/heap_profile.c" -ldl &&
        gcc "${cflags[@]}" -o "$WORK/prof_signal" "$TESTS/c/prof_signal.c" &&
        gcc -O2 -Wall -Wextra -Werror -shared -fPIC -o "$WORK/tls_module.so" \
            "$TESTS/c/tls_module.c" &&
        g++ "${cflags[@]}" -std=c++17 -o "$WORK/cxx" "$TESTS/c/cxx.cpp"
}

# ---- C and C++ tests ----------------------------------------------------------------------------

# Heap profiling off: the statistics checks count a block's bytes exactly, and a sampled
# block takes a span of its own (the stress run below keeps the default rate).
exports_tessera() {
    TESSERA_PROF_RATE=0 LD_PRELOAD=$LIB "$WORK/exports" --expect-tessera
}

exports_glibc() {
    # The same program on glibc: a check that fails here is a broken test, not a finding.
    "$WORK/exports"
}

cxx_tessera() {
    LD_PRELOAD=$LIB "$WORK/cxx" --expect-tessera
}

# must_abort PROGRAM ARGS...: runs PROGRAM under the preload; it must end in SIGABRT with a
# "tessera: " line on stderr (logged as info), else its output is shown and this fails.
# Heap profiling off: a sampled block lives in a span of its own, away from the neighbours
# an attack program lays out.
must_abort() {
    local status
    TESSERA_PROF_RATE=0 LD_PRELOAD=$LIB "$@" >"$WORK/abort.out" 2>"$WORK/abort.err"
    status=$?
    if [ "$status" = 134 ] && grep -q '^tessera: ' "$WORK/abort.err"; then
        info "${*:2}: $(grep -m1 '^tessera: ' "$WORK/abort.err" | cut -c1-110)"
    else
        echo "${*:2}: exit status $status, stderr:"
        cat "$WORK/abort.err" "$WORK/abort.out"
        return 1
    fi
}

bad_pointers() {
    local mode bad=0
    for mode in stack realloc-stack usable-global interior interior-odd interior-old double-small double-old realloc-interior double-large double-huge; do
        must_abort "$WORK/bad_free" "$mode" || bad=1
    done
    return $bad
}

# Heap attacks (issue #15): each must end in tessera's report, never in the attacker's
# address or a block handed out twice. Double frees at depths 1..64, sizes 8 B..3000 B.
attacks() {
    local spec bad=0 specs=(
        "overflow 16" "overflow 64" "overflow 256" "overflow 3000"
        "double-abca 16" "double-abca 200" "double-abca 3000"
        "double-old 100" "double-old-head 48" "double-thread 64" "double-thread-old 100" "double-remote 64" "double-remote-apart 64" "double-remote-owner 64"
        "realloc-freed 64" "realloc-interior 64" "realloc-interior 16" "usable-freed 64"
    )
    local depth
    for depth in 1 2 3 7 16 63 64; do specs+=("double-deep 8 $depth" "double-deep 48 $depth"); done
    for spec in "${specs[@]}"; do
        # shellcheck disable=SC2086 # the spec is the mode and its numbers
        must_abort "$WORK/attacks" $spec || bad=1
    done
    return $bad
}

# Sampled guarded allocations (issue #15, item 3), every allocation sampled: an overflow by
# one byte and a use after free must end in tessera's report naming the access and the
# block, with the stack of the allocation (and of the free); normal work and python3 must
# run as usual with the setting on.
guarded_report() {
    local mode=$1 size=$2 status err=$WORK/guarded-$1.err
    # Heap profiling off: a heap-profile sample would take the place of a guarded one.
    TESSERA_PROF_RATE=0 TESSERA_GUARDED_SAMPLE_RATE=1 LD_PRELOAD=$LIB "$WORK/guarded" "$mode" "$size" \
        >"$WORK/guarded.out" 2>"$err"
    status=$?
    local want=("^tessera: $3" " the block 0x[0-9a-f]* of $size bytes" "^  allocated by thread" "guarded+0x")
    [ "$mode" = uaf ] && want+=("^  freed by thread")
    local pattern ok=1
    [ "$status" = 134 ] || ok=0
    for pattern in "${want[@]}"; do grep -q -e "$pattern" "$err" || ok=0; done
    if [ "$ok" = 1 ]; then
        info "$mode $size: $(grep -m1 '^tessera: ' "$err" | cut -c1-110)"
    else
        echo "$mode $size: exit status $status, expected ${want[*]}; stderr:"
        cat "$err" "$WORK/guarded.out"
        return 1
    fi
}

guarded() {
    guarded_report overflow 32 "heap buffer overflow past a guarded block: write at 0x[0-9a-f]*, 0 bytes past the end of" &&
        guarded_report overflow 4096 "heap buffer overflow past a guarded block" &&
        guarded_report uaf 64 "use after free of a guarded block: read at" &&
        TESSERA_GUARDED_SAMPLE_RATE=1 LD_PRELOAD=$LIB "$WORK/guarded" normal &&
        # Not exports.c: its statistics checks fail, since guarded blocks are not counted
        # in tessera_stats yet.
        guarded_python
}

guarded_python() {
    local want got rate
    want=$(python3 "$TESTS/alloc_heavy.py") || return 1
    for rate in 1 50; do
        got=$(TESSERA_GUARDED_SAMPLE_RATE=$rate PYTHONMALLOC=malloc LD_PRELOAD=$LIB \
            python3 "$TESTS/alloc_heavy.py") || return 1
        [ "$got" = "$want" ] || { echo "python3 at rate $rate: '$got', want '$want'"; return 1; }
    done
    info "python3 (PYTHONMALLOC=malloc) at rates 1 and 50: same output as glibc"
}

dlopen_test() {
    "$WORK/dlopen" "$LIB"
}

tls_churn() {
    local i modules=()
    for i in $(seq 1 40); do
        cp "$WORK/tls_module.so" "$WORK/tls_module_$i.so"
        modules+=("$WORK/tls_module_$i.so")
    done
    LD_PRELOAD=$LIB "$WORK/tls_churn" "${modules[@]}"
}

late_free() {
    LD_PRELOAD=$LIB "$WORK/late_free" && "$WORK/late_free"
}

# Threads joined after small-block work only: the background thread must not be started
# from a free inside pthread_join (it hung there, waiting for glibc's stack lock). SIGKILL,
# since a process stuck on that lock outlives SIGTERM.
join_churn() {
    timeout -s KILL 60 env LD_PRELOAD="$LIB" "$WORK/join_churn"
}

memory_limit() {
    TESSERA_MEMORY_LIMIT=256m LD_PRELOAD=$LIB "$WORK/limit" 256 &&
        TESSERA_MEMORY_LIMIT=64m TESSERA_THP=always LD_PRELOAD=$LIB "$WORK/limit" 64 &&
        TESSERA_MEMORY_LIMIT=64m LD_PRELOAD=$LIB "$WORK/limit" 64 1048576
}

idle_return() {
    LD_PRELOAD=$LIB "$WORK/idle_return"
}

# A fork leaves the parent's memory as it was (the fork handlers' locks); glibc as the
# control.
fork_rss() {
    LD_PRELOAD=$LIB "$WORK/fork_rss" && "$WORK/fork_rss"
}

# An idle program's purger sleeps (with thread caches, under the default `auto`).
purger_idle() {
    LD_PRELOAD=$LIB "$WORK/purger_idle"
}

stress_heavy() {
    LD_PRELOAD=$LIB "$WORK/exports" --expect-tessera --only-stress --stress 150000
}

# ---- real programs ------------------------------------------------------------------------------

# Uses the distribution's python3 when there is one (a pyenv or venv shim on PATH would put
# shell scripts between LD_PRELOAD and the interpreter).
PY=python3
[ -x /usr/bin/python3 ] && PY=/usr/bin/python3

# TESSERA_PROF_SIGNAL: the profile a signal asks for is written by tessera's background
# thread while the program makes no allocator call (prof_signal.c); then `go tool pprof`
# must read it.
prof_signal() {
    local dir=$WORK/prof-signal
    mkdir -p "$dir" &&
        TESSERA_PROF_RATE=16k TESSERA_PROF_SIGNAL=SIGUSR2 TESSERA_PROF_OUT="$dir/sig-%p.pb.gz" \
            LD_PRELOAD=$LIB "$WORK/prof_signal" "$dir" || return 1
    local file
    file=$(ls "$dir"/sig-*.pb.gz | head -n 1)
    go tool pprof -raw "$file" >"$WORK/prof-signal.txt" 2>&1 || { cat "$WORK/prof-signal.txt"; return 1; }
    # At least one sample line ("objects bytes objects bytes: locations").
    grep -Eq '^ +[0-9]+ +[0-9]+ +[0-9]+ +[0-9]+: [0-9]' "$WORK/prof-signal.txt"
}

# Heap profile (issue #18): two allocation sites keeping 72 and 24 MiB, a third freeing
# all it allocates; `go tool pprof -top` on the profile must give the kept heap to the two
# sites in shares 75/25 within 5 points (at TESSERA_PROF_RATE=32k, about 3,000 samples:
# the share's standard error is 0.8 points), and nothing in use to the third.
heap_profile() {
    local out=$WORK/heap.pb.gz top=$WORK/heap-top.txt
    TESSERA_PROF_RATE=32k LD_PRELOAD=$LIB "$WORK/heap_profile" "$out" || return 1
    go tool pprof -top -sample_index=inuse_space "$WORK/heap_profile" "$out" >"$top" 2>&1 ||
        { cat "$top"; return 1; }
    cat "$top"
    python3 - "$top" <<'PY'
import re, sys
shares = {}
for line in open(sys.argv[1]):
    m = re.match(r"\s*[\d.]+\w*B?\s+([\d.]+)%\s+[\d.]+%\s+[\d.]+\w*B?\s+[\d.]+%\s+(\S+)", line)
    if m:
        shares[m.group(2)] = float(m.group(1))
a, b = shares.get("site_a", 0.0), shares.get("site_b", 0.0)
c = shares.get("site_c", 0.0)
print(f"info: inuse_space flat: site_a {a}%, site_b {b}%, site_c {c}%")
ok = abs(a - 75) <= 5 and abs(b - 25) <= 5 and c < 1
sys.exit(0 if ok else 1)
PY
}

# The scheduler's profiles (issue #18): the goroutine profile, labels, /debug/pprof/ over
# HTTP. The README's test command runs these too, but before this stage installs go, so
# there they check what they can without it; TESSERA_REQUIRE_GO makes a missing go an error.
sched_pprof() {
    TESSERA_REQUIRE_GO=1 cargo test -p tessera-sched --test goroutine_profile \
        --test pprof_http --test labels
}

python_test() {
    local script=$TESTS/alloc_heavy.py
    local base ours ours_malloc
    base=$("$PY" "$script") || return 1
    ours=$(LD_PRELOAD=$LIB "$PY" "$script") || return 1
    ours_malloc=$(LD_PRELOAD=$LIB PYTHONMALLOC=malloc "$PY" "$script") || return 1
    local mapped
    mapped=$(LD_PRELOAD=$LIB "$PY" -c \
        'print(any("libtessera" in line for line in open("/proc/self/maps")))')
    echo "glibc:                  $base"
    echo "tessera:                $ours"
    echo "tessera, PYTHONMALLOC=malloc: $ours_malloc"
    [ "$mapped" = True ] || { echo "libtessera.so not mapped in python3"; return 1; }
    [ "$base" = "$ours" ] && [ "$base" = "$ours_malloc" ] || { echo "checksums differ"; return 1; }
    info "$("$PY" --version 2>&1): same checksum on glibc, tessera, tessera+PYTHONMALLOC=malloc"
}

# CPython's own regression tests, with python3's allocations going to malloc
# (PYTHONMALLOC=malloc: every object through tessera, pymalloc's arenas bypassed), in
# regrtest's worker processes. The modules chosen work the heap hard and check results
# exactly (containers, strings, codecs, pickling, decimal, regular expressions, XML,
# weak references and the cycle collector, ctypes, fork with threads); none depends on
# timing or the network, which a busy CI machine would make flaky whatever the
# allocator. Debian ships them apart, in libpython3.X-testsuite. A module that also fails
# without tessera is the environment's problem, not ours: it is reported, not failed.
PY_TESTS=(test_dict test_list test_set test_tuple test_json test_re test_bytes test_unicode
    test_collections test_itertools test_functools test_zlib test_pickle test_struct
    test_array test_deque test_heapq test_sort test_string test_weakref test_gc
    test_memoryio test_decimal test_fractions test_statistics test_random test_hashlib
    test_csv test_xml_etree test_email test_ctypes test_mmap test_thread
    test_threading_local test_fork1 test_bisect test_ordered_dict test_enum)
python_regrtest() {
    local version package
    version=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])') || return 1
    package=libpython$version-testsuite
    if ! "$PY" -c 'import test.test_dict' 2>/dev/null; then
        apt_install "$package" >/dev/null || return 1
    fi
    local log=$WORK/regrtest.log failed
    if LD_PRELOAD=$LIB PYTHONMALLOC=malloc "$PY" -m test -j2 "${PY_TESTS[@]}" >"$log" 2>&1; then
        info "python $version regrtest, PYTHONMALLOC=malloc: ${#PY_TESTS[@]} modules pass"
        return 0
    fi
    cat "$log"
    failed=$(regrtest_failures "$log")
    [ -n "$failed" ] || { echo "regrtest failed without naming a module"; return 1; }
    echo "--- the failed modules on glibc, to tell tessera's failures from the machine's ---"
    local glibc_log=$WORK/regrtest-glibc.log ours
    # shellcheck disable=SC2086 # one word per module
    "$PY" -m test $failed >"$glibc_log" 2>&1
    cat "$glibc_log"
    ours=$(comm -23 <(echo "$failed") <(regrtest_failures "$glibc_log"))
    if [ -n "$ours" ]; then
        echo "failed on tessera only: $(echo $ours)"
        return 1
    fi
    info "python $version regrtest: $(echo $failed) fail on glibc too: not counted against tessera"
}

# The modules regrtest's summary names as failed ("N test(s) failed:" and the lines below
# it), one a line, sorted.
regrtest_failures() {
    sed -n '/tests\{0,1\} failed:$/,/^$/p' "$1" | grep -o 'test_[A-Za-z0-9_]*' | sort -u
}

sqlite_test() {
    local sql=$WORK/bulk.sql
    {
        echo "CREATE TABLE t(id INTEGER PRIMARY KEY, grp INTEGER, name TEXT, val REAL);"
        echo "BEGIN;"
        awk 'BEGIN { for (i = 1; i <= 200000; i++)
            printf "INSERT INTO t(grp, name, val) VALUES (%d, %c%s-%d-%x%c, %d.%02d);\n",
                i % 97, 39, "row", i, (i * 40503) % 1000003, 39, (i * 37) % 1000, i % 100 }'
        echo "COMMIT;"
        echo "CREATE INDEX t_grp_name ON t(grp, name);"
        echo "SELECT count(*), sum(val), min(name), max(name) FROM t;"
        echo "SELECT grp, count(*), printf('%.2f', sum(val)), printf('%.4f', avg(length(name)))"
        echo "  FROM t GROUP BY grp ORDER BY sum(val) DESC LIMIT 8;"
        echo "SELECT count(DISTINCT name), printf('%.2f', total(val)) FROM t WHERE grp BETWEEN 10 AND 20;"
        echo "SELECT group_concat(name, ',') FROM (SELECT name FROM t WHERE grp = 5 ORDER BY name LIMIT 20);"
        echo "DELETE FROM t WHERE id % 3 = 0;"
        echo "VACUUM;"
        echo "SELECT count(*), printf('%.2f', sum(val)) FROM t;"
    } >"$sql"
    local base ours
    rm -f "$WORK/glibc.db" "$WORK/tessera.db"
    base=$(sqlite3 "$WORK/glibc.db" <"$sql") || return 1
    ours=$(LD_PRELOAD=$LIB sqlite3 "$WORK/tessera.db" <"$sql") || return 1
    echo "$ours"
    [ "$base" = "$ours" ] || { echo "--- glibc run:"; echo "$base"; return 1; }
    [ -n "$ours" ] || return 1
    info "sqlite3 $(sqlite3 --version | cut -d' ' -f1): 200k inserts, index, aggregates, vacuum: same output as glibc"
}

redis_test() {
    # A unix socket in our scratch directory, no TCP port: a port probed free can be taken
    # by another process before redis binds it, and no one else can take this path.
    local sock=$WORK/redis.sock ready=0
    local cli=(redis-cli -s "$sock")
    LD_PRELOAD=$LIB redis-server --port 0 --unixsocket "$sock" --save '' --appendonly no \
        --daemonize no --dir "$WORK" --logfile "$WORK/redis.log" &
    REDIS_PID=$!
    # Until it answers or dies; the minute is only a hang guard for a loaded machine.
    local give_up=$((SECONDS + 60))
    while [ "$SECONDS" -lt "$give_up" ]; do
        if [ "$("${cli[@]}" ping 2>/dev/null)" = PONG ]; then
            ready=1
            break
        fi
        kill -0 "$REDIS_PID" 2>/dev/null || break
        sleep 0.1
    done
    [ "$ready" = 1 ] || { echo "redis-server did not come up"; cat "$WORK/redis.log"; return 1; }
    if ! grep -q libtessera "/proc/$REDIS_PID/maps"; then
        echo "libtessera.so is not mapped in redis-server"
        return 1
    fi
    echo "redis-server pid $REDIS_PID on $sock, libtessera.so mapped"

    # A value that goes through large allocations, read back intact.
    head -c 3000000 /dev/urandom | base64 -w0 >"$WORK/big.txt"
    "${cli[@]}" -x set big <"$WORK/big.txt" >/dev/null || return 1
    local want got
    want=$(stat -c %s "$WORK/big.txt")
    got=$("${cli[@]}" strlen big)
    [ "$want" = "$got" ] || { echo "strlen big: $got, want $want"; return 1; }
    "${cli[@]}" get big | tr -d '\n' | cmp -s - "$WORK/big.txt" ||
        { echo "big value changed"; return 1; }

    local out=$WORK/redis-benchmark.out
    timeout 90 redis-benchmark -s "$sock" -n 20000 -q -t set,get,lpush,lpop \
        | tr '\r' '\n' >"$out" || { echo "redis-benchmark failed"; cat "$out"; return 1; }
    local op line bad=0
    for op in SET GET LPUSH LPOP; do
        line=$(grep -E "^$op: [0-9.]+ requests per second" "$out" | tail -n 1)
        if [ -n "$line" ]; then
            info "redis $line"
        else
            echo "no requests/s reported for $op"
            bad=1
        fi
    done
    local dbsize
    dbsize=$("${cli[@]}" dbsize)
    echo "dbsize after benchmark: $dbsize"

    "${cli[@]}" shutdown nosave >/dev/null 2>&1
    local status=0
    wait "$REDIS_PID" || status=$?
    REDIS_PID=
    if [ "$status" != 0 ]; then
        echo "redis-server exit status $status"
        bad=1
    fi
    if ! grep -q 'ready to exit, bye bye' "$WORK/redis.log"; then
        echo "redis-server did not shut down cleanly:"
        tail -n 30 "$WORK/redis.log"
        bad=1
    fi
    info "redis-server $(redis-server --version | grep -o 'v=[0-9.]*'): clean shutdown, exit status $status"
    return $bad
}

gcc_test() {
    # cc1 allocates heavily (trees, RTL, its own collector on top); the object file must be
    # the same byte for byte as on glibc.
    local inc=-I"$ROOT/alloc/preload/include"
    gcc -O2 -g0 "$inc" -c -o "$WORK/glibc.o" "$TESTS/c/exports.c" || return 1
    LD_PRELOAD=$LIB gcc -O2 -g0 "$inc" -c -o "$WORK/tessera.o" "$TESTS/c/exports.c" || return 1
    cmp "$WORK/glibc.o" "$WORK/tessera.o" || return 1
    LD_PRELOAD=$LIB g++ -O2 -g0 -std=c++17 -c -o "$WORK/cxx-tessera.o" "$TESTS/c/cxx.cpp" ||
        return 1
    g++ -O2 -g0 -std=c++17 -c -o "$WORK/cxx-glibc.o" "$TESTS/c/cxx.cpp" || return 1
    cmp "$WORK/cxx-glibc.o" "$WORK/cxx-tessera.o" || return 1
    info "$(gcc --version | head -n 1): exports.c and cxx.cpp compiled under the preload, objects identical"
}

git_session() {
    # Runs a fixed git session in $1; prints what it should, deterministic across runs
    # (fixed identity and dates, so the commit hashes match).
    local dir=$1
    mkdir -p "$dir" && cd "$dir" || return 1
    export HOME=$dir/.home GIT_CONFIG_NOSYSTEM=1
    export GIT_AUTHOR_DATE='2024-01-01T00:00:00Z' GIT_COMMITTER_DATE='2024-01-01T00:00:00Z'
    git -c init.defaultBranch=main init -q repo && cd repo || return 1
    git config user.name "Tessera CI" && git config user.email "ci@tessera.invalid" || return 1
    seq 1 20000 >numbers.txt
    printf 'hello\n' >hello.txt
    mkdir -p src && awk 'BEGIN { for (i = 0; i < 300; i++) printf "line %d %x\n", i, i * 7919 }' >src/lines.txt
    git add . && git commit -q -m "first commit" || return 1
    seq 1 3 20000 >numbers.txt
    printf 'hello again\n' >>hello.txt
    git mv src/lines.txt src/moved.txt && git add -A && git commit -q -m "second commit" || return 1
    git log --format='%H %s' --stat
    git gc -q && git fsck --strict --no-progress && git count-objects
}

git_test() {
    local base ours
    base=$(git_session "$WORK/git-glibc") || { echo "git session failed on glibc"; return 1; }
    ours=$(LD_PRELOAD=$LIB git_session "$WORK/git-tessera") || return 1
    echo "$ours"
    grep -q 'second commit' <<<"$ours" && grep -q 'first commit' <<<"$ours" || return 1
    [ "$base" = "$ours" ] || { echo "--- glibc run:"; echo "$base"; return 1; }
    info "$(git --version): init, add, commit, mv, log, gc, fsck: same output and hashes as glibc"
}

# ---- run ------------------------------------------------------------------------------------------

echo "== tessera-preload: libtessera.so under LD_PRELOAD =="
check install-tools install_tools
check build build_library
if [ -z "$LIB" ]; then
    echo "FAIL: tessera-preload: no library to test"
    exit 1
fi
check needed-libraries needed_libraries
check hot-text hot_text
check cold-rodata cold_rodata
check small-statics small_statics
check compile-tests compile_tests
check c-exports exports_tessera
check c-exports-on-glibc exports_glibc
check cxx-operators cxx_tessera
check bad-pointers-abort bad_pointers
check heap-attacks-abort attacks
check guarded-samples guarded
check dlopen dlopen_test
check tls-dlopen-dlclose tls_churn
check late-free-after-thread-exit late_free
check join-after-small-blocks join_churn
check memory-limit memory_limit
check idle-rss-returns idle_return
check fork-keeps-memory fork_rss
check purger-sleeps-when-idle purger_idle
check heap-profile-pprof heap_profile
check heap-profile-on-signal prof_signal
check sched-profiles-pprof sched_pprof
check python3 python_test
check python3-regrtest python_regrtest
check sqlite3 sqlite_test
check redis redis_test
check git git_test
check gcc gcc_test
check stress-8-threads stress_heavy

TOTAL=$((PASSED + FAILED))
if [ "$FAILED" = 0 ]; then
    echo "PASS: tessera-preload: all $TOTAL checks passed in $(elapsed "$STAGE_START")s"
    exit 0
fi
echo "FAIL: tessera-preload: $FAILED of $TOTAL checks failed (${FAILED_NAMES[*]}) in $(elapsed "$STAGE_START")s"
exit 1
