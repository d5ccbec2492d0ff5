#!/usr/bin/env bash
# Pushes the OCI layouts from OUTDIR/oci into a real registry's storage at
# OUTDIR/registry: a Debian docker-registry is started on a free loopback port
# over that directory, skopeo copies every image to <port>/library/<name>:latest
# (and the tags in its layout's berth-tags; a layout with berth-repo goes to
# that repository with exactly the tags in berth-tags), garbles the blobs listed in
# berth-corrupt, and the registry is stopped. The VM serves the same directory on 127.0.0.1:5000.
#   hack/images/registry-seed.sh OUTDIR
set -euo pipefail
OUT=$(realpath "${1:?usage: registry-seed.sh OUTDIR}")
REG=$OUT/registry
rm -rf "$REG"
mkdir -p "$REG"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
CONF=$OUT/registry-seed.yml
cat >"$CONF" <<YML
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $REG
http:
  addr: 127.0.0.1:$PORT
YML
docker-registry serve "$CONF" >"$OUT/registry-seed.log" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null || true; wait $PID 2>/dev/null || true' EXIT
for _ in $(seq 100); do
    if python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$PORT/v2/')" 2>/dev/null; then
        break
    fi
    sleep 0.1
done
for dir in "$OUT"/oci/*/; do
    name=$(basename "$dir")
    repo=library/$name tags="latest $(cat "$dir/berth-tags" 2>/dev/null || true)"
    # A layout naming its repository (critest_images.py) lists its tags exactly.
    if [ -e "$dir/berth-repo" ]; then
        repo=$(cat "$dir/berth-repo") tags=$(cat "$dir/berth-tags")
    fi
    # --all: an image index is pushed with every platform's manifest.
    for tag in $tags; do
        skopeo --insecure-policy copy --all --quiet --dest-tls-verify=false \
            "oci:$dir:latest" "docker://127.0.0.1:$PORT/$repo:$tag"
        echo "registry-seed: $repo:$tag"
    done
done
# Garble the layers a layout lists in berth-corrupt, in place: the registry
# serves the same number of bytes under the old digest, which no longer
# matches (what a pull must catch).
for list in "$OUT"/oci/*/berth-corrupt; do
    [ -e "$list" ] || continue
    while read -r digest; do
        hex=${digest#sha256:}
        python3 -c 'import sys; p = sys.argv[1]; b = open(p, "rb").read(); open(p, "wb").write(bytes(x ^ 0xFF for x in b))' \
            "$REG/docker/registry/v2/blobs/sha256/${hex:0:2}/$hex/data"
        echo "registry-seed: garbled blob $digest ($(basename "$(dirname "$list")"))"
    done <"$list"
done
