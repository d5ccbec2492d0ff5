#!/bin/sh
# /init of Berth's test VM (busybox sh, PID 1).
#
# Stage 1 copies the initramfs into a tmpfs and switch_roots into it: the
# kernel's initial rootfs cannot be pivot_root'ed away from, and containers
# need pivot_root. Stage 2 mounts the kernel filesystems (cgroup2 with every
# controller enabled for children), loads modules, starts the registry, runs
# the mode chosen on the kernel command line and powers off.
#
# Kernel command line:
#   berth.mode=tests      run every /berth/tests/* executable (default)
#   berth.mode=demo       start berthd and run berth-demo (a busybox pod)
#   berth.mode=bench      start berthd and run berth-bench with berth.benchargs=a,b,c
#   berth.mode=probe      boot and power off at once (KVM probe)
#   berth.testargs=NAME   passed to each test executable (a name filter)
#
# Host-side parsing (hack/vm/run.sh) relies on these console markers:
#   BERTH-VM: begin <exe> / BERTH-VM: end <exe> rc=<n> / BERTH-VM: exit <n>
export PATH=/bin:/sbin:/usr/bin:/usr/sbin

if [ "$1" != "stage2" ]; then
    mount -t proc proc /proc
    mkdir -p /newroot
    mount -t tmpfs -o mode=755 newroot /newroot
    for d in /*; do
        case "$d" in /newroot|/proc|/sys|/dev) continue ;; esac
        cp -a "$d" /newroot/
    done
    mkdir -p /newroot/proc /newroot/sys /newroot/dev
    umount /proc
    exec switch_root /newroot /init stage2
    echo "BERTH-VM: switch_root failed"
    echo "BERTH-VM: exit 99"
    poweroff -f
fi

finish() {
    echo "BERTH-VM: exit $1"
    sync
    poweroff -f
    sleep 5
}

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts -o newinstance,ptmxmode=0666 devpts /dev/pts
mount -t tmpfs -o mode=1777 shm /dev/shm
mount -t tmpfs -o mode=755 run /run
mount -t tmpfs -o mode=1777 tmp /tmp
mount -t cgroup2 cgroup2 /sys/fs/cgroup || finish 98
# AppArmor's interface (profiles list, loading), as on a node.
mount -t securityfs securityfs /sys/kernel/security 2>/dev/null || true
mount --make-rshared /

MODE=tests TESTARGS="" BENCHARGS=""
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        berth.mode=*) MODE=${arg#berth.mode=} ;;
        berth.testargs=*) TESTARGS=${arg#berth.testargs=} ;;
        berth.benchargs=*) BENCHARGS=$(echo "${arg#berth.benchargs=}" | tr ',' ' ') ;;
    esac
done
[ "$MODE" = probe ] && finish 0

ctrls=""
for c in $(cat /sys/fs/cgroup/cgroup.controllers); do ctrls="$ctrls +$c"; done
echo "$ctrls" >/sys/fs/cgroup/cgroup.subtree_control
echo "BERTH-VM: kernel $(uname -r), cgroup2 controllers:$(cat /sys/fs/cgroup/cgroup.subtree_control | sed 's/^/ /'), cpus $(nproc), mem $(free -m | awk '/Mem:/ {print $2}')M"

while read -r ko; do
    args=""
    # One 256 MiB RAM disk: a real block device whose page cache is
    # reclaimable (tmpfs and loop-on-tmpfs are not), for the resize tests.
    [ "$ko" = brd.ko ] && args="rd_nr=1 rd_size=262144"
    # shellcheck disable=SC2086
    insmod "/lib/modules/$ko" $args 2>/dev/null || echo "BERTH-VM: warning: insmod $ko failed"
done </etc/modules.order
ip link set lo up
hostname berth-vm

if [ -d /var/lib/registry/docker ]; then
    cat >/etc/registry.yml <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: /var/lib/registry
http:
  addr: 127.0.0.1:5000
EOF
    docker-registry serve /etc/registry.yml >/tmp/registry.log 2>&1 &
    i=0
    until wget -q -O /dev/null http://127.0.0.1:5000/v2/ 2>/dev/null; do
        i=$((i + 1))
        [ $i -gt 300 ] && { echo "BERTH-VM: registry did not start"; cat /tmp/registry.log; finish 97; }
        usleep 100000
    done
fi

export BERTH_BIN_DIR=/berth/bin BERTH_REGISTRY=127.0.0.1:5000 RUST_BACKTRACE=1 HOME=/root
mkdir -p /root

if [ "$MODE" = demo ] || [ "$MODE" = bench ]; then
    /berth/bin/berthd --log-level info &
    i=0
    until [ -S /run/berth/berth.sock ]; do
        i=$((i + 1)); [ $i -gt 300 ] && { echo "BERTH-VM: berthd did not start"; finish 96; }
        usleep 100000
    done
    if [ "$MODE" = bench ]; then
        # `pull,...` runs berth-pull-bench, anything else berth-bench.
        bench=/berth/bin/berth-bench
        first=${BENCHARGS%% *}
        if [ -x "/berth/bin/berth-$first-bench" ]; then
            bench=/berth/bin/berth-$first-bench
            BENCHARGS=${BENCHARGS#"$first"}
        fi
        # shellcheck disable=SC2086
        $bench $BENCHARGS --socket /run/berth/berth.sock
    else
        /berth/bin/berth-demo --socket /run/berth/berth.sock --image 127.0.0.1:5000/library/busybox:latest
    fi
    finish $?
fi

overall=0
start=$(date +%s)
for t in /berth/tests/*; do
    name=$(basename "$t")
    echo "BERTH-VM: begin $name"
    # shellcheck disable=SC2086
    "$t" --test-threads=1 --nocapture $TESTARGS
    rc=$?
    echo "BERTH-VM: end $name rc=$rc"
    [ $rc -ne 0 ] && overall=1
done
echo "BERTH-VM: tests took $(( $(date +%s) - start ))s"
finish $overall
