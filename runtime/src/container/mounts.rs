//! CRI mounts before they become OCI mounts: the rules CRI sets on
//! propagation and recursive read-only, host paths resolved the way
//! containerd resolves them, and the empty dirs behind image VOLUMEs.
//!
//! The checks are pure functions over a [`HostPaths`] seam (the node's
//! mountinfo and path resolution), so they are unit-tested without root.

use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::LazyLock;

use berth_proto::cri;

use crate::error::{Error, Result};

/// What the mount checks need from the node.
pub trait HostPaths {
    /// The text of berthd's `/proc/self/mountinfo` (berthd runs in the
    /// node's mount namespace, which is where kubelet made the volume).
    fn mountinfo(&self) -> io::Result<String>;
    /// The path with every symlink resolved; it must exist.
    fn canonicalize(&self, p: &Path) -> io::Result<PathBuf>;
    /// Whether anything exists at `p` (symlinks followed).
    fn exists(&self, p: &Path) -> bool;
    /// Creates a missing host directory (containerd does this for volumes
    /// kubelet did not create).
    fn create_dir_all(&self, p: &Path) -> io::Result<()>;
}

/// The real node.
#[derive(Debug, Clone, Copy)]
pub struct RealHost;

impl HostPaths for RealHost {
    fn mountinfo(&self) -> io::Result<String> {
        std::fs::read_to_string("/proc/self/mountinfo")
    }
    fn canonicalize(&self, p: &Path) -> io::Result<PathBuf> {
        std::fs::canonicalize(p)
    }
    fn exists(&self, p: &Path) -> bool {
        p.exists()
    }
    fn create_dir_all(&self, p: &Path) -> io::Result<()> {
        std::fs::create_dir_all(p)
    }
}

/// Whether the kernel has mount_setattr(2) (Linux >= 5.12), which recursive
/// read-only mounts need. Probed once; `Status` advertises it.
pub static RECURSIVE_READ_ONLY_SUPPORTED: LazyLock<bool> = LazyLock::new(probe_mount_setattr);

fn probe_mount_setattr() -> bool {
    // An invalid call: a kernel with the syscall says EBADF/EINVAL, one
    // without says ENOSYS. Nothing is changed either way.
    // SAFETY: the path is a valid NUL-terminated string, the attr pointer is
    // null with size 0, and fd -1 refers to nothing; the kernel only reads.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            -1 as libc::c_int,
            c"".as_ptr(),
            0 as libc::c_uint,
            std::ptr::null::<libc::c_void>(),
            0usize,
        )
    };
    supported_by_answer(rc, io::Error::last_os_error().raw_os_error())
}

/// The syscall exists unless the kernel answered ENOSYS.
fn supported_by_answer(rc: libc::c_long, errno: Option<i32>) -> bool {
    !(rc == -1 && errno == Some(libc::ENOSYS))
}

/// Checks one CRI mount against the rules CRI states for its fields.
pub fn validate(m: &cri::Mount) -> Result<()> {
    if !m.container_path.starts_with('/') {
        return Err(Error::InvalidArgument(format!(
            "mount container_path {:?} must be absolute",
            m.container_path
        )));
    }
    check_destination(&m.container_path, MountOrigin::Cri)?;
    if m.host_path.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "mount {:?} has no host_path",
            m.container_path
        )));
    }
    if m.recursive_read_only {
        // CRI: "If recursive_read_only is set to true, readonly must be true
        // and propagation must be PROPAGATION_PRIVATE."
        if !m.readonly {
            return Err(Error::InvalidArgument(format!(
                "mount {:?}: recursive_read_only requires readonly",
                m.container_path
            )));
        }
        if m.propagation != cri::MountPropagation::PropagationPrivate as i32 {
            return Err(Error::InvalidArgument(format!(
                "mount {:?}: recursive_read_only requires private propagation, not {}",
                m.container_path,
                propagation_name(m.propagation)
            )));
        }
    }
    Ok(())
}

