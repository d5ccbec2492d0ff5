#!/bin/sh
# Runs inside the test VM (hack/bench/lifecycle.sh puts it in the initramfs
# as /berth/bin/berth-crictl-bench; hack/vm/init.sh's bench mode runs it):
# the same crictl sequences against berthd and against containerd 1.6 with
# runc and with crun, alternating runtimes within each run, on the VM's
# bridge+portmap CNI network and the busybox image from the VM's registry.
# Prints "BERTH-BENCH:" lines (hack/bench/lifecycle.sh keeps only those).
#   berth-crictl-bench RUNS CONCURRENT [RUNTIMES] [SECCOMP]
# RUNTIMES: which of berth, berthb, runc, crun to measure, joined by "+"
# (default berth+runc+crun); without runc and crun containerd is not
# started. berthb is berthd restarted with --shim /berth/bin/berth-shim-b
# (another shim build, A/B against berth): berthd is restarted whenever the
# next run wants the other shim, so the two alternate run by run.
# RUNS=0 runs the CONCURRENT-pod phase alone (no single-pod rows).
# SECCOMP=runtime-default gives every container the runtime's default
# seccomp profile (what kubelet's --seccomp-default and the restricted Pod
# Security Standard ask for); default: none, as crictl's configs ask.
# Client-side times are net of crictl's own start-up: the median of `crictl
# version` (one cheap RPC) is measured per runtime and subtracted once per
# crictl call; on a loaded host that estimate is noisy (it can even make a
# median negative). So the "server" lines also give each runtime's own
# per-RPC mean, from its gRPC latency histogram (Berth's
# berth_cri_request_duration_seconds, containerd's
# grpc_server_handling_seconds), which crictl's start-up does not touch.
# In the single-pod rows the estimate is each run's own (the median of
# four `version` calls made during the run, the "version" row), which
# follows the host's load and crictl's warm-up; "samples" lines give every
# create+start and restart sample for hack/bench/pool.sh.
# Not a test: nothing here asserts a time.
set -u
RUNS=${1:-5} CONC=${2:-50}
case ${3:-} in
    "" | --*) RTS="berth runc crun" ;;
    *) RTS=$(echo "$3" | tr '+' ' ') ;;
esac
has() { case " $RTS " in *" $1 "*) return 0 ;; esac; return 1; }
case ${4:-none} in
    runtime-default) SECCOMP_JSON=', "seccomp": {"profile_type": 0}' ;;
    none) SECCOMP_JSON="" ;;
    *) echo "BERTH-BENCH: FAIL SECCOMP=$4: runtime-default or none"; exit 1 ;;
esac
CRICTL=/usr/bin/crictl
IMG=127.0.0.1:5000/library/busybox:latest
BERTH=unix:///run/berth/berth.sock
CTRD=unix:///run/containerd/containerd.sock
W=/tmp/bench
mkdir -p $W /tmp/logs
# Endpoints are given per call; the file only keeps crictl from warning.
echo "timeout: 60" >/etc/crictl.yaml
say() { echo "BERTH-BENCH: $*"; }
is_berth() { case $1 in berth | berthb) return 0 ;; esac; return 1; }
die() { say "FAIL $*"; tail -30 /tmp/berthd.log /tmp/containerd.log 2>/dev/null; exit 1; }

# berthd again, with the metrics listener (the step histograms) on, and
# the shim runtime $1 wants (berth: the default one, berthb: berth-shim-b).
SHIM_NOW=""
berthd_for() {
    [ "$SHIM_NOW" = "$1" ] && return 0
    kill "$(pidof berthd)" 2>/dev/null
    while pidof berthd >/dev/null; do usleep 100000; done
    shim=""
    [ "$1" = berthb ] && shim="--shim /berth/bin/berth-shim-b"
    # shellcheck disable=SC2086
    /berth/bin/berthd --log-level info --http-address 127.0.0.1:9099 $shim >>/tmp/berthd.log 2>&1 &
    i=0
    until wget -q -O /dev/null http://127.0.0.1:9099/metrics 2>/dev/null; do
        i=$((i + 1)); [ $i -gt 300 ] && die "berthd did not restart"
        usleep 100000
    done
    SHIM_NOW=$1
}
berthd_for berth

