//! What CRIU must leave out of a container's dump and name as external:
//! the pod's namespaces (shared with the pod's other containers and pinned
//! by berthd, so they outlive the container), the bind mounts kubelet and
//! berthd put into its mount namespace (their sources live outside it), and
//! files the container holds open on mounts it cannot see (its stdio
//! opened by the shim). Everything is read from `/proc`.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::error::{Error, IoContext, Result};

/// One line of `/proc/<pid>/mountinfo`, as far as CRIU's choices go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountLine {
    /// Mount id.
    pub id: u64,
    /// The path inside the filesystem that is mounted ("/" for a whole one).
    pub root: String,
    /// Where it is mounted, seen from the process's root.
    pub mount_point: String,
    /// Filesystem type.
    pub fstype: String,
}

/// Parses mountinfo text; lines it cannot read are skipped.
pub fn parse_mountinfo(text: &str) -> Vec<MountLine> {
    text.lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let f: Vec<&str> = pre.split(' ').collect();
            Some(MountLine {
                id: f.first()?.parse().ok()?,
                root: unescape(f.get(3)?),
                mount_point: unescape(f.get(4)?),
                fstype: post.split(' ').next()?.to_string(),
            })
        })
        .collect()
}

/// Undoes mountinfo's octal escapes (`\040` for a space, ...).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Filesystems CRIU recreates itself (kernel ones, and tmpfs whose
/// contents it dumps) when mounted whole.
const DUMPABLE: &[&str] = &["proc", "sysfs", "devpts", "mqueue", "cgroup", "cgroup2", "tmpfs"];

/// The mount points CRIU must treat as external: every bind of a part of
/// a filesystem (hosts, resolv.conf, volumes, masked paths bound from
/// /dev/null, device nodes) and every whole filesystem it cannot recreate,
/// but not the overlay root, whose layers the archive carries, nor
/// proc/sysfs binds (read-only paths), which CRIU resolves in the namespace.
pub fn external_mounts(mounts: &[MountLine]) -> Vec<String> {
    mounts
        .iter()
        .filter(|m| m.mount_point != "/")
        .filter(|m| {
            let kernel_bind = matches!(m.fstype.as_str(), "proc" | "sysfs");
            let whole_dumpable = m.root == "/" && DUMPABLE.contains(&m.fstype.as_str());
            !(kernel_bind || whole_dumpable)
        })
        .map(|m| m.mount_point.clone())
        .collect()
}

/// The CRIU `--external` arguments for the tree rooted at `pid`.
pub fn args(pid: u32) -> Result<Vec<String>> {
    let proc_dir = Path::new("/proc").join(pid.to_string());
    let mut out = Vec::new();
    out.extend(namespaces(&proc_dir)?);
    let mountinfo =
        std::fs::read_to_string(proc_dir.join("mountinfo")).ctx(|| format!("read mountinfo of {pid}"))?;
    let mounts = parse_mountinfo(&mountinfo);
    for at in external_mounts(&mounts) {
        out.push(format!("mnt[{at}]:{at}"));
    }
    let visible: HashSet<u64> = mounts.iter().map(|m| m.id).collect();
    for p in tree(pid) {
        out.extend(unseen_files(p, &visible));
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// What `pid`'s stdin, stdout and stderr are, by the names CRIU's images
/// give them: the `/proc/<pid>/fd/0..2` links (`pipe:[4026]`,
/// `socket:[77]`), except for a file on a mount outside the container's
/// namespace (the shim's `/dev/null`), which [`args`] made external as
/// `file[mnt:ino]` and CRIU records under that key; "" for a closed one.
/// A restore hands CRIU new files under these names (`--inherit-fd`),
/// since the shim's ends of the old pipes are gone.
pub fn stdio_names(pid: u32) -> [String; 3] {
    let visible: HashSet<u64> = std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))
        .map(|t| parse_mountinfo(&t).iter().map(|m| m.id).collect())
        .unwrap_or_default();
    [0, 1, 2].map(|fd| {
        let link = format!("/proc/{pid}/fd/{fd}");
        if let Some(key) = unseen_key(pid, &link, &fd.to_string(), &visible) {
            return key;
        }
        std::fs::read_link(&link)
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default()
    })
}

