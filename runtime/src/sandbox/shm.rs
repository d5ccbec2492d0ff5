//! The pod's `/dev/shm`: one tmpfs per sandbox, mounted under its state dir
//! at RunPodSandbox and bind-mounted as `/dev/shm` into every container, so
//! the containers of a pod share POSIX shared memory (as they share the IPC
//! namespace) and its content outlives every container — including an
//! in-place restart of all of them — until RemovePodSandbox.
//!
//! A host-IPC pod (`NamespaceMode::NODE` for ipc) gets the node's own
//! `/dev/shm` instead, like containerd and CRI-O give it: shm segments and
//! `/dev/shm` files belong together.

use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

pub use crate::config::defaults::DEFAULT_SHM_SIZE_BYTES as DEFAULT_SIZE_BYTES;

/// The node's `/dev/shm`, bound into host-IPC pods.
pub const HOST_DEV_SHM: &str = "/dev/shm";

/// Where a pod's containers get `/dev/shm` from (kept in the sandbox record).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodShm {
    /// The directory bound to `/dev/shm` in each container.
    pub source: PathBuf,
    /// Berth mounted `source` for this pod (and unmounts it at remove);
    /// false for the node's `/dev/shm`.
    pub owned: bool,
}

/// The host operations behind a pod's `/dev/shm` (the seam unit tests fake).
pub trait ShmHost: Send + Sync {
    /// Mounts a fresh tmpfs at the existing directory `at`.
    fn mount_tmpfs(&self, at: &Path, size_bytes: u64) -> std::io::Result<()>;
    /// Detaches the mount at `at`; nothing mounted there is not an error.
    fn unmount(&self, at: &Path) -> std::io::Result<()>;
}

/// The real `mount(2)` / `umount2(2)`.
pub struct RealShmHost;

/// The tmpfs data: world-writable with the sticky bit, like every `/dev/shm`.
pub fn tmpfs_data(size_bytes: u64) -> String {
    format!("mode=1777,size={size_bytes}")
}

impl ShmHost for RealShmHost {
    fn mount_tmpfs(&self, at: &Path, size_bytes: u64) -> std::io::Result<()> {
        let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
        mount(
            Some("shm"),
            at,
            Some("tmpfs"),
            flags,
            Some(tmpfs_data(size_bytes).as_str()),
        )
        .map_err(std::io::Error::from)
    }

    fn unmount(&self, at: &Path) -> std::io::Result<()> {
        // MNT_DETACH: a container mount namespace that has not gone yet keeps
        // its copy; the tmpfs is freed with the last one. EINVAL: not a mount
        // point (a reboot emptied the state dir, or a retried remove).
        match umount2(at, MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// Sets up the pod's `/dev/shm` under `state_dir` (or picks the node's for a
/// host-IPC pod). On error nothing is left mounted or created.
pub fn setup(host: &dyn ShmHost, state_dir: &Path, host_ipc: bool, size_bytes: u64) -> Result<PodShm> {
    if host_ipc {
        return Ok(PodShm {
            source: HOST_DEV_SHM.into(),
            owned: false,
        });
    }
    let dir = state_dir.join("shm");
    std::fs::create_dir(&dir).map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
    if let Err(e) = host.mount_tmpfs(&dir, size_bytes) {
        let _ = std::fs::remove_dir(&dir);
        return Err(Error::io(format!("mount pod tmpfs at {}", dir.display()), e));
    }
    Ok(PodShm {
        source: dir,
        owned: true,
    })
}

/// Unmounts a pod's own `/dev/shm` (content is gone); the node's is left
/// alone. Idempotent, so a retried RemovePodSandbox passes.
pub fn teardown(host: &dyn ShmHost, shm: &PodShm) -> Result<()> {
    if !shm.owned {
        return Ok(());
    }
    host.unmount(&shm.source)
        .map_err(|e| Error::io(format!("unmount pod tmpfs {}", shm.source.display()), e))
}

#[cfg(test)]
pub(crate) mod fake {
    use super::*;
    use std::sync::Mutex;

    /// Records calls; `fail_mount` makes the next mount fail.
    #[derive(Default)]
    pub struct FakeShmHost {
        pub calls: Mutex<Vec<String>>,
        pub fail_mount: std::sync::atomic::AtomicBool,
    }

    impl ShmHost for FakeShmHost {
        fn mount_tmpfs(&self, at: &Path, size_bytes: u64) -> std::io::Result<()> {
            if self.fail_mount.swap(false, std::sync::atomic::Ordering::SeqCst) {
                return Err(std::io::Error::from_raw_os_error(libc::ENOMEM));
            }
            self.calls
                .lock()
                .unwrap()
                .push(format!("mount {} {}", at.display(), tmpfs_data(size_bytes)));
            Ok(())
        }
        fn unmount(&self, at: &Path) -> std::io::Result<()> {
            self.calls
                .lock()
                .unwrap()
                .push(format!("umount {}", at.display()));
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fake::FakeShmHost;
    use super::*;

    #[test]
    fn own_tmpfs_under_the_state_dir_and_unmounted_at_teardown() {
        let d = tempfile::tempdir().unwrap();
        let host = FakeShmHost::default();
        let shm = setup(&host, d.path(), false, DEFAULT_SIZE_BYTES).unwrap();
        assert_eq!(
            shm,
            PodShm {
                source: d.path().join("shm"),
                owned: true
            }
        );
        assert!(shm.source.is_dir());
        teardown(&host, &shm).unwrap();
        let dir = d.path().join("shm").display().to_string();
        assert_eq!(
            *host.calls.lock().unwrap(),
            [
                format!("mount {dir} mode=1777,size=67108864"),
                format!("umount {dir}")
            ]
        );
    }

    #[test]
    fn host_ipc_pods_use_the_nodes_dev_shm_and_never_unmount_it() {
        let d = tempfile::tempdir().unwrap();
        let host = FakeShmHost::default();
        let shm = setup(&host, d.path(), true, DEFAULT_SIZE_BYTES).unwrap();
        assert_eq!(shm.source, Path::new("/dev/shm"));
        assert!(!shm.owned);
        teardown(&host, &shm).unwrap();
        assert!(host.calls.lock().unwrap().is_empty());
        assert!(!d.path().join("shm").exists());
    }

    #[test]
    fn a_failed_mount_leaves_no_directory() {
        let d = tempfile::tempdir().unwrap();
        let host = FakeShmHost::default();
        host.fail_mount.store(true, std::sync::atomic::Ordering::SeqCst);
        let e = setup(&host, d.path(), false, 1 << 20).unwrap_err().to_string();
        assert!(e.contains("mount pod tmpfs"), "{e}");
        assert!(!d.path().join("shm").exists());
        assert!(host.calls.lock().unwrap().is_empty());
    }
}
