//! Namespaces, cgroup, root filesystem and mounts for the init stage.

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;
use nix::sys::stat::{makedev, Mode, SFlag};
use oci_spec::runtime::{Linux, LinuxDevice, LinuxDeviceType, LinuxNamespaceType};

use super::inroot::{self, fd_path, Create};
use super::mounts::{parse_options, shorten_lowerdirs};
use super::syscall::{FileKind, Syscall};
use super::InitConfig;

/// Device nodes every container gets, with their (major, minor): made
/// with mknod, or bind-mounted from the node's /dev in a pod with a user
/// namespace (see [`setup_dev`]). Documentation/admin-guide/devices.txt:
/// memory devices are major 1, /dev/tty is 5:0.
pub(crate) const DEFAULT_DEVICES: [(&str, u64, u64); 6] = [
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

/// What the exec step needs to know from setup.
#[derive(Debug, Default)]
pub struct Prepared {
    /// The working directory exists inside the new root.
    pub cwd: PathBuf,
    /// The working directory as resolved inside the root before pivot_root
    /// (an O_PATH fd, for fchdir): no name is looked up again.
    pub cwd_fd: Option<OwnedFd>,
    /// The pod's user namespace, entered right before the exec.
    pub userns: Option<File>,
    /// When each step of the set-up ended (init reports them).
    pub times: crate::sync::RootfsTimes,
}

/// Runs steps 1-3 of the init stage (see the module docs of `init`).
pub fn prepare(sys: &dyn Syscall, cfg: &InitConfig) -> Result<Prepared> {
    let spec = &cfg.spec;
    let mut times = crate::sync::RootfsTimes::default();
    let now = crate::sync::mono_ns;
    let linux = spec.linux().clone().unwrap_or_default();

    // 1. The pod's namespaces and the container's cgroup.
    let userns = crate::userns::open(&linux)?;
    let (unshare_flags, own_uts) = join_namespaces(sys, &linux)?;
    if !unshare_flags.contains(CloneFlags::CLONE_NEWNS) {
        bail!("a container needs its own mount namespace");
    }
    join_cgroup(sys, cfg, &linux)?;

    // 2. The container's own namespaces.
    unshare_namespaces(sys, cfg, &linux, unshare_flags)?;
    if own_uts {
        if let Some(h) = spec.hostname() {
            sys.sethostname(h).context("sethostname")?;
        }
    }
    times.ns = now();

    // 3. Root filesystem, the spec's mounts and /dev, then pivot_root.
    let root = &cfg.rootfs_dir;
    mount_rootfs(sys, cfg, userns.as_ref())?;
    times.root = now();
    // Every path below is the image's to play tricks with: resolved inside
    // the root by an fd walk and acted on through the fd (see `inroot`).
    let root_fd = inroot::open_root(root).with_context(|| format!("open rootfs {}", root.display()))?;
    for m in spec.mounts().clone().unwrap_or_default() {
        mount_one(sys, &root_fd, &m, userns.as_ref())?;
    }
    times.mounts = now();
    setup_dev(sys, &root_fd, userns.is_some())?;
    create_devices(sys, &root_fd, linux.devices().as_deref().unwrap_or_default())?;

    let cwd = spec
        .process()
        .as_ref()
        .map(|p| p.cwd().clone())
        .unwrap_or_else(|| PathBuf::from("/"));
    let cwd_fd = inroot::resolve(&root_fd, &cwd, Create::Dirs)
        .with_context(|| format!("working directory {}", cwd.display()))?;
    drop(root_fd);
    times.dev = now();

    crate::init::hooks::before_pivot(cfg)?;
    pivot_into(sys, root)?;
    times.pivot = now();
    harden(sys, spec, &linux)?;
    Ok(Prepared {
        cwd,
        cwd_fd: Some(cwd_fd),
        userns,
        times,
    })
}

/// Joins the namespaces that have a path (the pod's); returns the ones to
/// create, and whether the UTS namespace is the container's own.
fn join_namespaces(sys: &dyn Syscall, linux: &Linux) -> Result<(CloneFlags, bool)> {
    let mut unshare_flags = CloneFlags::empty();
    let mut own_uts = false;
    for ns in linux.namespaces().as_deref().unwrap_or_default() {
        let flag = match ns.typ() {
            LinuxNamespaceType::Network => CloneFlags::CLONE_NEWNET,
            LinuxNamespaceType::Ipc => CloneFlags::CLONE_NEWIPC,
            LinuxNamespaceType::Uts => CloneFlags::CLONE_NEWUTS,
            LinuxNamespaceType::Mount => CloneFlags::CLONE_NEWNS,
            LinuxNamespaceType::Cgroup => CloneFlags::CLONE_NEWCGROUP,
            // The PID namespace was chosen at clone time; the user
            // namespace is entered last (crate::userns).
            LinuxNamespaceType::Pid | LinuxNamespaceType::User => continue,
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
    Ok((unshare_flags, own_uts))
}

/// The container's cgroup, before a cgroup namespace roots itself there.
fn join_cgroup(sys: &dyn Syscall, cfg: &InitConfig, linux: &Linux) -> Result<()> {
    if cfg.in_cgroup {
        return Ok(());
    }
    if let Some(cg) = linux.cgroups_path() {
        let procs = berth_sys::cgroup::dir(&cfg.cgroup_root, cg).join("cgroup.procs");
        sys.write_file(&procs, b"0")
            .with_context(|| format!("join cgroup {}", procs.display()))?;
    }
    Ok(())
}

/// New namespaces. Mount events stay inside; host events still reach us.
/// With a Bidirectional mount berthd asks for an rshared root instead: a
/// bind of a shared source joins the source's peer group only if the
/// source's copy here is still shared (rslave would leave it slave+shared
/// and nothing would reach the host).
fn unshare_namespaces(sys: &dyn Syscall, cfg: &InitConfig, linux: &Linux, flags: CloneFlags) -> Result<()> {
    sys.unshare(flags).context("unshare namespaces")?;
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
    // After an rslave or rprivate `/` no mount here is shared any more, so
    // only an rshared root has a parent to make private: the others skip
    // reading this namespace's mountinfo (one line per mount on the node,
    // every pod's among them).
    if root_propagation == MsFlags::MS_SHARED {
        make_rootfs_parent_private(sys, &cfg.rootfs_dir)?;
    }
    Ok(())
}

/// The rootfs mounts (overlay) at the rootfs dir, in order; a bind of the
/// dir onto itself when there are none (pivot_root needs a mount point).
fn mount_rootfs(sys: &dyn Syscall, cfg: &InitConfig, userns: Option<&File>) -> Result<()> {
    let root = &cfg.rootfs_dir;
    for m in &cfg.rootfs_mounts {
        let p = parse_options(&m.options);
        if let Some(u) = userns {
            crate::userns::idmap_layers(&p.data, u)?;
        }
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
        sys.mount(Some(root), root, None, MsFlags::MS_BIND | MsFlags::MS_REC, None)
            .context("bind rootfs onto itself")?;
    }
    Ok(())
}

/// After pivot_root: masked and read-only paths, the read-only root, then
/// sysctls (through the container's own /proc).
fn harden(sys: &dyn Syscall, spec: &oci_spec::runtime::Spec, linux: &Linux) -> Result<()> {
    for p in linux.masked_paths().as_deref().unwrap_or_default() {
        mask_path(sys, Path::new(p))?;
    }
    for p in linux.readonly_paths().as_deref().unwrap_or_default() {
        readonly_path(sys, Path::new(p))?;
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
    Ok(())
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
fn mount_one(
    sys: &dyn Syscall,
    root: &OwnedFd,
    m: &oci_spec::runtime::Mount,
    userns: Option<&File>,
) -> Result<()> {
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
        if let Some(recursive) = crate::userns::idmap_option(m.options().as_deref().unwrap_or_default()) {
            crate::userns::bind_idmapped(&source, &dest, recursive, userns, name)?;
        } else {
            sys.mount(Some(&source), &fd_path(&dest), None, MsFlags::MS_BIND | rec, None)
                .with_context(|| format!("bind {} to {}", source.display(), name.display()))?;
        }
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

/// Minimal /dev: the default device nodes, the standard symlinks. The
/// image's `/dev` (even a symlink) is resolved inside the root.
///
/// The nodes are made with mknod, as runc does: one syscall each, where a
/// bind from the node's /dev costs a file, an fd walk and a mount (and
/// leaves six more mounts in every container's table). A pod with a user
/// namespace keeps the binds it always had (runc too binds whenever a user
/// namespace is involved), and a name that exists already (a /dev that is
/// not a fresh tmpfs) is bound over as before. Whether a node may be
/// opened is the cgroup device filter's business either way; it allows
/// these.
fn setup_dev(sys: &dyn Syscall, root: &OwnedFd, userns: bool) -> Result<()> {
    let dev = inroot::resolve(root, Path::new("/dev"), Create::Dirs).context("/dev")?;
    let mut bind = Vec::new();
    if userns {
        bind.extend(DEFAULT_DEVICES.iter().map(|(name, ..)| *name));
    } else {
        // mknod applies the umask; these are 0666 like the node's.
        let old = sys.umask(0);
        for (name, major, minor) in DEFAULT_DEVICES {
            match sys.mknodat(
                dev.as_fd(),
                Path::new(name),
                SFlag::S_IFCHR,
                Mode::from_bits_truncate(0o666),
                makedev(major, minor),
            ) {
                Ok(()) => {}
                Err(nix::errno::Errno::EEXIST) => bind.push(name),
                Err(e) => {
                    sys.umask(old);
                    return Err(e).with_context(|| format!("mknod /dev/{name}"));
                }
            }
        }
        sys.umask(old);
    }
    for name in bind {
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
#[path = "rootfs_tests.rs"]
mod tests;
