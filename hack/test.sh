#!/usr/bin/env bash
# The one test command (README, .ci/run): installs dependencies, runs lints and
# host unit tests, then builds the binaries, the test images and a VM image and
# runs the root + cgroup v2 integration suites inside the VM.
#
#   hack/test.sh            everything
#   hack/test.sh --host     lints + host tests only
#   hack/test.sh --vm       VM integration tests only (skips lints + host tests)
#   BERTH_VM_FILTER=a,b     only VM tests whose name contains "a" or "b" (refused under CI=true)
#   BERTH_VM_SUITE_TIMEOUT  seconds each VM test executable may run (default 900)
#   BERTH_CRICTL=PATH       cri-tools' crictl for the streaming interop test in the VM
#                           (vm_crictl_interop, hack/vm/crictl-interop.sh); default: crictl
#                           on PATH; without one the test is skipped with a printed reason
#   BERTH_CRITEST=PATH|build  then run cri-tools' critest (which the project does not
#                           ship) against berthd in the VM with hack/critest.sh: the
#                           binary at PATH, or `build` for critest.sh's cached build
#   BERTH_CRASH_ROUNDS      rounds of vm_crash's random-kill loop (default 5)
#   BERTH_CRASH_SEED        its seed (default fixed)
#   BERTH_SYSTEMD_VM=1      then the systemd-node VM stage: Berth's .deb in a Debian
#                           VM whose PID 1 is systemd (hack/vm-systemd/test.sh)
#
# Fails closed: every VM test executable must run every test it declares
# (`--list`), a filter must match at least one test, and CI runs no filter.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WORK=$ROOT/.work
mkdir -p "$WORK"

step() { printf '\n==== %s (%ss)\n' "$*" "$SECONDS"; }
die() { echo "test.sh: $*" >&2; exit 1; }

MODE=${1:-all}
# The filter reaches libtest through the kernel command line: name
# substrings joined by commas, never an option (`--list` would run nothing
# and pass).
FILTER=${BERTH_VM_FILTER:-}
if [ -n "$FILTER" ]; then
    [ "${CI:-}" != true ] || die "BERTH_VM_FILTER=$FILTER is refused under CI=true: CI runs every VM test"
    [[ $FILTER =~ ^[A-Za-z0-9_:]+(,[A-Za-z0-9_:]+)*$ ]] ||
        die "BERTH_VM_FILTER=$FILTER: test name substrings (letters, digits, _ and :) joined by commas"
fi
SUITE_TIMEOUT=${BERTH_VM_SUITE_TIMEOUT:-900}
[[ $SUITE_TIMEOUT =~ ^[1-9][0-9]*$ ]] || die "BERTH_VM_SUITE_TIMEOUT=$SUITE_TIMEOUT is not a number of seconds"

step "dependencies"
hack/install-deps.sh

