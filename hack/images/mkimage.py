#!/usr/bin/env python3
"""Builds Berth's test images as OCI image layouts, from Debian's busybox-static.

Why our own builder: the VM has no internet, so every image the tests pull must
be made here, and it must be byte-for-byte reproducible so that digests in test
logs mean something across runs. Only the Python standard library is used.

    mkimage.py OUTDIR          -> OUTDIR/<name>/ (one OCI layout per image)

Images:
  busybox       /bin/busybox + applet symlinks, /etc/passwd, /etc/group; Cmd ["sh"]
  busybox-user  busybox plus a non-root image user (uid 1000) whose /etc/group
                lists it in extra groups (wheel, audio); USER app
  busybox-groups  Kubernetes' supplementalGroupsPolicy conformance layout:
                user-defined-in-image (uid 1000) listed in
                group-defined-in-image (gid 50000); USER user-defined-in-image
  busybox-nogroup the same passwd, no /etc/group at all
  busybox-volumes busybox declaring VOLUME /data and /var/cache/app (neither
                exists in the layer)
  busybox-layers  five layers: whiteouts, an opaque dir, a hard link, 4 MiB file
  busybox-uid   busybox with a numeric USER 1234:5678
  busybox-multi an OCI image index: linux/amd64 is busybox's very manifest,
                linux/arm64/v8 and linux/arm/v7 small images of their own
  noise         one layer of 3 MiB incompressible bytes (a pull to cancel)
  corrupt       one layer whose blob registry-seed.sh garbles in the registry
                (same size, wrong digest): listed in the layout's berth-corrupt
  corrupt-late  busybox's layer, a small layer, and a garbled 3 MiB top layer
                (a pull that fails after finishing snapshots of its own)
  evil-dotdot, evil-symlink, evil-hardlink
                malicious layers: a ../ path to /tmp, a write through a
                symlink to /tmp, a hard link to ../../etc/shadow
  evil-diffid-abs, evil-diffid-dotdot
                a config whose rootfs.diff_ids holds a path (/tmp/berth-evil-diffid-abs,
                sha256:../../(..)/tmp/berth-evil-diffid-dotdot) instead of a digest
  evil-whiteout-dotdot
                a layer whose top-level .wh... whites out ".."

  hostile-*     (containers block, see build_hostile_containers): a /dev
                symlink to a node path, VOLUMEs over /proc/self/attr and /dev/pts
  volume-data   an image volume's content (KEP-4639), two layers: files, a
                subdirectory, an executable script, a symlink to / and one
                to ../.. (subPaths that must not leave the image)
  volume-single the same first layer alone (a one-layer image volume)
  layers-127    127 layers (Docker's maximum): /layers/0 in the bottom one
                (with busybox), /layers/N in layer N

A layout may carry berth-tags (tags to push besides latest) and
berth-corrupt (layer digests to garble), read by registry-seed.sh.
"""
import gzip
import hashlib
import io
import json
import os
import sys
import tarfile

BUSYBOX = os.environ.get("BERTH_BUSYBOX", "/bin/busybox")

# Applets the tests and a shell user expect; all are symlinks to /bin/busybox.
APPLETS = """sh ash cat echo env sleep ls id ps grep head tail wc true false test printf
mkdir rm cp mv ln touch chmod chown stat kill hostname uname date seq yes sed awk
mount umount ip ping wget nc vi find xargs sort uniq tr cut tee dd df du free top
nproc whoami groups readlink realpath basename dirname timeout usleep mkfifo sync
""".split()

PASSWD = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
GROUP = "root:x:0:\nnogroup:x:65534:\n"

PASSWD_USER = PASSWD + "app:x:1000:1000:app:/home/app:/bin/sh\n"
GROUP_USER = GROUP + "app:x:1000:\nwheel:x:10:app\naudio:x:29:app\n"


CONFORMANCE_PASSWD = "user-defined-in-image:x:1000:1000:user-defined-in-image:/nonexistent:/bin/sh\n"
CONFORMANCE_GROUP = "group-defined-in-image:x:50000:user-defined-in-image\n"


