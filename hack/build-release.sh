#!/usr/bin/env bash
# Builds Berth's shipped binaries the way the scripts, CI and the Debian
# package use them:
#   hack/build-release.sh [-p PACKAGE]...
# berthd and berth-shim in Cargo.toml's `dist` profile (the release profile
# with fat LTO, one codegen unit, opt-level "s") into target/dist/; with -p, those
# packages' binaries (test tools, benchmarks) with --release into
# target/release/ as before.
#
# berthd with `cargo build --profile dist`; berth-shim linked static (glibc
# static-pie, `-C target-feature=+crt-static` on the shim's own crate only).
# Why: the shim execs itself for every container's init stage and once per
# pod, and a dynamically linked exec spends its first milliseconds in the
# loader (finding and mapping libc, libgcc_s, libm, binding symbols). Under
# the test VM's emulation that was ~22 ms of every CreateContainer
# (docs/performance.md, "A static shim"). The static-pie binary keeps
# address randomisation; the shim makes no NSS or dlopen calls, which are
# what static glibc cannot do.
#
# The flag cannot go through Cargo.toml or .cargo/config.toml on stable
# Cargo without also applying to proc-macro crates (which cannot be static),
# so `cargo rustc` passes it to the shim binary alone. The shim is left out
# of the `cargo build` line so the two never rebuild each other.
# A plain `cargo build --release` (the README's quick start) gives a
# dynamically linked shim that works the same, only slower to exec.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --profile dist -p berth-runtime --bin berthd
cargo rustc --profile dist -p berth-shim --bin berth-shim -- -C target-feature=+crt-static
if ! ldd target/dist/berth-shim 2>&1 | grep -q "statically linked"; then
    echo "build-release.sh: target/dist/berth-shim is not statically linked:" >&2
    ldd target/dist/berth-shim >&2 || true
    exit 1
fi
if [ $# -gt 0 ]; then
    cargo build --release "$@" --bins
fi
