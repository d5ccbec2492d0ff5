#!/usr/bin/env bash
# Builds the disk image of a second test VM whose root is a real Debian
# system with systemd as PID 1 (issue 21: the service unit, the package,
# reboots), with Berth installed from its .deb by dpkg. Not part of
# hack/test.sh yet; see README.md here.
#
#   build-image.sh --deb target/debian/berth_<version>_amd64.deb
#                  [--out FILE] [--size 4G] [--test SCRIPT]
#                  [--registry DIR] [--upgrade-deb FILE] [--crictl FILE]
#
# The Debian base (mmdebstrap from deb.debian.org: systemd, dbus, iproute2,
# iptables, CNI plugins) is cached as a tarball in $BERTH_VM_CACHE (default
# /var/cache/berth-vm, outside the repo), keyed by suite and package list,
# so only the first build downloads. Each build unpacks the base, installs
# the .deb with dpkg (its postinst enables berthd.service), copies in the
# host kernel's modules (the VM boots the host's kernel, hack/vm-systemd/
# boot.sh), sets a root console autologin, optionally installs SCRIPT as a
# one-shot unit that runs after berthd and powers the VM off, and writes an
# ext4 image with mke2fs -d. Needs root (chroot, dpkg).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)

SUITE=bookworm
MIRROR=http://deb.debian.org/debian
PACKAGES=(systemd systemd-sysv dbus udev kmod iproute2 iptables procps util-linux
          containernetworking-plugins ca-certificates)
CACHE=${BERTH_VM_CACHE:-/var/cache/berth-vm}
DEB="" OUT="$REPO/target/vm-systemd/root.ext4" SIZE=4G TEST="" REGISTRY="" UPGRADE_DEB=""
CRICTL=${CRICTL:-$(command -v crictl || echo /tmp/crit-bin/crictl)}
while [ $# -gt 0 ]; do
    case "$1" in
        --deb) DEB=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        --size) SIZE=$2; shift 2 ;;
        --test) TEST=$2; shift 2 ;;
        --registry) REGISTRY=$2; shift 2 ;;
        --upgrade-deb) UPGRADE_DEB=$2; shift 2 ;;
        --crictl) CRICTL=$2; shift 2 ;;
        *) echo "build-image: unknown argument $1" >&2; exit 2 ;;
    esac
