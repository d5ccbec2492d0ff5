#!/usr/bin/env bash
# Benchmark (not a test): pod and container lifecycle latencies (medians of
# RunPodSandbox with CNI, create+start, stop+remove of a container and of a
# pod) and berthd's and one shim's RSS with N pods, in the VM with berthd's
# defaults and the VM's bridge CNI network. Prints BERTH-BENCH lines; fails
# if a call fails or anything is left behind.
#   hack/bench/lifecycle.sh [RUNS] [PODS]     (defaults 20 and 10)
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${1:-20} PODS=${2:-10}
WORK=$PWD/.work
BIN=$WORK/lifecycle-bench-bin
rm -rf "$BIN" && mkdir -p "$BIN"
hack/install-deps.sh >/dev/null
cargo build --release -p berth-runtime -p berth-shim -p berth-tests --bins
cp target/release/berthd target/release/berth-shim target/release/berth-lifecycle-bench "$BIN/"
hack/images/build.sh "$WORK/images" >/dev/null
hack/images/registry-seed.sh "$WORK/images" >/dev/null
hack/vm/build-initramfs.sh --bin "$BIN" --registry "$WORK/images/registry" --out "$WORK/lifecycle-bench-initramfs.img"
hack/vm/run.sh --initramfs "$WORK/lifecycle-bench-initramfs.img" --timeout 1800 --log "$WORK/lifecycle-bench-vm.log" \
    --append "berth.mode=bench berth.benchargs=lifecycle,--runs,$RUNS,--pods,$PODS" | grep -a -E "BERTH-BENCH|BERTH-VM: exit|rror|run.sh:"