# Every VM suite: berth-tests' [[test]] targets named vm_*, from cargo itself
# (a name pattern over Cargo.toml once dropped suites silently). A target that
# is neither vm_* nor host_* would run nowhere or in the wrong place.
VM_SUITES=$(cargo metadata --no-deps --format-version 1 | python3 -c 'import json, sys
bad = []
for p in json.load(sys.stdin)["packages"]:
    if p["name"] != "berth-tests":
        continue
    for t in p["targets"]:
        if t["kind"] != ["test"]:
            continue
        if t["name"].startswith("vm_"):
            print(t["name"])
        elif not t["name"].startswith("host_"):
            bad.append(t["name"])
if bad:
    sys.exit("berth-tests test target(s) named neither vm_* nor host_*: " + ", ".join(bad))')
[ -n "$VM_SUITES" ] || die "berth-tests declares no vm_* test targets"
echo "VM suites: $(echo $VM_SUITES)"
if [ "$MODE" != --vm ]; then
    step "lint: cargo fmt"
    cargo fmt --all -- --check
    step "lint: import cycles"
    hack/check-cycles.py
    step "lint: cargo clippy"
    cargo clippy --workspace --all-targets -- -D warnings
    # The VM suites are `test = false`, which --all-targets passes over.
    # shellcheck disable=SC2046
    cargo clippy -p berth-tests $(printf -- '--test %s ' $VM_SUITES) -- -D warnings

    step "host tests: cargo test"
    # The host integration tests run target/debug/berthd, which `cargo test` does not build.
    cargo build --workspace --bins
    cargo test --workspace
fi
if [ "$MODE" = --host ]; then
    exit 0
fi

step "build: release binaries and VM test executables"
hack/build-release.sh -p berth-tests
# shellcheck disable=SC2046
TEST_BINS=$(cargo test --release -p berth-tests $(printf -- '--test %s ' $VM_SUITES) --no-run --message-format=json 2>/dev/null |
    python3 -c 'import json,sys
for l in sys.stdin:
    try: m=json.loads(l)
    except Exception: continue
    if m.get("reason")=="compiler-artifact" and m.get("executable") and m["target"]["kind"]==["test"]:
        print(m["executable"])')
[ -n "$TEST_BINS" ] || die "no VM test executables were built"
# The real crictl's streaming (exec, attach, port-forward over SPDY and
# WebSocket) runs as one more VM test when a crictl binary is at hand; the
# project does not ship one (hack/stream-interop.sh says how to build it).
CRICTL_BIN=${BERTH_CRICTL:-$(command -v crictl || true)}
EXTRA_BINS=()
if [ -n "$CRICTL_BIN" ]; then
    [ -x "$CRICTL_BIN" ] && [ -f "$CRICTL_BIN" ] || die "BERTH_CRICTL=$CRICTL_BIN is not an executable"
    # The VM has it as /usr/bin/crictl, whatever the file is called here.
    rm -rf "$WORK/crictl" && mkdir -p "$WORK/crictl"
    ln -s "$(readlink -f "$CRICTL_BIN")" "$WORK/crictl/crictl"
    EXTRA_BINS=(--extra-bin "$WORK/crictl/crictl")
    cp hack/vm/crictl-interop.sh "$WORK/vm_crictl_interop-sh"
    TEST_BINS="$TEST_BINS $WORK/vm_crictl_interop-sh"
    echo "crictl interop: with $CRICTL_BIN ($("$CRICTL_BIN" --version 2>/dev/null || echo "version unknown"))"
else
    echo "crictl interop: skipped: no crictl (set BERTH_CRICTL to a crictl binary or put one on PATH; see hack/stream-interop.sh)"
fi
# What each executable declares, with the filter applied: the count the VM
# run must reach. Under a filter, executables with no matching test stay out
# of the VM; a filter matching nothing fails here, before a VM boots.
: >"$WORK/vm-expected"
SELECTED=""
for exe in $TEST_BINS; do
    name=$(basename "$exe") && name=${name%-*}
    # shellcheck disable=SC2086
    list=$("$exe" --list --format terse ${FILTER//,/ })
    declared=$(grep -c ': test$' <<<"$list" || true)
    if [ "$declared" -eq 0 ]; then
        [ -n "$FILTER" ] && continue
        die "VM suite $name declares no tests"
    fi
    echo "$name $declared" >>"$WORK/vm-expected"
    SELECTED="$SELECTED $exe"
done
[ -n "$SELECTED" ] || die "BERTH_VM_FILTER=$FILTER matches no VM test"
echo "VM test filter: ${FILTER:-none (every test)}"
echo "VM tests to run: $(awk '{ printf "%s%s=%s", sep, $1, $2; sep = " " }' "$WORK/vm-expected")"
BIN=$WORK/bin
rm -rf "$BIN" && mkdir -p "$BIN"
cp target/dist/berthd target/dist/berth-shim target/release/berth-demo \
    target/release/berth-syscall-probe "$BIN/"

step "build: test images and registry content"
hack/images/build.sh "$WORK/images"
hack/images/registry-seed.sh "$WORK/images"

step "build: VM initramfs"
# shellcheck disable=SC2086
hack/vm/build-initramfs.sh --bin "$BIN" --tests $SELECTED --registry "$WORK/images/registry" \
    "${EXTRA_BINS[@]}" --out "$WORK/initramfs.img"

step "VM integration tests"
# syscall.x32=y: Debian's kernel accepts x32 system calls only when asked;
# the seccomp tests need every ABI a node may enable (tests/vm/escape.rs).
APPEND="berth.suitetimeout=$SUITE_TIMEOUT syscall.x32=y"
if [ -n "$FILTER" ]; then APPEND="$APPEND berth.testargs=$FILTER"; fi
# vm_crash's random-kill loop (README): rounds and seed, passed into the VM.
for v in BERTH_CRASH_ROUNDS BERTH_CRASH_SEED; do
    [ -n "${!v:-}" ] || continue
    [[ ${!v} =~ ^[0-9]+$ ]] || die "$v=${!v} is not a number"
    APPEND="$APPEND berth.$(tr '[:upper:]' '[:lower:]' <<<"${v#BERTH_}" | tr -d _)=${!v}"
done
set +e
hack/vm/run.sh --initramfs "$WORK/initramfs.img" --timeout "${BERTH_VM_TIMEOUT:-1800}" \
    --log "$WORK/vm.log" --append "$APPEND"
vm_rc=$?
set -e

# Checked here too, not only inside the VM: a VM that reports "exit 0"
# without having run a suite, or ran fewer tests than declared, fails.
step "VM test counts (filter: ${FILTER:-none})"
short=0
while read -r name declared; do
    line=$({ grep -a "BERTH-VM: end $name rc=" "$WORK/vm.log" || true; } | tr -d '\r' | tail -1)
    if [ -z "$line" ]; then
        printf '  %-18s did not run (declares %s)\n' "$name" "$declared"
        short=1
        continue
    fi
    rc=$(sed -n 's/.* rc=\([0-9]*\).*/\1/p' <<<"$line")
    passed=$(sed -n 's/.* passed=\([0-9]*\).*/\1/p' <<<"$line")
    secs=$(sed -n 's/.* secs=\([0-9]*\).*/\1/p' <<<"$line")
    printf '  %-18s %4s of %4s passed, rc %s, %ss\n' "$name" "${passed:-?}" "$declared" "${rc:-?}" "${secs:-?}"
    [ "$rc" = 0 ] && [ "$passed" = "$declared" ] || short=1
done <"$WORK/vm-expected"
[ $vm_rc -eq 0 ] || die "VM run failed (rc $vm_rc)"
[ $short -eq 0 ] || die "a VM suite did not run every test it declares"

step "critest (optional)"
if [ -z "${BERTH_CRITEST:-}" ]; then
    echo "critest: skipped (set BERTH_CRITEST to a critest binary or to build, see README)"
elif [ -n "$FILTER" ]; then
    echo "critest: skipped under BERTH_VM_FILTER"
elif [ "$BERTH_CRITEST" = build ]; then
    hack/critest.sh
else
    [ -x "$BERTH_CRITEST" ] || die "BERTH_CRITEST=$BERTH_CRITEST is not an executable"
    CRITEST=$BERTH_CRITEST hack/critest.sh
fi
step "systemd-node VM (optional)"
if [ "${BERTH_SYSTEMD_VM:-0}" != 1 ]; then
    echo "systemd-node VM: skipped (BERTH_SYSTEMD_VM=1 runs it, see README)"
elif [ -n "$FILTER" ]; then
    echo "systemd-node VM: skipped under BERTH_VM_FILTER"
else
    hack/vm-systemd/test.sh
fi
step "all tests passed"
