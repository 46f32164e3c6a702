#!/usr/bin/env bash
# The OS boundary (issue #16): every syscall and libc call of the product crates lives in
# `sys/` (tessera-sys). Their sources (src/ of alloc, alloc/preload, span, numa,
# coroutine-stacks, sched) must not name `libc::`; tests, benches, examples and fuzz
# targets may. Fails naming each file:line that does.
set -euo pipefail
cd "$(dirname "$0")/.."
dirs=(alloc/src alloc/preload/src span/src numa/src coroutine-stacks/src sched/src)
if hits=$(grep -rn --include='*.rs' 'libc::' "${dirs[@]}"); then
    echo "boundary.sh: libc:: outside sys/ (call it through tessera-sys instead):" >&2
    echo "$hits" >&2
    exit 1
fi
echo "boundary.sh: PASS"