/// Where a mount comes from: the two have different rights below `/dev`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountOrigin {
    /// A CRI mount (kubelet: volumes, /dev/termination-log, /etc/hosts).
    Cri,
    /// An image's `VOLUME`: an empty dir the image asked for.
    ImageVolume,
}

/// Files below /proc that a CRI mount may cover: lxcfs's views (runc allows
/// exactly these, for the same reason).
const PROC_FILES_ALLOWED: &[&str] = &[
    "/proc/cpuinfo",
    "/proc/diskstats",
    "/proc/meminfo",
    "/proc/stat",
    "/proc/swaps",
    "/proc/uptime",
    "/proc/loadavg",
    "/proc/slabinfo",
];

/// Below /sys, only the BPF filesystem may be a CRI mount (CNI agents such
/// as Cilium's pin their maps there through a hostPath of the node's).
const SYS_DIRS_ALLOWED: &[&str] = &["/sys/fs/bpf"];

/// `container_path` with `.`, `..` and repeated slashes folded the way the
/// init resolves them inside the root (`..` stops at `/`).
pub fn normalize(container_path: &str) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in Path::new(container_path).components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

/// Refuses a mount over the kernel's interfaces: anything at or below
/// `/proc` or `/sys` (an empty dir over `/proc/self/attr` would swallow the
/// AppArmor profile write: runc CVE-2019-16884), `/dev` itself and its
/// system mounts `/dev/pts` and `/dev/mqueue`. An image VOLUME may cover
/// nothing below `/dev` either; a CRI mount may (kubelet's
/// `/dev/termination-log`, a memory emptyDir at `/dev/shm`). The init checks
/// the resolved destination again, for paths an image's symlinks redirect.
pub fn check_destination(container_path: &str, origin: MountOrigin) -> Result<()> {
    let p = normalize(container_path);
    let under = |base: &str| p.starts_with(base);
    let refused = match origin {
        MountOrigin::ImageVolume => under("/proc") || under("/sys") || under("/dev"),
        MountOrigin::Cri => {
            (under("/proc") && !PROC_FILES_ALLOWED.iter().any(|f| p == Path::new(f)))
                || (under("/sys") && !SYS_DIRS_ALLOWED.iter().any(|d| p.starts_with(d)))
                || p == Path::new("/dev")
                || under("/dev/pts")
                || under("/dev/mqueue")
        }
    };
    if refused {
        let what = match origin {
            MountOrigin::Cri => "mount",
            MountOrigin::ImageVolume => "image VOLUME",
        };
        return Err(Error::InvalidArgument(format!(
            "{what} {container_path:?} covers a kernel interface ({}): not allowed",
            p.display()
        )));
    }
    Ok(())
}

fn propagation_name(p: i32) -> &'static str {
    cri::MountPropagation::try_from(p)
        .map(|p| p.as_str_name())
        .unwrap_or("an unknown propagation")
}

/// One line of mountinfo, its parser, and the mount holding a path
/// (shared with berth-shim).
pub use berth_sys::mountinfo::{
    containing as mount_containing, parse as parse_mountinfo, Entry as MountInfoEntry,
};

/// CRI/containerd: Bidirectional needs the host source on a shared mount
/// (else container mounts could never reach the host); HostToContainer needs
/// shared or slave (else host mounts could never reach the container).
pub fn check_propagation(entries: &[MountInfoEntry], m: &cri::Mount, host_path: &Path) -> Result<()> {
    let want =
        cri::MountPropagation::try_from(m.propagation).unwrap_or(cri::MountPropagation::PropagationPrivate);
    if want == cri::MountPropagation::PropagationPrivate {
        return Ok(());
    }
    let Some(e) = mount_containing(entries, host_path) else {
        return Err(Error::InvalidArgument(format!(
            "mount {:?}: no mount on the node holds host path {}",
            m.container_path,
            host_path.display()
        )));
    };
    let ok = match want {
        cri::MountPropagation::PropagationBidirectional => e.shared,
        _ => e.shared || e.slave,
    };
    if ok {
        return Ok(());
    }
    let needs = if want == cri::MountPropagation::PropagationBidirectional {
        "a shared mount"
    } else {
        "a shared or slave mount"
    };
    Err(Error::InvalidArgument(format!(
        "mount {:?}: {} needs host path {} on {needs}, but {} is private \
         (make it shared, e.g. `mount --make-rshared {}`)",
        m.container_path,
        propagation_name(m.propagation),
        host_path.display(),
        e.mount_point.display(),
        e.mount_point.display()
    )))
}