/// Inode of the namespace `kind` a `/proc/<pid>` dir names.
fn ns_inode(proc_dir: &Path, kind: &str) -> Result<u64> {
    std::fs::metadata(proc_dir.join("ns").join(kind))
        .map(|m| m.ino())
        .ctx(|| format!("read {}/ns/{kind}", proc_dir.display()))
}

/// `net` (and `pid` when the container shares the pod's) as external;
/// a user namespace is refused (CRIU would have to map every id back).
fn namespaces(proc_dir: &Path) -> Result<Vec<String>> {
    let me = Path::new("/proc/self");
    if ns_inode(proc_dir, "user")? != ns_inode(me, "user")? {
        return Err(Error::FailedPrecondition(
            "checkpointing a container in a user namespace is not supported".into(),
        ));
    }
    let mut out = Vec::new();
    let net = ns_inode(proc_dir, "net")?;
    if net != ns_inode(me, "net")? {
        out.push(format!("net[{net}]:net"));
    }
    let pid = ns_inode(proc_dir, "pid")?;
    let status = std::fs::read_to_string(proc_dir.join("status")).ctx(|| "read status".into())?;
    if pid != ns_inode(me, "pid")? && !is_pid_ns_init(&status) {
        out.push(format!("pid[{pid}]:pid"));
    }
    Ok(out)
}

/// Whether `/proc/<pid>/status` says the process is PID 1 of its
/// innermost PID namespace (a namespace of the container's own, which
/// CRIU dumps; a pod's shared one it cannot).
fn is_pid_ns_init(status: &str) -> bool {
    status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .and_then(|v| v.split_whitespace().last())
        == Some("1")
}

/// `pid` and its descendants (threads' children included).
fn tree(pid: u32) -> Vec<u32> {
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() && out.len() < 100_000 {
        let p = out[i];
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) {
            for t in tasks.flatten() {
                let kids = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
                out.extend(kids.split_whitespace().filter_map(|k| k.parse::<u32>().ok()));
            }
        }
        i += 1;
    }
    out
}

/// `file[mnt:ino]` for each regular file, directory or device `pid` holds
/// open on a mount outside its namespace (pipes, sockets and anonymous
/// inodes live on internal mounts CRIU knows).
fn unseen_files(pid: u32, visible: &HashSet<u64>) -> Vec<String> {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for fd in fds.flatten() {
        let name = fd.file_name().to_string_lossy().into_owned();
        out.extend(unseen_key(pid, &fd.path().to_string_lossy(), &name, visible));
    }
    out
}