def tar_layer(entries):
    """entries: list of (path, kind, data/target, mode, uid, gid). Deterministic."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        # Hard links last: a link's target must already be in the archive.
        for path, kind, payload, mode, uid, gid in sorted(entries, key=lambda e: (e[1] == "hard", e[0])):
            ti = tarfile.TarInfo(path)
            ti.mtime = 0
            ti.mode = mode
            ti.uid, ti.gid = uid, gid
            ti.uname = ti.gname = ""
            if kind == "dir":
                ti.type = tarfile.DIRTYPE
                tf.addfile(ti)
            elif kind == "sym":
                ti.type = tarfile.SYMTYPE
                ti.linkname = payload
                tf.addfile(ti)
            elif kind == "hard":
                ti.type = tarfile.LNKTYPE
                ti.linkname = payload
                tf.addfile(ti)
            else:
                ti.size = len(payload)
                tf.addfile(ti, io.BytesIO(payload))
    return buf.getvalue()


def gz(data):
    out = io.BytesIO()
    with gzip.GzipFile(filename="", fileobj=out, mode="wb", mtime=0, compresslevel=6) as g:
        g.write(data)
    return out.getvalue()


def sha(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Layout:
    def __init__(self, root):
        self.root = root
        os.makedirs(os.path.join(root, "blobs", "sha256"), exist_ok=True)

    def blob(self, data):
        d = sha(data)
        with open(os.path.join(self.root, "blobs", "sha256", d[7:]), "wb") as f:
            f.write(data)
        return d

    def finish(self, manifest_digest, manifest_size, tag,
               media_type="application/vnd.oci.image.manifest.v1+json"):
        with open(os.path.join(self.root, "oci-layout"), "w") as f:
            json.dump({"imageLayoutVersion": "1.0.0"}, f)
        index = {
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": media_type,
                "digest": manifest_digest,
                "size": manifest_size,
                "annotations": {"org.opencontainers.image.ref.name": tag},
            }],
        }
        with open(os.path.join(self.root, "index.json"), "w") as f:
            json.dump(index, f, indent=1)


def base_entries(passwd, group, extra_dirs=()):
    with open(BUSYBOX, "rb") as f:
        bb = f.read()
    e = [("bin", "dir", None, 0o755, 0, 0), ("bin/busybox", "file", bb, 0o755, 0, 0)]
    for a in APPLETS:
        e.append(("bin/" + a, "sym", "busybox", 0o777, 0, 0))
    for d in ["etc", "root", "tmp", "home", "proc", "sys", "dev", "var", "usr"] + list(extra_dirs):
        mode = 0o1777 if d == "tmp" else (0o700 if d == "root" else 0o755)
        e.append((d, "dir", None, mode, 0, 0))
    e.append(("etc/passwd", "file", passwd.encode(), 0o644, 0, 0))
    e.append(("etc/group", "file", group.encode(), 0o644, 0, 0))
    e.append(("etc/hostname", "file", b"busybox\n", 0o644, 0, 0))
    return e


def noise(seed, size):
    """Deterministic pseudo-random bytes: SHA-256 in counter mode."""
    out = bytearray()
    i = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}:{i}".encode()).digest()
        i += 1
    return bytes(out[:size])


def add_image(layout, entries, config_extra, arch="amd64", variant=None):
    """Writes one image's blobs into layout; returns (manifest digest, size, layer digests)."""
    layers = entries if entries and isinstance(entries[0], list) else [entries]
    raws = [tar_layer(e) for e in layers]
    blobs = [gz(r) for r in raws]
    layer_descs = [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layout.blob(b),
                    "size": len(b)} for b in blobs]
    config = {
        "created": "1970-01-01T00:00:00Z",
        "architecture": arch,
        "os": "linux",
        "config": dict({"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                        "Cmd": ["sh"]}, **config_extra),
        "rootfs": {"type": "layers", "diff_ids": [sha(r) for r in raws]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "berth hack/images/mkimage.py"}],
    }
    if variant:
        config["variant"] = variant
    cfg = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
    cfg_digest = layout.blob(cfg)
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfg_digest,
                   "size": len(cfg)},
        "layers": layer_descs,
    }
    mbytes = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    return layout.blob(mbytes), len(mbytes), [d["digest"] for d in layer_descs]


def write_list(outdir, name, file, items):
    with open(os.path.join(outdir, name, file), "w") as f:
        f.write("".join(i + "\n" for i in items))


def build(outdir, name, entries, config_extra, tags=(), corrupt=False):
    """entries: one layer's entries, or a list of layers (lists of entries), bottom first.
    tags: pushed besides latest; corrupt: registry-seed.sh garbles the top layer."""
    layout = Layout(os.path.join(outdir, name))
    mdigest, msize, layers = add_image(layout, entries, config_extra)
    layout.finish(mdigest, msize, "latest")
    if tags:
        write_list(outdir, name, "berth-tags", tags)
    if corrupt:
        write_list(outdir, name, "berth-corrupt", layers[-1:])
    print(f"mkimage: {name} manifest {mdigest} {len(layers)} layer(s)")


