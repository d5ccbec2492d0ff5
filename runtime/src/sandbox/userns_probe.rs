//! The start-up probe for pod user namespaces: can this kernel create a
//! user namespace, and can the filesystem under berthd's root be idmapped
//! (a pod's image layers are mounted idmapped from there)?
//!
//! Support depends on the filesystem as well as the kernel: Debian's 6.1
//! idmaps ext4, xfs and btrfs but not tmpfs, which gained it in 6.3. The
//! answer is kept for Status and for the message refusing such a pod; the
//! kernel is asked through [`ProbeHost`], so the decision is unit-tested
//! without root.

use std::io;
use std::path::Path;

/// What the probe asks the kernel.
pub trait ProbeHost {
    /// The kernel release (`uname -r`).
    fn kernel_release(&self) -> io::Result<String>;
    /// The statfs magic of the filesystem holding `dir`.
    fn fs_magic(&self, dir: &Path) -> io::Result<i64>;
    /// Creates a user namespace and, on success, idmaps a detached clone of
    /// `dir`'s mount through it.
    fn try_idmap(&self, dir: &Path) -> Result<(), ProbeFailure>;
}

/// Which step of the probe failed.
#[derive(Debug)]
pub enum ProbeFailure {
    /// No user namespace could be created.
    Userns(io::Error),
    /// The namespace exists but the mount could not be idmapped.
    Idmap(io::Error),
}

/// The probe's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsernsSupport {
    /// Whether pods may get user namespaces with idmapped root filesystems.
    pub supported: bool,
    /// The filesystem type under berthd's root (`ext4`, `tmpfs`, ...).
    pub fs: String,
    /// The kernel release.
    pub kernel: String,
    /// Why not, when not supported.
    pub reason: Option<String>,
}

impl UsernsSupport {
    /// One line for logs and for refusing a pod.
    pub fn describe(&self) -> String {
        match &self.reason {
            None => format!(
                "user namespaces supported ({} on kernel {})",
                self.fs, self.kernel
            ),
            Some(r) => format!(
                "user namespaces unavailable: {r} ({} on kernel {})",
                self.fs, self.kernel
            ),
        }
    }
}

/// Probes `root` (berthd's root directory).
pub fn probe(host: &dyn ProbeHost, root: &Path) -> UsernsSupport {
    let kernel = host.kernel_release().unwrap_or_else(|e| format!("unknown ({e})"));
    let fs = match host.fs_magic(root) {
        Ok(m) => fs_name(m),
        Err(e) => format!("unknown ({e})"),
    };
    let reason = match host.try_idmap(root) {
        Ok(()) => None,
        Err(ProbeFailure::Userns(e)) => Some(format!("the kernel cannot create a user namespace: {e}")),
        Err(ProbeFailure::Idmap(e)) => Some(format!(
            "{} cannot be idmapped ({fs} filesystem): {e}",
            root.display()
        )),
    };
    UsernsSupport {
        supported: reason.is_none(),
        fs,
        kernel,
        reason,
    }
}

/// The name of a statfs magic, for the filesystems a node's root is on.
pub fn fs_name(magic: i64) -> String {
    match magic {
        0xEF53 => "ext4".into(),
        0x0102_1994 => "tmpfs".into(),
        0x5846_5342 => "xfs".into(),
        0x9123_683E => "btrfs".into(),
        0x794C_7630 => "overlay".into(),
        0x2FC1_2FC1 => "zfs".into(),
        0x6969 => "nfs".into(),
        m => format!("filesystem 0x{m:x}"),
    }
}

/// The running kernel, through berth-sys.
pub struct RealProbe;

impl ProbeHost for RealProbe {
    fn kernel_release(&self) -> io::Result<String> {
        Ok(nix::sys::utsname::uname()?
            .release()
            .to_string_lossy()
            .into_owned())
    }

    fn fs_magic(&self, dir: &Path) -> io::Result<i64> {
        Ok(nix::sys::statfs::statfs(dir)?.filesystem_type().0 as i64)
    }

    fn try_idmap(&self, dir: &Path) -> Result<(), ProbeFailure> {
        // Ids far from any pod's: the probe namespace is gone in an instant.
        let map = "0 4294901760 65535\n";
        let ns = berth_sys::idmap::userns_fd(map, map).map_err(ProbeFailure::Userns)?;
        berth_sys::idmap::idmapped_clone(dir, &ns)
            .map(drop)
            .map_err(ProbeFailure::Idmap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fake {
        magic: i64,
        result: fn() -> Result<(), ProbeFailure>,
    }

    impl ProbeHost for Fake {
        fn kernel_release(&self) -> io::Result<String> {
            Ok("6.1.0-18-amd64".into())
        }
        fn fs_magic(&self, _: &Path) -> io::Result<i64> {
            Ok(self.magic)
        }
        fn try_idmap(&self, _: &Path) -> Result<(), ProbeFailure> {
            (self.result)()
        }
    }

    #[test]
    fn ext4_that_idmaps_is_supported() {
        let s = probe(
            &Fake {
                magic: 0xEF53,
                result: || Ok(()),
            },
            Path::new("/var/lib/berth"),
        );
        assert!(s.supported);
        assert_eq!(
            s.describe(),
            "user namespaces supported (ext4 on kernel 6.1.0-18-amd64)"
        );
    }

    #[test]
    fn tmpfs_that_cannot_idmap_is_refused_naming_fs_and_kernel() {
        let s = probe(
            &Fake {
                magic: 0x0102_1994,
                result: || Err(ProbeFailure::Idmap(io::Error::from_raw_os_error(libc::EINVAL))),
            },
            Path::new("/var/lib/berth"),
        );
        assert!(!s.supported);
        let d = s.describe();
        assert!(
            d.contains("/var/lib/berth cannot be idmapped (tmpfs filesystem)"),
            "{d}"
        );
        assert!(d.contains("tmpfs on kernel 6.1.0-18-amd64"), "{d}");
    }

    #[test]
    fn no_user_namespace_is_refused() {
        let s = probe(
            &Fake {
                magic: 0xEF53,
                result: || Err(ProbeFailure::Userns(io::Error::from_raw_os_error(libc::ENOSPC))),
            },
            Path::new("/r"),
        );
        assert!(!s.supported);
        assert!(
            s.describe().contains("cannot create a user namespace"),
            "{}",
            s.describe()
        );
    }

    #[test]
    fn unknown_magics_are_named_by_number() {
        assert_eq!(fs_name(0x1234), "filesystem 0x1234");
        assert_eq!(fs_name(0x5846_5342), "xfs");
    }

    /// The real kernel: the host tests run as root on ext4, which idmaps.
    #[test]
    fn the_real_probe_names_the_filesystem() {
        let dir = std::env::temp_dir();
        let s = probe(&RealProbe, &dir);
        assert!(!s.kernel.starts_with("unknown"), "{s:?}");
        assert!(!s.fs.starts_with("unknown"), "{s:?}");
        println!("{}", s.describe());
    }
}
