//! Namespaces, cgroup, root filesystem and mounts for the init stage.

use std::fs::File;
use std::os::unix::fs::{symlink, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};
use nix::sys::stat::{makedev, mknod, Mode, SFlag};
use oci_spec::runtime::{LinuxDevice, LinuxDeviceType, LinuxNamespaceType};

use super::mounts::{mount_holding, parse_options, secure_join};
use super::InitConfig;

/// Where cgroup v2 is mounted on the host.
const CGROUP2_ROOT: &str = "/sys/fs/cgroup";

/// Device nodes every container gets, bind-mounted from the host (works in any
/// user namespace, unlike mknod).
const DEFAULT_DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

/// What the exec step needs to know from setup.
#[derive(Debug, Default)]
pub struct Prepared {
    /// The working directory exists inside the new root.
    pub cwd: PathBuf,
}

/// Runs steps 1-3 of the init stage (see the module docs of `init`).
pub fn prepare(cfg: &InitConfig) -> Result<Prepared> {
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
                setns(&f, flag).with_context(|| format!("setns {}", path.display()))?;
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
        let procs = Path::new(CGROUP2_ROOT)
            .join(cg.strip_prefix("/").unwrap_or(cg))
            .join("cgroup.procs");
        std::fs::write(&procs, b"0").with_context(|| format!("join cgroup {}", procs.display()))?;
    }

    // 2. New namespaces. Mount events stay inside; host events still reach
    // us. With a Bidirectional mount berthd asks for an rshared root instead:
    // a bind of a shared source joins the source's peer group only if the
    // source's copy here is still shared (rslave would leave it slave+shared
    // and nothing would reach the host).
    unshare(unshare_flags).context("unshare namespaces")?;
    let root_propagation = match linux.rootfs_propagation().as_deref() {
        Some("shared" | "rshared") => MsFlags::MS_SHARED,
        Some("private" | "rprivate") => MsFlags::MS_PRIVATE,
        _ => MsFlags::MS_SLAVE,
    };
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | root_propagation,
        None::<&str>,
    )
    .with_context(|| format!("set propagation of / to {root_propagation:?}"))?;
    make_rootfs_parent_private(&cfg.rootfs_dir)?;
    if own_uts {
        if let Some(h) = spec.hostname() {
            nix::unistd::sethostname(h).context("sethostname")?;
        }
    }

    // 3. Root filesystem.
    let root = &cfg.rootfs_dir;
    for m in &cfg.rootfs_mounts {
        let p = parse_options(&m.options);
        mount(
            Some(m.source.as_str()),
            root,
            Some(m.fstype.as_str()),
            p.flags,
            Some(p.data.as_str()),
        )
        .with_context(|| format!("mount {} rootfs at {}", m.fstype, root.display()))?;
    }
    if cfg.rootfs_mounts.is_empty() {
        // pivot_root needs a mount point.
        mount(
            Some(root),
            root,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .context("bind rootfs onto itself")?;
    }

    for m in spec.mounts().clone().unwrap_or_default() {
        mount_one(root, &m)?;
    }
    setup_dev(root)?;
    create_devices(root, linux.devices().as_deref().unwrap_or_default())?;

    let cwd = spec
        .process()
        .as_ref()
        .map(|p| p.cwd().clone())
        .unwrap_or_else(|| PathBuf::from("/"));
    let cwd_host = secure_join(root, &cwd)?;
    std::fs::create_dir_all(&cwd_host)
        .with_context(|| format!("create working directory {}", cwd.display()))?;

    pivot_into(root)?;

    for p in linux.masked_paths().clone().unwrap_or_default() {
        mask_path(Path::new(&p))?;
    }
    for p in linux.readonly_paths().clone().unwrap_or_default() {
        readonly_path(Path::new(&p))?;
    }
    if spec.root().as_ref().and_then(|r| r.readonly()).unwrap_or(false) {
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            None::<&str>,
        )
        .context("remount rootfs read-only")?;
    }
    if let Some(sysctls) = linux.sysctl() {
        for (k, v) in sysctls {
            let path = PathBuf::from("/proc/sys").join(k.replace('.', "/"));
            std::fs::write(&path, v).with_context(|| format!("set sysctl {k}={v}"))?;
        }
    }
    Ok(Prepared { cwd })
}