done
[ -n "$DEB" ] && [ -r "$DEB" ] || { echo "usage: $0 --deb berth_<version>_amd64.deb [--out FILE]" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "build-image: run as root (chroot, dpkg)" >&2; exit 1; }
command -v mmdebstrap >/dev/null || { echo "build-image: apt-get install mmdebstrap" >&2; exit 1; }
KVER=$(basename "$(ls -1 /boot/vmlinuz-* | sort -V | tail -1)")
KVER=${KVER#vmlinuz-}

mkdir -p "$CACHE" "$(dirname "$OUT")"
key=$(printf '%s %s\n' "$SUITE" "${PACKAGES[*]}" | sha256sum | cut -c1-12)
base="$CACHE/debian-$SUITE-systemd-$key.tar"
if [ ! -s "$base" ]; then
    echo "build-image: assembling the Debian $SUITE base (cached as $base)" >&2
    mmdebstrap --variant=minbase --format=tar \
        --include="$(IFS=,; echo "${PACKAGES[*]}")" \
        "$SUITE" "$base.tmp" "$MIRROR"
    mv "$base.tmp" "$base"
fi

work=$(mktemp -d /var/tmp/berth-vm-systemd.XXXXXX)
trap 'rm -rf "$work"' EXIT
root="$work/root"
mkdir "$root"
tar -C "$root" -xf "$base"

# Berth from its package, as an operator installs it.
cp "$DEB" "$root/tmp/berth.deb"
chroot "$root" dpkg -i /tmp/berth.deb
rm "$root/tmp/berth.deb"
[ -L "$root/etc/systemd/system/multi-user.target.wants/berthd.service" ] \
    || { echo "build-image: the package did not enable berthd.service" >&2; exit 1; }

# The host's kernel boots the VM: its modules (overlay, bridge, veth, ...).
mkdir -p "$root/lib/modules"
cp -a "/lib/modules/$KVER" "$root/lib/modules/"

echo berth-node > "$root/etc/hostname"
printf '/dev/vda / ext4 rw,errors=remount-ro 0 1\n' > "$root/etc/fstab"
chroot "$root" passwd -d root >/dev/null
mkdir -p "$root/etc/systemd/system/serial-getty@ttyS0.service.d"
cat > "$root/etc/systemd/system/serial-getty@ttyS0.service.d/autologin.conf" <<'UNIT'
[Service]
ExecStart=
ExecStart=-/sbin/agetty --autologin root --noclear --keep-baud 115200 %I $TERM
UNIT

# What the tests drive pods with: crictl, a bridge network, and Debian's
# docker-registry serving the seeded test images on 127.0.0.1:5000 (the
# VM has no network).
if [ -x "$CRICTL" ]; then
    install -m 755 "$CRICTL" "$root/usr/local/bin/crictl"
    printf 'runtime-endpoint: unix:///run/berth/berth.sock\nimage-endpoint: unix:///run/berth/berth.sock\ntimeout: 120\n' \
        > "$root/etc/crictl.yaml"
fi
mkdir -p "$root/etc/cni/net.d"
cat > "$root/etc/cni/net.d/10-berth.conflist" <<'JSON'
{"cniVersion": "1.0.0", "name": "berth", "plugins": [
  {"type": "bridge", "bridge": "berth0", "isGateway": true, "ipMasq": false,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.88.0.0/16"}]]}},
  {"type": "loopback"}]}
JSON
if [ -n "$REGISTRY" ]; then
    install -m 755 /usr/bin/docker-registry "$root/usr/local/bin/docker-registry"
    mkdir -p "$root/var/lib/registry"
    cp -a "$REGISTRY/." "$root/var/lib/registry/"
    printf 'version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: /var/lib/registry\nhttp:\n  addr: 127.0.0.1:5000\n' \
        > "$root/etc/berth-registry.yml"
    cat > "$root/etc/systemd/system/berth-registry.service" <<'UNIT'
[Unit]
Description=Test image registry on 127.0.0.1:5000

[Service]
ExecStart=/usr/local/bin/docker-registry serve /etc/berth-registry.yml

[Install]
WantedBy=multi-user.target
UNIT
    ln -sf /etc/systemd/system/berth-registry.service \
        "$root/etc/systemd/system/multi-user.target.wants/berth-registry.service"
fi
cp "$DEB" "$root/root/berth.deb"
[ -z "$UPGRADE_DEB" ] || cp "$UPGRADE_DEB" "$root/root/berth-upgrade.deb"

if [ -n "$TEST" ]; then
    install -m 755 "$TEST" "$root/usr/local/bin/berth-vm-test"
    # The checks smoke.sh and node-tests.sh share (they source it).
    install -D -m 644 "$HERE/service-checks.sh" "$root/usr/local/lib/berth-vm-test/service-checks.sh"
    install -m 755 "$(dirname "$0")/../bench/cgroup-driver.sh" "$root/usr/local/bin/berth-bench-cgroup-driver"
    cat > "$root/etc/systemd/system/berth-vm-test.service" <<'UNIT'
[Unit]
Description=Berth systemd-node test run
After=berthd.service berth-registry.service
Wants=berthd.service

[Service]
Type=oneshot
StandardOutput=journal+console
StandardError=journal+console
ExecStart=/bin/sh -c '/usr/local/bin/berth-vm-test; echo "BERTH-VM-TEST-EXIT: $?"'
ExecStopPost=/bin/systemctl --no-block poweroff

[Install]
WantedBy=multi-user.target
UNIT
    ln -sf /etc/systemd/system/berth-vm-test.service \
        "$root/etc/systemd/system/multi-user.target.wants/berth-vm-test.service"
fi

rm -f "$OUT"
mke2fs -q -t ext4 -L berthroot -d "$root" "$OUT" "$SIZE"
echo "build-image: $OUT ($(du -h "$OUT" | cut -f1) used) with $(basename "$DEB"), kernel $KVER" >&2
