# Run by benches/fastpath/run.sh as `gdb -batch -x count.py ./pair` with PRE (the library to
# preload) and MODE (TESSERA_CACHE) in the environment: counts the instructions one malloc
# and one free of pair's loop execute (the 2,001st call of each, well past the warm-up), by
# single-stepping from the function's entry until it returns. Printed: "COUNTS malloc=M
# free=F pair=M+F", and with TRACE set, every instruction.
#
# Why not callgrind: valgrind answers rseq(2) with ENOSYS, so under it glibc registers no
# area, Tessera's per-CPU mode falls back to thread caches, and the counts are the thread
# caches' whatever TESSERA_CACHE says.
#
# A single step inside a restartable sequence aborts it (every ptrace stop returns to user
# space through the kernel's rseq fixup, which sends the thread to the abort handler), so
# stepping through one never gets past it. A step that lands on a sequence's start_ip
# (listed in the descriptors of the library's __rseq_cs section) instead runs to the
# sequence's post-commit address at full speed and adds the instructions of its
# straight-line range from the disassembly: a hit's path through a sequence takes no
# branch, so that is the count a hit executes.
import os
import re

import gdb

gdb.execute("set pagination off")
gdb.execute("set confirm off")
gdb.execute("set startup-with-shell off")
gdb.execute("set environment LD_PRELOAD=" + os.environ["PRE"])
gdb.execute("set environment TESSERA_CACHE=" + os.environ["MODE"])
gdb.execute("break main")
gdb.execute("run 100000 > /dev/null")


def sequences():
    """start_ip -> post-commit address, for every descriptor in a loaded __rseq_cs."""
    out = gdb.execute("info files", to_string=True)
    found = {}
    inferior = gdb.selected_inferior()
    for m in re.finditer(r"(0x[0-9a-f]+) - (0x[0-9a-f]+) is __rseq_cs", out):
        lo, hi = int(m.group(1), 16), int(m.group(2), 16)
        mem = bytes(inferior.read_memory(lo, hi - lo))
        # struct rseq_cs: u32 version, u32 flags, u64 start_ip, u64 post_commit_offset,
        # u64 abort_ip; 32-byte aligned.
        for off in range(0, len(mem) - 31, 32):
            start = int.from_bytes(mem[off + 8:off + 16], "little")
            length = int.from_bytes(mem[off + 16:off + 24], "little")
            if start:
                found[start] = start + length
    return found


counts = {}
for fn in ("malloc", "free"):
    # Found by name (gdb stops past what it takes for a prologue), then stopped at the
    # function's first instruction: every instruction of the call counts.
    bp = gdb.Breakpoint(fn, internal=True)
    gdb.execute("continue")
    bp.delete()
    entry = int(gdb.selected_frame().function().value().address)
    bp = gdb.Breakpoint("*%d" % entry, internal=True)
    bp.ignore_count = 2000
    gdb.execute("continue")
    bp.delete()
    seqs = sequences()
    sp0 = int(gdb.parse_and_eval("$sp"))
    n = 0
    trace = []
    while n < 5000:
        pc = int(gdb.parse_and_eval("$pc"))
        if pc in seqs:
            end = seqs[pc]
            arch = gdb.selected_frame().architecture()
            insns = arch.disassemble(pc, end - 1)
            trace += ["  [rseq] " + i["asm"] for i in insns]
            n += len(insns)
            gdb.Breakpoint("*%d" % end, internal=True, temporary=True)
            gdb.execute("continue", to_string=True)
            continue
        trace.append(gdb.execute("x/i $pc", to_string=True).strip())
        gdb.execute("stepi", to_string=True)
        n += 1
        if int(gdb.parse_and_eval("$sp")) > sp0:
            break
    counts[fn] = n
    if os.environ.get("TRACE"):
        print("\n".join(trace))
print("COUNTS malloc=%d free=%d pair=%d" % (counts["malloc"], counts["free"], sum(counts.values())))
gdb.execute("kill")
gdb.execute("quit")
