#!/usr/bin/env bash
# Benchmark (not a test): the pull latency of two berthd builds, A and B
# (e.g. before and after a change), on the host (root; no VM): one
# loopback docker-registry serves the ~100 MiB six-layer bench image
# (hack/images/mkbig.py); both berthds run at once with private dirs and a
# fake cgroup tree (a pull needs no cgroups) and pull in turns, each going
# first every other run. Prints every run and the medians and ratio B/A.
#   hack/bench/pull-ab.sh A_BIN_DIR B_BIN_DIR [RUNS] [LAYERS] [MIB_EACH]   (defaults 10, 5, 20)
# Each BIN_DIR holds berthd and berth-shim (e.g. target/dist of each tree, from hack/build-release.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."
A=$(realpath "${1:?usage: pull-ab.sh A_BIN_DIR B_BIN_DIR [RUNS] [LAYERS] [MIB_EACH]}")
B=$(realpath "${2:?usage: pull-ab.sh A_BIN_DIR B_BIN_DIR [RUNS] [LAYERS] [MIB_EACH]}")
RUNS=${3:-10} LAYERS=${4:-5} MIB=${5:-20}
WORK=$PWD/.work/pull-ab
rm -rf "$WORK" && mkdir -p "$WORK/oci"
cargo build --release -p berth-tests --bin berth-pull-bench
python3 hack/images/mkbig.py "$WORK/oci" "$LAYERS" "$MIB"
hack/images/registry-seed.sh "$WORK" >/dev/null
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$WORK/registry.yml" <<YML
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $WORK/registry
http:
  addr: 127.0.0.1:$PORT
YML
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true' EXIT
docker-registry serve "$WORK/registry.yml" >"$WORK/registry.log" 2>&1 &
PIDS+=($!)
for side in a b; do
    bin=$A; [ "$side" = b ] && bin=$B
    d=$WORK/$side
    mkdir -p "$d/cgroup/init.scope" "$d/cni"
    echo "cpuset cpu io memory hugetlb pids" >"$d/cgroup/cgroup.controllers"
    : >"$d/cgroup/cgroup.subtree_control"
    : >"$d/cgroup/init.scope/cgroup.kill"
    echo "cpuset cpu io memory hugetlb pids" >"$d/cgroup/init.scope/cgroup.controllers"
    cat >"$d/config.toml" <<TOML
root = "$d/root"
state = "$d/state"
socket = "$d/berth.sock"
cgroup_root = "$d/cgroup"
cni_conf_dir = "$d/cni"
log_level = "info"
TOML
    "$bin/berthd" --config "$d/config.toml" >"$d/berthd.log" 2>&1 &
    PIDS+=($!)
done
for _ in $(seq 200); do
    [ -S "$WORK/a/berth.sock" ] && [ -S "$WORK/b/berth.sock" ] && \
        python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$PORT/v2/')" 2>/dev/null && break
    sleep 0.1
done
target/release/berth-pull-bench --socket "$WORK/a/berth.sock" --against "$WORK/b/berth.sock" \
    --image "127.0.0.1:$PORT/library/bench-big:latest" --runs "$RUNS"