def build_index(outdir, name, images):
    """images: (entries, config_extra, arch, variant) each; one OCI index over them."""
    layout = Layout(os.path.join(outdir, name))
    descs = []
    for entries, config_extra, arch, variant in images:
        mdigest, msize, _ = add_image(layout, entries, config_extra, arch, variant)
        platform = {"architecture": arch, "os": "linux"}
        if variant:
            platform["variant"] = variant
        descs.append({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": mdigest,
                      "size": msize, "platform": platform})
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": descs}
    ibytes = json.dumps(index, sort_keys=True, separators=(",", ":")).encode()
    idigest = layout.blob(ibytes)
    layout.finish(idigest, len(ibytes), "latest", "application/vnd.oci.image.index.v1+json")
    print(f"mkimage: {name} index {idigest} {len(descs)} platform(s)")


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    build(out, "busybox", base_entries(PASSWD, GROUP), {}, tags=["1.0", "stable"])
    user = base_entries(PASSWD_USER, GROUP_USER)
    user.append(("home/app", "dir", None, 0o755, 1000, 1000))
    build(out, "busybox-user", user, {"User": "app", "WorkingDir": "/home/app"})
    # Like Kubernetes' supplementalGroupsPolicy conformance image: the image's
    # /etc/group puts its user in group 50000.
    groups = base_entries(PASSWD + CONFORMANCE_PASSWD, GROUP + CONFORMANCE_GROUP)
    build(out, "busybox-groups", groups, {"User": "user-defined-in-image"})
    # The same user, and no /etc/group at all.
    nogroup = [e for e in base_entries(PASSWD + CONFORMANCE_PASSWD, GROUP) if e[0] != "etc/group"]
    build(out, "busybox-nogroup", nogroup, {})
    # Five layers over busybox's very layer (shared with it): files, then a
    # whiteout and an opaque directory, a hard link, and a bigger file.
    data = [("data", "dir", None, 0o755, 0, 0), ("data/a", "file", b"a\n", 0o644, 0, 0),
            ("data/b", "file", b"b\n", 0o644, 0, 0), ("data/dir", "dir", None, 0o755, 0, 0),
            ("data/dir/x", "file", b"x\n", 0o644, 0, 0)]
    hide = [("data", "dir", None, 0o755, 0, 0), ("data/.wh.a", "file", b"", 0o644, 0, 0),
            ("data/dir", "dir", None, 0o755, 0, 0), ("data/dir/.wh..wh..opq", "file", b"", 0o644, 0, 0),
            ("data/dir/y", "file", b"y\n", 0o644, 0, 0)]
    # Both names in one layer, as image builders write them (a link to a
    # lower layer's file is copied up first, so its target is in the diff).
    link = [("data", "dir", None, 0o755, 0, 0), ("data/c", "file", b"c\n", 0o644, 0, 0),
            ("data/c-link", "hard", "data/c", 0o644, 0, 0)]
    big = [("data", "dir", None, 0o755, 0, 0),
           ("data/big", "file", hashlib.sha256(b"berth").digest() * (4 * 1024 * 1024 // 32), 0o644, 0, 0)]
    build(out, "busybox-layers", [base_entries(PASSWD, GROUP), data, hide, link, big], {})
    # Image VOLUMEs: the runtime must give each an empty directory.
    build(out, "busybox-volumes", base_entries(PASSWD, GROUP), {"Volumes": {"/data": {}, "/var/cache/app": {}}})
    build(out, "busybox-uid", base_entries(PASSWD, GROUP), {"User": "1234:5678"})
    # linux/amd64 is busybox's own manifest (same digest); the others are
    # one-file images that are never run here, only chosen or not.
    build_index(out, "busybox-multi", [
        (base_entries(PASSWD, GROUP), {}, "amd64", None),
        ([("arch", "file", b"arm64\n", 0o644, 0, 0)], {}, "arm64", "v8"),
        ([("arch", "file", b"arm/v7\n", 0o644, 0, 0)], {}, "arm", "v7"),
    ])
    build(out, "noise", [("data", "dir", None, 0o755, 0, 0),
                         ("data/noise", "file", noise("cancel", 3 * 1024 * 1024), 0o644, 0, 0)], {})
    build(out, "corrupt", [("data", "dir", None, 0o755, 0, 0),
                           ("data/c", "file", noise("corrupt", 64 * 1024), 0o644, 0, 0)], {}, corrupt=True)
    # busybox's layer, a small one, then a garbled 3 MiB one: the first two
    # are unpacked by the time the last fails its digest check, so the
    # failed pull has finished snapshots of its own to clean up (the first
    # shared with busybox, which a concurrent busybox pull must keep).
    build(out, "corrupt-late", [base_entries(PASSWD, GROUP),
                                [("data", "dir", None, 0o755, 0, 0), ("data/ok", "file", b"ok\n", 0o644, 0, 0)],
                                [("data", "dir", None, 0o755, 0, 0),
                                 ("data/late", "file", noise("late", 3 * 1024 * 1024), 0o644, 0, 0)]],
          {}, corrupt=True)
    # Each layer is its image's only one, so a rejected pull has no other
    # layer whose snapshot could stay behind.
    up = "../" * 12
    build(out, "evil-dotdot", [("data", "dir", None, 0o755, 0, 0),
                               (up + "tmp/berth-dotdot", "file", b"escaped\n", 0o644, 0, 0)], {})
    build(out, "evil-symlink", [("evil", "sym", "/tmp", 0o777, 0, 0),
                                ("evil/berth-pwned", "file", b"pwned\n", 0o644, 0, 0)], {})
    build(out, "evil-hardlink", [("data", "dir", None, 0o755, 0, 0),
                                 ("data/shadow", "hard", up + "etc/shadow", 0o644, 0, 0)], {})
    # Image volumes (KEP-4639): data, not a root filesystem. The script is
    # executable, so only the mount's noexec stops it.
    vol_base = [("data", "dir", None, 0o755, 0, 0), ("data/hello.txt", "file", b"hello from an image\n", 0o644, 0, 0),
                ("data/sub", "dir", None, 0o755, 0, 0), ("data/sub/inner.txt", "file", b"inner\n", 0o644, 0, 0),
                ("run.sh", "file", b"#!/bin/sh\necho ran\n", 0o755, 0, 0),
                ("to-root", "sym", "/", 0o777, 0, 0), ("up", "sym", "../..", 0o777, 0, 0),
                ("to-sub", "sym", "data/sub", 0o777, 0, 0)]
    vol_top = [("data", "dir", None, 0o755, 0, 0), ("data/top.txt", "file", b"top layer\n", 0o644, 0, 0)]
    build(out, "volume-data", [vol_base, vol_top], {})
    build(out, "volume-single", vol_base, {})
    build_hostile(out)
    build_hostile_containers(out)


# --- Hostile image-store inputs (image hardening, issue 17) ---------------
# Kept in one block apart from the other images so branches merge cleanly.

def build_hostile_config(outdir, name, entries, diff_ids):
    """One gzip layer whose config lists `diff_ids` (any strings) instead of
    the layer's real diff_id: what a hostile image author can publish, as a
    registry never parses a config."""
    layout = Layout(os.path.join(outdir, name))
    blob = gz(tar_layer(entries))
    layer = {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layout.blob(blob),
             "size": len(blob)}
    config = {"architecture": "amd64", "os": "linux", "config": {"Cmd": ["sh"]},
              "rootfs": {"type": "layers", "diff_ids": diff_ids}}
    cfg = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": layout.blob(cfg),
                           "size": len(cfg)},
                "layers": [layer]}
    mbytes = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    layout.finish(layout.blob(mbytes), len(mbytes), "latest")
    print(f"mkimage: {name} hostile config")


def build_hostile(out):
    """Images that must be refused without touching anything outside the store."""
    one = [("data", "dir", None, 0o755, 0, 0), ("data/x", "file", b"x\n", 0o644, 0, 0)]
    build_hostile_config(out, "evil-diffid-abs", one, ["/tmp/berth-evil-diffid-abs"])
    build_hostile_config(out, "evil-diffid-dotdot", one,
                         ["sha256:" + "../" * 12 + "tmp/berth-evil-diffid-dotdot"])
    # A whiteout of ".." at the top of the layer: unpacked in
    # snapshots/.tmp-*, it named the snapshots dir itself (every image).
    build(out, "evil-whiteout-dotdot", [("data", "dir", None, 0o755, 0, 0),
                                        (".wh...", "file", b"", 0o644, 0, 0)], {})


# ---- Hostile images for the container side (init, mounts, overlay) --------
# Kept apart from the image-store ones above: these unpack fine and attack
# the container's setup instead.
def build_hostile_containers(out):
    # /dev is a symlink to a node path: the init must resolve it inside the
    # rootfs, never create device nodes or mount points on the node.
    devlink = [e for e in base_entries(PASSWD, GROUP) if e[0] != "dev"]
    devlink.append(("dev", "sym", "/tmp/berth-hostile-dev", 0o777, 0, 0))
    build(out, "hostile-devlink", devlink, {})
    # VOLUMEs over kernel interfaces (runc CVE-2019-16884: an empty dir over
    # /proc/self/attr swallows the AppArmor profile write) and /dev/pts.
    build(out, "hostile-vol-attr", base_entries(PASSWD, GROUP), {"Volumes": {"/proc/self/attr": {}}})
    build(out, "hostile-vol-devpts", base_entries(PASSWD, GROUP), {"Volumes": {"/dev/pts": {}}})
    # 127 layers: the lowerdir option string is far over one page.
    layers = [base_entries(PASSWD, GROUP, ["layers"]) + [("layers/0", "file", b"0\n", 0o644, 0, 0)]]
    for n in range(1, 127):
        layers.append([("layers", "dir", None, 0o755, 0, 0),
                       ("layers/%d" % n, "file", b"%d\n" % n, 0o644, 0, 0)])
    build(out, "layers-127", layers, {})


if __name__ == "__main__":
    main()
