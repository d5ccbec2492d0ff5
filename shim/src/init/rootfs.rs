//! Namespaces, cgroup, root filesystem and mounts for the init stage.

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;
use nix::sys::stat::{makedev, Mode, SFlag};
use oci_spec::runtime::{LinuxDevice, LinuxDeviceType, LinuxNamespaceType};

use super::inroot::{self, fd_path, Create};
use super::mounts::{parse_options, shorten_lowerdirs};
use super::syscall::{FileKind, Syscall};
use super::InitConfig;

/// Device nodes every container gets, bind-mounted from the host (works in any
/// user namespace, unlike mknod).
const DEFAULT_DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

/// What the exec step needs to know from setup.
#[derive(Debug, Default)]
pub struct Prepared {
    /// The working directory exists inside the new root.
    pub cwd: PathBuf,
    /// The working directory as resolved inside the root before pivot_root
    /// (an O_PATH fd, for fchdir): no name is looked up again.
    pub cwd_fd: Option<OwnedFd>,
}

/// Runs steps 1-3 of the init stage (see the module docs of `init`).
pub fn prepare(sys: &dyn Syscall, cfg: &InitConfig) -> Result<Prepared> {
    let spec = &cfg.spec;
    let linux = spec.linux().clone().unwrap_or_default();
    let namespaces = linux.namespaces().clone().unwrap_or_default();

    // 1. Join namespaces that have a path (the pod's), remember which to create.
    let mut unshare_flags = CloneFlags::empty();
    let mut own_uts = false;
    for ns in &namespaces {
        let flag = match ns.typ() {
            LinuxNamespaceType::Network => CloneFlags::CLONE_NEWNET,
            LinuxNamespaceType::Ipc => CloneFlags::CLONE_NEWIPC,
            LinuxNamespaceType::Uts => CloneFlags::CLONE_NEWUTS,
            LinuxNamespaceType::Mount => CloneFlags::CLONE_NEWNS,
            LinuxNamespaceType::Cgroup => CloneFlags::CLONE_NEWCGROUP,
            // The PID namespace was chosen at clone time; others unsupported for now.
            LinuxNamespaceType::Pid => continue,
            other => bail!("namespace type {other:?} is not supported"),
        };
        match ns.path() {
            Some(path) => {
                let f = File::open(path).with_context(|| format!("open namespace {}", path.display()))?;
                sys.setns(f.as_fd(), flag)
                    .with_context(|| format!("setns {}", path.display()))?;
            }
            None => {
                if flag == CloneFlags::CLONE_NEWUTS {
                    own_uts = true;
                }
                unshare_flags |= flag;
            }
        }
    }
    if !unshare_flags.contains(CloneFlags::CLONE_NEWNS) {
        bail!("a container needs its own mount namespace");
    }

    // The container's cgroup, before a cgroup namespace roots itself there.
    if let Some(cg) = linux.cgroups_path() {
        let procs = berth_sys::cgroup::dir(&cfg.cgroup_root, cg).join("cgroup.procs");
        sys.write_file(&procs, b"0")
            .with_context(|| format!("join cgroup {}", procs.display()))?;
    }

    // 2. New namespaces. Mount events stay inside; host events still reach
    // us. With a Bidirectional mount berthd asks for an rshared root instead:
    // a bind of a shared source joins the source's peer group only if the
    // source's copy here is still shared (rslave would leave it slave+shared
    // and nothing would reach the host).
    sys.unshare(unshare_flags).context("unshare namespaces")?;
    let root_propagation = match linux.rootfs_propagation().as_deref() {
        Some("shared" | "rshared") => MsFlags::MS_SHARED,
        Some("private" | "rprivate") => MsFlags::MS_PRIVATE,
        _ => MsFlags::MS_SLAVE,
    };
    sys.mount(
        None,
        Path::new("/"),
        None,
        MsFlags::MS_REC | root_propagation,
        None,
    )
    .with_context(|| format!("set propagation of / to {root_propagation:?}"))?;
    make_rootfs_parent_private(sys, &cfg.rootfs_dir)?;
    if own_uts {
        if let Some(h) = spec.hostname() {
            sys.sethostname(h).context("sethostname")?;
        }
    }

    // 3. Root filesystem.
    let root = &cfg.rootfs_dir;
    for m in &cfg.rootfs_mounts {
        let p = parse_options(&m.options);
        let (data, _lower_fds) = shorten_lowerdirs(&p.data, |d| std::fs::File::open(d).map(OwnedFd::from))
            .with_context(|| format!("open the layers of the {} rootfs", m.fstype))?;
        sys.mount(
            Some(Path::new(&m.source)),
            root,
            Some(m.fstype.as_str()),
            p.flags,
            Some(data.as_str()),
        )
        .with_context(|| format!("mount {} rootfs at {}", m.fstype, root.display()))?;
    }
    if cfg.rootfs_mounts.is_empty() {
        // pivot_root needs a mount point.
        sys.mount(Some(root), root, None, MsFlags::MS_BIND | MsFlags::MS_REC, None)
            .context("bind rootfs onto itself")?;
    }

    // Every path below is the image's to play tricks with: resolved inside
    // the root by an fd walk and acted on through the fd (see `inroot`).
    let root_fd = inroot::open_root(root).with_context(|| format!("open rootfs {}", root.display()))?;
    for m in spec.mounts().clone().unwrap_or_default() {
        mount_one(sys, &root_fd, &m)?;
    }
    setup_dev(sys, &root_fd)?;
    create_devices(sys, &root_fd, linux.devices().as_deref().unwrap_or_default())?;

    let cwd = spec
        .process()
        .as_ref()
        .map(|p| p.cwd().clone())
        .unwrap_or_else(|| PathBuf::from("/"));
    let cwd_fd = inroot::resolve(&root_fd, &cwd, Create::Dirs)
        .with_context(|| format!("working directory {}", cwd.display()))?;
    drop(root_fd);

    pivot_into(sys, root)?;

    for p in linux.masked_paths().clone().unwrap_or_default() {
        mask_path(sys, Path::new(&p))?;
    }
    for p in linux.readonly_paths().clone().unwrap_or_default() {
        readonly_path(sys, Path::new(&p))?;
    }
    if spec.root().as_ref().and_then(|r| r.readonly()).unwrap_or(false) {
        sys.mount(
            None,
            Path::new("/"),
            None,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            None,
        )
        .context("remount rootfs read-only")?;
    }
    if let Some(sysctls) = linux.sysctl() {
        // Sorted, so the order is the same on every run.
        let mut sysctls: Vec<_> = sysctls.iter().collect();
        sysctls.sort();
        for (k, v) in sysctls {
            let path = PathBuf::from("/proc/sys").join(k.replace('.', "/"));
            sys.write_file(&path, v.as_bytes())
                .with_context(|| format!("set sysctl {k}={v}"))?;
        }
    }
    Ok(Prepared {
        cwd,
        cwd_fd: Some(cwd_fd),
    })
}