/// Validates the CRI mounts and returns them with host paths resolved:
/// missing host dirs are created and symlinks followed (containerd does
/// both), so the shim binds the link's target and the propagation check
/// looks at the mount that really holds it.
pub fn resolve(mounts: &[cri::Mount], host: &dyn HostPaths) -> Result<Vec<cri::Mount>> {
    for m in mounts {
        validate(m)?;
    }
    let needs_mountinfo = mounts
        .iter()
        .any(|m| m.propagation != cri::MountPropagation::PropagationPrivate as i32);
    let entries = if needs_mountinfo {
        parse_mountinfo(
            &host
                .mountinfo()
                .map_err(|e| Error::io("read /proc/self/mountinfo", e))?,
        )
    } else {
        Vec::new()
    };
    let mut out = Vec::with_capacity(mounts.len());
    for m in mounts {
        let raw = Path::new(&m.host_path);
        if !host.exists(raw) {
            host.create_dir_all(raw)
                .map_err(|e| Error::io(format!("create host path {}", raw.display()), e))?;
        }
        let resolved = host
            .canonicalize(raw)
            .map_err(|e| Error::io(format!("resolve host path {}", raw.display()), e))?;
        check_propagation(&entries, m, &resolved)?;
        out.push(cri::Mount {
            host_path: resolved.to_string_lossy().into_owned(),
            ..m.clone()
        });
    }
    Ok(out)
}

/// `/a//b/./c/` -> `/a/b/c`, for comparing container paths.
fn clean(p: &str) -> PathBuf {
    Path::new(p)
        .components()
        .filter(|c| !matches!(c, Component::CurDir))
        .collect()
}