# containerd 1.6: the same CNI config and plugins, the same registry (plain
# HTTP mirror), a pause stand-in from that registry, runc and crun as two
# runtime handlers of the runc v2 shim.
# containerd copies the node's resolv.conf into every pod (Berth too).
[ -e /etc/resolv.conf ] || echo "nameserver 127.0.0.1" >/etc/resolv.conf
if has runc || has crun; then
mkdir -p /etc/containerd /var/lib/containerd /run/containerd
cat >/etc/containerd/config.toml <<'TOML'
version = 2
[metrics]
  address = "127.0.0.1:1338"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "127.0.0.1:5000/library/pause:latest"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/opt/cni/bin"
    conf_dir = "/etc/cni/net.d"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "runc"
    snapshotter = "overlayfs"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "/usr/bin/runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.crun]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.crun.options]
        BinaryName = "/usr/bin/crun"
  [plugins."io.containerd.grpc.v1.cri".registry.mirrors."127.0.0.1:5000"]
    endpoint = ["http://127.0.0.1:5000"]
TOML
containerd >/tmp/containerd.log 2>&1 &
i=0
until $CRICTL -r $CTRD version >/dev/null 2>&1; do
    i=$((i + 1)); [ $i -gt 600 ] && die "containerd did not start"
    usleep 100000
done
$CRICTL -r $CTRD --timeout 120s pull $IMG >/dev/null || die "containerd pull"
$CRICTL -r $CTRD --timeout 120s pull 127.0.0.1:5000/library/pause:latest >/dev/null || die "containerd pull pause"
fi
$CRICTL -r $BERTH --timeout 120s pull $IMG >/dev/null || die "berth pull"

# Microseconds since the epoch (busybox sh).
us() { echo "${EPOCHREALTIME%.*}${EPOCHREALTIME#*.}"; }
# crictl against runtime $1 ("berth", "runc", "crun").
cri() {
    rt=$1; shift
    case $rt in berth | berthb) ep=$BERTH ;; *) ep=$CTRD ;; esac
    # Bounded: a call stuck past crictl's own timeout (seen with 50 pods
    # at once under TCG) must not hang the bench.
    timeout 300 $CRICTL -r "$ep" -i "$ep" --timeout 60s "$@"
}
handler() { case $1 in berth | berthb) echo "" ;; *) echo "--runtime $1" ;; esac; }

# Pods and containers as kubelet sends them for a pod without
# shareProcessNamespace: each container a PID namespace of its own
# ("pid": 1, CONTAINER; CRI's default 0 would be one per pod).
pod_json() { # name
    cat <<JSON
{"metadata": {"name": "$1", "namespace": "bench", "uid": "uid-$1", "attempt": 0},
 "log_directory": "/tmp/logs/$1", "linux": {"security_context": {"namespace_options": {"network": 0, "pid": 1}}}}
JSON
}
ctr_json() { # name command...
    n=$1; shift
    args=""
    for a in "$@"; do args="$args${args:+, }\"$a\""; done
    cat <<JSON
{"metadata": {"name": "$n"}, "image": {"image": "$IMG"}, "command": [$args], "log_path": "$n.log",
 "linux": {"security_context": {"namespace_options": {"pid": 1}$SECCOMP_JSON}}}
JSON
}

# Records one sample (milliseconds) of row $2 for runtime $1.
rec() { echo "$3" >>"$W/$1.$2"; }
ms() { echo $((($2 - $1) / 1000)); }

# The crictl start-up baseline per runtime (median of 9 `version` calls).
for rt in $RTS; do
    case $rt in berth | berthb) berthd_for "$rt" ;; esac
    : >"$W/$rt.base"
    for _ in 1 2 3 4 5 6 7 8 9; do
        a=$(us); cri $rt version >/dev/null; b=$(us)
        ms "$a" "$b" >>"$W/$rt.base"
    done
    eval "BASE_$rt=$(sort -n "$W/$rt.base" | sed -n 5p)"
done
# What crictl's `create` costs beyond `version` (reading and converting
# the two JSON configs, the image client): the median of 9 creates in a pod
# that does not exist, which each runtime refuses at once (NotFound).
# Printed beside the baseline, not subtracted: the rows stay net of
# `version` only, as in every round before.
pod_json nopod >"$W/nopod.json"
ctr_json c sleep 1 >"$W/noctr.json"
for rt in $RTS; do
    case $rt in berth | berthb) berthd_for "$rt" ;; esac
    : >"$W/$rt.cbase"
    for _ in 1 2 3 4 5 6 7 8 9; do
        a=$(us); cri $rt create no-such-pod "$W/noctr.json" "$W/nopod.json" >/dev/null 2>&1; b=$(us)
        ms "$a" "$b" >>"$W/$rt.cbase"
    done
    eval "CBASE_$rt=$(sort -n "$W/$rt.cbase" | sed -n 5p)"
