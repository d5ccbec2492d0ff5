//! Start-up checks of the host: what berthd needs from the kernel before it
//! serves (README "The host needs"). Every missing piece is named in one
//! error, so an operator fixes the node in one round, not one per restart.
//!
//! Kernel facts come through [`HostFacts`], so the messages are unit-tested
//! with a fake kernel; cgroup facts come from the cgroup root, which tests
//! lay out in a temp dir.

use std::io;

use crate::cgroup::CgroupManager;
use crate::error::{Error, Result};

/// The oldest kernel berthd runs on: `cgroup.kill` came in 5.14.
pub const MIN_KERNEL: (u32, u32) = (5, 14);

/// What the start-up checks ask the kernel.
pub trait HostFacts {
    /// The kernel release (`uname -r`), e.g. `6.1.0-18-amd64`.
    fn kernel_release(&self) -> io::Result<String>;
    /// The text of `/proc/filesystems`.
    fn filesystems(&self) -> io::Result<String>;
    /// Asks the kernel to load filesystem module `name` (a node may not
    /// have loaded overlay yet; the kernel lists it only once loaded).
    fn load_module(&self, name: &str) -> io::Result<()>;
}

/// The running kernel.
pub struct RealHost;

impl HostFacts for RealHost {
    fn kernel_release(&self) -> io::Result<String> {
        Ok(nix::sys::utsname::uname()?
            .release()
            .to_string_lossy()
            .into_owned())
    }

    fn filesystems(&self) -> io::Result<String> {
        std::fs::read_to_string("/proc/filesystems")
    }

