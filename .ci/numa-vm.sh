#!/usr/bin/env bash
# Multi-node NUMA test in a real guest (ARCHITECTURE.md#numa): boots a Debian kernel in QEMU
# with two NUMA nodes (2 CPUs + 512 MiB each), runs numa/examples/numa_guest.rs as /init's
# payload, and turns its `NUMA-VM: PASS|FAIL` line into this script's exit status (0/1).
#
# Needs root for apt-get (skipped when everything is already installed). Idempotent: the
# extracted kernel is cached in the work directory. Environment knobs:
#   NUMA_VM_WORK        work directory          (default: ${TMPDIR:-/tmp}/tessera-numa-vm)
#   NUMA_VM_TARGET_DIR  cargo target directory  (default: <repo>/target/numa-vm)
#   NUMA_VM_KERNEL      kernel image            (default: newest /boot/vmlinuz-*)
#   NUMA_VM_ACCEL       kvm|tcg|auto            (default: auto = KVM if it boots, else TCG)
#   NUMA_VM_TIMEOUT     seconds for the guest   (default: 240)
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=${NUMA_VM_WORK:-${TMPDIR:-/tmp}/tessera-numa-vm}
TARGET_DIR=${NUMA_VM_TARGET_DIR:-$REPO/target/numa-vm}
ACCEL=${NUMA_VM_ACCEL:-auto}
TIMEOUT=${NUMA_VM_TIMEOUT:-240}
KVM_PROBE_SECONDS=20
START=$SECONDS

say() { echo "numa-vm: $*"; }
# ldd exits 1 on a static binary, so its status (under pipefail) cannot be the test.
is_static() { local out; out=$(LC_ALL=C ldd "$1" 2>&1 || true); [[ $out == *"not a dynamic"* || $out == *"statically linked"* ]]; }
verdict() { # verdict PASS|FAIL message...
    local v=$1
    shift
    echo "numa-vm.sh: $v $* ($((SECONDS - START)) s)"
    [ "$v" = PASS ] && exit 0 || exit 1
}

mkdir -p "$WORK"
QEMU_PID=
cleanup() { [ -n "$QEMU_PID" ] && kill "$QEMU_PID" 2>/dev/null || true; }
trap cleanup EXIT

# --- 1. Tools -------------------------------------------------------------------------------

have_tools() {
    command -v qemu-system-x86_64 >/dev/null || return 1
    [ -x /bin/busybox ] && is_static /bin/busybox || return 1
    ls /boot/vmlinuz-* >/dev/null 2>&1 || [ -n "${NUMA_VM_KERNEL:-}" ] || return 1
    command -v xz >/dev/null || return 1
}

if ! have_tools; then
    say "installing qemu-system-x86, linux-image-amd64, busybox-static"
    export DEBIAN_FRONTEND=noninteractive
    pkgs=(qemu-system-x86 linux-image-amd64 busybox-static xz-utils)
    if ! apt-get install -y -q "${pkgs[@]}" >"$WORK/apt.log" 2>&1; then
        apt-get update -q >>"$WORK/apt.log" 2>&1 || true
        apt-get install -y -q "${pkgs[@]}" >>"$WORK/apt.log" 2>&1 ||
            { tail -20 "$WORK/apt.log"; verdict FAIL "apt-get install failed"; }
    fi
    have_tools || verdict FAIL "tools still missing after apt-get install"
fi

# --- 2. Kernel: an uncompressed ELF vmlinux boots fastest, through its PVH entry ----------

KERNEL=${NUMA_VM_KERNEL:-$(ls /boot/vmlinuz-* | sort -V | tail -n 1)}

