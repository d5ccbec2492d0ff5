#!/bin/bash
# Runs inside the systemd-node VM (hack/vm-systemd/test.sh builds the image
# with this as its test unit): Berth installed from its .deb, driven with
# crictl through the real socket as kubelet would. Prints "ok: ..." or
# "FAIL: ..." per check, "LATENCY ..." lines, and exits non-zero if any
# check failed. Phases run in order; each leaves no pod behind.
set -u
fail=0
IMG=127.0.0.1:5000/library/busybox:latest
LOGS=/var/log/berth-test
mkdir -p "$LOGS"

check() {
    if eval "$2"; then echo "ok: $1"; else echo "FAIL: $1"; fail=1; fi
}
wait_active() {
    local i=0
    while [ "$(systemctl is-active berthd)" != active ] && [ $i -lt 180 ]; do sleep 1; i=$((i + 1)); done
}

# pod_json NAME [CGROUP_PARENT]
pod_json() {
    local f=/tmp/pod-$1.json
    cat >"$f" <<JSON
{"metadata": {"name": "$1", "namespace": "default", "uid": "uid-$1", "attempt": 0},
 "log_directory": "$LOGS/$1", "linux": {"cgroup_parent": "${2:-}"}}
JSON
    echo "$f"
}
# ctr_json NAME [MEMORY_BYTES] [CPU_QUOTA]
ctr_json() {
    local f=/tmp/ctr-$1.json
    cat >"$f" <<JSON
{"metadata": {"name": "$1"}, "image": {"image": "$IMG"},
 "command": ["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 1; done"],
 "log_path": "$1.log",
 "linux": {"resources": {"memory_limit_in_bytes": ${2:-0}, "cpu_quota": ${3:-0},
   "cpu_period": 100000, "cpu_shares": 512}}}
JSON
    echo "$f"
}
# run_pod NAME [CGROUP_PARENT] [MEMORY] [QUOTA]: prints "POD CTR".
run_pod() {
    local p c
    p=$(crictl runp "$(pod_json "$1" "${2:-}")") || return 1
    c=$(crictl create "$p" "$(ctr_json "$1" "${3:-0}" "${4:-0}")" "/tmp/pod-$1.json") || return 1
    crictl start "$c" >/dev/null || return 1
    echo "$p $c"
}
ctr_pid() { crictl inspect "$1" | sed -n 's/^ *"pid": \([0-9]*\),*$/\1/p' | head -1; }
ctr_state() { crictl inspect -o go-template --template '{{.status.state}}' "$1" 2>/dev/null; }
rm_all() { crictl rmp -fa >/dev/null 2>&1; }

# --- second boot: the reboot test (the first boot left pods recorded) ------
MARK=/var/lib/berth-test/reboot-pending
if [ -e "$MARK" ]; then
    fail=$(cat "$MARK")
    rm -f "$MARK"
    wait_active
    check "reboot: berthd is active again" '[ "$(systemctl is-active berthd)" = active ]'
    check "reboot: berthd recognised the reboot" 'journalctl -b -u berthd -o cat | grep -q "node rebooted; removing stale pods"'
    check "reboot: no pod listed" '[ -z "$(crictl pods -q)" ] && [ -z "$(crictl ps -aq)" ]'
    check "reboot: no sandbox or container record left" \
        '! ls /var/lib/berth/sandboxes /var/lib/berth/containers 2>/dev/null | grep -q "\.json$"'
    check "reboot: no pod cgroup left" '[ -z "$(find /sys/fs/cgroup/berth -mindepth 1 -type d 2>/dev/null)" ]'
    check "reboot: no IP lease left" '[ -z "$(ls /var/lib/cni/networks/berth 2>/dev/null | grep -E "^[0-9]+\.")" ]'
    check "reboot: no mount under Berth's root" '! grep -q " /var/lib/berth/" /proc/self/mounts'
    check "reboot: the image is still there" 'crictl inspecti "$IMG" >/dev/null'
    exit "$fail"
fi

# --- the service --------------------------------------------------------
wait_active
echo "BOOT berthd active after $(cut -d' ' -f1 /proc/uptime) s of uptime"
# A berthd that never got active says why here (the console keeps it).
if [ "$(systemctl is-active berthd)" != active ]; then
    systemctl status berthd --no-pager 2>&1 | head -20 | sed 's/^/DIAG status: /'
    journalctl -b -u berthd -o short-monotonic --no-pager 2>&1 | tail -80 | sed 's/^/DIAG journal: /'