done
base() { eval "echo \$BASE_$1"; }
net() { # runtime ms calls
    echo $(($2 - $(base "$1") * $3))
}

# crictl's start-up drifts through a bench: the first calls after boot
# cost more (the emulator is still translating crictl's code), and the
# host's load comes and goes. So each run subtracts its own estimate,
# taken beside the calls it is subtracted from: the median of the
# `version` calls made during the run (pair() adds one to $W/pair).
pair() { p0=$(us); cri "$1" version >/dev/null; p1=$(us); ms "$p0" "$p1" >>"$W/pair"; }
pair_base() {
    sort -n "$W/pair" | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : int((v[NR / 2] + v[NR / 2 + 1]) / 2) }'
}
netb() { # raw_ms base_ms calls
    echo $(($1 - $2 * $3))
}

# One run of the single-pod rows for runtime $1, run number $2.
one_run() {
    rt=$1 run=$2 name=b-$1-$2
    pod_json "$name" >"$W/pod.json"
    ctr_json c sleep 3600 >"$W/ctr.json"
    : >"$W/pair"
    pair "$rt"; pair "$rt"
    # shellcheck disable=SC2046
    a=$(us); pod=$(cri "$rt" runp $(handler "$rt") "$W/pod.json") || die "$rt runp"; b=$(us)
    t_runp=$(ms "$a" "$b")
    rpcs "$rt" >"$W/row.before"
    is_berth "$rt" && steps >"$W/rowsteps.before"
    a=$(us); ctr=$(cri "$rt" create "$pod" "$W/ctr.json" "$W/pod.json") || die "$rt create"; b=$(us)
    cri "$rt" start "$ctr" >/dev/null || die "$rt start"; c=$(us)
    t_create=$(ms "$a" "$b") t_start=$(ms "$b" "$c") t_cs=$(ms "$a" "$c")
    # The server side of exactly these two calls (a pod's first container),
    # and Berth's steps in them.
    rpcs "$rt" >"$W/row.after"
    rpc_delta "$rt" "$W/row.before" "$W/row.after" row
    is_berth "$rt" && steps >"$W/rowsteps.after" &&
        awk 'NR == FNR { s[$1 " " $2] = $3; c[$1 " " $2] = $4; next }
             { k = $1 " " $2; if ($4 - c[k] > 0) print k, $3 - s[k], $4 - c[k] }' \
            "$W/rowsteps.before" "$W/rowsteps.after" >"$W/rowsteps.run" &&
        cat "$W/rowsteps.run" >>"$W/$rt.rowsteps" &&
        # This run's shim call against the sum of the steps inside it (the
        # transport's two and the shim's own): the medians of single steps
        # do not add up to the median of the whole.
        awk -v rt="$rt" -v n="$run" '$1 == "create_container" && $2 == "shim_create" { t = $3 }
            $1 == "create_container" && $2 ~ /^shim\./ { s += $3 }
            END { printf "BERTH-BENCH: rowcall %s run=%d shim_create_ms=%.2f inside_ms=%.2f\n", rt, n, t * 1000, s * 1000 }' \
            "$W/rowsteps.run"
    pair "$rt"
    cri "$rt" stop -t 0 "$ctr" >/dev/null || die "$rt stop"
    cri "$rt" rm "$ctr" >/dev/null || die "$rt rm"
    a=$(us)
    cri "$rt" stopp "$pod" >/dev/null || die "$rt stopp"
    cri "$rt" rmp "$pod" >/dev/null || die "$rt rmp"
    b=$(us)
    t_stoprm=$(ms "$a" "$b")
    pair "$rt"
    pb=$(pair_base)
    rec "$rt" version "$pb"
    rec "$rt" runp "$(netb "$t_runp" "$pb" 1)"
    rec "$rt" create "$(netb "$t_create" "$pb" 1)"
    rec "$rt" start "$(netb "$t_start" "$pb" 1)"
    rec "$rt" createstart "$(netb "$t_cs" "$pb" 2)"
    rec "$rt" stoprm "$(netb "$t_stoprm" "$pb" 2)"
    restart_run "$rt" "$run"
}

