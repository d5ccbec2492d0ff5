#!/usr/bin/env bash
# Installs what Berth's tests need on a Debian machine (idempotent): the VM
# (qemu + Debian's kernel), busybox for the VM and the test images, a real
# registry, CNI plugins, a D-Bus daemon (the systemd driver's bus test).
# apt-get update runs only when something is missing.
set -euo pipefail

PKGS=(qemu-system-x86 linux-image-amd64 busybox-static docker-registry skopeo umoci
      containernetworking-plugins iproute2 iptables cpio gzip python3 e2fsprogs apparmor criu dbus-daemon)

if [ "$(id -u)" != 0 ]; then
    echo "install-deps: run as root (apt-get)" >&2
    exit 1
fi
# The Rust toolchain is the machine's (rustup), not Debian's older cargo:
# check it first, every time, so a fresh machine is told before any build.
MIN_RUST=1.85
need_rust() {
    echo "install-deps: Rust >= $MIN_RUST with cargo, rustfmt and clippy is required ($1)." >&2
    echo "install-deps: install it with rustup (rustup component add rustfmt clippy); under sudo, keep PATH (sudo env PATH=\"\$PATH\" ...)." >&2
    exit 1
}
command -v cargo >/dev/null || need_rust "no cargo on PATH"
have=$(cargo --version | awk '{print $2}')
[ "$(printf '%s\n%s\n' "$MIN_RUST" "$have" | sort -V | head -1)" = "$MIN_RUST" ] || need_rust "cargo $have is too old"
cargo fmt --version >/dev/null 2>&1 || need_rust "no rustfmt"
cargo clippy --version >/dev/null 2>&1 || need_rust "no clippy"

missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
    echo "install-deps: all ${#PKGS[@]} packages present"
    exit 0
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
