#!/usr/bin/env python3
"""Builds the pull benchmark's image as an OCI layout: busybox's layer plus
LAYERS layers of MIB_EACH MiB of incompressible (seeded, reproducible)
bytes each, ~100 MiB in all by default, so a pull measures transfer, digest
checking, decompression and unpacking rather than a gzip of zeroes.

  hack/images/mkbig.py OUTDIR [LAYERS] [MIB_EACH]     (defaults 5 and 20)
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mkimage  # noqa: E402


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    out = sys.argv[1]
    layers = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    mib = int(sys.argv[3]) if len(sys.argv) > 3 else 20
    os.makedirs(out, exist_ok=True)
    stack = [mkimage.base_entries(mkimage.PASSWD, mkimage.GROUP)]
    for n in range(layers):
        stack.append([("data", "dir", None, 0o755, 0, 0),
                      (f"data/blob{n}", "file", mkimage.noise(n, mib * 1024 * 1024), 0o644, 0, 0)])
    mkimage.build(out, "bench-big", stack, {})


if __name__ == "__main__":
    main()