/// Mounts one spec mount under `root`.
fn mount_one(root: &Path, m: &oci_spec::runtime::Mount) -> Result<()> {
    let dest = secure_join(root, m.destination())?;
    let opts = parse_options(&m.options().clone().unwrap_or_default());
    let fstype = m.typ().clone().unwrap_or_else(|| "none".into());
    let source = m.source().clone().unwrap_or_else(|| PathBuf::from(&fstype));

    if opts.bind {
        let meta = std::fs::metadata(&source).with_context(|| format!("bind source {}", source.display()))?;
        if meta.is_dir() {
            std::fs::create_dir_all(&dest)?;
        } else {
            if let Some(parent) = dest.parent() {
                std::fs::create_dir_all(parent)?;
            }
            if !dest.exists() {
                File::create(&dest)?;
            }
        }
        let rec = opts.flags & MsFlags::MS_REC;
        mount(
            Some(&source),
            &dest,
            None::<&str>,
            MsFlags::MS_BIND | rec,
            None::<&str>,
        )
        .with_context(|| format!("bind {} to {}", source.display(), m.destination().display()))?;
        // Bind mounts ignore other flags on creation: apply them by remount.
        let extra = opts.flags & !(MsFlags::MS_BIND | MsFlags::MS_REC);
        if !extra.is_empty() {
            mount(
                None::<&str>,
                &dest,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | extra,
                None::<&str>,
            )
            .with_context(|| format!("remount {} with {extra:?}", m.destination().display()))?;
        }
    } else {
        std::fs::create_dir_all(&dest)
            .with_context(|| format!("create mount point {}", m.destination().display()))?;
        let data = (!opts.data.is_empty()).then_some(opts.data.as_str());
        mount(Some(&source), &dest, Some(fstype.as_str()), opts.flags, data)
            .with_context(|| format!("mount {fstype} at {}", m.destination().display()))?;
    }
    if !opts.propagation.is_empty() {
        mount(None::<&str>, &dest, None::<&str>, opts.propagation, None::<&str>)
            .with_context(|| format!("set propagation of {}", m.destination().display()))?;
    }
    if opts.recursive_readonly {
        // MS_RDONLY on a bind remount covers only the top mount; the
        // submounts an rbind brought along stay writable without this.
        set_readonly_recursive(&dest)
            .with_context(|| format!("make {} read-only recursively", m.destination().display()))?;
    }
    Ok(())
}

/// Like runc's rootfsParentMountPrivate: when the mount holding the rootfs
/// dir is shared (always so under an rshared root), the rootfs, /proc, /dev
/// and every bind below would propagate to the host's copy of it. Making just
/// that one mount private here stops it; the binds' sources keep their own
/// peer groups.
fn make_rootfs_parent_private(rootfs_dir: &Path) -> Result<()> {
    let dir = std::fs::canonicalize(rootfs_dir)
        .with_context(|| format!("resolve rootfs dir {}", rootfs_dir.display()))?;
    let info = std::fs::read_to_string("/proc/self/mountinfo").context("read /proc/self/mountinfo")?;
    if let Some((mount_point, true)) = mount_holding(&info, &dir) {
        mount(
            None::<&str>,
            &mount_point,
            None::<&str>,
            MsFlags::MS_PRIVATE,
            None::<&str>,
        )
        .with_context(|| format!("make {} private", mount_point.display()))?;
    }
    Ok(())
}

/// `struct mount_attr` of <linux/mount.h> (MOUNT_ATTR_SIZE_VER0, 32 bytes).
#[repr(C)]
#[allow(dead_code)] // read by the kernel, never by us
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// MOUNT_ATTR_RDONLY of <linux/mount.h>.
const MOUNT_ATTR_RDONLY: u64 = 0x1;

/// mount_setattr(2) with AT_RECURSIVE and MOUNT_ATTR_RDONLY: the mount at
/// `path` and every mount below it become read-only (Linux >= 5.12).
fn set_readonly_recursive(path: &Path) -> Result<()> {
    let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .context("mount path contains a NUL byte")?;
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_RDONLY,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: c_path is a valid NUL-terminated string and attr a live,
    // correctly laid out mount_attr whose size is passed; the kernel only
    // reads both during the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            c_path.as_ptr(),
            (libc::AT_RECURSIVE | libc::AT_NO_AUTOMOUNT) as libc::c_uint,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc == -1 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ENOSYS) {
            bail!("recursive read-only mounts need mount_setattr(2), Linux >= 5.12: {e}");
        }
        return Err(e).context("mount_setattr");
    }
    Ok(())
}

