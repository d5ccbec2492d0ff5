#!/usr/bin/env bash
# Builds the test VM's initramfs: busybox-static as the userland, the kernel
# modules the tests need (with their dependencies, in load order), Berth's
# binaries, the compiled integration-test executables, every shared library
# they load, the CNI plugins, Debian's docker-registry with the seeded test
# images, and the /init that runs everything (hack/vm/init.sh).
#
#   build-initramfs.sh --bin DIR --tests EXE... [--registry DIR] --out FILE
#                      [--kernel-version VER] [--extra-bin PATH]...   (more programs, with their libraries)
#
# The archive is an uncompressed cpio: under TCG emulation the kernel unpacks
# it faster than it could decompress gzip, and it is only read once.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)

BIN="" OUT="" REGISTRY="" KVER="" TESTS=() EXTRA=()
while [ $# -gt 0 ]; do
    case "$1" in
        --bin) BIN=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        --registry) REGISTRY=$2; shift 2 ;;
        --kernel-version) KVER=$2; shift 2 ;;
        --tests) shift; while [ $# -gt 0 ] && [ "${1#--}" = "$1" ]; do TESTS+=("$1"); shift; done ;;
        --extra-bin) EXTRA+=("$2"); shift 2 ;;
        *) echo "build-initramfs: unknown argument $1" >&2; exit 2 ;;
    esac