# Finds each compressed-stream magic in the bzImage and decompresses from there until the
# result is an ELF file (the idea of the kernel's scripts/extract-vmlinux, written afresh).
extract_vmlinux() { # extract_vmlinux <bzImage> <out>
    local img=$1 out=$2 magic tool off
    for pair in 'xz:\xfd7zXZ\x00' 'zstd:\x28\xb5\x2f\xfd' 'gzip:\x1f\x8b\x08'; do
        tool=${pair%%:*}
        magic=${pair#*:}
        command -v "$tool" >/dev/null || continue
        for off in $(LC_ALL=C grep -obUaP "$magic" "$img" 2>/dev/null | cut -d: -f1); do
            tail -c +$((off + 1)) "$img" | "$tool" -dc 2>/dev/null >"$out.tmp" || true
            if [ "$(head -c 4 "$out.tmp" | od -An -tx1 | tr -d ' \n')" = 7f454c46 ]; then
                mv "$out.tmp" "$out"
                return 0
            fi
        done
    done
    rm -f "$out.tmp"
    return 1
}

VMLINUX=$WORK/vmlinux-$(basename "$KERNEL")-$(stat -c %s "$KERNEL")
if [ ! -s "$VMLINUX" ]; then
    if extract_vmlinux "$KERNEL" "$VMLINUX"; then
        say "extracted $(basename "$KERNEL") to an ELF vmlinux"
    else
        say "could not extract vmlinux; booting the compressed $KERNEL (slower)"
        VMLINUX=$KERNEL
    fi
fi

# --- 3. The guest program, static so the initramfs needs no libc --------------------------

say "building numa_guest (static, release)"
(
    cd "$REPO"
    RUSTFLAGS='-C target-feature=+crt-static' CARGO_TARGET_DIR=$TARGET_DIR \
        cargo build -q --release --example numa_guest -p tessera-numa \
        --target x86_64-unknown-linux-gnu
) || verdict FAIL "cargo build of numa_guest failed"
GUEST=$TARGET_DIR/x86_64-unknown-linux-gnu/release/examples/numa_guest
is_static "$GUEST" || verdict FAIL "$GUEST is not static"

# --- 4. initramfs: busybox, the program, an /init that runs it and powers off -------------

ROOT=$WORK/initramfs
rm -rf "$ROOT"
mkdir -p "$ROOT"/{bin,dev,proc,sys}
cp /bin/busybox "$ROOT/bin/busybox"
cp "$GUEST" "$ROOT/numa_guest"
mknod "$ROOT/dev/console" c 5 1 2>/dev/null || true # the kernel's own initramfs has one too
cat >"$ROOT/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
echo
echo "numa-vm: guest up: kernel $(uname -r), nodes $(cat /sys/devices/system/node/online), cpus $(cat /sys/devices/system/cpu/online)"
/numa_guest --nodes 2
echo "numa-vm: numa_guest exited with status $?"
poweroff -f
EOF
chmod +x "$ROOT/init"
(cd "$ROOT" && find . | /bin/busybox cpio -o -H newc 2>/dev/null) >"$WORK/initramfs.cpio"

# --- 5. Boot ------------------------------------------------------------------------------

LOG=$WORK/guest.log

# run_guest <accel> <seconds to reach /init, 0 = no probe>: boots and waits for poweroff or
# the timeout; returns 2 when the probe window passed without the guest reaching /init.
run_guest() {
    local accel=$1 probe=$2 waited=0
    local accel_args=(-accel tcg)
    [ "$accel" = kvm ] && accel_args=(-enable-kvm)
    : >"$LOG"
    qemu-system-x86_64 "${accel_args[@]}" -machine pc -smp 4 -m 1G \
        -object memory-backend-ram,id=m0,size=512M \
        -object memory-backend-ram,id=m1,size=512M \
        -numa node,nodeid=0,cpus=0-1,memdev=m0 \
        -numa node,nodeid=1,cpus=2-3,memdev=m1 \
        -numa dist,src=0,dst=1,val=21 \
        -kernel "$VMLINUX" -initrd "$WORK/initramfs.cpio" \
        -append "console=ttyS0 rdinit=/init panic=-1 quiet" \
        -nographic -no-reboot -nic none </dev/null >"$LOG" 2>&1 &
    QEMU_PID=$!
    while kill -0 "$QEMU_PID" 2>/dev/null; do
        if [ "$probe" -gt 0 ] && [ "$waited" -ge "$probe" ] && ! grep -q 'guest up' "$LOG"; then
            kill "$QEMU_PID" 2>/dev/null || true
            wait "$QEMU_PID" 2>/dev/null || true
            QEMU_PID=
            return 2
        fi
        if [ "$waited" -ge "$TIMEOUT" ]; then
            say "guest timed out after $TIMEOUT s"
            kill "$QEMU_PID" 2>/dev/null || true
            break
        fi
        sleep 1
        waited=$((waited + 1))
    done
    wait "$QEMU_PID" 2>/dev/null || true
    QEMU_PID=
    return 0
}

used=tcg
if [ "$ACCEL" != tcg ] && [ -r /dev/kvm ] && [ -w /dev/kvm ]; then
    say "trying KVM (falls back to TCG unless the guest reaches /init in $KVM_PROBE_SECONDS s)"
    if run_guest kvm "$KVM_PROBE_SECONDS"; then
        used=kvm
    else
        say "KVM could not boot the guest: $(tr -d '\r' <"$LOG" | grep -m1 -iE 'error|fail' || echo 'no output')"
    fi
fi
if [ "$used" = tcg ]; then
    [ "$ACCEL" = kvm ] && verdict FAIL "NUMA_VM_ACCEL=kvm but KVM did not boot"
    say "booting with TCG"
    run_guest tcg 0
fi

# --- 6. Verdict ---------------------------------------------------------------------------

tr -d '\r' <"$LOG" | grep -E '^(numa-vm:|numa_guest:|CHECK |BENCH |  panic)' || true
# Not anchored: a stray console message may share the line.
line=$(tr -d '\r' <"$LOG" | grep -m1 -oE 'NUMA-VM: (PASS|FAIL).*' || true)
if [ -z "$line" ]; then
    say "no verdict from the guest; last lines of its console:"
    tr -d '\r' <"$LOG" | tail -n 30
    verdict FAIL "no NUMA-VM verdict (accel=$used)"
fi
echo "$line"
case $line in
NUMA-VM:\ PASS*) verdict PASS "accel=$used: ${line#NUMA-VM: PASS }" ;;
*) verdict FAIL "accel=$used: ${line#NUMA-VM: FAIL }" ;;
esac