/// Filesystems a bind may land on only when its destination names them
/// (berthd checked the names): a symlink in the image must not carry a
/// volume onto /proc/self/attr or over /dev/pts.
const KERNEL_FS: &[(nix::sys::statfs::FsType, &str)] = &[
    (nix::sys::statfs::PROC_SUPER_MAGIC, "/proc"),
    (nix::sys::statfs::SYSFS_MAGIC, "/sys"),
    (nix::sys::statfs::FsType(0x1cd1), "/dev/pts"), // DEVPTS_SUPER_MAGIC
    (nix::sys::statfs::FsType(0x1980_0202), "/dev/mqueue"), // MQUEUE_MAGIC
];

/// Refuses a bind destination that a symlink led onto a kernel filesystem
/// its name does not point at.
fn check_bind_destination(sys: &dyn Syscall, dest: &OwnedFd, name: &Path) -> Result<()> {
    let fs = sys
        .fs_type(dest.as_fd())
        .with_context(|| format!("statfs mount point {}", name.display()))?;
    let lexical = normalize(name);
    for (magic, base) in KERNEL_FS {
        if fs == *magic && !lexical.starts_with(base) {
            bail!(
                "mount destination {} resolves into {base} through a symlink: refused",
                name.display()
            );
        }
    }
    Ok(())
}

