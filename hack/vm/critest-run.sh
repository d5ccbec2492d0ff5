#!/bin/sh
# Runs inside the test VM as a one-test "suite" (hack/critest.sh puts it in
# the initramfs next to the real critest): starts berthd with registry
# mirrors that send registry.k8s.io and gcr.io to the VM's registry (which
# holds hack/images/critest_images.py's stand-ins), so critest pulls its own
# image names unchanged, then runs critest's validation specs and its
# benchmarks.
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

# /var/lib on ext4: the VM's tmpfs cannot be idmapped before Linux 6.3, so
# Berth's root there would not support user namespaces, and critest checks
# idmap support on /var/lib before its UserNamespaces POD spec.
if [ "$(stat -f -c %T /var/lib)" = tmpfs ]; then
    truncate -s 4G /tmp/var-lib.img && mke2fs -F -q /tmp/var-lib.img &&
        mkdir -p /tmp/var-lib.old && cp -a /var/lib/. /tmp/var-lib.old/ &&
        mount -t ext4 -o loop /tmp/var-lib.img /var/lib && cp -a /tmp/var-lib.old/. /var/lib/ ||
        fail "could not put /var/lib on ext4"
    echo "CRITEST: /var/lib on ext4 ($(stat -f -c %T /var/lib))"
fi

/berth/bin/berthd --log-level info >/tmp/berthd.log 2>&1 &
BERTHD=$!
i=0
until [ -S /run/berth/berth.sock ]; do
    i=$((i + 1)); [ $i -gt 300 ] && fail "berthd did not start"
    usleep 100000
done

# Extra ginkgo flags for the validation pass (a -ginkgo.focus for one
# spec) come from berth.critestargs; berth.critestbench=0 leaves the
# benchmark pass out.
EXTRA="" BENCH=1
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        berth.critestargs=*) EXTRA=$(echo "${arg#berth.critestargs=}" | tr ',' ' ') ;;
        berth.critestbench=*) BENCH=${arg#berth.critestbench=} ;;
    esac
done

# run_critest PASS FLAGS...: one critest run, its JUnit report turned into
# one "CRITEST: PASS <state> <name>" line per spec; returns critest's status.
run_critest() {
    pass=$1
    shift
    echo "CRITEST: start $pass (flags: $*)"
    /usr/bin/critest \
        -runtime-endpoint unix:///run/berth/berth.sock \
        -image-endpoint unix:///run/berth/berth.sock \
        -ginkgo.no-color -ginkgo.timeout 4h -ginkgo.junit-report "/tmp/critest-$pass.xml" \
        "$@" 2>&1
    prc=$?
    echo "CRITEST: exit $pass $prc"
    if [ -f "/tmp/critest-$pass.xml" ]; then
        { tr -d '\n' <"/tmp/critest-$pass.xml"; echo; } | sed 's/<testcase /\n<testcase /g' |
            sed -n "s/^<testcase name=\"\([^\"]*\)\" classname=\"[^\"]*\" status=\"\([a-z]*\)\".*/CRITEST: $pass \2 \1/p" \
            >"/tmp/critest-$pass.lines"
        cat "/tmp/critest-$pass.lines"
        # Counts of the It specs (ginkgo's own, without its suite nodes).
        n() { grep -c "^CRITEST: $pass $1 \[It\]" "/tmp/critest-$pass.lines"; }
        echo "CRITEST: counts $pass: passed $(n passed) failed $(n failed) skipped $(n skipped)"
    fi
    return $prc
}

# The validation specs. The one spec skipped here: test-image-digest is
# pinned by the upstream manifest digest, which no image built here can
# have. (critest itself skips the benchmarks in this pass.)
# shellcheck disable=SC2086
run_critest spec -ginkgo.skip 'public image with digest should be pulled and removed' $EXTRA
rc=$?

# The benchmarks, which critest runs only under -benchmark and skips
# unless told how many pods, containers and images to measure: a few of
# each, from the images the VM serves, with timeouts for TCG. They check
# that the operations work; their figures mean nothing under emulation.
cat >/tmp/critest-bench.yaml <<'YAML'
containersNumber: 3
containersNumberParallel: 1
containerBenchmarkTimeoutSeconds: 600
podsNumber: 3
podsNumberParallel: 1
podBenchmarkTimeoutSeconds: 600
imagesNumber: 3
imagesNumberParallel: 1
imageBenchmarkTimeoutSeconds: 600
imagePullingBenchmarkImage: gcr.io/k8s-staging-cri-tools/test-image-1:latest
imageListingBenchmarkImages:
  - gcr.io/k8s-staging-cri-tools/test-image-1:latest
  - gcr.io/k8s-staging-cri-tools/test-image-2:latest
  - gcr.io/k8s-staging-cri-tools/test-image-3:latest
podContainerStartBenchmarkTimeoutSeconds: 600
YAML
if [ "$BENCH" = 1 ]; then
    run_critest benchmark -benchmark -benchmarking-params-file /tmp/critest-bench.yaml || rc=1
else
    echo "CRITEST: benchmark pass left out (berth.critestbench=$BENCH)"
fi
kill "$BERTHD" 2>/dev/null
wait "$BERTHD" 2>/dev/null
if [ $rc -ne 0 ]; then
    echo "CRITEST: berthd log tail"
    tail -60 /tmp/berthd.log
fi
[ -n "$LOGFILE" ] && if [ $rc -eq 0 ]; then echo "ok critest" >>"$LOGFILE"; else echo "failed critest" >>"$LOGFILE"; fi
exit $rc
