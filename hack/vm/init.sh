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
#   berth.mode=bench      start berthd and run berth-bench, or berth-<a>-bench when it
#                         exists, with berth.benchargs=a,b,c (hack/bench/*.sh)
#   berth.mode=probe      boot and power off at once (KVM probe)
#   berth.testargs=A,B    name filters passed to each test executable
#   berth.suitetimeout=S  seconds each test executable may run (default 900)
#   berth.crashrounds=N   BERTH_CRASH_ROUNDS for the tests (vm_crash's random kills)
#   berth.crashseed=N     BERTH_CRASH_SEED for the tests
#
# Host-side parsing (hack/vm/run.sh, hack/test.sh) relies on these console
# markers:
#   BERTH-VM: begin <exe>
#   BERTH-VM: end <exe> rc=<n> passed=<n> failed=<n> ignored=<n> declared=<n> secs=<n>
#   BERTH-VM: exit <n>
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

MODE=tests TESTARGS="" BENCHARGS="" SUITE_TIMEOUT=900
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        berth.mode=*) MODE=${arg#berth.mode=} ;;
        berth.testargs=*) TESTARGS=$(echo "${arg#berth.testargs=}" | tr ',' ' ') ;;
        berth.suitetimeout=*) SUITE_TIMEOUT=${arg#berth.suitetimeout=} ;;
        berth.crashrounds=*) export BERTH_CRASH_ROUNDS=${arg#berth.crashrounds=} ;;
        berth.crashseed=*) export BERTH_CRASH_SEED=${arg#berth.crashseed=} ;;
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

# Runs one test executable under its own deadline, so a hung suite is named
# and the others still run. It fails unless it ran every test it declares
# (`--list` with the same filter) and at least one: a filter matching nothing
# or a suite that lost its tests must not pass as green. libtest's --logfile
# has one "ok|failed|ignored <name>" line per finished test (output still
# goes to the console, where a pipe through tee could be held open by a
# daemon the suite leaves behind).
run_suite() {
    t=$1 name=$(basename "$1")
    list=/tmp/$name.list log=/tmp/$name.results
    rm -f "$log"
    # shellcheck disable=SC2086
    "$t" --list --format terse $TESTARGS 2>/dev/null | sed -n 's/: test$//p' >"$list"
    declared=$(wc -l <"$list")
    echo "BERTH-VM: begin $name"
    t0=$(date +%s)
    # shellcheck disable=SC2086
    timeout -k 10 "$SUITE_TIMEOUT" "$t" --test-threads=1 --nocapture --logfile "$log" $TESTARGS
    rc=$?
    secs=$(( $(date +%s) - t0 ))
    touch "$log"
    passed=$(grep -c '^ok ' "$log") failed=$(grep -c '^failed' "$log") ignored=$(grep -c '^ignored' "$log")
    if [ $rc -ne 0 ] && [ $secs -ge "$SUITE_TIMEOUT" ]; then
        # libtest runs tests one at a time in --list order: the first one
        # without a result is the one that hung.
        hung=$(awk 'FILENAME == ARGV[1] { done[$NF] = 1; next } !($0 in done) { print; exit }' "$log" "$list")
        echo "BERTH-VM: FAIL $name timed out after ${SUITE_TIMEOUT}s in test ${hung:-?}"
    elif [ $rc -eq 0 ] && [ "$passed" -eq 0 ]; then
        echo "BERTH-VM: FAIL $name ran no tests"
        rc=1
    elif [ $rc -eq 0 ] && [ "$passed" -lt "$declared" ]; then
        echo "BERTH-VM: FAIL $name passed $passed of the $declared tests it declares"
        rc=1
    fi
    echo "BERTH-VM: end $name rc=$rc passed=$passed failed=$failed ignored=$ignored declared=$declared secs=$secs"
    return $rc
}

overall=0
start=$(date +%s)
[ -n "$TESTARGS" ] && echo "BERTH-VM: test filter: $TESTARGS"
for t in /berth/tests/*; do
    run_suite "$t" || overall=1
done
echo "BERTH-VM: tests took $(( $(date +%s) - start ))s"
finish $overall