fi
. /usr/local/lib/berth-vm-test/service-checks.sh
service_checks
check "boot id stored" '[ -s /var/lib/berth/boot.json ]'
i=0
until crictl pull "$IMG" >/dev/null 2>&1 || [ $i -gt 60 ]; do sleep 1; i=$((i + 1)); done
check "image pulled from the VM's registry" 'crictl inspecti "$IMG" >/dev/null'

# --- driver detection: the packaged config names no cgroup_driver -----------
check "auto: nothing configured, berthd detects systemd and says why" \
    'journalctl -u berthd -o cat | grep -q "cgroup driver driver=Systemd reason=detected: booted with systemd"'
check "auto: RuntimeConfig reports systemd" 'crictl runtime-config 2>/dev/null | grep -qi systemd'
check "auto: crictl info reports systemd" 'crictl info 2>/dev/null | grep -q "cgroup_driver[^,]*systemd"'
# The phases below run cgroupfs unless they say otherwise.
printf 'cgroup_driver = "cgroupfs"\n' >/etc/berth/config.d/10-cgroupfs.toml
systemctl restart berthd
wait_active
check "explicit cgroupfs: RuntimeConfig reports it" 'crictl runtime-config 2>/dev/null | grep -qi cgroupfs'

# --- pods under cgroupfs --------------------------------------------------
pair=$(run_pod first)
check "crictl runs a pod (cgroupfs)" '[ "$(ctr_state "${pair#* }")" = CONTAINER_RUNNING ]'
rm_all