done
[ -n "$BIN" ] && [ -n "$OUT" ] || { echo "usage: $0 --bin DIR --tests EXE... --out FILE" >&2; exit 2; }
if [ -z "$KVER" ]; then
    KVER=$(basename "$(ls -1 /boot/vmlinuz-* | sort -V | tail -1)")
    KVER=${KVER#vmlinuz-}
fi
[ -d "/lib/modules/$KVER" ] || { echo "build-initramfs: no modules for kernel $KVER" >&2; exit 1; }

# Modules: overlay for rootfs, bridge/veth/netfilter for CNI networking.
MODULES=(overlay bridge veth br_netfilter nf_conntrack nf_nat iptable_nat iptable_filter
         ip6table_nat ip6table_filter xt_MASQUERADE xt_comment xt_mark xt_multiport xt_addrtype
         xt_conntrack xt_tcpudp xt_nat nft_compat nft_chain_nat nf_tables sch_tbf sch_ingress cls_u32
         act_mirred ifb loop ext4 brd
         unix_diag tcp_diag udp_diag raw_diag netlink_diag af_packet_diag
         nf_conntrack_netlink tun)
# The *_diag, nf_conntrack_netlink and tun are for CRIU (checkpoint): it reads
# sockets through the diag modules and, even for a pod's net namespace it
# leaves external, dumps conntrack through ctnetlink (without the module the
# request gets EINVAL and the dump fails). A Debian node loads these on
# demand (request_module); the VM has no modprobe, so they are loaded up front.
# tun gives /dev/net/tun, which CRIU probes at start.
CNI_PLUGINS=(bridge host-local loopback portmap bandwidth firewall tuning)

STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT
R=$STAGE/root
mkdir -p "$R"/{bin,sbin,etc,proc,sys,dev,run,tmp,var/lib,lib,lib64,usr/bin,usr/lib,berth/bin,berth/tests,opt/cni/bin,etc/cni/net.d,lib/modules}

# busybox userland
cp /bin/busybox "$R/bin/busybox"
for a in $(/bin/busybox --list); do
    [ -e "$R/bin/$a" ] || ln -s busybox "$R/bin/$a"
done

# Shared libraries of a dynamically linked executable, at the same paths.
copy_libs() {
    { ldd "$1" 2>/dev/null || true; } | awk '/=>/ {print $3} /^\t\/lib/ {print $1}' | while read -r lib; do
        [ -n "$lib" ] && [ -f "$lib" ] || continue
        mkdir -p "$R$(dirname "$lib")"
        [ -e "$R$lib" ] || cp -L "$lib" "$R$lib"
    done
}

for f in "$BIN"/*; do
    [ -f "$f" ] || continue
    cp "$f" "$R/berth/bin/"
    copy_libs "$f"
done
for t in "${TESTS[@]}"; do
    name=$(basename "$t")
    # Two executables of one suite (a stale build) would silently replace
    # each other; a missing one would silently not run.
    [ -x "$t" ] || { echo "build-initramfs: test executable $t is missing" >&2; exit 1; }
    [ ! -e "$R/berth/tests/${name%-*}" ] || { echo "build-initramfs: two test executables named ${name%-*}" >&2; exit 1; }
    cp "$t" "$R/berth/tests/${name%-*}"
    copy_libs "$t"
done
for p in "${CNI_PLUGINS[@]}"; do
    src=""
    for d in /opt/cni/bin /usr/lib/cni; do [ -x "$d/$p" ] && src=$d/$p && break; done
    [ -n "$src" ] || { echo "build-initramfs: CNI plugin $p not found" >&2; exit 1; }
    cp "$src" "$R/opt/cni/bin/"
    copy_libs "$src"
done
# iproute2's ip (tests list veths by type; busybox's ip cannot) and tc (the
# CNI bandwidth test reads tbf rates; busybox's tc knows no tbf), replacing
# busybox's applets.
for t in ip tc; do
    bin=$(command -v "$t" || true)
    [ -n "$bin" ] || { echo "build-initramfs: iproute2's $t not found" >&2; exit 1; }
    rm -f "$R/bin/$t"
    cp "$(readlink -f "$bin")" "$R/bin/$t"
    copy_libs "$R/bin/$t"
done
# iptables (nft backend) for the portmap plugin, with its extension modules,
# which it dlopens (ldd cannot see them).
mkdir -p "$R/usr/sbin" "$R/usr/lib/x86_64-linux-gnu"
cp /usr/sbin/xtables-nft-multi "$R/usr/sbin/"
copy_libs /usr/sbin/xtables-nft-multi
for t in iptables iptables-save iptables-restore ip6tables ip6tables-save ip6tables-restore; do
    ln -sf xtables-nft-multi "$R/usr/sbin/$t"
done
cp -a /usr/lib/x86_64-linux-gnu/xtables "$R/usr/lib/x86_64-linux-gnu/"
for so in "$R"/usr/lib/x86_64-linux-gnu/xtables/*.so; do copy_libs "$so"; done
cp /usr/bin/docker-registry "$R/usr/bin/"
for x in "${EXTRA[@]}"; do
    cp "$(readlink -f "$x")" "$R/usr/bin/$(basename "$x")"
    copy_libs "$x"
done
mkdir -p "$R/var/tmp"
cp /usr/sbin/apparmor_parser "$R/usr/sbin/"
copy_libs /usr/sbin/apparmor_parser
# What profiles written for a node include (`#include <tunables/global>`,
# `<abstractions/base>`, critest's among them) and the parser's own config
# and feature set: without them apparmor_parser loads only self-contained
# profiles, and says so on stderr. The cache dir is where `-W` writes.
mkdir -p "$R/etc/apparmor.d" "$R/var/cache/apparmor"
for d in /etc/apparmor /usr/share/apparmor-features /etc/apparmor.d/abi /etc/apparmor.d/tunables \
    /etc/apparmor.d/abstractions; do
    [ -d "$d" ] || { echo "build-initramfs: $d is missing (Debian's apparmor package)" >&2; exit 1; }
    mkdir -p "$R$(dirname "$d")"
    cp -a "$d" "$R$d"
done
copy_libs /usr/bin/docker-registry
# CRIU for CheckpointContainer (tests/vm/checkpoint.rs): Debian's criu.
[ -x /usr/sbin/criu ] || { echo "build-initramfs: /usr/sbin/criu is missing (Debian's criu package)" >&2; exit 1; }
cp /usr/sbin/criu "$R/usr/sbin/"
copy_libs /usr/sbin/criu
# CRIU dumps a tmpfs's contents (a container's /dev) by running tar with GNU
# options (--check-links, --no-unquote, ...) busybox's tar rejects ("Can't
# dump tmpfs content"): GNU tar replaces the applet, as on a Debian node.
rm -f "$R/bin/tar"
cp "$(readlink -f "$(command -v tar)")" "$R/bin/tar"
copy_libs "$R/bin/tar"
if [ -n "$REGISTRY" ]; then
    mkdir -p "$R/var/lib/registry"
    cp -a "$REGISTRY/." "$R/var/lib/registry/"
fi

# Kernel modules, resolved on the host in load order.
: >"$R/etc/modules.order"
for m in "${MODULES[@]}"; do
    if ! deps=$(modprobe -S "$KVER" --show-depends "$m" 2>/dev/null); then
        echo "build-initramfs: warning: module $m not available for $KVER" >&2
        continue
    fi
    echo "$deps" | awk '$1=="insmod" {print $2}' | while read -r ko; do
        dst=$R/lib/modules/$(basename "$ko")
        if [ ! -e "$dst" ]; then
            cp "$ko" "$dst"
            echo "$(basename "$ko")" >>"$R/etc/modules.order"
        fi
    done
done

# The node's default pod network, as on a real node (demo mode uses it; tests
# give each berthd a network of its own).
cat >"$R/etc/cni/net.d/10-bridge.conflist" <<'JSON'
{"cniVersion": "1.0.0", "name": "berth-bridge", "plugins": [
  {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.88.0.0/16"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
  {"type": "portmap", "capabilities": {"portMappings": true}}]}
JSON

cp "$HERE/init.sh" "$R/init"
chmod 755 "$R/init"
echo "root:x:0:0:root:/root:/bin/sh" >"$R/etc/passwd"
echo "root:x:0:" >"$R/etc/group"
printf '127.0.0.1 localhost\n::1 localhost\n' >"$R/etc/hosts"

mkdir -p "$(dirname "$OUT")"
(cd "$R" && find . -print0 | sort -z | cpio --null -o -H newc --quiet) >"$OUT"
echo "build-initramfs: $OUT ($(du -h "$OUT" | cut -f1), kernel $KVER, $(wc -l <"$R/etc/modules.order") modules, ${#TESTS[@]} test executables)"
