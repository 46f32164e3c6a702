#!/bin/sh
# One run of the scheduler comparison (BENCHMARKS.md): the criterion bench (tessera-sched,
# may, tokio) and the Go reference programs, then a table of ratios against Go, may and
# tokio, and the parked workload (RSS per coroutine, VMAs) for tessera-sched and Go.
#
#   benches/go/sched/compare.sh            # from the workspace root
#
# Needs `go` for the Go columns (Debian: apt-get install -y golang-go).
set -eu
root="$(cd "$(dirname "$0")/../../.." && pwd)"
cd "$root"
out="${CARGO_TARGET_DIR:-$root/target}/tessera-bench"
mkdir -p "$out"
cargo bench -p tessera-bench --bench sched 2>/dev/null | tee "$out/sched-criterion.txt" |
    grep -E "time:" || true
"$root/benches/go/sched/run.sh" | tee "$out/sched-go.txt"
for n in ${PARKED:-100000 1000000}; do
    TESSERA_BENCH_GLOBAL=tessera cargo run --release -q -p tessera-bench -- --sched-parked "$n"
done | tee "$out/sched-parked.txt"

# Criterion prints "group/name  time: [lo mid hi]", sometimes with the name on its own line.
awk '
function ns(v, u) { return u == "ps" ? v / 1000 : u == "ns" ? v : u == "µs" ? v * 1000 : u == "ms" ? v * 1e6 : v * 1e9 }
FILENAME ~ /criterion/ {
    if ($1 ~ /\// && $0 !~ /time:/) { name = $1; next }
    if ($0 ~ /time:/) {
        if ($1 ~ /\//) name = $1
        for (i = 1; i <= NF; i++) if ($i == "time:") { v = $(i + 3); u = $(i + 4) }
        split(name, p, "/"); g = p[1]; who = p[2]
        sub(/-[0-9]+[pw]$/, "", who); sub(/-mt$/, "-mt", who)
        t[g, who] = ns(v, u); groups[g] = 1
    }
}
FILENAME ~ /go/ && $2 == "ns/op" { t[$1, "go"] = $3 }
END {
    printf "%-14s %10s %10s %10s %10s %10s   %s\n", "workload", "tessera", "go", "may", "tokio-mt", "tokio-ct", "tessera/go  tessera/may  tessera/tokio"
    n = split("spawn-join ping-pong-1p ping-pong-2p yield", order, " ")
    for (k = 1; k <= n; k++) {
        g = order[k]; ts = t[g, "tessera"]
        if (ts == "") continue
        tok = t[g, "tokio-mt"] != "" ? t[g, "tokio-mt"] : t[g, "tokio-ct"]
        printf "%-14s %10.1f %10s %10s %10s %10s   %9s  %11s  %13s\n", g, ts,
            t[g, "go"], t[g, "may"], t[g, "tokio-mt"], t[g, "tokio-ct"],
            t[g, "go"] ? sprintf("%.2f", ts / t[g, "go"]) : "-",
            t[g, "may"] ? sprintf("%.2f", ts / t[g, "may"]) : "-",
            tok ? sprintf("%.2f", ts / tok) : "-"
    }
}' "$out/sched-criterion.txt" "$out/sched-go.txt" | tee "$out/sched-ratios.txt"
grep -h "^parked" "$out/sched-go.txt" "$out/sched-parked.txt" | sed 's/^/  /'
