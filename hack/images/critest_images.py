#!/usr/bin/env python3
"""Builds stand-ins for the images cri-tools' critest pulls, as OCI layouts.

The VM has no internet, so critest's images (registry.k8s.io/e2e-test-images/*
and gcr.io/k8s-staging-cri-tools/*) are rebuilt here from a Debian busybox
(BERTH_BUSYBOX) with what each spec looks at: the same users and groups, the
same USER, a web server on the same port, one distinct file per distinct
image (cri-tools' images/build script does the same with Dockerfiles). Each
layout carries berth-repo (the repository path inside the registry) and
berth-tags (exactly the tags to push), read by registry-seed.sh; berthd
reaches them through a registry mirror (hack/vm/critest-run.sh), so critest
runs with its own image names.

Like upstream's busybox image, the applets are hard links to /bin/busybox
and the shell runs them from PATH: critest masks /bin/ls and expects
`sh -c ls` to fail. So BERTH_BUSYBOX should be Debian's dynamically linked
`busybox` package (hack/critest.sh fetches it with apt-get download), not
busybox-static, whose shell prefers its built-in applets; its libraries
come along.

Only test-image-digest cannot be rebuilt: critest pins it by the upstream
manifest digest, which no other bytes can have.

    critest_images.py OUTDIR          -> OUTDIR/<name>/ (one OCI layout per image)
"""
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mkimage  # noqa: E402  (the sibling builder: layers, layouts)

# Upstream busybox's /etc/passwd and /etc/group (www-data is uid/gid 33).
PASSWD = """root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
bin:x:2:2:bin:/bin:/bin/false
sys:x:3:3:sys:/dev:/bin/false
sync:x:4:100:sync:/bin:/bin/sync
mail:x:8:8:mail:/var/spool/mail:/bin/false
www-data:x:33:33:www-data:/var/www:/bin/false
operator:x:37:37:Operator:/var:/bin/false
nobody:x:65534:65534:nobody:/home:/bin/false
"""
GROUP = """root:x:0:
daemon:x:1:
bin:x:2:
sys:x:3:
adm:x:4:
tty:x:5:
disk:x:6:
wheel:x:10:root
mail:x:8:
www-data:x:33:
operator:x:37:
users:x:100:
nogroup:x:65534:
"""

E2E = "e2e-test-images/"
CRI_TOOLS = "k8s-staging-cri-tools/"


# Programs upstream's busybox has and Debian's lacks, taken from the node
# (util-linux's ipcs, procps' pgrep).
HOST_PROGRAMS = ["/usr/bin/ipcs", "/usr/bin/pgrep"]


def host_program_entries():
    """HOST_PROGRAMS and the libraries they and busybox load, at the node's paths."""
    entries, dirs, seen = [], set(), set()
    for prog in HOST_PROGRAMS + [mkimage.BUSYBOX]:
        ldd = subprocess.run(["ldd", prog], capture_output=True, text=True).stdout
        libs = [w for w in ldd.split() if w.startswith("/")]
        for path in ([prog] if prog in HOST_PROGRAMS else []) + libs:
            if path in seen:
                continue
            seen.add(path)
            real = os.path.realpath(path)
            with open(real, "rb") as f:
                data = f.read()
            rel = path.lstrip("/")
            parts = rel.split("/")[:-1]
            for i in range(1, len(parts) + 1):
                dirs.add("/".join(parts[:i]))
            entries.append((rel, "file", data, 0o755, 0, 0))
    return [(d, "dir", None, 0o755, 0, 0) for d in sorted(dirs)] + entries


def busybox_entries(passwd=PASSWD, group=GROUP):
    """busybox with every applet it has as a hard link (critest runs top,
    hostname, brctl, pidof...) and util-linux's ipcs."""
    applets = subprocess.run([mkimage.BUSYBOX, "--list"], check=True, capture_output=True,
                             text=True).stdout.split()
    entries = [e for e in mkimage.base_entries(passwd, group, ["var/www", "usr/sbin"])
               if e[2] != "busybox"]
    have = {e[0] for e in entries}
    for a in applets:
        if "bin/" + a not in have:
            entries.append(("bin/" + a, "hard", "bin/busybox", 0o755, 0, 0))
    have = {e[0] for e in entries}
    entries += [e for e in host_program_entries() if e[0] not in have]
    return entries


# What critest looks for in "nginx": a process named nginx (pidof), PID 1's
# command line saying "master process", its pid in /var/run/nginx.pid, and
# a page on the port. The script stays PID 1 (named after the script) and
# runs busybox httpd; TERM ends both.
NGINX = """#!/bin/sh
[ "$1" = "master process" ] || exec /usr/sbin/nginx "master process" "$@"
echo $$ >/var/run/nginx.pid
httpd -f -p {port} -h /usr/share/nginx/html &
trap 'kill $!; exit 0' TERM INT QUIT
wait
"""


