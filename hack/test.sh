#!/usr/bin/env bash
# The one test command (README, .ci/run): installs dependencies, runs lints and
# host unit tests, then builds the binaries, the test images and a VM image and
# runs the root + cgroup v2 integration suites inside the VM.
#
#   hack/test.sh            everything
#   hack/test.sh --host     lints + host tests only
#   hack/test.sh --vm       VM integration tests only (skips lints + host tests)
#   BERTH_VM_FILTER=name    only VM tests whose name contains "name"
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WORK=$ROOT/.work
mkdir -p "$WORK"

step() { printf '\n==== %s (%ss)\n' "$*" "$SECONDS"; }

step "dependencies"
hack/install-deps.sh

MODE=${1:-all}
# Every VM suite (tests/Cargo.toml `[[test]]` entries named vm_*).
VM_SUITES=$(sed -n 's/^name = "\(vm_[a-z_]*\)"$/\1/p' tests/Cargo.toml)
if [ "$MODE" != --vm ]; then
    step "lint: cargo fmt"
    cargo fmt --all -- --check
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
cargo build --release -p berth-runtime -p berth-shim -p berth-tests --bins
# shellcheck disable=SC2046
TEST_BINS=$(cargo test --release -p berth-tests $(printf -- '--test %s ' $VM_SUITES) --no-run --message-format=json 2>/dev/null |
    python3 -c 'import json,sys
for l in sys.stdin:
    try: m=json.loads(l)
    except Exception: continue
    if m.get("reason")=="compiler-artifact" and m.get("executable") and m["target"]["kind"]==["test"]:
        print(m["executable"])')
[ -n "$TEST_BINS" ] || { echo "no VM test executables were built" >&2; exit 1; }
BIN=$WORK/bin
rm -rf "$BIN" && mkdir -p "$BIN"
cp target/release/berthd target/release/berth-shim target/release/berth-demo "$BIN/"

step "build: test images and registry content"
hack/images/build.sh "$WORK/images"
hack/images/registry-seed.sh "$WORK/images"

step "build: VM initramfs"
# shellcheck disable=SC2086
hack/vm/build-initramfs.sh --bin "$BIN" --tests $TEST_BINS --registry "$WORK/images/registry" \
    --out "$WORK/initramfs.img"

step "VM integration tests"
APPEND=""
if [ -n "${BERTH_VM_FILTER:-}" ]; then APPEND="berth.testargs=$BERTH_VM_FILTER"; fi
hack/vm/run.sh --initramfs "$WORK/initramfs.img" --timeout "${BERTH_VM_TIMEOUT:-1800}" \
    --log "$WORK/vm.log" --append "$APPEND"
step "all tests passed"
