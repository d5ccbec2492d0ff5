#!/usr/bin/env bash
# Installs what Berth's tests need on a Debian machine (idempotent): the VM
# (qemu + Debian's kernel), busybox for the VM and the test images, a real
# registry, CNI plugins. apt-get update runs only when something is missing.
set -euo pipefail

PKGS=(qemu-system-x86 linux-image-amd64 busybox-static docker-registry skopeo umoci
      containernetworking-plugins iproute2 iptables cpio gzip python3 e2fsprogs)

if [ "$(id -u)" != 0 ]; then
    echo "install-deps: run as root (apt-get)" >&2
    exit 1
fi
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
command -v cargo >/dev/null || { echo "install-deps: cargo (Rust toolchain) is required" >&2; exit 1; }
