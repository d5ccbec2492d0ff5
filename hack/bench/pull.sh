#!/usr/bin/env bash
# Benchmark (not a test): pull + unpack of a ~100 MiB, six-layer image of
# incompressible data (hack/images/mkbig.py), Berth's PullImage against
# `skopeo copy` + `umoci unpack` of the same image from the same loopback
# registry, in the VM. Prints a BERTH-BENCH line with medians and the ratio.
#   hack/bench/pull.sh [RUNS] [LAYERS] [MIB_EACH]     (defaults 5, 5, 20)
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${1:-5} LAYERS=${2:-5} MIB=${3:-20}
WORK=$PWD/.work
BIN=$WORK/pull-bench-bin IMAGES=$WORK/pull-bench-images
rm -rf "$BIN" && mkdir -p "$BIN"
hack/install-deps.sh >/dev/null
hack/build-release.sh -p berth-tests
cp target/dist/berthd target/dist/berth-shim target/release/berth-pull-bench "$BIN/"
rm -rf "$IMAGES/oci" && mkdir -p "$IMAGES/oci"
python3 hack/images/mkbig.py "$IMAGES/oci" "$LAYERS" "$MIB"
hack/images/registry-seed.sh "$IMAGES" >/dev/null
hack/vm/build-initramfs.sh --bin "$BIN" --registry "$IMAGES/registry" \
    --extra-bin "$(command -v skopeo)" --extra-bin "$(command -v umoci)" --out "$WORK/pull-bench-initramfs.img"
hack/vm/run.sh --initramfs "$WORK/pull-bench-initramfs.img" --timeout 3600 --log "$WORK/pull-bench-vm.log" \
    --append "berth.mode=bench berth.benchargs=pull,--runs,$RUNS" | grep -a -E "BERTH-BENCH|BERTH-VM: exit|rror"