def web_entries(port):
    e = busybox_entries()
    e += [("usr/share", "dir", None, 0o755, 0, 0), ("usr/share/nginx", "dir", None, 0o755, 0, 0),
          ("usr/share/nginx/html", "dir", None, 0o755, 0, 0),
          ("usr/share/nginx/html/index.html", "file", f"<h1>berth critest {port}</h1>\n".encode(),
           0o644, 0, 0),
          ("usr/sbin/nginx", "file", NGINX.replace("{port}", str(port)).encode(), 0o755, 0, 0),
          ("var/run", "dir", None, 0o755, 0, 0)]
    return e


# Kubernetes' nonewprivs test image: a set-user-ID-root program that prints
# its effective uid. Run as uid 1000, it says 0 unless no_new_privs is set
# (then the kernel ignores the set-user-ID bit and it says 1000).
NNP_C = r"""#include <stdio.h>
#include <unistd.h>
int main(void) { printf("Effective uid: %d\n", (int)geteuid()); return 0; }
"""


def nnp_binary():
    """NNP_C compiled static, so the image needs no libraries."""
    with tempfile.TemporaryDirectory() as d:
        src, exe = os.path.join(d, "nnp.c"), os.path.join(d, "nnp")
        with open(src, "w") as f:
            f.write(NNP_C)
        subprocess.run(["cc", "-static", "-Os", "-s", "-o", exe, src], check=True)
        with open(exe, "rb") as f:
            return f.read()


def nonewprivs_entries():
    return busybox_entries() + [("usr/local", "dir", None, 0o755, 0, 0),
                                ("usr/local/bin", "dir", None, 0o755, 0, 0),
                                ("usr/local/bin/nnp", "file", nnp_binary(), 0o4755, 0, 0)]


def image(out, name, repo, tags, entries, config):
    """One layout pushed as repo:tag for each tag."""
    mkimage.build(out, name, entries, config)
    with open(os.path.join(out, name, "berth-repo"), "w") as f:
        f.write(repo + "\n")
    mkimage.write_list(out, name, "berth-tags", tags)


def marked(name):
    """busybox plus the file /<name>, as cri-tools' image-test Dockerfile does."""
    return busybox_entries() + [(name, "file", b"", 0o644, 0, 0)]


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    image(out, "e2e-busybox", E2E + "busybox", ["1.29-2"], busybox_entries(), {"Cmd": ["sh"]})
    # nginx stand-ins: busybox httpd on nginx's port and document root.
    nginx = {"Cmd": ["nginx", "-g", "daemon off;"], "StopSignal": "SIGTERM"}
    image(out, "e2e-nginx", E2E + "nginx", ["1.14-2"], web_entries(80), nginx)
    image(out, "hostnet-nginx", CRI_TOOLS + "hostnet-nginx-amd64", ["latest"], web_entries(12003), nginx)
    # httpd stand-in: a page on port 80 and "httpd" in its log, as Apache's
    # start-up warning gives the multi-container specs.
    image(out, "e2e-httpd", E2E + "httpd", ["2.4.39-4"], web_entries(80),
          {"Cmd": ["sh", "-c", "echo 'httpd: serving on port 80' >&2; "
                   "exec httpd -f -p 80 -h /usr/share/nginx/html"]})
    for n in ["test-image-1", "test-image-2", "test-image-3", "test-image-latest"]:
        image(out, n, CRI_TOOLS + n, ["latest"], marked(n), {})
    image(out, "test-image-tags", CRI_TOOLS + "test-image-tags", ["1", "2", "3"], marked("same-image"), {})
    for tag in ["test", "all"]:
        image(out, "test-image-tag-" + tag, CRI_TOOLS + "test-image-tag", [tag], marked(tag), {})
    for n, user in [("test-image-user-uid", "1002"), ("test-image-user-username", "www-data"),
                    ("test-image-user-uid-group", "1003:1004"),
                    ("test-image-user-username-group", "www-data:1004")]:
        image(out, n, CRI_TOOLS + n, ["latest"], busybox_entries(), {"User": user})
    image(out, "e2e-nonewprivs", E2E + "nonewprivs", ["1.3"], nonewprivs_entries(),
          {"Entrypoint": ["/usr/local/bin/nnp"]})
    # adduser -u 1000 default-user; addgroup -g 50000 group-defined-in-image;
    # addgroup default-user group-defined-in-image; USER 1000.
    image(out, "test-image-predefined-group", CRI_TOOLS + "test-image-predefined-group", ["latest"],
          busybox_entries(PASSWD + "default-user:x:1000:1000::/home/default-user:/bin/sh\n",
                          GROUP + "default-user:x:1000:\ngroup-defined-in-image:x:50000:default-user\n")
          + [("home/default-user", "dir", None, 0o755, 1000, 1000)],
          {"User": "1000"})


if __name__ == "__main__":
    main()
