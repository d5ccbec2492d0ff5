#!/usr/bin/env bash
# Benchmark (not a test): pod and container start-up latency, step by step,
# against containerd 1.6 (Debian's, with runc and with crun), in the TCG VM
# (2 vCPU) on the same bridge+portmap CNI config and the same busybox image
# from the VM's local registry. The VM runs hack/bench/lifecycle-vm.sh,
# which drives every runtime with the same crictl sequences, alternating
# runtimes within each run, and prints medians, p90s, ratios, Berth's
# per-step breakdown (berth_step_duration_seconds) and 50 concurrent pods.
#   N=20 hack/bench/lifecycle.sh          (N runs, default 5; CONC pods at once, default 50)
#   RUNTIMES=berth N=3 CONC=50 hack/bench/lifecycle.sh   (one runtime alone: any of
#   berth, runc, crun joined by "+" or ","; default all three)
#   RUNTIMES=berth N=0 CONC=50 hack/bench/lifecycle.sh   (N=0: the CONC-pod phase
#   alone, no single-pod rows)
#   SHIM_B=/path/to/berth-shim RUNTIMES=berth+berthb N=10 CONC=0 hack/bench/lifecycle.sh
#   (A/B of two shim builds: "berthb" is berthd restarted with --shim SHIM_B,
#   alternating with "berth", the default shim, run by run; CONC=0: no
#   concurrent phase)
#   BERTH_BIN=/other/target/release RUNTIMES=berth hack/bench/lifecycle.sh
#   (another build's berthd and berth-shim, e.g. an older commit's, against
#   this script; its steps are printed only where that build has them)
#   SECCOMP=runtime-default hack/bench/lifecycle.sh   (every container under the
#   runtime's default seccomp profile; default none, as crictl's configs ask)
# Save the output of several runs and give them to hack/bench/pool.sh for
# the create+start and restart medians over all their samples.
# crictl: $CRICTL, else /tmp/crit-bin/crictl, else crictl on PATH (build it
# as hack/stream-interop.sh says). Without it, the script says so and runs
# Berth's own client (berth-lifecycle-bench) for Berth alone.
# Run it under /work/tools/vmslot where VM slots are shared.
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${N:-5} CONC=${CONC:-50} PODS=${PODS:-10}
RUNTIMES=$(echo "${RUNTIMES:-berth+runc+crun}" | tr ',' '+')
[[ $RUNTIMES =~ ^(berth|berthb|runc|crun)(\+(berth|berthb|runc|crun))*$ ]] ||
    { echo "lifecycle.sh: RUNTIMES=$RUNTIMES: berth, berthb, runc, crun joined by + or ," >&2; exit 2; }
SHIM_B=${SHIM_B:-}
SECCOMP=${SECCOMP:-none}
[[ $SECCOMP =~ ^(none|runtime-default)$ ]] ||
    { echo "lifecycle.sh: SECCOMP=$SECCOMP: none or runtime-default" >&2; exit 2; }
[[ $RUNTIMES != *berthb* ]] || [ -x "$SHIM_B" ] ||
    { echo "lifecycle.sh: RUNTIMES has berthb: set SHIM_B to the other berth-shim build" >&2; exit 2; }
WORK=$PWD/.work
BIN=$WORK/lifecycle-bench-bin
IMG=$WORK/lifecycle-bench-initramfs.img
# Its own image dir: a VM test run of the same worktree may be building
# $WORK/images at the same time.
IMAGES=$WORK/lifecycle-bench-images
rm -rf "$BIN" && mkdir -p "$BIN"
CRICTL=${CRICTL:-}
[ -n "$CRICTL" ] || { [ -x /tmp/crit-bin/crictl ] && CRICTL=/tmp/crit-bin/crictl; } || true
[ -n "$CRICTL" ] || CRICTL=$(command -v crictl || true)
hack/install-deps.sh >/dev/null
hack/build-release.sh -p berth-tests
# BERTH_BIN: a directory with another build's berthd and berth-shim (an
# older commit's, for a before/after on this machine); default this tree's.
BERTH_BIN=${BERTH_BIN:-target/dist}
cp "$BERTH_BIN/berthd" "$BERTH_BIN/berth-shim" "$BIN/"
[ -z "$SHIM_B" ] || cp "$SHIM_B" "$BIN/berth-shim-b"
hack/images/build.sh "$IMAGES" >/dev/null

if [ -z "$CRICTL" ]; then
    echo "lifecycle.sh: no crictl (set CRICTL, or build it as hack/stream-interop.sh says):" \
        "measuring Berth alone with its own client, no containerd comparison" >&2
    cp target/release/berth-lifecycle-bench "$BIN/"
    hack/images/registry-seed.sh "$IMAGES" >/dev/null
    hack/vm/build-initramfs.sh --bin "$BIN" --registry "$IMAGES/registry" --out "$IMG"
    hack/vm/run.sh --initramfs "$IMG" --timeout 1800 --log "$WORK/lifecycle-bench-vm.log" \
        --append "berth.mode=bench berth.benchargs=lifecycle,--runs,$N,--pods,$PODS" |
        grep -a -E "BERTH-BENCH|BERTH-VM: exit|rror|run.sh:"
    exit 0
fi

# containerd, its runc v2 shim, runc and crun from Debian.
need=()
for p in containerd runc crun; do dpkg -s "$p" >/dev/null 2>&1 || need+=("$p"); done
if [ ${#need[@]} -gt 0 ]; then
    apt-get install -y --no-install-recommends "${need[@]}" >/dev/null
fi
# containerd's sandbox image: a pause stand-in (busybox sleeping) in the
# same registry, as the VM has no internet.
python3 - "$IMAGES/oci" <<'PY'
import sys
sys.path.insert(0, "hack/images")
import mkimage
mkimage.build(sys.argv[1], "pause", mkimage.base_entries(mkimage.PASSWD, mkimage.GROUP),
              {"Cmd": ["sleep", "2147483647"]})
PY
hack/images/registry-seed.sh "$IMAGES" >/dev/null
install -m 755 hack/bench/lifecycle-vm.sh "$BIN/berth-crictl-bench"
extra=()
for b in "$CRICTL" /usr/bin/containerd /usr/bin/containerd-shim-runc-v2 /usr/sbin/runc /usr/bin/crun; do
    extra+=(--extra-bin "$b")
done
hack/vm/build-initramfs.sh --bin "$BIN" --registry "$IMAGES/registry" --out "$IMG" "${extra[@]}"
echo "lifecycle.sh: host load average $(cut -d' ' -f1-3 /proc/loadavg), N=$N, CONC=$CONC, RUNTIMES=$RUNTIMES, SECCOMP=$SECCOMP"
hack/vm/run.sh --initramfs "$IMG" --timeout 3600 --log "$WORK/lifecycle-bench-vm.log" \
    --append "berth.mode=bench berth.benchargs=crictl,$N,$CONC,$RUNTIMES,$SECCOMP" |
    grep -a -E "BERTH-BENCH|BERTH-VM: exit|rror|run.sh:"
echo "lifecycle.sh: host load average $(cut -d' ' -f1-3 /proc/loadavg) at the end"
