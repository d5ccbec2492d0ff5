#!/usr/bin/env bash
# Boots the systemd-node image (build-image.sh) with the host's kernel and
# its initrd; the console is this terminal (root autologin). Run it under
# /work/tools/vmslot on the shared build machine (two TCG VMs at most).
#
#   boot.sh [--image FILE] [--accel kvm|tcg] [--mem MiB] [--timeout SECONDS]
#
# With a --test image the VM powers itself off after the test unit and the
# script exits with the test's status (read from the console line
# BERTH-VM-TEST-EXIT: N).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
IMAGE="$HERE/../../target/vm-systemd/root.ext4" ACCEL="" MEM=2048 TIMEOUT=1800
while [ $# -gt 0 ]; do
    case "$1" in
        --image) IMAGE=$2; shift 2 ;;
        --accel) ACCEL=$2; shift 2 ;;
        --mem) MEM=$2; shift 2 ;;
        --timeout) TIMEOUT=$2; shift 2 ;;
        *) echo "boot.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
KVER=$(basename "$(ls -1 /boot/vmlinuz-* | sort -V | tail -1)")
KVER=${KVER#vmlinuz-}
# TCG unless asked: on this nested build machine /dev/kvm opens but qemu
# aborts setting MSRs ("failed to set MSR 0x10a"); hack/vm/run.sh probes
# KVM with a short boot first, this script does not yet.
[ -n "$ACCEL" ] || ACCEL=tcg
CPU=max
[ "$ACCEL" = kvm ] && CPU=host
log=$(mktemp)
trap 'rm -f "$log"' EXIT
timeout --kill-after=10 "$TIMEOUT" qemu-system-x86_64 -accel "$ACCEL" -cpu "$CPU" \
    -m "$MEM" -smp 2 -nographic -no-reboot -nic none -monitor none -serial stdio \
    -kernel "/boot/vmlinuz-$KVER" -initrd "/boot/initrd.img-$KVER" \
    -drive "file=$IMAGE,format=raw,if=virtio" \
    -append "root=/dev/vda rw console=ttyS0 systemd.unified_cgroup_hierarchy=1 panic=-1" \
    </dev/null | tee "$log"
status=$(sed -n 's/.*BERTH-VM-TEST-EXIT: \([0-9]*\).*/\1/p' "$log" | tail -1)
[ -n "$status" ] && exit "$status"
exit 0