# Waits until container $2 of runtime $1 has exited; echoes the polls made.
wait_exit() {
    k=0
    while :; do
        k=$((k + 1))
        s=$(cri "$1" inspect -o go-template --template '{{.status.state}}' "$2") || die "$1 inspect"
        [ "$s" = CONTAINER_EXITED ] && break
        [ $k -gt 600 ] && die "$1: $2 never exited"
    done
    echo $k
}

# kubelet's in-place restart of a 3-container pod: stop 3, remove 3,
# create+start the init container and wait for its exit, create+start two more.
restart_run() {
    rt=$1 name=r-$1-$2
    pod_json "$name" >"$W/rpod.json"
    ctr_json init true >"$W/init.json"
    ctr_json a sleep 3600 >"$W/a.json"
    ctr_json b sleep 3600 >"$W/b.json"
    # shellcheck disable=SC2046
    pod=$(cri "$rt" runp $(handler "$rt") "$W/rpod.json") || die "$rt runp"
    ids=""
    for c in init a b; do
        id=$(cri "$rt" create "$pod" "$W/$c.json" "$W/rpod.json") || die "$rt create $c"
        cri "$rt" start "$id" >/dev/null || die "$rt start $c"
        [ $c = init ] && wait_exit "$rt" "$id" >/dev/null
        ids="$ids $id"
    done
    : >"$W/pair"
    pair "$rt"; pair "$rt"
    a=$(us) calls=0
    for id in $ids; do cri "$rt" stop -t 0 "$id" >/dev/null || die "$rt stop"; calls=$((calls + 1)); done
    for id in $ids; do cri "$rt" rm "$id" >/dev/null || die "$rt rm"; calls=$((calls + 1)); done
    for c in init a b; do
        id=$(cri "$rt" create "$pod" "$W/$c.json" "$W/rpod.json") || die "$rt create $c"
        cri "$rt" start "$id" >/dev/null || die "$rt start $c"
        calls=$((calls + 2))
        if [ $c = init ]; then
            polls=$(wait_exit "$rt" "$id")
            calls=$((calls + polls))
        fi
    done
    b=$(us)
    pair "$rt"
    rec "$rt" restart "$(netb "$(ms "$a" "$b")" "$(pair_base)" "$calls")"
    cri "$rt" stopp "$pod" >/dev/null && cri "$rt" rmp "$pod" >/dev/null || die "$rt restart cleanup"
}

# What every process of the node waits on, to tell a stall (all asleep)
# from slowness: state and kernel wait channel per process, berthd's
# threads, and berthd's last log lines.
stall_report() {
    say "stall report after ${1}s: processes (pid state ppid wchan comm):"
    for d in /proc/[0-9]*; do
        read -r st <"$d/stat" 2>/dev/null || continue
        c=${st#*(}; c=${c%%)*}; rest=${st##*) }
        case $c in kworker* | ksoftirq* | migration* | rcu* | cpuhp* | idle_inject* | kthreadd) continue ;; esac
        set -- $rest
        echo "BERTH-BENCH:   ${d#/proc/} $1 $2 $(cat "$d/wchan" 2>/dev/null) $c"
    done
    bp=$(pidof berthd)
    for t in /proc/"$bp"/task/*; do
        read -r st <"$t/stat" 2>/dev/null || continue
        c=${st#*(}; c=${c%%)*}; rest=${st##*) }
        echo "BERTH-BENCH:   berthd thread ${t##*/} ${rest%% *} $(cat "$t/wchan" 2>/dev/null) $c"
    done
    tail -15 /tmp/berthd.log | sed 's/^/BERTH-BENCH:   berthd.log: /'
}

