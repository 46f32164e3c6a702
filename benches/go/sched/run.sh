#!/bin/sh
# Runs the Go reference programs (BENCHMARKS.md, scheduler workloads) if `go` is installed
# (Debian: apt-get install -y golang-go). Prints "name ns/op value" and parked RSS lines.
set -eu
cd "$(dirname "$0")"
if ! command -v go >/dev/null 2>&1; then
    echo "go not installed; skipping Go reference programs" >&2
    exit 0
fi
bin="${TMPDIR:-/tmp}/tessera-go-sched"
go build -o "$bin" .
GOMAXPROCS=2 "$bin" spawn-join
GOMAXPROCS=1 "$bin" ping-pong
GOMAXPROCS=2 "$bin" ping-pong
GOMAXPROCS=1 "$bin" yield
for n in ${PARKED:-100000 1000000}; do
    GOMAXPROCS=2 "$bin" parked "$n"
done
