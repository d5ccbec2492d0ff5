#!/bin/sh
# Builds the Debian package target/debian/berth_<version>_amd64.deb with
# cargo-deb (`cargo install cargo-deb`) from runtime/Cargo.toml's
# [package.metadata.deb], then checks what went in: the binaries, the
# unit and the default config exactly as committed, /etc/berth/config.d,
# the docs, the conffile and the maintainer scripts.
set -eu
cd "$(dirname "$0")/.."

if ! command -v cargo-deb >/dev/null 2>&1; then
    echo "package.sh: cargo-deb is missing; install it with: cargo install cargo-deb --locked" >&2
    exit 1
fi

hack/build-release.sh
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
deb=target/debian/berth_${version}_amd64.deb
rm -f "$deb"
cargo deb -p berth-runtime --profile dist --no-build --output "$deb"

fail() {
    echo "package.sh: $deb: $*" >&2
    exit 1
}

contents=$(dpkg-deb -c "$deb")
for f in ./usr/bin/berthd ./usr/bin/berth-shim ./usr/lib/systemd/system/berthd.service \
    ./etc/berth/config.toml ./etc/berth/config.d/README ./usr/share/doc/berth/README.md \
    ./usr/share/doc/berth/configuration.md ./usr/share/doc/berth/copyright; do
    echo "$contents" | grep -q " $f\$" || fail "missing $f"
done

info=$(dpkg-deb -I "$deb")
for want in "Package: berth" "Version: $version" "Architecture: amd64" "Section: admin"; do
    echo "$info" | grep -q "^ $want\$" || fail "control lacks '$want'"
done
dpkg-deb -I "$deb" conffiles | grep -qx /etc/berth/config.toml || fail "/etc/berth/config.toml is not a conffile"
for s in postinst prerm postrm; do
    dpkg-deb -I "$deb" "$s" | cmp -s - "contrib/debian/$s" || fail "$s differs from contrib/debian/$s"
done

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
dpkg-deb -x "$deb" "$tmp"
cmp -s "$tmp/usr/lib/systemd/system/berthd.service" contrib/systemd/berthd.service || fail "unit differs from contrib/"
cmp -s "$tmp/etc/berth/config.toml" contrib/config.toml || fail "config differs from contrib/"
"$tmp/usr/bin/berthd" config default | cmp -s - contrib/config.toml || fail "packaged berthd's default config differs"
[ -x "$tmp/usr/bin/berth-shim" ] || fail "berth-shim is not executable"

echo "package.sh: $deb ($(du -k "$deb" | cut -f1) KiB) checked:"
echo "$contents" | awk '{print "  " $6}'
