#!/bin/sh
# Runs inside the test VM (hack/stream-interop.sh puts it in the initramfs as
# a test executable): drives berthd with the real crictl the way users do,
# above all its SPDY and WebSocket streaming (exec, attach, port-forward),
# which Berth's own Rust client cannot prove interoperable on its own.
# Prints "INTEROP: ok <step>" per step and exits non-zero on the first failure.
#
# hack/test.sh runs it as one more VM test executable, vm_crictl_interop,
# when a crictl binary is at hand: like a libtest binary it answers
# `--list [--format terse] [FILTER...]` with "crictl_interop: test" (or
# nothing when no filter matches) and writes "ok|failed crictl_interop" to
# `--logfile`, so hack/vm/init.sh counts it like the Rust suites.
set -u
NAME=crictl_interop
LIST=0 LOGFILE="" FILTERS=""
while [ $# -gt 0 ]; do
    case "$1" in
        --list) LIST=1 ;;
        --format | --logfile) [ "$1" = --logfile ] && LOGFILE=${2:-}; shift ;;
        --*) ;;
        *) FILTERS="$FILTERS $1" ;;
    esac
    shift
done
SELECTED=yes
if [ -n "$FILTERS" ]; then
    SELECTED=no
    for f in $FILTERS; do
        case "$NAME" in *"$f"*) SELECTED=yes ;; esac
    done
fi
if [ $LIST = 1 ]; then
    [ $SELECTED = no ] || echo "$NAME: test"
    exit 0
fi
[ $SELECTED = yes ] || exit 0

CRICTL=/usr/bin/crictl
IMG=127.0.0.1:5000/library/busybox:latest
cat >/etc/crictl.yaml <<YAML
runtime-endpoint: unix:///run/berth/berth.sock
image-endpoint: unix:///run/berth/berth.sock
timeout: 60
YAML
# The suites after this one start their own berthd (one of them on these
# default paths): leave no pod and no berthd behind, pass or fail.
BERTHD=""
cleanup() {
    $CRICTL rmp -a -f >/dev/null 2>&1
    [ -z "$BERTHD" ] || { kill "$BERTHD"; wait "$BERTHD"; } 2>/dev/null
}
fail() {
    echo "INTEROP: FAIL $*"
    tail -40 /tmp/berthd.log
    cleanup
    [ -z "$LOGFILE" ] || echo "failed $NAME" >>"$LOGFILE"
    exit 1
}
ok() { echo "INTEROP: ok $*"; }

/berth/bin/berthd --log-level info >/tmp/berthd.log 2>&1 &
BERTHD=$!
i=0
until [ -S /run/berth/berth.sock ]; do
    i=$((i + 1)); [ $i -gt 300 ] && fail "berthd did not start"
    usleep 100000
done
$CRICTL --timeout 120s pull $IMG >/dev/null || fail pull
mkdir -p /tmp/logs
cat >/tmp/pod.json <<JSON
{"metadata": {"name": "interop", "namespace": "default", "uid": "interop-uid", "attempt": 0},
 "log_directory": "/tmp/logs", "linux": {}}
JSON
cat >/tmp/web.json <<JSON
{"metadata": {"name": "web"}, "image": {"image": "$IMG"},
 "command": ["sh", "-c", "mkdir -p /www && echo served-by-busybox >/www/index.html && exec httpd -f -p 8080 -h /www"],
 "log_path": "web.log"}
JSON
cat >/tmp/count.json <<JSON
{"metadata": {"name": "count"}, "image": {"image": "$IMG"},
 "command": ["sh", "-c", "i=0; while [ \$i -lt 6000 ]; do echo tick-\$i; i=\$((i+1)); sleep 0.2; done"],
 "log_path": "count.log"}
JSON
POD=$($CRICTL runp /tmp/pod.json) || fail runp
WEB=$($CRICTL create "$POD" /tmp/web.json /tmp/pod.json) || fail create
$CRICTL start "$WEB" >/dev/null || fail start
CNT=$($CRICTL create "$POD" /tmp/count.json /tmp/pod.json) || fail create count
$CRICTL start "$CNT" >/dev/null || fail start count
ok "pod and containers running"

for transport in spdy websocket; do
    out=$($CRICTL exec --transport $transport "$WEB" echo hello 2>/tmp/err) || fail "$transport exec: $out $(cat /tmp/err)"
    [ "$out" = hello ] || fail "$transport exec printed '$out'"
    ok "$transport exec echo hello"

    # crictl exits 1 for any failed streamed exec; client-go's message
    # carries the code it decoded from Berth's v4 Status.
    $CRICTL exec --transport $transport "$WEB" sh -c 'exit 3' >/dev/null 2>/tmp/err
    rc=$?
    [ $rc -ne 0 ] && grep -q "command terminated with exit code 3" /tmp/err ||
        fail "$transport exec 'exit 3': rc $rc, $(cat /tmp/err)"
    ok "$transport exec exit code 3 ($(grep -o 'command terminated with exit code 3' /tmp/err))"

    out=$(echo piped-line | $CRICTL exec --transport $transport -i "$WEB" cat 2>/tmp/err) || fail "$transport exec -i: $out $(cat /tmp/err)"
    [ "$out" = piped-line ] || fail "$transport exec -i printed '$out'"
    ok "$transport exec -i (stdin)"

    out=$($CRICTL exec --transport $transport "$WEB" sh -c 'echo to-err >&2' 2>&1 >/dev/null)
    [ "$out" = to-err ] || fail "$transport exec stderr '$out'"
    ok "$transport exec stderr"

    big=$($CRICTL exec --transport $transport "$WEB" sh -c 'head -c 3000000 /dev/zero | tr "\0" x' | wc -c)
    [ "$big" -eq 3000000 ] || fail "$transport exec 3 MB output gave $big bytes"
    ok "$transport exec 3 MB of output"

    # crictl ignores SIGTERM while attached: SIGKILL ends the client side.
    timeout -s KILL 5 $CRICTL attach --transport $transport "$CNT" >/tmp/attach.out 2>&1
    grep -q '^tick-' /tmp/attach.out || fail "$transport attach saw: $(head -3 /tmp/attach.out)"
    ok "$transport attach ($(grep -c '^tick-' /tmp/attach.out) lines)"

    port=$((18080 + ${#transport}))
    $CRICTL port-forward --transport $transport "$POD" "$port:8080" >/tmp/pf.out 2>&1 &
    pf=$!
    i=0
    until page=$(wget -q -O - "http://127.0.0.1:$port/index.html" 2>/dev/null); do
        i=$((i + 1)); [ $i -gt 100 ] && fail "$transport port-forward: $(cat /tmp/pf.out)"
        usleep 100000
    done
    [ "$page" = served-by-busybox ] || fail "$transport port-forward page '$page'"
    page2=$(wget -q -O - "http://127.0.0.1:$port/index.html") || fail "$transport second connection"
    [ "$page2" = served-by-busybox ] || fail "$transport second page '$page2'"
    kill $pf; wait $pf 2>/dev/null
    ok "$transport port-forward (2 connections)"
done

$CRICTL stopp "$POD" >/dev/null && $CRICTL rmp "$POD" >/dev/null || fail "stopp/rmp"
ok "pod removed"
cleanup
echo "INTEROP: all ok"
[ -z "$LOGFILE" ] || echo "ok $NAME" >>"$LOGFILE"