/// Minimal /dev: host device nodes bound in, the standard symlinks.
fn setup_dev(root: &Path) -> Result<()> {
    let dev = root.join("dev");
    std::fs::create_dir_all(&dev)?;
    for name in DEFAULT_DEVICES {
        let target = dev.join(name);
        if !target.exists() {
            File::create(&target).with_context(|| format!("create /dev/{name}"))?;
        }
        mount(
            Some(&Path::new("/dev").join(name)),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
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
        let p = dev.join(link);
        if std::fs::symlink_metadata(&p).is_err() {
            symlink(target, &p).with_context(|| format!("symlink /dev/{link}"))?;
        }
    }
    Ok(())
}

/// The spec's extra device nodes (CRI devices; the host's when
/// privileged), made with mknod so type, numbers, mode and owner are exactly
/// the spec's. Whether the container may open them is the cgroup device
/// filter's business (berthd attached it before we joined the cgroup); it
/// allows mknod of any node.
fn create_devices(root: &Path, devices: &[LinuxDevice]) -> Result<()> {
    for d in devices {
        let path = d.path();
        let (kind, is_kind): (SFlag, fn(&std::fs::FileType) -> bool) = match d.typ() {
            LinuxDeviceType::C | LinuxDeviceType::U => (SFlag::S_IFCHR, |t| t.is_char_device()),
            LinuxDeviceType::B => (SFlag::S_IFBLK, |t| t.is_block_device()),
            LinuxDeviceType::P => (SFlag::S_IFIFO, |t| t.is_fifo()),
            LinuxDeviceType::A => bail!("device {}: type \"a\" is not a node", path.display()),
        };
        let rdev = makedev(d.major() as u64, d.minor() as u64);
        let dest = secure_join(root, path)?;
        if let Ok(m) = std::fs::symlink_metadata(&dest) {
            // The standard nodes are bound in already; the same node stays.
            if is_kind(&m.file_type()) && m.rdev() == rdev {
                continue;
            }
            std::fs::remove_file(&dest)
                .with_context(|| format!("replace {} with the device node", path.display()))?;
        }
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("create the directory of device {}", path.display()))?;
        }
        let mode = d.file_mode().unwrap_or(0o666) & 0o7777;
        mknod(&dest, kind, Mode::from_bits_truncate(mode), rdev)
            .with_context(|| format!("mknod {} {}:{}", path.display(), d.major(), d.minor()))?;
        // mknod applies the umask; the spec's bits are the truth.
        std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("chmod {}", path.display()))?;
        nix::unistd::chown(
            &dest,
            Some(d.uid().unwrap_or(0).into()),
            Some(d.gid().unwrap_or(0).into()),
        )
        .with_context(|| format!("chown {}", path.display()))?;
    }
    Ok(())
}

/// pivot_root(".", ".") then detach the old root: the old root is stacked
/// under the new one and unmounted lazily, so no put_old directory is needed.
fn pivot_into(root: &Path) -> Result<()> {
    let old_root = File::open("/").context("open old root")?;
    nix::unistd::chdir(root).context("chdir rootfs")?;
    nix::unistd::pivot_root(".", ".").context("pivot_root")?;
    // The old root is stacked on the new one now. Under an rshared root its
    // mounts are peers of the host's: make them slaves first so detaching
    // them cannot unmount anything on the host (runc does the same). mount(2)
    // resolves "." to the cwd's own mount, not the one stacked on it, so
    // step into the old root first, or the rslave would hit the new root
    // and every Bidirectional bind under it.
    nix::unistd::fchdir(&old_root).context("fchdir old root")?;
    mount(
        None::<&str>,
        ".",
        None::<&str>,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None::<&str>,
    )
    .context("make old root rslave")?;
    umount2(".", MntFlags::MNT_DETACH).context("detach old root")?;
    nix::unistd::chdir("/").context("chdir /")?;
    Ok(())
}

/// Hides a path: /dev/null over files, an empty read-only tmpfs over dirs.
fn mask_path(p: &Path) -> Result<()> {
    match std::fs::metadata(p) {
        Err(_) => Ok(()),
        Ok(m) if m.is_dir() => mount(Some("tmpfs"), p, Some("tmpfs"), MsFlags::MS_RDONLY, None::<&str>)
            .with_context(|| format!("mask {}", p.display())),
        Ok(_) => mount(Some("/dev/null"), p, None::<&str>, MsFlags::MS_BIND, None::<&str>)
            .with_context(|| format!("mask {}", p.display())),
    }
}

/// Makes a path read-only with a bind remount.
fn readonly_path(p: &Path) -> Result<()> {
    if std::fs::symlink_metadata(p).is_err() {
        return Ok(());
    }
    mount(
        Some(p),
        p,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .with_context(|| format!("bind {} read-only", p.display()))?;
    mount(
        None::<&str>,
        p,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_REC,
        None::<&str>,
    )
    .with_context(|| format!("remount {} read-only", p.display()))
}
