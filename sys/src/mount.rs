//! mount_setattr(2) (Linux >= 5.12), which nix does not wrap: mount
//! attributes changed on a mount, or on a whole tree of them at once.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// MOUNT_ATTR_RDONLY of <linux/mount.h>.
pub const ATTR_RDONLY: u64 = 0x1;
/// MOUNT_ATTR_NOSUID.
pub const ATTR_NOSUID: u64 = 0x2;
/// MOUNT_ATTR_NODEV.
pub const ATTR_NODEV: u64 = 0x4;

/// `struct mount_attr` of <linux/mount.h> (MOUNT_ATTR_SIZE_VER0, 32 bytes).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// Sets the attributes `set` (`ATTR_*`) on the mount at `path` relative to
/// `dir` (None: the cwd), with `flags` (`AT_EMPTY_PATH` for the mount fd
/// `dir` itself, `AT_RECURSIVE` for every mount below too).
pub fn set_attr(dir: Option<BorrowedFd<'_>>, path: &CStr, flags: libc::c_uint, set: u64) -> io::Result<()> {
    let attr = MountAttr {
        attr_set: set,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    let dirfd = dir.map_or(libc::AT_FDCWD, |d| d.as_raw_fd());
    // SAFETY: `path` is NUL-terminated and `attr` a live, correctly laid
    // out mount_attr whose size is passed; the kernel only reads both
    // during the call, and `dir` is borrowed for it.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            dirfd,
            path.as_ptr(),
            flags,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whatever the kernel and our privileges, a path that is no mount
    /// never gets attributes: the call reaches the kernel and fails.
    #[test]
    fn a_missing_path_is_an_error() {
        let e = set_attr(None, c"/nonexistent/berth-sys", 0, ATTR_RDONLY).unwrap_err();
        assert!(e.raw_os_error().is_some(), "{e}");
    }
}
