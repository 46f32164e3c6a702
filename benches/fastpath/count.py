# Run by benches/fastpath/run.sh as `gdb -batch -x count.py ./pair` (or ./scatter) with PRE
# (the library to preload) and MODE (TESSERA_CACHE) in the environment: counts the
# instructions one malloc and one free of the program's loop execute, by single-stepping
# from the function's entry until it returns. Counted: the CALL-th malloc (2,001 unless
# set: well past the warm-up), then, after it, the CALL-th free; with CALLS set, that many
# consecutive calls of each from there, and the mean per call (scatter.c's frees take
# different paths). Printed: "COUNTS malloc=M free=F pair=M+F", and with TRACE set, every
# instruction (of the first call).
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
#
# Also counted: the taken branches (jumps, calls and returns included) of each call, a step
# that lands anywhere but right after the instruction it ran; a sequence's straight range
# takes none. "TAKEN malloc=M free=F pair=M+F". Taken branches cost a hit path more than
# their instructions: the front end fetches past one at most once a cycle, and a layout that
# puts the usual outcome of a test out of line pays one (and often a jump back) per call.
import os
import re
import subprocess

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


def exported():
    """The preloaded library's exported malloc and free, at their run-time addresses.

    By name, gdb finds dozens of places called `free` (libc's, and every Rust function
    `free` inlined anywhere in the library), and which one a program reaches first depends
    on the build. So the exported symbols' offsets come from the library's dynamic symbol
    table (nm -D), placed by where gdb's expression `malloc` resolves (checked to be in the
    library): every instruction from the exported entry counts."""
    lib = os.environ["PRE"]
    offsets = {}
    for line in subprocess.run(["nm", "-D", "--defined-only", lib], capture_output=True,
                               text=True, check=True).stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[2] in ("malloc", "free"):
            offsets[parts[2]] = int(parts[0], 16)
    at = int(gdb.parse_and_eval("(long)malloc"))
    where = gdb.execute("info symbol %d" % at, to_string=True)
    if os.path.basename(lib) not in where:
        raise gdb.GdbError("malloc resolves outside %s: %s" % (lib, where))
    base = at - offsets["malloc"]
    return {fn: base + off for fn, off in offsets.items()}


def count_call(seqs, trace):
    """Steps through the call the inferior is stopped at the entry of, until it returns:
    (instructions, taken branches)."""
    sp0 = int(gdb.parse_and_eval("$sp"))
    n = 0
    jumps = 0
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
        length = gdb.selected_frame().architecture().disassemble(pc)[0]["length"]
        gdb.execute("stepi", to_string=True)
        n += 1
        if int(gdb.parse_and_eval("$pc")) != pc + length:
            jumps += 1
        if int(gdb.parse_and_eval("$sp")) > sp0:
            break
    return n, jumps


entries = exported()
first = int(os.environ.get("CALL", "2001"))
calls = int(os.environ.get("CALLS", "1"))
counts = {}
taken = {}
for fn in ("malloc", "free"):
    entry = entries[fn]
    trace = []
    n = jumps = 0
    for c in range(calls):
        bp = gdb.Breakpoint("*%d" % entry, internal=True)
        bp.ignore_count = first - 1 if c == 0 else 0
        gdb.execute("continue", to_string=True)
        bp.delete()
        got, hops = count_call(sequences(), trace if c == 0 else [])
        n += got
        jumps += hops
    counts[fn] = n / calls
    taken[fn] = jumps / calls
    if os.environ.get("TRACE"):
        print("\n".join(trace))
form = "%d" if calls == 1 else "%.1f"
for label, per in (("COUNTS", counts), ("TAKEN", taken)):
    print(("%s malloc=" + form + " free=" + form + " pair=" + form)
          % (label, per["malloc"], per["free"], per["malloc"] + per["free"]))
gdb.execute("kill")
gdb.execute("quit")