/// `..` and `.` folded, `..` stopping at `/`.
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in p.components() {
        match c {
            std::path::Component::Normal(n) => out.push(n),
            std::path::Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

/// Resolves a mount destination inside the root (creating it as `create`
/// says) and returns its fd; errors name the destination.
fn dest_fd(root: &OwnedFd, dest: &Path, create: Create) -> Result<OwnedFd> {
    inroot::resolve(root, dest, create).with_context(|| format!("mount point {}", dest.display()))
}

/// Mounts one spec mount inside `root`, through `/proc/self/fd` of the
/// resolved destination. Follow-up calls (remount, propagation) resolve
/// the destination again: the first fd points under the new mount.
fn mount_one(sys: &dyn Syscall, root: &OwnedFd, m: &oci_spec::runtime::Mount) -> Result<()> {
    let name = m.destination();
    let opts = parse_options(&m.options().clone().unwrap_or_default());
    let fstype = m.typ().clone().unwrap_or_else(|| "none".into());
    let source = m.source().clone().unwrap_or_else(|| PathBuf::from(&fstype));

    if opts.bind {
        let kind = sys
            .kind(&source, true)
            .with_context(|| format!("bind source {}", source.display()))?;
        let create = if kind == FileKind::Dir {
            Create::Dirs
        } else {
            Create::File
        };
        let dest = dest_fd(root, name, create)?;
        check_bind_destination(sys, &dest, name)?;
        let rec = opts.flags & MsFlags::MS_REC;
        sys.mount(Some(&source), &fd_path(&dest), None, MsFlags::MS_BIND | rec, None)
            .with_context(|| format!("bind {} to {}", source.display(), name.display()))?;
        // Bind mounts ignore other flags on creation: apply them by remount.
        let extra = opts.flags & !(MsFlags::MS_BIND | MsFlags::MS_REC);
        if !extra.is_empty() {
            let dest = dest_fd(root, name, Create::Nothing)?;
            sys.mount(
                None,
                &fd_path(&dest),
                None,
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | extra,
                None,
            )
            .with_context(|| format!("remount {} with {extra:?}", name.display()))?;
        }
    } else {
        let dest = dest_fd(root, name, Create::Dirs)?;
        let data = (!opts.data.is_empty()).then_some(opts.data.as_str());
        sys.mount(
            Some(&source),
            &fd_path(&dest),
            Some(fstype.as_str()),
            opts.flags,
            data,
        )
        .with_context(|| format!("mount {fstype} at {}", name.display()))?;
    }
    if !opts.propagation.is_empty() {
        let dest = dest_fd(root, name, Create::Nothing)?;
        sys.mount(None, &fd_path(&dest), None, opts.propagation, None)
            .with_context(|| format!("set propagation of {}", name.display()))?;
    }
    if opts.recursive_readonly {
        // MS_RDONLY on a bind remount covers only the top mount; the
        // submounts an rbind brought along stay writable without this.
        let dest = dest_fd(root, name, Create::Nothing)?;
        set_readonly_recursive(sys, &fd_path(&dest))
            .with_context(|| format!("make {} read-only recursively", name.display()))?;
    }
    Ok(())
}

/// Like runc's rootfsParentMountPrivate: when the mount holding the rootfs
/// dir is shared (always so under an rshared root), the rootfs, /proc, /dev
/// and every bind below would propagate to the host's copy of it. Making just
/// that one mount private here stops it; the binds' sources keep their own
/// peer groups.
fn make_rootfs_parent_private(sys: &dyn Syscall, rootfs_dir: &Path) -> Result<()> {
    let dir = std::fs::canonicalize(rootfs_dir)
        .with_context(|| format!("resolve rootfs dir {}", rootfs_dir.display()))?;
    let info = sys
        .read_file(Path::new("/proc/self/mountinfo"))
        .context("read /proc/self/mountinfo")?;
    if let Some((mount_point, true)) = berth_sys::mountinfo::holding(&info, &dir) {
        sys.mount(None, &mount_point, None, MsFlags::MS_PRIVATE, None)
            .with_context(|| format!("make {} private", mount_point.display()))?;
    }
    Ok(())
}

/// The mount at `path` and every mount below it become read-only
/// (mount_setattr(2), Linux >= 5.12).
fn set_readonly_recursive(sys: &dyn Syscall, path: &Path) -> Result<()> {
    if let Err(e) = sys.set_readonly_recursive(path) {
        if e.raw_os_error() == Some(libc::ENOSYS) {
            bail!("recursive read-only mounts need mount_setattr(2), Linux >= 5.12: {e}");
        }
        return Err(e).context("mount_setattr");
    }
    Ok(())
}

/// Minimal /dev: host device nodes bound in, the standard symlinks. The
/// image's `/dev` (even a symlink) is resolved inside the root.
fn setup_dev(sys: &dyn Syscall, root: &OwnedFd) -> Result<()> {
    for name in DEFAULT_DEVICES {
        let target = inroot::resolve(root, &Path::new("/dev").join(name), Create::File)
            .with_context(|| format!("create /dev/{name}"))?;
        sys.mount(
            Some(&Path::new("/dev").join(name)),
            &fd_path(&target),
            None,
            MsFlags::MS_BIND,
            None,
        )
        .with_context(|| format!("bind /dev/{name}"))?;
    }
    let dev = inroot::resolve(root, Path::new("/dev"), Create::Dirs).context("/dev")?;
    for (link, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
    ] {
        match sys.symlinkat(target, dev.as_fd(), link) {
            Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
            Err(e) => return Err(e).with_context(|| format!("symlink /dev/{link}")),
        }
    }
    Ok(())
}

/// The spec's extra device nodes (CRI devices; the host's when
/// privileged), made with mknod so type, numbers, mode and owner are exactly
/// the spec's. Whether the container may open them is the cgroup device
/// filter's business (berthd attached it before we joined the cgroup); it
/// allows mknod of any node. Made with *at calls in the resolved parent.
fn create_devices(sys: &dyn Syscall, root: &OwnedFd, devices: &[LinuxDevice]) -> Result<()> {
    use nix::fcntl::AtFlags;
    use nix::sys::stat::fstatat;
    for d in devices {
        let path = d.path();
        let kind = match d.typ() {
            LinuxDeviceType::C | LinuxDeviceType::U => SFlag::S_IFCHR,
            LinuxDeviceType::B => SFlag::S_IFBLK,
            LinuxDeviceType::P => SFlag::S_IFIFO,
            LinuxDeviceType::A => bail!("device {}: type \"a\" is not a node", path.display()),
        };
        let rdev = makedev(d.major() as u64, d.minor() as u64);
        let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
            bail!("device path {} has no file name", path.display());
        };
        let dir = inroot::resolve(root, parent, Create::Dirs)
            .with_context(|| format!("create the directory of device {}", path.display()))?;
        if let Ok(st) = fstatat(&dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            // The standard nodes are bound in already; the same node stays.
            if st.st_mode & libc::S_IFMT == kind.bits() && st.st_rdev == rdev {
                continue;
            }
            nix::unistd::unlinkat(&dir, name, nix::unistd::UnlinkatFlags::NoRemoveDir)
                .with_context(|| format!("replace {} with the device node", path.display()))?;
        }
        let mode = d.file_mode().unwrap_or(0o666) & 0o7777;
        sys.mknodat(
            dir.as_fd(),
            Path::new(name),
            kind,
            Mode::from_bits_truncate(mode),
            rdev,
        )
        .with_context(|| format!("mknod {} {}:{}", path.display(), d.major(), d.minor()))?;
        let node = inroot::resolve(&dir, Path::new(name), Create::Nothing)
            .with_context(|| format!("open device {}", path.display()))?;
        // mknod applies the umask; the spec's bits are the truth.
        sys.chmod(&fd_path(&node), mode)
            .with_context(|| format!("chmod {}", path.display()))?;
        sys.fchown(node.as_fd(), d.uid().unwrap_or(0), d.gid().unwrap_or(0))
            .with_context(|| format!("chown {}", path.display()))?;
    }
    Ok(())
}

/// pivot_root(".", ".") then detach the old root: the old root is stacked
/// under the new one and unmounted lazily, so no put_old directory is needed.
fn pivot_into(sys: &dyn Syscall, root: &Path) -> Result<()> {
    let old_root = File::open("/").context("open old root")?;
    sys.chdir(root).context("chdir rootfs")?;
    sys.pivot_root(Path::new("."), Path::new("."))
        .context("pivot_root")?;
    // The old root is stacked on the new one now. Under an rshared root its
    // mounts are peers of the host's: make them slaves first so detaching
    // them cannot unmount anything on the host (runc does the same). mount(2)
    // resolves "." to the cwd's own mount, not the one stacked on it, so
    // step into the old root first, or the rslave would hit the new root
    // and every Bidirectional bind under it.
    sys.fchdir(old_root.as_fd()).context("fchdir old root")?;
    sys.mount(
        None,
        Path::new("."),
        None,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None,
    )
    .context("make old root rslave")?;
    sys.umount2(Path::new("."), MntFlags::MNT_DETACH)
        .context("detach old root")?;
    sys.chdir(Path::new("/")).context("chdir /")?;
    Ok(())
}

/// Hides a path: /dev/null over files, an empty read-only tmpfs over dirs.
fn mask_path(sys: &dyn Syscall, p: &Path) -> Result<()> {
    match sys.kind(p, true) {
        Err(_) => Ok(()),
        Ok(FileKind::Dir) => sys
            .mount(
                Some(Path::new("tmpfs")),
                p,
                Some("tmpfs"),
                MsFlags::MS_RDONLY,
                None,
            )
            .with_context(|| format!("mask {}", p.display())),
        Ok(FileKind::Other) => sys
            .mount(Some(Path::new("/dev/null")), p, None, MsFlags::MS_BIND, None)
            .with_context(|| format!("mask {}", p.display())),
    }
}

/// Makes a path read-only with a bind remount.
fn readonly_path(sys: &dyn Syscall, p: &Path) -> Result<()> {
    if sys.kind(p, false).is_err() {
        return Ok(());
    }
    sys.mount(Some(p), p, None, MsFlags::MS_BIND | MsFlags::MS_REC, None)
        .with_context(|| format!("bind {} read-only", p.display()))?;
    sys.mount(
        None,
        p,
        None,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_REC,
        None,
    )
    .with_context(|| format!("remount {} read-only", p.display()))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use nix::sys::statfs::FsType;
    use serde_json::json;

    use super::*;
    use crate::init::fake::{Call, Fake};
    use crate::init::RootfsMount;

    /// DEVPTS_SUPER_MAGIC.
    const DEVPTS: FsType = FsType(0x1cd1);

    fn config(root: &Path, spec: serde_json::Value) -> InitConfig {
        InitConfig {
            spec: serde_json::from_value(spec).expect("spec"),
            rootfs_dir: root.to_path_buf(),
            rootfs_mounts: Vec::new(),
            cgroup_root: PathBuf::from("/cg"),
        }
    }

    /// A spec with only what the test names: its own mount namespace, no
    /// mounts, no devices.
    fn spec(linux: serde_json::Value, mounts: serde_json::Value, readonly: bool) -> serde_json::Value {
        let mut linux = linux;
        if linux.get("namespaces").is_none() {
            linux["namespaces"] = json!([{"type": "mount"}]);
        }
        json!({
            "ociVersion": "1.0.2",
            "process": {"cwd": "/", "args": ["sh"], "user": {"uid": 0, "gid": 0}},
            "root": {"path": "rootfs", "readonly": readonly},
            "mounts": mounts,
            "linux": linux,
        })
    }

    fn mount(source: &str, target: &str, fstype: Option<&str>, flags: MsFlags) -> Call {
        Call::Mount {
            source: Some(source.to_string()),
            target: target.to_string(),
            fstype: fstype.map(str::to_string),
            flags,
            data: None,
        }
    }

    fn remount(target: &str, flags: MsFlags) -> Call {
        Call::Mount {
            source: None,
            target: target.to_string(),
            fstype: None,
            flags,
            data: None,
        }
    }

    fn position(calls: &[Call], want: &Call) -> usize {
        calls
            .iter()
            .position(|c| c == want)
            .unwrap_or_else(|| panic!("no {want:?} in {calls:#?}"))
    }

    /// The whole walk for a typical container: join the pod's net ns and
    /// the cgroup, unshare, rslave /, the rootfs mount, spec mounts, /dev,
    /// pivot_root with the old root detached, then masked and read-only
    /// paths, the read-only root, and sysctls last (inside the new /proc).
    #[test]
    fn setup_runs_in_the_kernels_order() {
        let dir = tempfile::tempdir().unwrap();
        let linux = json!({
            "namespaces": [
                {"type": "network", "path": "/proc/self/ns/net"},
                {"type": "mount"},
                {"type": "uts"},
            ],
            "cgroupsPath": "/berth/pod1/c1",
            "maskedPaths": ["/proc/kcore", "/proc/acpi", "/proc/missing"],
            "readonlyPaths": ["/proc/sys"],
            "sysctl": {"net.ipv4.ip_forward": "1"},
        });
        let mounts =
            json!([{"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid"]}]);
        let mut spec = spec(linux, mounts, true);
        spec["hostname"] = json!("web-0");
        let mut cfg = config(dir.path(), spec);
        cfg.rootfs_mounts = vec![RootfsMount {
            fstype: "overlay".into(),
            source: "overlay".into(),
            options: vec!["lowerdir=/l".into(), "upperdir=/u".into(), "workdir=/w".into()],
        }];
        let mut sys = Fake::new(dir.path());
        sys.kinds.insert("/proc/kcore".into(), FileKind::Other);
        sys.kinds.insert("/proc/acpi".into(), FileKind::Dir);
        sys.kinds.insert("/proc/sys".into(), FileKind::Dir);

        let prepared = prepare(&sys, &cfg).expect("prepare");
        assert_eq!(sys.show(&fd_path(prepared.cwd_fd.as_ref().unwrap())), "rootfs:/");

        let calls = sys.calls();
        let devices: Vec<Call> = DEFAULT_DEVICES
            .iter()
            .map(|d| {
                mount(
                    &format!("/dev/{d}"),
                    &format!("rootfs:/dev/{d}"),
                    None,
                    MsFlags::MS_BIND,
                )
            })
            .collect();
        let rdonly_bind = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
        let want_in_order = [
            Call::Setns(CloneFlags::CLONE_NEWNET),
            Call::Write("/cg/berth/pod1/c1/cgroup.procs".into(), "0".into()),
            Call::Unshare(CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWUTS),
            remount("/", MsFlags::MS_REC | MsFlags::MS_SLAVE),
            // The shared mount holding the rootfs dir, made private.
            remount("/", MsFlags::MS_PRIVATE),
            Call::Sethostname("web-0".into()),
            Call::Mount {
                source: Some("overlay".into()),
                target: "rootfs:/".into(),
                fstype: Some("overlay".into()),
                flags: MsFlags::empty(),
                data: Some("lowerdir=/l,upperdir=/u,workdir=/w".into()),
            },
            mount("proc", "rootfs:/proc", Some("proc"), MsFlags::MS_NOSUID),
            devices[0].clone(),
            devices[5].clone(),
            Call::Symlink {
                at: "rootfs:/dev/fd".into(),
                target: "/proc/self/fd".into(),
            },
            Call::Chdir("rootfs:/".into()),
            Call::PivotRoot(".".into(), ".".into()),
            Call::Fchdir("/".into()),
            remount(".", MsFlags::MS_SLAVE | MsFlags::MS_REC),
            Call::Umount2(".".into(), MntFlags::MNT_DETACH),
            Call::Chdir("/".into()),
            mount("/dev/null", "/proc/kcore", None, MsFlags::MS_BIND),
            mount("tmpfs", "/proc/acpi", Some("tmpfs"), MsFlags::MS_RDONLY),
            mount("/proc/sys", "/proc/sys", None, MsFlags::MS_BIND | MsFlags::MS_REC),
            remount("/proc/sys", rdonly_bind | MsFlags::MS_REC),
            remount("/", rdonly_bind),
            Call::Write("/proc/sys/net/ipv4/ip_forward".into(), "1".into()),
        ];
        let at: Vec<usize> = want_in_order.iter().map(|w| position(&calls, w)).collect();
        assert!(
            at.windows(2).all(|w| w[0] < w[1]),
            "out of order: {at:?}\n{calls:#?}"
        );
        // A masked path that does not exist is passed over.
        assert!(!format!("{calls:?}").contains("/proc/missing"));
    }

    /// A writable root is never remounted; a read-only one is, after the
    /// pivot and after every masked and read-only path.
    #[test]
    fn only_a_readonly_root_is_remounted_and_last_of_the_mounts() {
        let ro_root = remount("/", MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY);
        for readonly in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let linux = json!({"readonlyPaths": ["/proc/bus"]});
            let cfg = config(dir.path(), spec(linux, json!([]), readonly));
            let mut sys = Fake::new(dir.path());
            sys.kinds.insert("/proc/bus".into(), FileKind::Dir);
            prepare(&sys, &cfg).expect("prepare");
            let calls = sys.calls();
            let mounts: Vec<&Call> = calls.iter().filter(|c| matches!(c, Call::Mount { .. })).collect();
            assert_eq!(calls.contains(&ro_root), readonly, "{calls:#?}");
            if readonly {
                assert_eq!(mounts.last(), Some(&&ro_root));
                assert!(
                    position(&calls, &Call::PivotRoot(".".into(), ".".into())) < position(&calls, &ro_root)
                );
            }
        }
    }

    /// Spec mounts go in the spec's order, each complete before the next:
    /// the bind, the remount that applies its other flags, its
    /// propagation, then rro; a volume inside a volume lands on the first.
    #[test]
    fn bind_mounts_keep_the_spec_order_and_their_flags_follow_each_bind() {
        let dir = tempfile::tempdir().unwrap();
        let mounts = json!([
            {"destination": "/data", "type": "bind", "source": "/host/a",
             "options": ["rbind", "ro", "rprivate", "rro"]},
            {"destination": "/data/sub", "type": "bind", "source": "/host/b", "options": ["bind"]},
            {"destination": "/etc/hosts", "type": "bind", "source": "/host/hosts", "options": ["bind", "nosuid"]},
        ]);
        let cfg = config(dir.path(), spec(json!({}), mounts, false));
        let mut sys = Fake::new(dir.path());
        sys.kinds.insert("/host/a".into(), FileKind::Dir);
        sys.kinds.insert("/host/b".into(), FileKind::Dir);
        sys.kinds.insert("/host/hosts".into(), FileKind::Other);
        prepare(&sys, &cfg).expect("prepare");
        let calls = sys.calls();
        let rbind = MsFlags::MS_BIND | MsFlags::MS_REC;
        let want = [
            mount("/host/a", "rootfs:/data", None, rbind),
            remount(
                "rootfs:/data",
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            ),
            remount("rootfs:/data", MsFlags::MS_PRIVATE | MsFlags::MS_REC),
            Call::ReadonlyRecursive("rootfs:/data".into()),
            mount("/host/b", "rootfs:/data/sub", None, MsFlags::MS_BIND),
            mount("/host/hosts", "rootfs:/etc/hosts", None, MsFlags::MS_BIND),
            remount(
                "rootfs:/etc/hosts",
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_NOSUID,
            ),
        ];
        let at: Vec<usize> = want.iter().map(|w| position(&calls, w)).collect();
        assert!(
            at.windows(2).all(|w| w[0] + 1 == w[1]),
            "not back to back: {at:?}\n{calls:#?}"
        );
        // A file source gets a file mount point, a dir source a dir.
        assert!(dir.path().join("etc/hosts").is_file());
        assert!(dir.path().join("data/sub").is_dir());
    }

    /// A volume whose destination is a symlink the image planted onto
    /// /dev/pts (a kernel filesystem its name does not point at) is refused
    /// before anything is bound there.
    #[test]
    fn a_bind_through_a_symlink_onto_devpts_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("dev/pts")).unwrap();
        symlink("/dev/pts", dir.path().join("data")).unwrap();
        let mounts =
            json!([{"destination": "/data", "type": "bind", "source": "/host/a", "options": ["rbind"]}]);
        let cfg = config(dir.path(), spec(json!({}), mounts, false));
        let mut sys = Fake::new(dir.path());
        sys.kinds.insert("/host/a".into(), FileKind::Dir);
        sys.fs_types.insert("rootfs:/dev/pts".into(), DEVPTS);
        let err = format!("{:#}", prepare(&sys, &cfg).unwrap_err());
        assert!(
            err.contains("mount destination /data resolves into /dev/pts through a symlink: refused"),
            "{err}"
        );
        assert!(
            !sys.mounts()
                .iter()
                .any(|(_, target, _)| target.starts_with("rootfs:/dev")),
            "nothing was bound: {:#?}",
            sys.calls()
        );
        assert!(!sys.calls().iter().any(|c| matches!(c, Call::PivotRoot(..))));
        // Named for what it is, the same bind is fine.
        let mounts =
            json!([{"destination": "/dev/pts", "type": "bind", "source": "/host/a", "options": ["rbind"]}]);
        let cfg = config(dir.path(), spec(json!({}), mounts, false));
        prepare(&sys, &cfg).expect("a bind named /dev/pts");
    }

    /// An image whose /dev is an absolute symlink out of the root: the
    /// device binds, symlinks and nodes all land inside the root, and
    /// nothing is made where the link points on the node.
    #[test]
    fn an_image_dev_symlink_keeps_dev_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        symlink(outside.path(), dir.path().join("dev")).unwrap();
        let linux = json!({"devices": [{"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229,
                                         "fileMode": 438, "uid": 0, "gid": 0}]});
        let cfg = config(dir.path(), spec(linux, json!([]), false));
        let sys = Fake::new(dir.path());
        prepare(&sys, &cfg).expect("prepare");
        let inside = format!("rootfs:{}", outside.path().display());
        let dev_mounts: Vec<String> = sys
            .mounts()
            .into_iter()
            .filter(|(s, _, _)| s.as_deref().is_some_and(|s| s.starts_with("/dev/")))
            .map(|(_, t, _)| t)
            .collect();
        assert_eq!(dev_mounts.len(), DEFAULT_DEVICES.len());
        assert!(
            dev_mounts.iter().all(|t| t.starts_with(&inside)),
            "{dev_mounts:?}"
        );
        let node = format!("{inside}/fuse");
        let calls = sys.calls();
        let mknod = position(
            &calls,
            &Call::Mknod {
                at: node.clone(),
                kind: SFlag::S_IFCHR,
                mode: 0o666,
                rdev: makedev(10, 229),
            },
        );
        assert!(mknod < position(&calls, &Call::Chmod(node.clone(), 0o666)));
        assert!(position(&calls, &Call::Chown(node, 0, 0)) > mknod);
        assert_eq!(
            std::fs::read_dir(outside.path()).unwrap().count(),
            0,
            "nothing on the node"
        );
    }

    /// Without a mount namespace of its own nothing is unshared or mounted;
    /// a failing mount stops setup at once, with the step named.
    #[test]
    fn setup_refuses_and_stops_early() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(
            dir.path(),
            spec(json!({"namespaces": [{"type": "uts"}]}), json!([]), false),
        );
        let sys = Fake::new(dir.path());
        let err = prepare(&sys, &cfg).unwrap_err().to_string();
        assert_eq!(err, "a container needs its own mount namespace");
        assert!(sys.calls().is_empty(), "{:#?}", sys.calls());

        let mounts = json!([{"destination": "/proc", "type": "proc", "source": "proc"}]);
        let cfg = config(dir.path(), spec(json!({}), mounts, false));
        let mut sys = Fake::new(dir.path());
        sys.fail_mount_at = Some("rootfs:/proc".into());
        let err = format!("{:#}", prepare(&sys, &cfg).unwrap_err());
        assert!(err.starts_with("mount proc at /proc: EPERM"), "{err}");
        assert!(
            !sys.mounts().iter().any(|(_, t, _)| t.starts_with("rootfs:/dev")),
            "nothing after the failed mount"
        );
    }
}
