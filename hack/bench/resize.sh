#!/usr/bin/env bash
# Benchmark (not a test): what a memory decrease costs, in the VM with
# berthd's defaults (memory_decrease_wait_ms 5000). A container holding
# ~48 MiB of shmem while it allocates: the median latency of a decrease to
# 24 MiB that cannot fit (refused) and the `memory.events high` counted per
# refusal (throttling of the workload), and the median latency of a decrease
# that fits. Prints a BERTH-BENCH line (medians over RUNS runs).
#   hack/bench/resize.sh [RUNS]     (default 10)
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${1:-10}
WORK=$PWD/.work
BIN=$WORK/resize-bench-bin
rm -rf "$BIN" && mkdir -p "$BIN"
hack/install-deps.sh >/dev/null
hack/build-release.sh -p berth-tests
cp target/dist/berthd target/dist/berth-shim target/release/berth-resize-bench "$BIN/"
hack/images/build.sh "$WORK/images" >/dev/null
hack/images/registry-seed.sh "$WORK/images" >/dev/null
hack/vm/build-initramfs.sh --bin "$BIN" --registry "$WORK/images/registry" --out "$WORK/resize-bench-initramfs.img"
hack/vm/run.sh --initramfs "$WORK/resize-bench-initramfs.img" --timeout 1800 --log "$WORK/resize-bench-vm.log" \
    --append "berth.mode=bench berth.benchargs=resize,--runs,$RUNS" | grep -a -E "BERTH-BENCH|BERTH-VM: exit|rror"
