#!/bin/bash
# RunPodSandbox and CreateContainer+StartContainer latency, systemd cgroup
# driver against cgroupfs, measured with crictl through the real socket on
# one node (issue 21). Runs inside the systemd-node VM: hack/vm-systemd/
# build-image.sh installs it as /usr/local/bin/berth-bench-cgroup-driver and
# node-tests.sh runs it, so `hack/vm-systemd/test.sh` prints its lines:
#
#   BERTH_VM_WRAP=/work/tools/vmslot hack/vm-systemd/test.sh | grep LATENCY
#
# Drivers alternate in blocks of BLOCK runs (a berthd restart with a
# drop-in between blocks) until each has RUNS runs, so drift in the VM hits
# both alike. Every figure is net of crictl's own start-up: the median of
# `crictl version` (one process and one Version RPC) is subtracted once per
# crictl invocation (1 for runp, 2 for create+start). Prints one
# "LATENCY <driver> ..." line per driver with medians and p90 in ms, the
# crictl overhead and the load average. Needs the busybox image pulled.
set -u
RUNS=${BERTH_LATENCY_RUNS:-12}
BLOCK=${BERTH_LATENCY_BLOCK:-3}
IMG=${IMG:-127.0.0.1:5000/library/busybox:latest}
DROPIN=/etc/berth/config.d/90-bench-driver.toml
OUT=/tmp/berth-bench
mkdir -p "$OUT"
rm -f "$OUT"/*.ms

now_ms() { echo $(($(date +%s%N) / 1000000)); }
# pct P: the P-th percentile (nearest rank) of the numbers on stdin.
pct() { sort -n | awk -v p="$1" '{a[NR]=$1} END {i=int((NR*p+99)/100); if (i<1) i=1; print a[i]}'; }

use_driver() {
    printf 'cgroup_driver = "%s"\n' "$1" >"$DROPIN"
    systemctl restart berthd
    local i=0
    while [ "$(systemctl is-active berthd)" != active ] && [ $i -lt 180 ]; do sleep 1; i=$((i + 1)); done
}

# one DRIVER N: one pod and one container, timed.
one() {
    local f=/tmp/bench-pod-$2.json c=/tmp/bench-ctr-$2.json t0 t1 t2 p id
    cat >"$f" <<JSON
{"metadata": {"name": "bench$2", "namespace": "default", "uid": "uid-bench$2", "attempt": 0},
 "log_directory": "/var/log/berth-bench/$2", "linux": {"cgroup_parent": ""}}
JSON
    cat >"$c" <<JSON
{"metadata": {"name": "bench$2"}, "image": {"image": "$IMG"},
 "command": ["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 1; done"], "log_path": "c.log",
 "linux": {"resources": {"memory_limit_in_bytes": 67108864, "cpu_quota": 50000, "cpu_period": 100000}}}
JSON
    t0=$(now_ms)
    p=$(crictl runp "$f") || { echo "BENCH-FAIL: $1 runp"; return 1; }
    t1=$(now_ms)
    id=$(crictl create "$p" "$c" "$f") && crictl start "$id" >/dev/null || { echo "BENCH-FAIL: $1 create/start"; return 1; }
    t2=$(now_ms)
    echo $((t1 - t0)) >>"$OUT/$1.runp.ms"
    echo $((t2 - t1)) >>"$OUT/$1.cs.ms"
    crictl rmp -f "$p" >/dev/null
}

crictl pull "$IMG" >/dev/null 2>&1
for i in $(seq 10); do
    t0=$(now_ms)
    crictl version >/dev/null
    echo $(($(now_ms) - t0)) >>"$OUT/crictl.ms"
done
n=0
while [ $n -lt "$RUNS" ]; do
    for d in cgroupfs systemd; do
        use_driver "$d"
        for b in $(seq "$BLOCK"); do one "$d" "$((n + b))" || exit 1; done
    done
    n=$((n + BLOCK))
done
rm -f "$DROPIN"
systemctl restart berthd
overhead=$(pct 50 <"$OUT/crictl.ms")
for d in cgroupfs systemd; do
    net() { awk -v o="$1" '{v=$1-o; print (v<0)?0:v}' "$2"; }
    echo "LATENCY $d runs=$(wc -l <"$OUT/$d.runp.ms")" \
        "RunPodSandbox_median_ms=$(net "$overhead" "$OUT/$d.runp.ms" | pct 50)" \
        "RunPodSandbox_p90_ms=$(net "$overhead" "$OUT/$d.runp.ms" | pct 90)" \
        "CreateStart_median_ms=$(net $((2 * overhead)) "$OUT/$d.cs.ms" | pct 50)" \
        "CreateStart_p90_ms=$(net $((2 * overhead)) "$OUT/$d.cs.ms" | pct 90)" \
        "crictl_overhead_ms=$overhead load=$(cut -d' ' -f1-3 /proc/loadavg | tr ' ' /)"
done