    fn load_module(&self, name: &str) -> io::Result<()> {
        let out = std::process::Command::new("modprobe")
            .arg(name)
            .stdin(std::process::Stdio::null())
            .output()?;
        if out.status.success() {
            return Ok(());
        }
        Err(io::Error::other(format!(
            "modprobe {name}: {} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// Checks the kernel version, overlayfs, the cgroup v2 controllers and
/// `cgroup.kill`; the error lists every one that is missing.
pub fn check(host: &dyn HostFacts, cgroups: &CgroupManager) -> Result<()> {
    let mut missing = Vec::new();
    if let Err(m) = kernel_new_enough(host) {
        missing.push(m);
    }
    if let Err(m) = overlay_available(host) {
        missing.push(m);
    }
    if let Err(e) = cgroups.check_host() {
        missing.push(e.to_string());
    }
    // Without a cgroup v2 root (named above) there is nothing to look in.
    if cgroups.dir("cgroup.controllers").is_file() {
        if let Err(e) = cgroups.check_kill() {
            missing.push(e.to_string());
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    Err(Error::FailedPrecondition(format!(
        "this host cannot run berth: {}",
        missing.join("; ")
    )))
}

fn kernel_new_enough(host: &dyn HostFacts) -> std::result::Result<(), String> {
    let release = host
        .kernel_release()
        .map_err(|e| format!("cannot read the kernel release: {e}"))?;
    let (want_major, want_minor) = MIN_KERNEL;
    match parse_release(&release) {
        Some(v) if v >= MIN_KERNEL => Ok(()),
        Some(_) => Err(format!(
            "kernel {release} is older than {want_major}.{want_minor} (berth needs cgroup.kill)"
        )),
        None => Err(format!(
            "kernel release {release:?} is not MAJOR.MINOR...; berth needs {want_major}.{want_minor} or later"
        )),
    }
}

/// `6.1.0-18-amd64` -> (6, 1).
fn parse_release(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor: String = parts.next()?.chars().take_while(char::is_ascii_digit).collect();
    Some((major, minor.parse().ok()?))
}

fn overlay_available(host: &dyn HostFacts) -> std::result::Result<(), String> {
    let listed = |text: &str| {
        text.lines()
            .any(|l| l.split_whitespace().last() == Some("overlay"))
    };
    let text = host
        .filesystems()
        .map_err(|e| format!("cannot read /proc/filesystems: {e}"))?;
    if listed(&text) {
        return Ok(());
    }
    let loaded = host.load_module("overlay");
    if host.filesystems().is_ok_and(|t| listed(&t)) {
        return Ok(());
    }
    let why = loaded.err().map(|e| format!(": {e}")).unwrap_or_default();
    Err(format!(
        "overlayfs is missing (no \"overlay\" in /proc/filesystems, and loading the module failed{why})"
    ))
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::path::Path;

    use super::*;

    /// A kernel that answers what it is told to.
    struct FakeKernel {
        release: &'static str,
        filesystems: &'static str,
        /// What /proc/filesystems lists once `load_module` was called.
        after_load: Option<&'static str>,
        loaded: Cell<bool>,
    }

    impl FakeKernel {
        fn new(release: &'static str, filesystems: &'static str) -> Self {
            FakeKernel {
                release,
                filesystems,
                after_load: None,
                loaded: Cell::new(false),
            }
        }
    }

    impl HostFacts for FakeKernel {
        fn kernel_release(&self) -> io::Result<String> {
            Ok(self.release.into())
        }
        fn filesystems(&self) -> io::Result<String> {
            match (self.loaded.get(), self.after_load) {
                (true, Some(t)) => Ok(t.into()),
                _ => Ok(self.filesystems.into()),
            }
        }
        fn load_module(&self, name: &str) -> io::Result<()> {
            self.loaded.set(true);
            match self.after_load {
                Some(_) => Ok(()),
                None => Err(io::Error::other(format!("modprobe {name}: exit status: 1"))),
            }
        }
    }

    const WITH_OVERLAY: &str = "nodev\tsysfs\nnodev\ttmpfs\n\text4\nnodev\toverlay\nnodev\tcgroup2\n";
    const WITHOUT_OVERLAY: &str = "nodev\tsysfs\nnodev\ttmpfs\n\text4\nnodev\tcgroup2\n";

    /// A cgroup2 root with the required controllers and a child cgroup,
    /// with or without `cgroup.kill`.
    fn cgroup_root(with_kill: bool) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let write = |p: &Path, text: &str| std::fs::write(p, text).unwrap();
        write(&d.path().join("cgroup.controllers"), "cpuset cpu io memory pids");
        let child = d.path().join("init.scope");
        std::fs::create_dir(&child).unwrap();
        write(&child.join("cgroup.controllers"), "cpu memory pids");
        if with_kill {
            write(&child.join("cgroup.kill"), "");
        }
        d
    }

    fn check_with(kernel: &FakeKernel, cg: &Path) -> Result<()> {
        check(kernel, &CgroupManager::new(cg))
    }

    #[test]
    fn a_complete_host_passes() {
        let cg = cgroup_root(true);
        check_with(&FakeKernel::new("6.1.0-18-amd64", WITH_OVERLAY), cg.path()).unwrap();
        check_with(&FakeKernel::new("5.14.0", WITH_OVERLAY), cg.path()).unwrap();
    }

    #[test]
    fn an_old_kernel_is_named_with_the_version_needed() {
        let cg = cgroup_root(true);
        let err = check_with(&FakeKernel::new("5.10.0-28-amd64", WITH_OVERLAY), cg.path()).unwrap_err();
        assert!(matches!(err, Error::FailedPrecondition(_)));
        assert_eq!(
            err.to_string(),
            "this host cannot run berth: kernel 5.10.0-28-amd64 is older than 5.14 (berth needs cgroup.kill)"
        );
        let err = check_with(&FakeKernel::new("4.19.0", WITH_OVERLAY), cg.path()).unwrap_err();
        assert!(
            err.to_string().contains("kernel 4.19.0 is older than 5.14"),
            "{err}"
        );
        let err = check_with(&FakeKernel::new("linux", WITH_OVERLAY), cg.path()).unwrap_err();
        assert!(err.to_string().contains("\"linux\" is not MAJOR.MINOR"), "{err}");
    }

    #[test]
    fn missing_overlayfs_is_named_after_trying_to_load_it() {
        let cg = cgroup_root(true);
        let kernel = FakeKernel::new("6.1.0", WITHOUT_OVERLAY);
        let err = check_with(&kernel, cg.path()).unwrap_err().to_string();
        assert!(kernel.loaded.get(), "the module was asked for");
        assert!(err.contains("overlayfs is missing"), "{err}");
        assert!(err.contains("modprobe overlay: exit status: 1"), "{err}");
        // Not loaded yet, but loadable: fine.
        let kernel = FakeKernel {
            after_load: Some(WITH_OVERLAY),
            ..FakeKernel::new("6.1.0", WITHOUT_OVERLAY)
        };
        check_with(&kernel, cg.path()).unwrap();
        // "overlay" must be the filesystem's name, not part of one.
        let kernel = FakeKernel::new("6.1.0", "nodev\toverlayish\n");
        assert!(check_with(&kernel, cg.path()).is_err());
    }

    #[test]
    fn missing_cgroup_kill_is_named() {
        let cg = cgroup_root(false);
        let err = check_with(&FakeKernel::new("6.1.0", WITH_OVERLAY), cg.path())
            .unwrap_err()
            .to_string();
        assert!(err.contains("has no cgroup.kill"), "{err}");
        assert!(err.contains("init.scope"), "{err}");
    }

    #[test]
    fn every_missing_piece_is_in_one_message() {
        let cg = cgroup_root(false);
        std::fs::write(cg.path().join("cgroup.controllers"), "cpu").unwrap();
        let err = check_with(&FakeKernel::new("5.10.0", WITHOUT_OVERLAY), cg.path())
            .unwrap_err()
            .to_string();
        for part in [
            "kernel 5.10.0 is older than 5.14",
            "overlayfs is missing",
            "lacks controller(s) memory, pids",
            "has no cgroup.kill",
        ] {
            assert!(err.contains(part), "{part:?} missing from {err}");
        }
    }
}
