#!/bin/sh
# One run of the echo comparison (BENCHMARKS.md, "echo"): tessera-sched's echo example, the
# same server in a user's build (benches/sched-user), Go (this directory's main.go), tokio and may, each a child process with 2 workers, measured by
# the same epoll client in interleaved rounds; prints one table of medians and the ratios
# tessera/Go, tessera/tokio, tessera/may, and writes it to <target>/tessera-bench/echo.md.
#
#   benches/go/echo/compare.sh [echo flags]     # e.g. --rounds 7 --duration-ms 3000
#
# A server that is not there is skipped with a message: Go needs `go` (Debian: apt-get
# install -y golang-go); tessera needs the tessera-sched `echo` example to build.
set -eu
root="$(cd "$(dirname "$0")/../../.." && pwd)"
cd "$root"
target="${CARGO_TARGET_DIR:-$root/target}"
out="$target/tessera-bench"
mkdir -p "$out"
cargo build --release -q -p tessera-bench --bin echo
# A path that does not exist makes the driver skip that row with a message (a stale binary
# from an earlier build must not stand in for one that failed).
tessera="$target/release/examples/echo"
if ! cargo build --release -q -p tessera-sched --example echo; then
    echo "compare.sh: tessera-sched's echo example did not build; its row is skipped" >&2
    tessera="$target/release/examples/echo.did-not-build"
fi
# tessera-sched as a user builds it (benches/sched-user: cargo's default release profile, the
# system allocator), where `tessera-bench --sched` builds it too.
user="$target/sched-user/release/tessera-sched-user"
if ! cargo build --release -q --manifest-path benches/sched-user/Cargo.toml \
        --target-dir "$target/sched-user"; then
    echo "compare.sh: benches/sched-user did not build; its row is skipped" >&2
    user="$user.did-not-build"
fi
go_bin="$out/echo-go"
if command -v go >/dev/null 2>&1; then
    (cd "$root/benches/go/echo" && go build -o "$go_bin" .)
else
    echo "compare.sh: go not installed; the Go row is skipped" >&2
    go_bin="$out/echo-go.go-not-installed"
fi
exec "$target/release/echo" compare --tessera "$tessera" --user "$user" --go "$go_bin" "$@"
