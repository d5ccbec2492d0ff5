#!/usr/bin/env bash
# The systemd-node VM stage: builds the .deb (hack/package.sh) and a second
# one with a higher version (the upgrade test), the busybox test image in a
# registry, the Debian image with node-tests.sh as its test unit, then
# boots it under TCG and exits with the tests' status. Needs root, qemu,
# mmdebstrap, cargo-deb, skopeo, docker-registry and crictl
# ($CRICTL, default: crictl on PATH or /tmp/crit-bin/crictl).
#
#   hack/vm-systemd/test.sh
#
# BERTH_VM_WRAP prefixes the boot only (the shared build machine limits
# concurrent VMs: BERTH_VM_WRAP=/work/tools/vmslot), so the builds do not
# hold a VM slot.
# The console log is kept in .work/vm-systemd.log.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
cd "$ROOT"
WORK=$ROOT/.work/vm-systemd
mkdir -p "$WORK"
step() { echo "== vm-systemd: $* ($(date +%T))"; }

step "package"
hack/package.sh >"$WORK/package.log" 2>&1 || { tail -30 "$WORK/package.log"; exit 1; }
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
# Kept apart: cargo deb empties target/debian when it builds the next one.
deb=$WORK/berth_${version}_amd64.deb
cp "target/debian/berth_${version}_amd64.deb" "$deb"
upgrade=target/debian-upgrade/berth_${version}+upgrade1_amd64.deb
mkdir -p target/debian-upgrade
cargo deb -p berth-runtime --no-build --deb-version "${version}+upgrade1" --output "$upgrade" >>"$WORK/package.log" 2>&1

step "test image and registry"
rm -rf "$WORK/images" && mkdir -p "$WORK/images/oci"
python3 hack/images/mkimage.py "$WORK/images/all" >/dev/null
cp -a "$WORK/images/all/busybox" "$WORK/images/oci/"
hack/images/registry-seed.sh "$WORK/images" >/dev/null

step "image"
hack/vm-systemd/build-image.sh --deb "$deb" --upgrade-deb "$upgrade" \
    --registry "$WORK/images/registry" --test hack/vm-systemd/node-tests.sh \
    --out "$WORK/root.ext4" 2>&1 | tail -3

step "boot (TCG) and node tests"
start=$(date +%s)
set +e
${BERTH_VM_WRAP:-} "$HERE/boot.sh" --image "$WORK/root.ext4" --timeout "${BERTH_VM_TIMEOUT:-1500}" >"$ROOT/.work/vm-systemd.log" 2>&1
rc=$?
# 100: the first boot left pods recorded for the reboot test; boot again.
if [ $rc = 100 ]; then
    ${BERTH_VM_WRAP:-} "$HERE/boot.sh" --image "$WORK/root.ext4" --timeout "${BERTH_VM_TIMEOUT:-1500}" >>"$ROOT/.work/vm-systemd.log" 2>&1
    rc=$?
fi
set -e
# The test unit's lines reach the console as "[ time] sh[pid]: ok: ...".
results=$(tr -d '\r' <"$ROOT/.work/vm-systemd.log" | sed -n 's/^.*sh\[[0-9]*\]: \(\(ok\|FAIL\): .*\|LATENCY .*\|BOOT .*\|BERTH-VM-TEST-EXIT: .*\)$/\1/p')
echo "$results"
oks=$(grep -c "^ok: " <<<"$results" || true)
fails=$(grep -c "^FAIL: " <<<"$results" || true)
step "boot + tests took $(($(date +%s) - start)) s: $oks ok, $fails failed, exit $rc"
grep -q "BERTH-VM-TEST-EXIT" "$ROOT/.work/vm-systemd.log" || { echo "vm-systemd: the test unit never finished"; exit 1; }
exit "$rc"