# $CONC pods at once, one container each, one client per pod.
concurrent() {
    rt=$1 pids=""
    rm -f "$W/$rt.conc"
    # A watchdog: a phase still running after 4 and 8 minutes says what
    # every process waits on (the 50-pod phase once went silent with the
    # VM idle, and nothing told where).
    ( sleep 240 && stall_report 240 && sleep 240 && stall_report 480 ) &
    dog=$!
    a=$(us)
    i=0
    while [ $i -lt "$CONC" ]; do
        (
            name=p-$rt-$i
            pod_json "$name" >"$W/$name.pod.json"
            ctr_json c sleep 3600 >"$W/$name.ctr.json"
            s=$(us)
            # shellcheck disable=SC2046
            { pod=$(cri "$rt" runp $(handler "$rt") "$W/$name.pod.json") &&
                ctr=$(cri "$rt" create "$pod" "$W/$name.ctr.json" "$W/$name.pod.json") &&
                cri "$rt" start "$ctr" >/dev/null && echo "$(net "$rt" "$(ms "$s" "$(us)")" 3)" >>"$W/$rt.conc"; } \
                2>"$W/$name.err" || say "concurrent $rt $name failed: $(tail -1 "$W/$name.err")"
        ) &
        pids="$pids $!"
        i=$((i + 1))
    done
    for p in $pids; do wait "$p"; done
    b=$(us)
    kill "$dog" 2>/dev/null
    ok=$(wc -l <"$W/$rt.conc" 2>/dev/null || echo 0)
    say "concurrent $rt pods=$CONC running=$ok wall_ms=$(ms "$a" "$b") $(stats <"$W/$rt.conc" | awk '{print "p50_ms=" $2 " p99_ms=" $4}')"
    cri "$rt" rmp -a -f >/dev/null 2>&1
}

# "n median p90 p99" of the numbers on stdin.
stats() {
    sort -n | awk '{ v[NR] = $1 } END {
        if (NR == 0) { print "0 - - -"; exit }
        m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
        p90 = v[int(NR * 0.9 + 0.999)]; p99 = v[int(NR * 0.99 + 0.999)]
        print NR, m, p90, p99 }'
}

# The step histograms' sums and counts, as "rpc step sum count" lines.
steps() {
    # A first line, so awk's NR == FNR test holds for a file with no series yet.
    echo "- - 0 0"
    wget -q -O - http://127.0.0.1:9099/metrics | awk '
        /^berth_step_duration_seconds_(sum|count)\{/ {
            match($0, /rpc="[^"]*"/); rpc = substr($0, RSTART + 5, RLENGTH - 6)
            match($0, /step="[^"]*"/); step = substr($0, RSTART + 6, RLENGTH - 7)
            kind = ($0 ~ /_sum\{/) ? "sum" : "count"
            v[rpc " " step, kind] = $NF; k[rpc " " step] = 1 }
        END { for (s in k) print s, v[s, "sum"], v[s, "count"] }' | sort
}

# Each CRI RPC's latency sum and count, as "rpc sum count" lines.
rpcs() {
    case $1 in
        berth | berthb) url=http://127.0.0.1:9099/metrics m=berth_cri_request_duration_seconds l=rpc ;;
        *) url=http://127.0.0.1:1338/v1/metrics m=grpc_server_handling_seconds l=grpc_method ;;
    esac
    wget -q -O - $url | awk -v m="$m" -v l="$l" '
        index($0, m "_sum{") == 1 || index($0, m "_count{") == 1 {
            match($0, l "=\"[^\"]*\""); r = substr($0, RSTART + length(l) + 2, RLENGTH - length(l) - 3)
            kind = (index($0, m "_sum{") == 1) ? "sum" : "count"
            v[r, kind] += $NF; k[r] = 1 }
        END { for (r in k) print r, v[r, "sum"], v[r, "count"] }'
}
# Appends the per-RPC deltas between two rpcs() snapshots to $W/$rt.srv
# (or to $W/$rt.$4).
rpc_delta() {
    awk 'NR == FNR { s[$1] = $2; c[$1] = $3; next } { print $1, $2 - s[$1], $3 - c[$1] }' "$2" "$3" >>"$W/$1.${4:-srv}"
}

