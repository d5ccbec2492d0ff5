//! A recording fake of [`Syscall`] for unit tests: every call is recorded
//! (paths as the test can name them), nothing reaches the kernel, and the
//! few answers a step reads (file kinds, filesystem types, kernel files,
//! executables) come from maps the test fills.
//!
//! Paths are recorded readable: an fd path (`/proc/self/fd/N`) by what the
//! fd holds, and anything inside the rootfs directory as `rootfs:/...`, so
//! a test asserts "bind /host/a at rootfs:/data" rather than fd numbers.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::ffi::{CStr, CString};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};

use caps::Capability;
use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;
use nix::sys::stat::{Mode, SFlag};
use nix::sys::statfs::FsType;
use nix::unistd::{Gid, Uid};

use super::seccomp::Program;
use super::syscall::{FileKind, Syscall};

/// ext4's magic: what `fs_type` answers for a path the test did not name.
const EXT4: FsType = FsType(0xEF53);

/// One recorded call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Setns(CloneFlags),
    Unshare(CloneFlags),
    Sethostname(String),
    Mount {
        source: Option<String>,
        target: String,
        fstype: Option<String>,
        flags: MsFlags,
        data: Option<String>,
    },
    Umount2(String, MntFlags),
    ReadonlyRecursive(String),
    PivotRoot(String, String),
    Chdir(String),
    Fchdir(String),
    Write(String, String),
    Symlink {
        at: String,
        target: String,
    },
    Mknod {
        at: String,
        kind: SFlag,
        mode: u32,
        rdev: u64,
    },
    Chmod(String, u32),
    Umask(u32),
    Chown(String, u32, u32),
    Setrlimit(libc::__rlimit_resource_t, u64, u64),
    /// A filter installed, of this many instructions.
    Seccomp(usize),
    DropBounding(Capability),
    RaiseAmbient(Capability),
    Capset(u64, u64, u64),
    Setgroups(Vec<u32>),
    Keepcaps,
    Setresgid(u32),
    Setresuid(u32),
    NoNewPrivs,
    Execve(String, Vec<String>),
    /// Not a syscall: what the step reported on the sync pipe.
    Report(String),
}

/// The fake kernel.
#[derive(Default)]
pub struct Fake {
    /// The rootfs directory (canonical), shown as `rootfs:`.
    pub root: PathBuf,
    calls: RefCell<Vec<Call>>,
    /// `kind` answers by path; a path not here does not exist.
    pub kinds: HashMap<PathBuf, FileKind>,
    /// `fs_type` answers by shown path (`rootfs:/dev/pts`); others are ext4.
    pub fs_types: HashMap<String, FsType>,
    /// `read_file` answers by path; others are ENOENT.
    pub files: HashMap<PathBuf, String>,
    /// Paths `is_executable` says yes to (as root: any execute bit).
    pub executables: HashSet<PathBuf>,
    /// Of `executables`, those a non-root uid may not run (no execute bit
    /// for it), once `setresuid` made us one.
    pub root_only: HashSet<PathBuf>,
    /// The uid `setresuid` set (0 until then).
    uid: std::cell::Cell<u32>,
    /// Every path `is_executable` was asked about, in order (not in
    /// `calls`: the lookups are not what those tests compare).
    pub lookups: RefCell<Vec<PathBuf>>,
    /// A mount whose shown target is this fails with EPERM.
    pub fail_mount_at: Option<String>,
}

impl Fake {
    /// A fake whose rootfs is the directory `root`, on a node whose only
    /// mount is a shared `/` (as under systemd).
    pub fn new(root: &Path) -> Self {
        let mut files = HashMap::new();
        files.insert(
            PathBuf::from("/proc/self/mountinfo"),
            "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/vda rw\n".to_string(),
        );
        Fake {
            root: std::fs::canonicalize(root).expect("rootfs dir"),
            files,
            ..Fake::default()
        }
    }

    /// Every call so far.
    pub fn calls(&self) -> Vec<Call> {
        self.calls.borrow().clone()
    }