# --- restart, stop/start, kill -9 with 3 pods ------------------------------
# pods_keep_running WHAT ACTION: 3 pods, ACTION, then the same pids, all Running.
pods_keep_running() {
    local what=$1 action=$2 ctrs="" n c pair after="" states=""
    pids=""
    for n in a b c; do
        pair=$(run_pod "keep$n") || { echo "FAIL: $what: run pod $n"; fail=1; return; }
        c=${pair#* }
        ctrs="$ctrs $c"
        pids="$pids $(ctr_pid "$c")"
    done
    "$action"
    wait_active
    for c in $ctrs; do after="$after $(ctr_pid "$c")"; done
    check "$what: every container keeps its pid ($pids)" '[ "$pids" = "$after" ]'
    for c in $ctrs; do states="$states $(ctr_state "$c")"; done
    check "$what: all listed Running" '[ "$states" = " CONTAINER_RUNNING CONTAINER_RUNNING CONTAINER_RUNNING" ]'
    rm_all
}
restart_action() { systemctl restart berthd; }
stopstart_action() {
    systemctl stop berthd
    local alive=1 p
    for p in $pids; do kill -0 "$p" 2>/dev/null || alive=0; done
    check "stop: containers alive while berthd is stopped" '[ $alive = 1 ]'
    systemctl start berthd
}
kill9_action() {
    local old
    old=$(systemctl show -p MainPID --value berthd)
    kill -9 "$old"
    local i=0
    while [ "$(systemctl show -p MainPID --value berthd)" = "$old" ] && [ $i -lt 60 ]; do sleep 1; i=$((i + 1)); done
    wait_active
    check "kill -9: systemd restarted berthd" '[ "$(systemctl show -p NRestarts --value berthd)" -ge 1 ]'
}
pods_keep_running "systemctl restart berthd" restart_action
pods_keep_running "systemctl stop/start berthd" stopstart_action
pods_keep_running "kill -9 berthd" kill9_action

# --- config drop-ins and SIGHUP ---------------------------------------------
printf 'log_level = "warn"\n' >/etc/berth/config.d/50-a.toml
printf 'log_level = "debug"\n' >/etc/berth/config.d/60-b.toml
check "config dump shows the later drop-in as the winner" \
    'berthd config dump | grep -q "log_level = \"debug\"  # /etc/berth/config.d/60-b.toml"'
systemctl reload berthd
i=0
while ! journalctl -u berthd -o cat | grep -q "configuration reloaded" && [ $i -lt 30 ]; do sleep 1; i=$((i + 1)); done
check "SIGHUP reload applied log_level" 'journalctl -u berthd -o cat | grep -q "configuration reloaded.*log_level"'
rm -f /etc/berth/config.d/50-a.toml /etc/berth/config.d/60-b.toml

# --- the systemd cgroup driver ----------------------------------------------
SHIMS_CG=/sys/fs/cgroup/system.slice/berth-shims
pair=$(run_pod switch)
keep_shim=$(cat "$SHIMS_CG/cgroup.procs" 2>/dev/null | head -1)
check "cgroupfs: the pod's shim runs in $SHIMS_CG" '[ -n "$keep_shim" ]'
printf 'cgroup_driver = "systemd"\n' >/etc/berth/config.d/70-systemd.toml
systemctl restart berthd
wait_active
check "driver switch with a live pod: the old shim cgroup and its shim are untouched" \
    '[ -d "$SHIMS_CG" ] && grep -qx "$keep_shim" "$SHIMS_CG/cgroup.procs"'
# The cgroupfs pod goes with the cgroupfs driver; the next start has no user.
rm -f /etc/berth/config.d/70-systemd.toml
systemctl restart berthd
wait_active
rm_all
printf 'cgroup_driver = "systemd"\n' >/etc/berth/config.d/70-systemd.toml
systemctl restart berthd
wait_active
check "driver switch with no pod left: the old shim cgroup is removed" '[ ! -e "$SHIMS_CG" ]'
check "systemd driver: berthd active" '[ "$(systemctl is-active berthd)" = active ]'
check "systemd driver: RuntimeConfig reports it" 'crictl runtime-config 2>/dev/null | grep -qi systemd'
SLICE=kubepods-burstable-poduid1.slice
SLICE_DIR=/sys/fs/cgroup/kubepods.slice/kubepods-burstable.slice/$SLICE
pair=$(run_pod sd "$SLICE" 67108864 50000) || echo "FAIL: systemd driver: run pod: $(journalctl -u berthd -o cat | tail -5)"
sp=${pair% *} sc=${pair#* }
unit=berth-$sc.scope
cg=$SLICE_DIR/$unit
check "systemd driver: container running" '[ "$(ctr_state "$sc")" = CONTAINER_RUNNING ]'
check "systemd driver: $unit active in $SLICE" \
    '[ "$(systemctl is-active "$unit")" = active ] && [ "$(systemctl show -p Slice --value "$unit")" = "$SLICE" ]'
check "systemd driver: systemctl status shows the container's process" \
    'systemctl status --no-pager "$unit" | grep -q "$(ctr_pid "$sc")"'
check "systemd driver: scope Delegate=yes" '[ "$(systemctl show -p Delegate --value "$unit")" = yes ]'
check "systemd driver: MemoryMax property = memory.max = 64 MiB" \
    '[ "$(systemctl show -p MemoryMax --value "$unit")" = 67108864 ] && [ "$(cat "$cg/memory.max")" = 67108864 ]'
check "systemd driver: CPUQuotaPerSecUSec 500ms, cpu.max 50000 100000" \
    '[ "$(systemctl show -p CPUQuotaPerSecUSec --value "$unit")" = 500ms ] && [ "$(cat "$cg/cpu.max")" = "50000 100000" ]'
check "systemd driver: CPUWeight property = cpu.weight" \
    '[ "$(systemctl show -p CPUWeight --value "$unit")" = "$(cat "$cg/cpu.weight")" ]'
check "systemd driver: TasksMax infinity, pids.max max" \
    '[ "$(systemctl show -p TasksMax --value "$unit")" = infinity ] && [ "$(cat "$cg/pids.max")" = max ]'
check "systemd driver: the container's pid is in the scope" 'grep -qx "$(ctr_pid "$sc")" "$cg/cgroup.procs"'
check "systemd driver: systemd-cgls shows the scope under the slice" \
    'systemd-cgls --no-pager -u "$SLICE" | grep -q "$unit"'
check "systemd driver: the shim runs in berth-shim-$sp.scope" \
    '[ "$(systemctl is-active "berth-shim-$sp.scope")" = active ] && [ -n "$(cat "$SLICE_DIR/berth-shim-$sp.scope/cgroup.procs")" ]'
check "systemd driver: no placeholder process left" '! pgrep -x berth-hold >/dev/null'
crictl update --memory 134217728 "$sc" >/dev/null
check "systemd driver: resize raise: unit and cgroup agree (128 MiB)" \
    '[ "$(systemctl show -p MemoryMax --value "$unit")" = 134217728 ] && [ "$(cat "$cg/memory.max")" = 134217728 ]'
crictl update --memory 100663296 "$sc" >/dev/null
check "systemd driver: accepted decrease: unit and cgroup agree (96 MiB)" \
    '[ "$(systemctl show -p MemoryMax --value "$unit")" = 100663296 ] && [ "$(cat "$cg/memory.max")" = 100663296 ]'
crictl exec "$sc" dd if=/dev/zero of=/dev/shm/fill bs=1M count=60 >/dev/null 2>&1
if crictl update --memory 33554432 "$sc" >/tmp/upd.log 2>&1; then refused=0; else refused=1; fi
check "systemd driver: a decrease below unreclaimable usage is refused" '[ $refused = 1 ]'
check "systemd driver: after the refusal unit and cgroup still agree (96 MiB)" \
    '[ "$(systemctl show -p MemoryMax --value "$unit")" = 100663296 ] && [ "$(cat "$cg/memory.max")" = 100663296 ] && [ "$(cat "$cg/memory.high")" = max ]'
check "systemd driver: the container survived the refusal" '[ "$(ctr_state "$sc")" = CONTAINER_RUNNING ]'
crictl rmp -f "$sp" >/dev/null
check "systemd driver: removal stopped the scope" '[ "$(systemctl show -p ActiveState --value "$unit")" != active ] && [ ! -d "$cg" ]'
check "systemd driver: removal stopped the slice Berth made" '[ "$(systemctl is-active "$SLICE")" != active ] && [ ! -d "$SLICE_DIR" ]'
pods_keep_running "systemd driver: systemctl restart berthd" restart_action
rm -f /etc/berth/config.d/70-systemd.toml
# RunPodSandbox and CreateContainer+StartContainer, the drivers alternating.
if [ -x /usr/local/bin/berth-bench-cgroup-driver ]; then
    IMG=$IMG berth-bench-cgroup-driver || { echo "FAIL: latency bench"; fail=1; }
fi
systemctl restart berthd
wait_active

# --- the package: upgrade with pods, remove, purge ---------------------------
if [ -r /root/berth-upgrade.deb ]; then
    pair=$(run_pod upg)
    uctr=${pair#* } upid=$(ctr_pid "${pair#* }")
    old=$(systemctl show -p MainPID --value berthd)
    dpkg -i /root/berth-upgrade.deb >/tmp/dpkg.log 2>&1
    check "upgrade installed" '[ "$(dpkg-query -W -f "\${Version}" berth)" = "$(dpkg-deb -f /root/berth-upgrade.deb Version)" ]'
    wait_active
    check "upgrade restarted berthd" '[ "$(systemctl show -p MainPID --value berthd)" != "$old" ]'
    check "upgrade: the pod's container kept its pid and runs" \
        '[ "$(ctr_pid "$uctr")" = "$upid" ] && [ "$(ctr_state "$uctr")" = CONTAINER_RUNNING ]'
    dpkg -r berth >/tmp/dpkg.log 2>&1
    check "remove stops berthd" '! systemctl is-active -q berthd'
    check "remove leaves the container running" 'kill -0 "$upid"'
    dpkg -P berth >/tmp/dpkg.log 2>&1
    check "purge with a pod left keeps the state" '[ -d /var/lib/berth/sandboxes ] && grep -q "keeping both" /tmp/dpkg.log'
    dpkg -i /root/berth.deb >/tmp/dpkg.log 2>&1
    systemctl start berthd
    wait_active
    check "reinstalled berthd still knows the pod" '[ "$(ctr_state "$uctr")" = CONTAINER_RUNNING ]'
    rm_all
    dpkg -P berth >/tmp/dpkg.log 2>&1
    check "purge with no pod left removes the state" '[ ! -e /var/lib/berth ] && [ ! -e /run/berth ]'
    check "purge left no shim running" '! pgrep -x berth-shim >/dev/null'
fi

# --- reboot: pods recorded, then the VM powers off; test.sh boots it again ---
if dpkg -i /root/berth.deb >/tmp/dpkg.log 2>&1 && systemctl start berthd; then
    wait_active
    crictl pull "$IMG" >/dev/null 2>&1
    run_pod rb1 >/dev/null && run_pod rb2 >/dev/null
    check "reboot: two pods recorded before the reboot" '[ "$(crictl pods -q | wc -l)" = 2 ]'
    mkdir -p "$(dirname "$MARK")"
    echo "$fail" >"$MARK"
    sync
    exit 100
fi
echo "FAIL: reinstall for the reboot test"
exit 1