line="crictl baseline ms:"
for rt in $RTS; do line="$line $rt=$(base "$rt")"; done
say "$line"
line="crictl create-refused ms:"
for rt in $RTS; do line="$line $rt=$(eval "echo \$CBASE_$rt")"; done
say "$line"
steps >"$W/steps.before"
r=1
while [ $r -le "$RUNS" ]; do
    # Alternate which runtime goes first, so none always runs on a warmer VM;
    # an A/B's two halves (berth, berthb) swap every run, so each goes first
    # in half the runs (with the pair in one order in the three-way turn,
    # berth went first in 5 of 8).
    pair="berth berthb"
    [ $((r % 2)) -eq 0 ] && pair="berthb berth"
    case $((r % 3)) in
        1) order="$pair runc crun" ;;
        2) order="runc crun $pair" ;;
        0) order="crun $pair runc" ;;
    esac
    for rt in $order; do
        has "$rt" || continue
        case $rt in berth | berthb) berthd_for "$rt" ;; esac
        { echo "- 0 0"; rpcs "$rt"; } >"$W/srv.before"
        one_run "$rt" "$r"
        rpcs "$rt" >"$W/srv.after"
        rpc_delta "$rt" "$W/srv.before" "$W/srv.after"
    done
    r=$((r + 1))
done
steps >"$W/steps.after"

[ "$RUNS" -gt 0 ] && for row in version runp create start createstart stoprm restart; do
    line="row $row"
    MED_berth=0 MED_berthb=0 MED_runc=0 MED_crun=0
    for rt in $RTS; do
        set -- $(stats <"$W/$rt.$row" 2>/dev/null)
        line="$line $rt:n=$1,median=$2,p90=$3"
        eval "MED_$rt=$2"
    done
    has berth && has runc && line="$line ratio_runc=$(awk "BEGIN{printf \"%.2f\", $MED_berth / ($MED_runc + 0.001)}")"
    has berth && has crun && line="$line ratio_crun=$(awk "BEGIN{printf \"%.2f\", $MED_berth / ($MED_crun + 0.001)}")"
    has berth && has berthb && line="$line ratio_b=$(awk "BEGIN{printf \"%.2f\", $MED_berthb / ($MED_berth + 0.001)}")"
    say "$line"
done
# Every sample of the create+start rows, for hack/bench/pool.sh (a median
# over several bench runs).
[ "$RUNS" -gt 0 ] && for row in createstart restart; do
    for rt in $RTS; do say "samples $row $rt: $(tr '\n' ' ' <"$W/$rt.$row" 2>/dev/null)"; done
done
# Each runtime's own mean per RPC (server side, no crictl start-up).
[ "$RUNS" -gt 0 ] && for m in Version ImageFsInfo RunPodSandbox CreateContainer StartContainer StopContainer RemoveContainer StopPodSandbox RemovePodSandbox; do
    line="server $m"
    for rt in $RTS; do
        line="$line $(awk -v m=$m -v rt=$rt '$1 == m { s += $2; c += $3 }
            END { if (c > 0) printf "%s:mean_ms=%.1f,n=%d", rt, s * 1000 / c, c; else printf "%s:n=0", rt }' "$W/$rt.srv" 2>/dev/null)"
    done
    say "$line"
done
# The same for the create+start row's own calls: the client rows above
# minus these is what the client, the connection and the host's load add.
[ "$RUNS" -gt 0 ] && for m in CreateContainer StartContainer; do
    line="server-row $m"
    for rt in $RTS; do
        line="$line $(awk -v m=$m -v rt=$rt '$1 == m && $3 > 0 { v[++n] = $2 * 1000 / $3 }
            END { if (n == 0) { printf "%s:n=0", rt; exit }
                  for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
                  med = (n % 2) ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
                  printf "%s:median_ms=%.1f,n=%d", rt, med, n }' "$W/$rt.row" 2>/dev/null)"
    done
    say "$line"
done
# Berth's steps in the create+start row's own calls (a pod's first
# container), per step over the runs: the median (a one-off in one run,
# such as the first container after berthd's start, moves a mean of 10
# a lot) and the mean.
[ "$RUNS" -gt 0 ] && for rt in $RTS; do
    is_berth "$rt" || continue
    awk -v rt="$rt" '{ k = $1 " " $2; s[k] += $3; c[k] += $4; v[k, ++n[k]] = $3 * 1000 / $4 }
        END { for (k in s) {
                  m = n[k]
                  for (i = 1; i <= m; i++) for (j = i + 1; j <= m; j++)
                      if (v[k, j] < v[k, i]) { t = v[k, i]; v[k, i] = v[k, j]; v[k, j] = t }
                  med = (m % 2) ? v[k, (m + 1) / 2] : (v[k, m / 2] + v[k, m / 2 + 1]) / 2
                  printf "BERTH-BENCH: rowstep %s %s median_ms=%.2f mean_ms=%.2f n=%d\n", rt, k, med, s[k] * 1000 / c[k], c[k]
              } }' \
        "$W/$rt.rowsteps" 2>/dev/null | sort