    /// Just the mounts, as (source, shown target, flags).
    pub fn mounts(&self) -> Vec<(Option<String>, String, MsFlags)> {
        self.calls()
            .into_iter()
            .filter_map(|c| match c {
                Call::Mount {
                    source,
                    target,
                    flags,
                    ..
                } => Some((source, target, flags)),
                _ => None,
            })
            .collect()
    }

    /// Records a call.
    pub fn note(&self, c: Call) {
        self.calls.borrow_mut().push(c);
    }

    /// A path as a test names it.
    pub fn show(&self, p: &Path) -> String {
        let real = if p.starts_with("/proc/self/fd") {
            std::fs::read_link(p).unwrap_or_else(|_| p.to_path_buf())
        } else {
            p.to_path_buf()
        };
        match real.strip_prefix(&self.root) {
            Ok(rest) if !self.root.as_os_str().is_empty() => format!("rootfs:/{}", rest.display()),
            _ => real.display().to_string(),
        }
    }

    fn show_fd(&self, fd: BorrowedFd<'_>) -> String {
        self.show(&PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd())))
    }
}

/// Where `want` is in `calls`; panics, showing every call, when it is not.
pub fn position(calls: &[Call], want: &Call) -> usize {
    calls
        .iter()
        .position(|c| c == want)
        .unwrap_or_else(|| panic!("no {want:?} in {calls:#?}"))
}

impl Syscall for Fake {
    fn setns(&self, _fd: BorrowedFd<'_>, flag: CloneFlags) -> nix::Result<()> {
        self.note(Call::Setns(flag));
        Ok(())
    }

    fn unshare(&self, flags: CloneFlags) -> nix::Result<()> {
        self.note(Call::Unshare(flags));
        Ok(())
    }

    fn sethostname(&self, name: &str) -> nix::Result<()> {
        self.note(Call::Sethostname(name.to_string()));
        Ok(())
    }

    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> nix::Result<()> {
        let target = self.show(target);
        let failed = self.fail_mount_at.as_deref() == Some(target.as_str());
        self.note(Call::Mount {
            source: source.map(|s| self.show(s)),
            target,
            fstype: fstype.map(str::to_string),
            flags,
            data: data.map(str::to_string),
        });
        if failed {
            return Err(nix::errno::Errno::EPERM);
        }
        Ok(())
    }

    fn umount2(&self, target: &Path, flags: MntFlags) -> nix::Result<()> {
        self.note(Call::Umount2(self.show(target), flags));
        Ok(())
    }

    fn set_readonly_recursive(&self, path: &Path) -> std::io::Result<()> {
        self.note(Call::ReadonlyRecursive(self.show(path)));
        Ok(())
    }

    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> nix::Result<()> {
        self.note(Call::PivotRoot(self.show(new_root), self.show(put_old)));
        Ok(())
    }

    fn chdir(&self, path: &Path) -> nix::Result<()> {
        self.note(Call::Chdir(self.show(path)));
        Ok(())
    }

    fn fchdir(&self, dir: BorrowedFd<'_>) -> nix::Result<()> {
        self.note(Call::Fchdir(self.show_fd(dir)));
        Ok(())
    }

    fn fs_type(&self, fd: BorrowedFd<'_>) -> nix::Result<FsType> {
        Ok(*self.fs_types.get(&self.show_fd(fd)).unwrap_or(&EXT4))
    }

