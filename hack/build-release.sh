#!/usr/bin/env bash
# Builds Berth's release binaries the way the scripts, CI and the Debian
# package use them (target/release/):
#   hack/build-release.sh [-p PACKAGE]...    (berth-runtime always; more packages' bins with -p)
#
# berthd with `cargo build --release`; berth-shim linked static (glibc
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
cargo build --release -p berth-runtime "$@" --bins
cargo rustc --release -p berth-shim --bin berth-shim -- -C target-feature=+crt-static
if ! ldd target/release/berth-shim 2>&1 | grep -q "statically linked"; then
    echo "build-release.sh: target/release/berth-shim is not statically linked:" >&2
    ldd target/release/berth-shim >&2 || true
    exit 1
fi
