//! Pinning namespaces with bind mounts of their `/proc/<pid>/ns/*` files, so
//! they live on without any process in them.

use std::path::Path;

use nix::mount::{mount, umount2, MntFlags, MsFlags};

use crate::error::{Error, Result};

/// Bind-mounts namespace file `ns` onto `at` (created as an empty file).
pub fn pin(ns: &Path, at: &Path) -> Result<()> {
    std::fs::File::create(at).map_err(|e| Error::io(format!("create pin {}", at.display()), e))?;
    mount(Some(ns), at, None::<&str>, MsFlags::MS_BIND, None::<&str>).map_err(|e| {
        let _ = std::fs::remove_file(at);
        Error::io(format!("pin {} at {}", ns.display(), at.display()), e.into())
    })
}

/// Bind-mounts the open namespace file `ns` onto `at`: what was opened is
/// what gets pinned, whatever its path names by now.
pub fn pin_file(ns: &std::fs::File, at: &Path) -> Result<()> {
    use std::os::fd::AsRawFd;
    pin(Path::new(&format!("/proc/self/fd/{}", ns.as_raw_fd())), at)
}

/// Unmounts and deletes a pin; a missing pin is fine.
pub fn unpin(at: &Path) -> Result<()> {
    match umount2(at, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => return Err(Error::io(format!("unpin {}", at.display()), e.into())),
    }
    match std::fs::remove_file(at) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(format!("remove pin {}", at.display()), e)),
    }
}