    fn kind(&self, path: &Path, _follow: bool) -> std::io::Result<FileKind> {
        self.kinds
            .get(path)
            .copied()
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))
    }

    fn write_file(&self, path: &Path, data: &[u8]) -> std::io::Result<()> {
        self.note(Call::Write(
            self.show(path),
            String::from_utf8_lossy(data).into_owned(),
        ));
        Ok(())
    }

    fn read_file(&self, path: &Path) -> std::io::Result<String> {
        self.files
            .get(path)
            .cloned()
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))
    }

    /// What the calls so far set (root with no groups before any).
    fn credentials(&self) -> std::io::Result<(u32, u32, Vec<u32>)> {
        let mut ids = (0, 0, Vec::new());
        for call in self.calls.borrow().iter() {
            match call {
                Call::Setresuid(uid) => ids.0 = *uid,
                Call::Setresgid(gid) => ids.1 = *gid,
                Call::Setgroups(groups) => ids.2 = groups.clone(),
                _ => {}
            }
        }
        Ok(ids)
    }

    fn symlinkat(&self, target: &str, dir: BorrowedFd<'_>, name: &str) -> nix::Result<()> {
        self.note(Call::Symlink {
            at: format!("{}/{name}", self.show_fd(dir)),
            target: target.to_string(),
        });
        Ok(())
    }

    /// Records the node and leaves an empty file in its place, so the
    /// steps after it (open, chmod, chown) find something, as they would.
    fn mknodat(
        &self,
        dir: BorrowedFd<'_>,
        name: &Path,
        kind: SFlag,
        mode: Mode,
        rdev: u64,
    ) -> nix::Result<()> {
        let at = self.show_fd(dir);
        self.note(Call::Mknod {
            at: format!("{at}/{}", name.display()),
            kind,
            mode: mode.bits(),
            rdev,
        });
        let fd = nix::fcntl::openat(
            dir,
            name,
            nix::fcntl::OFlag::O_CREAT | nix::fcntl::OFlag::O_EXCL | nix::fcntl::OFlag::O_WRONLY,
            Mode::from_bits_truncate(0o600),
        )?;
        drop(fd);
        Ok(())
    }

    fn chmod(&self, path: &Path, mode: u32) -> std::io::Result<()> {
        self.note(Call::Chmod(self.show(path), mode));
        Ok(())
    }

    /// Records the mask; the one before is always the common 022.
    fn umask(&self, mask: u32) -> u32 {
        self.note(Call::Umask(mask));
        0o022
    }

    fn fchown(&self, fd: BorrowedFd<'_>, uid: u32, gid: u32) -> nix::Result<()> {
        self.note(Call::Chown(self.show_fd(fd), uid, gid));
        Ok(())
    }

    fn setrlimit(&self, resource: libc::__rlimit_resource_t, soft: u64, hard: u64) -> std::io::Result<()> {
        self.note(Call::Setrlimit(resource, soft, hard));
        Ok(())
    }

    fn seccomp(&self, program: &Program) -> anyhow::Result<()> {
        self.note(Call::Seccomp(program.len()));
        Ok(())
    }

    fn drop_bounding(&self, cap: Capability) -> Result<(), caps::errors::CapsError> {
        self.note(Call::DropBounding(cap));
        Ok(())
    }

    fn raise_ambient(&self, cap: Capability) -> Result<(), caps::errors::CapsError> {
        self.note(Call::RaiseAmbient(cap));
        Ok(())
    }

    fn capset(&self, effective: u64, permitted: u64, inheritable: u64) -> std::io::Result<()> {
        self.note(Call::Capset(effective, permitted, inheritable));
        Ok(())
    }

    fn setgroups(&self, groups: &[Gid]) -> nix::Result<()> {
        self.note(Call::Setgroups(groups.iter().map(|g| g.as_raw()).collect()));
        Ok(())
    }

    fn set_keepcaps(&self) -> std::io::Result<()> {
        self.note(Call::Keepcaps);
        Ok(())
    }

    fn setresgid(&self, gid: Gid) -> nix::Result<()> {
        self.note(Call::Setresgid(gid.as_raw()));
        Ok(())
    }

    fn setresuid(&self, uid: Uid) -> nix::Result<()> {
        self.note(Call::Setresuid(uid.as_raw()));
        self.uid.set(uid.as_raw());
        Ok(())
    }

    fn set_no_new_privs(&self) -> std::io::Result<()> {
        self.note(Call::NoNewPrivs);
        Ok(())
    }

    fn is_executable(&self, path: &Path) -> bool {
        self.lookups.borrow_mut().push(path.to_path_buf());
        self.executables.contains(path) && (self.uid.get() == 0 || !self.root_only.contains(path))
    }

    /// Records the exec and fails it, as a real exec of a non-executable would.
    fn execve(&self, program: &CStr, args: &[CString], _env: &[CString]) -> nix::Error {
        self.note(Call::Execve(
            program.to_string_lossy().into_owned(),
            args.iter().map(|a| a.to_string_lossy().into_owned()).collect(),
        ));
        nix::errno::Errno::ENOEXEC
    }
}
