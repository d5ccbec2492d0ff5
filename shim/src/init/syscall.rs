//! Every call by which the init and exec stages change the kernel's state:
//! namespaces, mounts, pivot_root, device nodes, identity, capabilities,
//! limits and the final execve. The rootfs and process steps make them
//! through [`Syscall`], so the order and arguments of each step are unit-
//! tested with a recording fake (`init::fake`) and no root; [`Linux`] does
//! them for real.
//!
//! Path resolution inside the root (`inroot`) stays real: it only opens
//! and reads, and a test serves it a temporary directory as the rootfs.
//! Each method keeps the error type of the call it wraps (nix's `Errno`
//! or `std::io::Error`), so init's messages to berthd read as before.

use std::ffi::{CStr, CString};
use std::os::fd::BorrowedFd;
use std::path::Path;

use caps::{CapSet, Capability};
use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;
use nix::sys::stat::{Mode, SFlag};
use nix::sys::statfs::FsType;
use nix::unistd::{Gid, Uid};

use super::seccomp::Program;

/// What a path names, as the steps need to know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// A directory.
    Dir,
    /// Anything else.
    Other,
}

/// The syscalls of the init and exec stages.
pub trait Syscall {
    /// setns(2) into the namespace `fd` names.
    fn setns(&self, fd: BorrowedFd<'_>, flag: CloneFlags) -> nix::Result<()>;
    /// unshare(2).
    fn unshare(&self, flags: CloneFlags) -> nix::Result<()>;
    /// sethostname(2).
    fn sethostname(&self, name: &str) -> nix::Result<()>;
    /// mount(2).
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> nix::Result<()>;
    /// umount2(2).
    fn umount2(&self, target: &Path, flags: MntFlags) -> nix::Result<()>;
    /// mount_setattr(2) with AT_RECURSIVE and MOUNT_ATTR_RDONLY.
    fn set_readonly_recursive(&self, path: &Path) -> std::io::Result<()>;
    /// pivot_root(2).
    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> nix::Result<()>;
    /// chdir(2).
    fn chdir(&self, path: &Path) -> nix::Result<()>;
    /// fchdir(2).
    fn fchdir(&self, dir: BorrowedFd<'_>) -> nix::Result<()>;
    /// fstatfs(2): the filesystem `fd` is on.
    fn fs_type(&self, fd: BorrowedFd<'_>) -> nix::Result<FsType>;
    /// stat(2) (`follow`) or lstat(2) of a path.
    fn kind(&self, path: &Path, follow: bool) -> std::io::Result<FileKind>;
    /// Writes a whole (kernel) file: cgroup.procs, sysctls, /proc/self/*.
    fn write_file(&self, path: &Path, data: &[u8]) -> std::io::Result<()>;
    /// Reads a whole (kernel) file: mountinfo.
    fn read_file(&self, path: &Path) -> std::io::Result<String>;
    /// The kernel's view of our identity: the real uid, the real gid and
    /// every supplementary group (getuid, getgid, getgroups: the values
    /// /proc/self/status shows, without building that file).
    fn credentials(&self) -> std::io::Result<(u32, u32, Vec<u32>)>;
    /// symlinkat(2).
    fn symlinkat(&self, target: &str, dir: BorrowedFd<'_>, name: &str) -> nix::Result<()>;
    /// mknodat(2).
    fn mknodat(
        &self,
        dir: BorrowedFd<'_>,
        name: &Path,
        kind: SFlag,
        mode: Mode,
        rdev: u64,
    ) -> nix::Result<()>;
    /// chmod(2).
    fn chmod(&self, path: &Path, mode: u32) -> std::io::Result<()>;
    /// umask(2): sets the mask, returns the one before.
    fn umask(&self, mask: u32) -> u32;
    /// fchownat(2) of the file `fd` holds itself (AT_EMPTY_PATH).
    fn fchown(&self, fd: BorrowedFd<'_>, uid: u32, gid: u32) -> nix::Result<()>;
    /// setrlimit(2).
    fn setrlimit(&self, resource: libc::__rlimit_resource_t, soft: u64, hard: u64) -> std::io::Result<()>;
    /// Installs a seccomp filter.
    fn seccomp(&self, program: &Program) -> anyhow::Result<()>;
    /// Drops one capability from the bounding set.
    fn drop_bounding(&self, cap: Capability) -> Result<(), caps::errors::CapsError>;
    /// Raises one ambient capability.
    fn raise_ambient(&self, cap: Capability) -> Result<(), caps::errors::CapsError>;
    /// capset(2) of the effective, permitted and inheritable sets at once.
    fn capset(&self, effective: u64, permitted: u64, inheritable: u64) -> std::io::Result<()>;
    /// setgroups(2).
    fn setgroups(&self, groups: &[Gid]) -> nix::Result<()>;
    /// PR_SET_KEEPCAPS: permitted capabilities survive the uid change.
    fn set_keepcaps(&self) -> std::io::Result<()>;
    /// setresgid(2).
    fn setresgid(&self, gid: Gid) -> nix::Result<()>;
    /// setresuid(2).
    fn setresuid(&self, uid: Uid) -> nix::Result<()>;
    /// PR_SET_NO_NEW_PRIVS.
    fn set_no_new_privs(&self) -> std::io::Result<()>;
    /// Whether `path` is a regular file we may execute (execvp's test).
    fn is_executable(&self, path: &Path) -> bool;
    /// execve(2); returns only on failure.
    fn execve(&self, program: &CStr, args: &[CString], env: &[CString]) -> nix::Error;
}

/// The real kernel.
#[derive(Debug, Clone, Copy, Default)]
pub struct Linux;

impl Syscall for Linux {
    fn setns(&self, fd: BorrowedFd<'_>, flag: CloneFlags) -> nix::Result<()> {
        nix::sched::setns(fd, flag)
    }

    fn unshare(&self, flags: CloneFlags) -> nix::Result<()> {
        nix::sched::unshare(flags)
    }

    fn sethostname(&self, name: &str) -> nix::Result<()> {
        nix::unistd::sethostname(name)
    }

    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> nix::Result<()> {
        nix::mount::mount(source, target, fstype, flags, data)
    }

    fn umount2(&self, target: &Path, flags: MntFlags) -> nix::Result<()> {
        nix::mount::umount2(target, flags)
    }

    fn set_readonly_recursive(&self, path: &Path) -> std::io::Result<()> {
        let c_path = CString::new(path.as_os_str().as_encoded_bytes()).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "mount path contains a NUL byte")
        })?;
        berth_sys::mount::set_attr(
            None,
            &c_path,
            (libc::AT_RECURSIVE | libc::AT_NO_AUTOMOUNT) as libc::c_uint,
            berth_sys::mount::ATTR_RDONLY,
        )
    }

    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> nix::Result<()> {
        nix::unistd::pivot_root(new_root, put_old)
    }

    fn chdir(&self, path: &Path) -> nix::Result<()> {
        nix::unistd::chdir(path)
    }

    fn fchdir(&self, dir: BorrowedFd<'_>) -> nix::Result<()> {
        nix::unistd::fchdir(dir)
    }

    fn fs_type(&self, fd: BorrowedFd<'_>) -> nix::Result<FsType> {
        Ok(nix::sys::statfs::fstatfs(fd)?.filesystem_type())
    }

    fn kind(&self, path: &Path, follow: bool) -> std::io::Result<FileKind> {
        let meta = if follow {
            std::fs::metadata(path)?
        } else {
            std::fs::symlink_metadata(path)?
        };
        Ok(if meta.is_dir() {
            FileKind::Dir
        } else {
            FileKind::Other
        })
    }

    fn write_file(&self, path: &Path, data: &[u8]) -> std::io::Result<()> {
        std::fs::write(path, data)
    }

    fn read_file(&self, path: &Path) -> std::io::Result<String> {
        std::fs::read_to_string(path)
    }

    fn credentials(&self) -> std::io::Result<(u32, u32, Vec<u32>)> {
        // getgroups(2) twice (the count, then the list), not nix's, which
        // asks sysconf first and so opens and reads a file under /proc.
        // SAFETY: a size of 0 only returns the count.
        let n = unsafe { libc::getgroups(0, std::ptr::null_mut()) };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut groups = vec![0 as libc::gid_t; n as usize];
        // SAFETY: the buffer holds `n` gids; a single-threaded init cannot
        // gain groups between the two calls (and EINVAL would say so).
        let got = unsafe { libc::getgroups(n, groups.as_mut_ptr()) };
        if got < 0 {
            return Err(std::io::Error::last_os_error());
        }
        groups.truncate(got as usize);
        Ok((
            nix::unistd::getuid().as_raw(),
            nix::unistd::getgid().as_raw(),
            groups,
        ))
    }

    fn symlinkat(&self, target: &str, dir: BorrowedFd<'_>, name: &str) -> nix::Result<()> {
        nix::unistd::symlinkat(target, dir, name)
    }

    fn mknodat(
        &self,
        dir: BorrowedFd<'_>,
        name: &Path,
        kind: SFlag,
        mode: Mode,
        rdev: u64,
    ) -> nix::Result<()> {
        nix::sys::stat::mknodat(dir, name, kind, mode, rdev)
    }

    fn umask(&self, mask: u32) -> u32 {
        // SAFETY: umask(2) cannot fail.
        unsafe { libc::umask(mask as libc::mode_t) as u32 }
    }

    fn chmod(&self, path: &Path, mode: u32) -> std::io::Result<()> {
        let c = CString::new(path.as_os_str().as_encoded_bytes())?;
        // SAFETY: chmod(2) of a valid NUL-terminated path.
        if unsafe { libc::chmod(c.as_ptr(), mode as libc::mode_t) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    fn fchown(&self, fd: BorrowedFd<'_>, uid: u32, gid: u32) -> nix::Result<()> {
        use nix::fcntl::AtFlags;
        nix::unistd::fchownat(
            fd,
            "",
            Some(uid.into()),
            Some(gid.into()),
            AtFlags::AT_EMPTY_PATH | AtFlags::AT_SYMLINK_NOFOLLOW,
        )
    }

    fn setrlimit(&self, resource: libc::__rlimit_resource_t, soft: u64, hard: u64) -> std::io::Result<()> {
        let lim = libc::rlimit {
            rlim_cur: soft,
            rlim_max: hard,
        };
        // SAFETY: plain syscall with a valid pointer.
        if unsafe { libc::setrlimit(resource, &lim) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    fn seccomp(&self, program: &Program) -> anyhow::Result<()> {
        super::seccomp::apply(program)
    }

    fn drop_bounding(&self, cap: Capability) -> Result<(), caps::errors::CapsError> {
        caps::drop(None, CapSet::Bounding, cap)
    }

    fn raise_ambient(&self, cap: Capability) -> Result<(), caps::errors::CapsError> {
        caps::raise(None, CapSet::Ambient, cap)
    }

    fn capset(&self, effective: u64, permitted: u64, inheritable: u64) -> std::io::Result<()> {
        #[repr(C)]
        struct Header {
            version: u32,
            pid: i32,
        }
        #[repr(C)]
        #[derive(Clone, Copy)]
        struct Data {
            effective: u32,
            permitted: u32,
            inheritable: u32,
        }
        let mut header = Header {
            version: 0x2008_0522,
            pid: 0,
        }; // _LINUX_CAPABILITY_VERSION_3
        let (e, p, i) = (effective, permitted, inheritable);
        let data = [
            Data {
                effective: e as u32,
                permitted: p as u32,
                inheritable: i as u32,
            },
            Data {
                effective: (e >> 32) as u32,
                permitted: (p >> 32) as u32,
                inheritable: (i >> 32) as u32,
            },
        ];
        // SAFETY: capset(2) reads a v3 header and two data structs we own.
        let rc = unsafe { libc::syscall(libc::SYS_capset, &mut header as *mut Header, data.as_ptr()) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    fn setgroups(&self, groups: &[Gid]) -> nix::Result<()> {
        nix::unistd::setgroups(groups)
    }

    fn set_keepcaps(&self) -> std::io::Result<()> {
        nix::sys::prctl::set_keepcaps(true).map_err(std::io::Error::from)
    }

    fn setresgid(&self, gid: Gid) -> nix::Result<()> {
        nix::unistd::setresgid(gid, gid, gid)
    }

    fn setresuid(&self, uid: Uid) -> nix::Result<()> {
        nix::unistd::setresuid(uid, uid, uid)
    }

    fn set_no_new_privs(&self) -> std::io::Result<()> {
        nix::sys::prctl::set_no_new_privs().map_err(std::io::Error::from)
    }

    fn is_executable(&self, path: &Path) -> bool {
        nix::unistd::access(path, nix::unistd::AccessFlags::X_OK).is_ok() && path.is_file()
    }

    fn execve(&self, program: &CStr, args: &[CString], env: &[CString]) -> nix::Error {
        match nix::unistd::execve(program, args, env) {
            Ok(never) => match never {},
            Err(e) => e,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The two raw getgroups calls give what the libc wrappers give.
    #[test]
    fn credentials_are_the_processs_own() {
        let (uid, gid, groups) = Linux.credentials().unwrap();
        assert_eq!(uid, nix::unistd::getuid().as_raw());
        assert_eq!(gid, nix::unistd::getgid().as_raw());
        let want: Vec<u32> = nix::unistd::getgroups()
            .unwrap()
            .into_iter()
            .map(|g| g.as_raw())
            .collect();
        assert_eq!(groups, want);
    }
}