/// The image's VOLUMEs that no CRI mount covers, each as a read-write
/// private bind of an empty per-container dir `<volumes_dir>/<n>`
/// (containerd's default `mkdir` behaviour, without copy-up: the volume
/// starts empty, and stays writable even with a read-only rootfs). The
/// dirs live in the container's dir and go with it.
/// A VOLUME over a kernel interface is refused ([`check_destination`]).
pub fn image_volumes(
    volumes: &[String],
    cri_mounts: &[cri::Mount],
    volumes_dir: &Path,
) -> Result<Vec<cri::Mount>> {
    let wanted: Vec<&String> = volumes
        .iter()
        .filter(|v| v.starts_with('/'))
        .filter(|v| !cri_mounts.iter().any(|m| clean(&m.container_path) == clean(v)))
        .collect();
    for v in &wanted {
        check_destination(v, MountOrigin::ImageVolume)?;
    }
    Ok(wanted
        .into_iter()
        .enumerate()
        .map(|(i, v)| cri::Mount {
            container_path: clean(v).to_string_lossy().into_owned(),
            host_path: volumes_dir.join(i.to_string()).to_string_lossy().into_owned(),
            ..Default::default()
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;

    const MOUNTINFO: &str = "\
22 1 0:20 / / rw,relatime shared:1 - tmpfs newroot rw,mode=755
23 22 0:21 / /proc rw,relatime shared:2 - proc proc rw
30 22 0:25 / /tmp rw,relatime shared:9 - tmpfs tmp rw
40 30 0:30 / /tmp/priv rw,relatime - tmpfs tmpfs rw
41 30 0:31 / /tmp/slave rw,relatime master:12 - tmpfs tmpfs rw
42 30 0:32 / /tmp/with\\040space rw,relatime shared:13 master:12 - tmpfs tmpfs rw
";

    fn mount(path: &str, p: cri::MountPropagation) -> cri::Mount {
        cri::Mount {
            container_path: "/v".into(),
            host_path: path.into(),
            propagation: p as i32,
            ..Default::default()
        }
    }

    #[test]
    fn parses_optional_fields_and_escapes() {
        let e = parse_mountinfo(MOUNTINFO);
        assert_eq!(e.len(), 6);
        assert!(e[0].shared && !e[0].slave);
        assert!(!e[3].shared && !e[3].slave);
        assert!(!e[4].shared && e[4].slave);
        assert_eq!(e[5].mount_point, PathBuf::from("/tmp/with space"));
        assert!(e[5].shared && e[5].slave);
        let m = mount_containing(&e, Path::new("/tmp/priv/a/b")).unwrap();
        assert_eq!(m.mount_point, PathBuf::from("/tmp/priv"));
        // A path prefix is not a component prefix.
        let m = mount_containing(&e, Path::new("/tmp/private")).unwrap();
        assert_eq!(m.mount_point, PathBuf::from("/tmp"));
    }

    #[test]
    fn propagation_needs_a_matching_host_mount() {
        use cri::MountPropagation::*;
        let e = parse_mountinfo(MOUNTINFO);
        let ok = |p: &str, prop| check_propagation(&e, &mount(p, prop), Path::new(p));
        assert!(ok("/tmp/priv/x", PropagationPrivate).is_ok());
        assert!(matches!(
            ok("/tmp/priv/x", PropagationHostToContainer),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            ok("/tmp/priv", PropagationBidirectional),
            Err(Error::InvalidArgument(_))
        ));
        assert!(ok("/tmp/slave/x", PropagationHostToContainer).is_ok());
        assert!(matches!(
            ok("/tmp/slave/x", PropagationBidirectional),
            Err(Error::InvalidArgument(_))
        ));
        assert!(ok("/tmp/x", PropagationBidirectional).is_ok());
        assert!(ok("/tmp/with space", PropagationBidirectional).is_ok());
    }

    #[test]
    fn recursive_read_only_rules() {
        use cri::MountPropagation::*;
        let mut m = mount("/h", PropagationPrivate);
        m.recursive_read_only = true;
        assert!(
            matches!(validate(&m), Err(Error::InvalidArgument(_))),
            "needs readonly"
        );
        m.readonly = true;
        assert!(validate(&m).is_ok());
        for p in [PropagationHostToContainer, PropagationBidirectional] {
            m.propagation = p as i32;
            assert!(matches!(validate(&m), Err(Error::InvalidArgument(_))), "{p:?}");
        }
    }

    struct FakeHost {
        links: Vec<(PathBuf, PathBuf)>,
        existing: Vec<PathBuf>,
        created: RefCell<Vec<PathBuf>>,
    }

    impl HostPaths for FakeHost {
        fn mountinfo(&self) -> io::Result<String> {
            Ok(MOUNTINFO.into())
        }
        fn canonicalize(&self, p: &Path) -> io::Result<PathBuf> {
            Ok(self
                .links
                .iter()
                .find(|(l, _)| l == p)
                .map(|(_, t)| t.clone())
                .unwrap_or_else(|| p.to_path_buf()))
        }
        fn exists(&self, p: &Path) -> bool {
            self.existing.iter().any(|e| e == p) || self.links.iter().any(|(l, _)| l == p)
        }
        fn create_dir_all(&self, p: &Path) -> io::Result<()> {
            self.created.borrow_mut().push(p.to_path_buf());
            Ok(())
        }
    }

    #[test]
    fn resolves_symlinks_before_checking_propagation() {
        use cri::MountPropagation::*;
        let host = FakeHost {
            links: vec![("/tmp/link".into(), "/tmp/priv/target".into())],
            existing: vec!["/tmp/x".into()],
            created: RefCell::default(),
        };
        let got = resolve(&[mount("/tmp/link", PropagationPrivate)], &host).unwrap();
        assert_eq!(got[0].host_path, "/tmp/priv/target");
        // The link sits on a shared mount, its target does not.
        let e = resolve(&[mount("/tmp/link", PropagationHostToContainer)], &host).unwrap_err();
        assert!(e.to_string().contains("/tmp/priv"), "{e}");
        resolve(&[mount("/tmp/new", PropagationPrivate)], &host).unwrap();
        assert_eq!(*host.created.borrow(), vec![PathBuf::from("/tmp/new")]);
        assert!(host.created.borrow().len() == 1, "existing paths are not created");
    }

    #[test]
    fn image_volumes_skip_paths_cri_mounts_cover() {
        let cri_mounts = vec![cri::Mount {
            container_path: "/cache/".into(),
            host_path: "/h".into(),
            ..Default::default()
        }];
        let v = image_volumes(
            &["/cache".into(), "/data//x".into(), "relative".into()],
            &cri_mounts,
            Path::new("/c/volumes"),
        )
        .unwrap();
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].container_path, "/data/x");
        assert_eq!(v[0].host_path, "/c/volumes/0");
        assert!(!v[0].readonly);
        assert_eq!(v[0].propagation, cri::MountPropagation::PropagationPrivate as i32);
    }

    #[test]
    fn mounts_over_kernel_interfaces_are_refused() {
        use MountOrigin::*;
        for p in [
            "/proc",
            "/proc/self/attr",
            "/proc/1/../self/attr/",
            "//sys",
            "/sys/kernel",
            "/dev",
            "/dev/",
            "/dev/pts",
            "/dev/mqueue/x",
            "/../proc/sys",
        ] {
            for origin in [Cri, ImageVolume] {
                let e = check_destination(p, origin).unwrap_err();
                assert!(matches!(e, Error::InvalidArgument(_)), "{p}");
                assert!(e.to_string().contains(p), "{p}: {e}");
            }
        }
        for p in [
            "/dev/termination-log",
            "/dev/shm",
            "/proc/meminfo",
            "/sys/fs/bpf",
            "/data/proc",
        ] {
            assert!(check_destination(p, Cri).is_ok(), "{p}");
        }
        for p in ["/dev/termination-log", "/dev/shm", "/proc/meminfo", "/sys/fs/bpf"] {
            assert!(check_destination(p, ImageVolume).is_err(), "{p}");
        }
        let m = cri::Mount {
            container_path: "/proc/self/attr".into(),
            host_path: "/h".into(),
            ..Default::default()
        };
        assert!(matches!(validate(&m), Err(Error::InvalidArgument(_))));
        let e = image_volumes(&["/dev/pts".into()], &[], Path::new("/c/volumes")).unwrap_err();
        assert!(e.to_string().contains("/dev/pts"), "{e}");
    }

    #[test]
    fn probe_answers_what_the_kernel_has() {
        assert!(!supported_by_answer(-1, Some(libc::ENOSYS)));
        assert!(supported_by_answer(-1, Some(libc::EBADF)));
        assert!(supported_by_answer(-1, Some(libc::EINVAL)));
        // The probe changes nothing.
        let before = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let probed = probe_mount_setattr();
        assert_eq!(std::fs::read_to_string("/proc/self/mountinfo").unwrap(), before);
        assert_eq!(*RECURSIVE_READ_ONLY_SUPPORTED, probed);
        // mount_setattr(2) came in Linux 5.12. A seccomp filter may hide it
        // (ENOSYS) from a sandboxed test run; unfiltered, the probe must
        // agree with the kernel version.
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        if status.lines().any(|l| l.split_whitespace().eq(["Seccomp:", "0"])) {
            let release = nix::sys::utsname::uname().unwrap();
            let release = release.release().to_string_lossy();
            let mut v = release.split(['.', '-']).map(|p| p.parse::<u32>().unwrap_or(0));
            let (major, minor) = (v.next().unwrap_or(0), v.next().unwrap_or(0));
            assert_eq!(probed, (major, minor) >= (5, 12), "kernel {release}");
        }
    }
}
