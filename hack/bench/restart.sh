#!/usr/bin/env bash
# Benchmark (not a test): in-place pod restart vs re-creating the pod, and
# a fleet of pods restarted at once, in the VM with berthd's defaults and the
# VM's bridge CNI network. Prints BERTH-BENCH lines.
#   hack/bench/restart.sh [CYCLES] [PODS]     (defaults 50 and 20)
set -euo pipefail
cd "$(dirname "$0")/../.."
CYCLES=${1:-50} PODS=${2:-20}
WORK=$PWD/.work
mkdir -p "$WORK/bench-bin"
hack/install-deps.sh >/dev/null
hack/build-release.sh -p berth-tests
cp target/dist/berthd target/dist/berth-shim target/release/berth-bench "$WORK/bench-bin/"
hack/images/build.sh "$WORK/images" >/dev/null
hack/images/registry-seed.sh "$WORK/images" >/dev/null
hack/vm/build-initramfs.sh --bin "$WORK/bench-bin" --registry "$WORK/images/registry" --out "$WORK/bench-initramfs.img"
hack/vm/run.sh --initramfs "$WORK/bench-initramfs.img" --timeout 3600 --log "$WORK/bench-vm.log" \
    --append "berth.mode=bench berth.benchargs=restart,--cycles,$CYCLES,--pods,$PODS" | grep -a -E "BERTH-BENCH|BERTH-VM: exit|error"
