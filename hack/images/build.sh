#!/usr/bin/env bash
# Builds the test images as OCI layouts under OUTDIR/oci (see mkimage.py).
#   hack/images/build.sh OUTDIR
set -euo pipefail
OUT=${1:?usage: build.sh OUTDIR}
rm -rf "$OUT/oci"
mkdir -p "$OUT/oci"
python3 "$(dirname "$0")/mkimage.py" "$OUT/oci"
