#!/bin/sh
# Runs inside the test VM as a one-test "suite" (hack/critest.sh puts it in
# the initramfs next to the real critest): starts berthd with registry
# mirrors that send registry.k8s.io and gcr.io to the VM's registry (which
# holds hack/images/critest_images.py's stand-ins), so critest pulls its own
# image names unchanged, then runs critest's validation specs.
#
# Why mirrors and not critest's -registry-prefix: the prefix rewrites only the
# names critest pulls, not the names several specs then create containers
# from (the predefined-group and hostnet web server images), so those specs
# would fail on a name Berth never pulled; a mirror is also how an
# air-gapped node is set up.
#
# Speaks enough of libtest's command line for hack/vm/init.sh: `--list`
# declares one test ("critest"), `--logfile F` gets "ok critest" or
# "failed critest". Console markers for the host: "CRITEST: ..." lines.
set -u
LOGFILE=""
while [ $# -gt 0 ]; do
    case "$1" in
        --list) echo "critest: test"; exit 0 ;;
        --logfile) LOGFILE=$2; shift 2 ;;
        *) shift ;;
    esac
done

fail() {
    echo "CRITEST: FAIL $*"
    tail -40 /tmp/berthd.log
    [ -n "$LOGFILE" ] && echo "failed critest" >>"$LOGFILE"
    exit 1
}

# critest loads AppArmor profiles with `sudo apparmor_parser`; the VM runs
# everything as root and has no sudo.
if ! command -v sudo >/dev/null; then
    printf '#!/bin/sh\nexec "$@"\n' >/usr/bin/sudo
    chmod 755 /usr/bin/sudo
fi

mkdir -p /etc/berth
cat >/etc/berth/config.toml <<'TOML'
[registry."registry.k8s.io"]
mirrors = ["http://127.0.0.1:5000"]
[registry."gcr.io"]
mirrors = ["http://127.0.0.1:5000"]
TOML

/berth/bin/berthd --log-level info >/tmp/berthd.log 2>&1 &
BERTHD=$!
i=0
until [ -S /run/berth/berth.sock ]; do
    i=$((i + 1)); [ $i -gt 300 ] && fail "berthd did not start"
    usleep 100000
done

# The only spec skipped: test-image-digest is pinned by the upstream
# manifest digest, which no image built here can have. Extra ginkgo flags
# (a -ginkgo.focus for one spec) come from berth.critestargs.
EXTRA=""
for arg in $(cat /proc/cmdline); do
    case "$arg" in berth.critestargs=*) EXTRA=$(echo "${arg#berth.critestargs=}" | tr ',' ' ') ;; esac
done
echo "CRITEST: start (extra flags: ${EXTRA:-none})"
# shellcheck disable=SC2086
/usr/bin/critest \
    -runtime-endpoint unix:///run/berth/berth.sock \
    -image-endpoint unix:///run/berth/berth.sock \
    -ginkgo.skip 'public image with digest should be pulled and removed' \
    -ginkgo.no-color -ginkgo.timeout 4h -ginkgo.junit-report /tmp/critest-junit.xml \
    $EXTRA 2>&1
rc=$?
echo "CRITEST: exit $rc"
# One line per spec: state and name, from the JUnit report.
if [ -f /tmp/critest-junit.xml ]; then
    { tr -d '\n' </tmp/critest-junit.xml; echo; } | sed 's/<testcase /\n<testcase /g' |
        sed -n 's/^<testcase name="\([^"]*\)" classname="[^"]*" status="\([a-z]*\)".*/CRITEST: spec \2 \1/p'
fi
kill "$BERTHD" 2>/dev/null
wait "$BERTHD" 2>/dev/null
if [ $rc -ne 0 ]; then
    echo "CRITEST: berthd log tail"
    tail -60 /tmp/berthd.log
fi
[ -n "$LOGFILE" ] && if [ $rc -eq 0 ]; then echo "ok critest" >>"$LOGFILE"; else echo "failed critest" >>"$LOGFILE"; fi
exit $rc
