#!/usr/bin/env bash
# The scheduler's tests again in an optimised build (release profile: fat LTO): the
# migration hazard (sched/tests/migrate.rs) only shows once thread-local addresses can be
# inlined and cached, and the deferred wake-up test (sched/tests/deferred_wake.rs, ignored
# in debug builds) needs coroutines fast enough to be measured as short.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --release -p tessera-sched -- --include-ignored
echo "release-tests.sh: PASS"