/// `file[mnt:ino]` when the fd `link` (`/proc/<pid>/fd/<fd>`) is a regular
/// file, directory or device on a mount not in `visible`.
fn unseen_key(pid: u32, link: &str, fd: &str, visible: &HashSet<u64>) -> Option<String> {
    let m = std::fs::metadata(link).ok()?;
    let ft = m.file_type();
    use std::os::unix::fs::FileTypeExt;
    if !(ft.is_file() || ft.is_dir() || ft.is_char_device() || ft.is_block_device()) {
        return None;
    }
    let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).unwrap_or_default();
    let mnt = info
        .lines()
        .find_map(|l| l.strip_prefix("mnt_id:"))
        .and_then(|v| v.trim().parse::<u64>().ok())?;
    (!visible.contains(&mnt)).then(|| format!("file[{mnt:x}:{:x}]", m.ino()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONTAINER: &str = "\
812 700 0:61 / / rw,relatime master:1 - overlay overlay rw,lowerdir=/a:/b,upperdir=/u,workdir=/w
813 812 0:66 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw
814 812 0:67 / /dev rw,nosuid - tmpfs tmpfs rw,size=65536k,mode=755
815 814 0:68 / /dev/pts rw,nosuid,noexec,relatime - devpts devpts rw,gid=5,mode=620,ptmxmode=666
816 814 0:69 / /dev/mqueue rw,nosuid,nodev,noexec,relatime - mqueue mqueue rw
817 812 0:70 / /sys ro,nosuid,nodev,noexec,relatime - sysfs sysfs ro
818 817 0:27 / /sys/fs/cgroup ro,nosuid,nodev,noexec,relatime - cgroup2 cgroup rw
819 812 0:25 /berth/sandboxes/p/hosts /etc/hosts rw,relatime - tmpfs tmpfs rw
820 812 0:25 /berth/sandboxes/p/shm /dev/shm rw,relatime - tmpfs shm rw
821 812 8:1 /data/my\\040vol /data rw,relatime - ext4 /dev/sda1 rw
822 813 0:6 /null /proc/kcore ro,nosuid - devtmpfs udev rw
823 813 0:66 /sys /proc/sys ro,relatime - proc proc rw
824 812 8:1 / /whole rw,relatime - ext4 /dev/sda1 rw
";

    #[test]
    fn binds_and_foreign_filesystems_are_external_kernel_ones_and_the_root_are_not() {
        let mounts = parse_mountinfo(CONTAINER);
        assert_eq!(mounts.len(), 13);
        assert_eq!(mounts[9].mount_point, "/data");
        assert_eq!(mounts[9].root, "/data/my vol");
        assert_eq!(
            external_mounts(&mounts),
            ["/etc/hosts", "/dev/shm", "/data", "/proc/kcore", "/whole"]
        );
    }

    #[test]
    fn only_an_init_of_its_own_pid_namespace_is_dumped_with_it() {
        assert!(is_pid_ns_init("Name:\tsh\nNSpid:\t4321\t1\n"));
        assert!(!is_pid_ns_init("Name:\tsh\nNSpid:\t4321\t7\n"));
        assert!(!is_pid_ns_init("Name:\tsh\n"));
    }

    #[test]
    fn stdio_names_are_the_fd_links_criu_uses() {
        let (r, w) = nix::unistd::pipe().unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::from(w))
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let ino = std::fs::metadata(format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&r)))
            .unwrap()
            .ino();
        let got = stdio_names(child.id());
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(
            got,
            [
                "/dev/null".to_string(),
                format!("pipe:[{ino}]"),
                "/dev/null".to_string()
            ]
        );
        assert_eq!(
            stdio_names(u32::MAX),
            ["", "", ""].map(String::from),
            "no such process"
        );
    }

    /// A file on a mount the container does not have is named by the
    /// external key the dump gave it, which is what a restore must match.
    #[test]
    fn a_file_on_an_unseen_mount_is_named_by_its_external_key() {
        let f = std::fs::File::open("/dev/null").unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&f).to_string();
        let me = std::process::id();
        let link = format!("/proc/{me}/fd/{fd}");
        let key = unseen_key(me, &link, &fd, &HashSet::new()).expect("unseen");
        let ino = std::fs::metadata("/dev/null").unwrap().ino();
        assert!(
            key.starts_with("file[") && key.ends_with(&format!(":{ino:x}]")),
            "{key}"
        );
        let all: HashSet<u64> = parse_mountinfo(&std::fs::read_to_string("/proc/self/mountinfo").unwrap())
            .iter()
            .map(|m| m.id)
            .collect();
        assert_eq!(unseen_key(me, &link, &fd, &all), None, "visible");
    }

    #[test]
    fn escapes_are_undone_and_garbage_lines_skipped() {
        assert_eq!(unescape("/a\\040b\\134c"), "/a b\\c");
        assert_eq!(unescape("/trailing\\04"), "/trailing\\04");
        assert!(parse_mountinfo("nonsense\nx y z - a\n").is_empty());
    }
}