done
# Berth's breakdown: mean per step over this bench's calls (the histogram's
# sum/count delta); $3 prefixes the lines.
breakdown() {
    awk -v tag="$3" 'NR == FNR { s[$1 " " $2] = $3; c[$1 " " $2] = $4; next }
         { k = $1 " " $2; n = $4 - c[k]; if (n > 0)
             printf "BERTH-BENCH: %s %s %s mean_ms=%.2f n=%d\n", tag, $1, $2, ($3 - s[k]) * 1000 / n, n }' \
        "$1" "$2"
}
# (Not with berthb: berthd's restarts reset its histograms.)
has berthb || { [ "$RUNS" -gt 0 ] && breakdown "$W/steps.before" "$W/steps.after" step; }

# Memory with 10 pods of one running container each: berthd's RSS, and
# each shim's and each fork server's Pss (/proc/<pid>/smaps_rollup: pages
# shared by several processes count for a share each), medians and maxima.
pids_of() { # command-line substring
    for d in /proc/[0-9]*; do
        case "$(tr '\0' ' ' <"$d/cmdline" 2>/dev/null)" in *"$1"*) echo "${d#/proc/}" ;; esac
    done
}
mem_phase() {
    berthd_for berth
    mpods=""
    for i in 1 2 3 4 5 6 7 8 9 10; do
        pod_json "m-$i" >"$W/mpod.json"
        ctr_json c sleep 3600 >"$W/mctr.json"
        p=$(cri berth runp "$W/mpod.json") || die "memory runp"
        c=$(cri berth create "$p" "$W/mctr.json" "$W/mpod.json") || die "memory create"
        cri berth start "$c" >/dev/null || die "memory start"
        mpods="$mpods $p"
    done
    for kind in "serve" "zygote"; do
        : >"$W/pss.$kind"
        for pid in $(pids_of "berth-shim $kind"); do
            awk '/^Pss:/ { print $2 }' /proc/"$pid"/smaps_rollup >>"$W/pss.$kind"
        done
    done
    set -- $(stats <"$W/pss.serve")
    shim="n=$1,median=$2,max=$(sort -n "$W/pss.serve" | tail -1)"
    set -- $(stats <"$W/pss.zygote")
    zyg="n=$1,median=$2,max=$(sort -n "$W/pss.zygote" | tail -1)"
    rss=$(awk '/^(VmRSS|RssAnon|RssFile):/ { printf "%s%s=%s", sep, $1, $2; sep = "," }' /proc/"$(pidof berthd)"/status)
    # Transparent huge pages in berthd's anonymous memory (a thread stack or
    # malloc heap the kernel backed with 2 MiB at once).
    rss="$rss,AnonHugePages:=$(awk '/^AnonHugePages:/ { s += $2 } END { print s + 0 }' /proc/"$(pidof berthd)"/smaps)"
    say "memory pods=10 berthd_kb:$rss shim_pss_kb:$shim zygote_pss_kb:$zyg"
    # Which of berthd's mappings hold huge pages: range, size, huge kB.
    say "memory berthd_thp_maps:$(awk '/^[0-9a-f]+-[0-9a-f]+ / { m = $1 } /^Size:/ { z = $2 }
        /^AnonHugePages:/ && $2 > 0 { printf " %s:%s:%s", m, z, $2 }' /proc/"$(pidof berthd)"/smaps)"
    for p in $mpods; do
        cri berth stopp "$p" >/dev/null && cri berth rmp "$p" >/dev/null || die "memory cleanup"
    done
}
[ "$RUNS" -gt 0 ] && has berth && mem_phase

[ "$CONC" -gt 0 ] && for rt in $RTS; do
    case $rt in berth | berthb) berthd_for "$rt" ;; esac
    [ "$rt" = berth ] && steps >"$W/steps.before"
    concurrent "$rt"
    # Where Berth's time went with $CONC pods at once.
    [ "$rt" = berth ] && steps >"$W/steps.after" && breakdown "$W/steps.before" "$W/steps.after" concstep
done
say "berthd rss_kb=$(awk '/VmRSS/ {print $2}' /proc/"$(pidof berthd)"/status)"
say "done"
exit 0
