#!/usr/bin/env bash
# Boots the test VM, starts berthd with its defaults, runs one busybox pod
# through the CRI socket with berth-demo and prints the container's log.
# Works on any machine with QEMU (hack/install-deps.sh installs it).
#   hack/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=$PWD/.work
mkdir -p "$WORK/demo-bin"
hack/install-deps.sh
hack/build-release.sh -p berth-tests
cp target/dist/berthd target/dist/berth-shim target/release/berth-demo "$WORK/demo-bin/"
hack/images/build.sh "$WORK/images"
hack/images/registry-seed.sh "$WORK/images"
hack/vm/build-initramfs.sh --bin "$WORK/demo-bin" --registry "$WORK/images/registry" \
    --out "$WORK/demo-initramfs.img"
hack/vm/run.sh --initramfs "$WORK/demo-initramfs.img" --timeout 600 --log "$WORK/demo-vm.log" \
    --append "berth.mode=demo"
