#!/usr/bin/env bash
# The scheduler's tests again in an optimised build (release profile: fat LTO): the
# migration hazard (sched/tests/migrate.rs) only shows once thread-local addresses can be
# inlined and cached, and the deferred wake-up test (sched/tests/deferred_wake.rs, ignored
# in debug builds) needs coroutines fast enough to be measured as short. The heap
# profiler's test too: a release build's debug information (`line-tables-only`) names
# functions by their short names, which the profile's frames to drop must cover
# (alloc/src/profile/writer.rs), and merges functions with identical bodies.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --release -p tessera-sched -- --include-ignored
cargo test --release -p tessera --test profile
echo "release-tests.sh: PASS"
