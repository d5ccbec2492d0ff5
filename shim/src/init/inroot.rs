//! Paths inside the container's root, resolved by an fd walk.
//!
//! Every component is opened with `O_PATH | O_NOFOLLOW` relative to the
//! directory fd before it, and symlinks are read and resolved by us with the
//! rootfs as `/`: `..` stops at the root, absolute targets restart at the
//! root, and a symlink on procfs (a "magic link" such as `/proc/1/cwd`,
//! which the kernel would follow to another process's root) is refused. The
//! result is an fd, and callers act on it through `/proc/self/fd/N`, so a
//! symlink swapped in after the walk (by a sibling container through a
//! shared volume: runc CVE-2021-30465) cannot redirect the act.

use std::collections::VecDeque;
use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use nix::sys::statfs::{fstatfs, PROC_SUPER_MAGIC};

/// Symlinks followed in one walk before giving up (the kernel's MAXSYMLINKS).
const MAX_SYMLINKS: u32 = 40;

/// What to create when the walk meets a missing component.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Create {
    /// Nothing: a missing component is ENOENT.
    Nothing,
    /// Directories, the last component included.
    Dirs,
    /// Directories, and an empty regular file as the last component.
    File,
}

/// `/proc/self/fd/N` of `fd`: the path that reaches exactly the file the fd
/// holds, whatever happened to the names since.
pub fn fd_path(fd: &impl AsRawFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// An O_PATH fd of the rootfs directory (the mount point, after the
/// rootfs is mounted on it).
pub fn open_root(rootfs: &Path) -> io::Result<OwnedFd> {
    open_at(None, rootfs.as_os_str(), libc::O_PATH | libc::O_DIRECTORY)
}

fn cstr(name: &OsStr) -> io::Result<CString> {
    CString::new(name.as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn open_at(dir: Option<&OwnedFd>, name: &OsStr, flags: i32) -> io::Result<OwnedFd> {
    let c = cstr(name)?;
    let dirfd = dir.map_or(libc::AT_FDCWD, |d| d.as_raw_fd());
    // SAFETY: a valid NUL-terminated name; the returned fd is new and ours.
    let fd = unsafe { libc::openat(dirfd, c.as_ptr(), flags | libc::O_CLOEXEC | libc::O_NOFOLLOW) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: openat just returned this descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Creates the empty regular file `name` in `dir` (never through a
/// symlink, never one that exists) and returns its write fd.
fn create_file(dir: &OwnedFd, name: &OsStr) -> io::Result<OwnedFd> {
    let c = cstr(name)?;
    // SAFETY: a valid NUL-terminated name and the mode O_CREAT needs; the
    // returned fd is new and ours.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            c.as_ptr(),
            libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            0o644 as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: openat just returned this descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn fstat(fd: &OwnedFd) -> io::Result<libc::stat> {
    // SAFETY: an all-zero stat is a valid value to overwrite.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat fills the struct we own.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st)
}

/// The target of the symlink `fd` (an O_PATH fd of the link itself).
fn read_link(fd: &OwnedFd) -> io::Result<PathBuf> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize];
    // SAFETY: readlinkat with an empty path reads the link `fd` holds into
    // our buffer, writing at most its length.
    let n = unsafe { libc::readlinkat(fd.as_raw_fd(), c"".as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    Ok(PathBuf::from(OsStr::from_bytes(&buf).to_owned()))
}

fn is_procfs(fd: &OwnedFd) -> bool {
    fstatfs(fd.as_fd()).is_ok_and(|s| s.filesystem_type() == PROC_SUPER_MAGIC)
}

/// Resolves `path` inside the directory `root` (an O_PATH fd), creating
/// what `create` asks for; returns an O_PATH fd of the result (a file it
/// created: the O_WRONLY fd of its creation, which names exactly it).
///
/// Every syscall counts here: a container's init resolves a few dozen
/// paths and, under emulation, each call costs tens of microseconds. So
/// the root fd is borrowed, not duplicated; a component that must be a
/// directory (one with more path after it, or any under [`Create::Dirs`])
/// is opened with `O_DIRECTORY`, which succeeds only on a directory, so it
/// needs no fstat (a symlink or a non-directory fails with ENOTDIR and
/// takes the general path); and a file created here is not opened again.
pub fn resolve(root: &OwnedFd, path: &Path, create: Create) -> io::Result<OwnedFd> {
    let mut pending: VecDeque<OsString> = VecDeque::new();
    push_front(&mut pending, path);
    // The directories walked so far below the root: `..` pops one, an
    // absolute symlink clears them.
    let mut dirs: Vec<OwnedFd> = Vec::new();
    let mut links = 0;
    let mut last: Option<OwnedFd> = None;
    while let Some(name) = pending.pop_front() {
        if let Some(fd) = last.take() {
            // A non-directory before the end of the path.
            drop(fd);
            return Err(io::Error::from_raw_os_error(libc::ENOTDIR));
        }
        if name == ".." {
            dirs.pop();
            continue;
        }
        let dir = dirs.last().unwrap_or(root);
        let must_be_dir = !pending.is_empty() || create == Create::Dirs;
        let opened = if must_be_dir {
            match open_at(Some(dir), &name, libc::O_PATH | libc::O_DIRECTORY) {
                Ok(fd) => {
                    dirs.push(fd);
                    continue;
                }
                // A symlink or not a directory: the general path tells which.
                Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => open_at(Some(dir), &name, libc::O_PATH),
                Err(e) => Err(e),
            }
        } else {
            open_at(Some(dir), &name, libc::O_PATH)
        };
        let fd = match opened {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) && create != Create::Nothing => {
                if create == Create::File && pending.is_empty() {
                    match create_file(dir, &name) {
                        // Ours, just made: a regular file, the result.
                        Ok(made) => return Ok(made),
                        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
                        Err(e) => return Err(e),
                    }
                } else {
                    let c = cstr(&name)?;
                    // SAFETY: mkdirat on a directory fd we hold and a valid
                    // NUL-terminated name.
                    if unsafe { libc::mkdirat(dir.as_raw_fd(), c.as_ptr(), 0o755) } < 0 {
                        let err = io::Error::last_os_error();
                        if err.raw_os_error() != Some(libc::EEXIST) {
                            return Err(err);
                        }
                    }
                }
                // Open what is there now (ours, or a racer's: checked below).
                open_at(Some(dir), &name, libc::O_PATH)?
            }
            Err(e) => return Err(e),
        };
        let st = fstat(&fd)?;
        match st.st_mode & libc::S_IFMT {
            libc::S_IFLNK => {
                if is_procfs(dir) {
                    // A magic link jumps to another process's files.
                    return Err(io::Error::new(
                        io::ErrorKind::PermissionDenied,
                        "goes through a /proc magic link",
                    ));
                }
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(io::Error::from_raw_os_error(libc::ELOOP));
                }
                let target = read_link(&fd)?;
                if target.is_absolute() {
                    dirs.clear();
                }
                push_front(&mut pending, &target);
            }
            libc::S_IFDIR => dirs.push(fd),
            _ => last = Some(fd),
        }
    }
    match last {
        Some(fd) => Ok(fd),
        // The path was the root itself: a fresh fd of it.
        None => dirs.pop().map_or_else(|| root.try_clone(), Ok),
    }
}

/// Queues `path`'s components ahead of what is pending.
fn push_front(pending: &mut VecDeque<OsString>, path: &Path) {
    for c in path.components().rev() {
        match c {
            Component::Normal(n) => pending.push_front(n.to_owned()),
            Component::ParentDir => pending.push_front(OsString::from("..")),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    fn real(fd: &OwnedFd) -> PathBuf {
        std::fs::read_link(fd_path(fd)).unwrap()
    }

    #[test]
    fn resolves_and_creates_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root_path = std::fs::canonicalize(dir.path()).unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root_path.join("etc")).unwrap();
        symlink(outside.path(), root_path.join("abs")).unwrap();
        symlink("../../../..", root_path.join("etc/up")).unwrap();
        symlink("loop2", root_path.join("loop1")).unwrap();
        symlink("loop1", root_path.join("loop2")).unwrap();
        let root = open_root(&root_path).unwrap();

        let fd = resolve(&root, Path::new("/../../etc"), Create::Nothing).unwrap();
        assert_eq!(real(&fd), root_path.join("etc"));
        // An absolute link to a node path restarts at the root: created inside.
        let fd = resolve(&root, Path::new("/abs/dev/pts"), Create::Dirs).unwrap();
        let inside = root_path
            .join(outside.path().strip_prefix("/").unwrap())
            .join("dev/pts");
        assert_eq!(real(&fd), inside);
        assert_eq!(
            std::fs::read_dir(outside.path()).unwrap().count(),
            0,
            "nothing outside"
        );
        let fd = resolve(&root, Path::new("/etc/up/x/f"), Create::File).unwrap();
        assert_eq!(real(&fd), root_path.join("x/f"));
        assert!(root_path.join("x/f").is_file());
        let e = resolve(&root, Path::new("/loop1/x"), Create::Dirs).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ELOOP));
        let e = resolve(&root, Path::new("/x/f/g"), Create::Dirs).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOTDIR));
        assert!(resolve(&root, Path::new("/missing"), Create::Nothing).is_err());
        let fd = resolve(&root, Path::new("/"), Create::Nothing).unwrap();
        assert_eq!(real(&fd), root_path);
    }

    /// The shortcuts (directories opened with O_DIRECTORY, no fstat; a
    /// created file's own fd) take the general path for everything else:
    /// symlinks in the middle and at the end, files where a directory is
    /// wanted, files that exist already.
    #[test]
    fn shortcuts_fall_back_for_symlinks_files_and_existing_paths() {
        let dir = tempfile::tempdir().unwrap();
        let root_path = std::fs::canonicalize(dir.path()).unwrap();
        std::fs::create_dir_all(root_path.join("real/sub")).unwrap();
        std::fs::write(root_path.join("real/file"), b"x").unwrap();
        symlink("real", root_path.join("rel")).unwrap();
        symlink("/real/sub", root_path.join("abs")).unwrap();
        let root = open_root(&root_path).unwrap();

        // A symlink in the middle, and one as the last component of Dirs.
        let fd = resolve(&root, Path::new("/rel/sub/new"), Create::Dirs).unwrap();
        assert_eq!(real(&fd), root_path.join("real/sub/new"));
        assert!(root_path.join("real/sub/new").is_dir());
        let fd = resolve(&root, Path::new("/abs"), Create::Dirs).unwrap();
        assert_eq!(real(&fd), root_path.join("real/sub"));
        // A file where Dirs would make a directory: the file, as before.
        let fd = resolve(&root, Path::new("/rel/file"), Create::Dirs).unwrap();
        assert_eq!(real(&fd), root_path.join("real/file"));
        // A file before the end of the path.
        let e = resolve(&root, Path::new("/real/file/x"), Create::File).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOTDIR));
        // A new file: made empty and handed out; an existing one: opened.
        let made = resolve(&root, Path::new("/rel/sub/f"), Create::File).unwrap();
        assert_eq!(real(&made), root_path.join("real/sub/f"));
        assert_eq!(std::fs::metadata(root_path.join("real/sub/f")).unwrap().len(), 0);
        let again = resolve(&root, Path::new("/abs/f"), Create::File).unwrap();
        assert_eq!(real(&again), root_path.join("real/sub/f"));
        let existing = resolve(&root, Path::new("/real/file"), Create::File).unwrap();
        assert_eq!(real(&existing), root_path.join("real/file"));
        assert_eq!(
            std::fs::read(root_path.join("real/file")).unwrap(),
            b"x",
            "left as it was"
        );
        // Nothing: a missing directory component is ENOENT, not made.
        let e = resolve(&root, Path::new("/rel/none/x"), Create::Nothing).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
        assert!(!root_path.join("real/none").exists());
    }

    #[test]
    fn proc_magic_links_are_refused() {
        let root = open_root(Path::new("/")).unwrap();
        let e = resolve(&root, Path::new("/proc/self/cwd"), Create::Nothing).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::PermissionDenied, "{e}");
        // /proc/self itself is a plain symlink on procfs too: refused alike.
        assert!(resolve(&root, Path::new("/proc/1/root/etc"), Create::Nothing).is_err());
    }
}
