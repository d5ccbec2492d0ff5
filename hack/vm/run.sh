#!/usr/bin/env bash
# Boots Debian's kernel with a Berth initramfs (build-initramfs.sh) and returns
# the exit status the VM reports on its console ("BERTH-VM: exit N").
#
#   run.sh --initramfs FILE [--timeout SECONDS] [--log FILE] [--append "k=v ..."]
#          [--accel auto|kvm|tcg] [--mem MiB] [--smp N]
#
# KVM is used only when /dev/kvm exists and a short probe boot completes
# (KVM has hung on some hosts); otherwise TCG emulation. The whole run is
# bounded by --timeout; on expiry qemu is killed and run.sh exits 124.
set -euo pipefail
INITRAMFS="" TIMEOUT=1800 LOG="" APPEND="" ACCEL=${BERTH_VM_ACCEL:-auto} MEM=4096 SMP=2
while [ $# -gt 0 ]; do
    case "$1" in
        --initramfs) INITRAMFS=$2; shift 2 ;;
        --timeout) TIMEOUT=$2; shift 2 ;;
        --log) LOG=$2; shift 2 ;;
        --append) APPEND=$2; shift 2 ;;
        --accel) ACCEL=$2; shift 2 ;;
        --mem) MEM=$2; shift 2 ;;
        --smp) SMP=$2; shift 2 ;;
        *) echo "run.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
[ -f "$INITRAMFS" ] || { echo "run.sh: --initramfs FILE is required" >&2; exit 2; }
KERNEL=${BERTH_VM_KERNEL:-$(ls -1 /boot/vmlinuz-* | sort -V | tail -1)}
[ -r "$KERNEL" ] || { echo "run.sh: no readable kernel at $KERNEL (apt-get install linux-image-amd64)" >&2; exit 1; }
LOG=${LOG:-$(mktemp /tmp/berth-vm.XXXXXX.log)}

CMDLINE="console=ttyS0 panic=-1 quiet loglevel=3 rdinit=/init"

# qemu ACCEL CPU APPEND TIMEOUT LOGFILE
boot() {
    local accel=$1 cpu=$2 append=$3 timeout=$4 log=$5
    timeout --kill-after=10 "$timeout" qemu-system-x86_64 -accel "$accel" -cpu "$cpu" \
        -m "$MEM" -smp "$SMP" -nographic -no-reboot -nic none -monitor none -serial stdio \
        -kernel "$KERNEL" -initrd "$INITRAMFS" -append "$CMDLINE $append" </dev/null >"$log" 2>&1
}

if [ "$ACCEL" = auto ]; then
    ACCEL=tcg
    if [ -w /dev/kvm ]; then
        probe=$(mktemp)
        if boot kvm host "berth.mode=probe" 60 "$probe" && grep -aq "BERTH-VM: exit 0" "$probe"; then
            ACCEL=kvm
        else
            echo "run.sh: KVM probe did not boot; using TCG"
        fi
        rm -f "$probe"
    fi
fi
CPU=max
[ "$ACCEL" = kvm ] && CPU=host
echo "run.sh: booting $(basename "$KERNEL") with $ACCEL, ${SMP} cpus, ${MEM} MiB, timeout ${TIMEOUT}s; console -> $LOG"

start=$SECONDS
: >"$LOG" # before tail starts, so a previous run's console is never shown
set +e
boot "$ACCEL" "$CPU" "$APPEND" "$TIMEOUT" "$LOG" &
qpid=$!
# Stream the console to our stdout while the VM runs.
tail -n +1 -F --pid=$qpid "$LOG" 2>/dev/null &
tpid=$!
wait $qpid
qrc=$?
sleep 0.2
kill $tpid 2>/dev/null
wait $tpid 2>/dev/null
set -e

echo
echo "run.sh: VM finished in $((SECONDS - start))s"
# Console lines end in \r\n. Every grep here may match nothing, which under
# pipefail would end the script before it could say why the run failed.
grep -aE "BERTH-VM: (end|FAIL) " "$LOG" | tr -d '\r' | sed 's/^.*BERTH-VM: /run.sh: /' || true
# The suite that had begun and not ended when the VM stopped, if any.
running=$(tr -d '\r' <"$LOG" | awk '/BERTH-VM: begin / { n = $NF } /BERTH-VM: end / { n = "" } END { print n }')
during=${running:+ while $running was running}
if [ $qrc -eq 124 ] || [ $qrc -eq 137 ]; then
    echo "run.sh: VM timed out after ${TIMEOUT}s$during" >&2
    exit 124
fi
rc=$({ grep -aoE "BERTH-VM: exit [0-9]+" "$LOG" || true; } | tail -1 | awk '{print $3}')
if [ -z "$rc" ]; then
    echo "run.sh: VM ended (qemu rc $qrc) without reporting an exit status$during; last console lines:" >&2
    tr -d '\r' <"$LOG" | tail -5 | sed 's/^/run.sh:   /' >&2
    exit 125
fi
exit "$rc"
