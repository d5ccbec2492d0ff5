//! User namespaces and idmapped mounts: a user namespace with given
//! mappings held by an fd, and a detached clone of a directory's mount
//! idmapped through it (open_tree(2) + mount_setattr(2), Linux >= 5.12,
//! per filesystem: ext4/xfs/btrfs since 5.12-5.15, tmpfs only since 6.3).

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// MOUNT_ATTR_IDMAP of <linux/mount.h>.
pub const ATTR_IDMAP: u64 = 0x0010_0000;
const OPEN_TREE_CLONE: libc::c_uint = 1;
/// MOVE_MOUNT_F_EMPTY_PATH of <linux/mount.h>.
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
/// MOVE_MOUNT_T_EMPTY_PATH of <linux/mount.h>.
const MOVE_MOUNT_T_EMPTY_PATH: libc::c_uint = 0x40;

/// `struct mount_attr` (MOUNT_ATTR_SIZE_VER0).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// A new user namespace whose `uid_map` and `gid_map` are the given lines
/// (`"<inside> <outside> <count>\n"`), held by an fd of its `ns/user`.
///
/// setgroups(2) is denied in it: nothing runs there but the probe.
pub fn userns_fd(uid_map: &str, gid_map: &str) -> io::Result<OwnedFd> {
    let mut fds = unshare_in_child(0, uid_map, gid_map, true, &["user"])?;
    Ok(fds.remove(0))
}

/// A pod's namespaces: its user namespace with the pod's mappings and the
/// network, IPC and UTS namespaces it owns.
#[derive(Debug)]
pub struct PodNamespaces {
    /// `ns/user`.
    pub user: OwnedFd,
    /// `ns/net`, owned by `user`.
    pub net: OwnedFd,
    /// `ns/ipc`, owned by `user`.
    pub ipc: OwnedFd,
    /// `ns/uts`, owned by `user`.
    pub uts: OwnedFd,
}

/// Creates a pod's user namespace with the given maps and, in the same
/// unshare(2), network, IPC and UTS namespaces owned by it. setgroups(2)
/// stays allowed: the maps are written by a process privileged in the
/// parent namespace, and a container's supplementary groups need it.
pub fn pod_namespaces(uid_map: &str, gid_map: &str) -> io::Result<PodNamespaces> {
    let flags = libc::CLONE_NEWNET | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS;
    let mut fds =
        unshare_in_child(flags, uid_map, gid_map, false, &["user", "net", "ipc", "uts"])?.into_iter();
    let mut next = || fds.next().ok_or_else(|| io::Error::other("namespace fd missing"));
    Ok(PodNamespaces {
        user: next()?,
        net: next()?,
        ipc: next()?,
        uts: next()?,
    })
}

/// A forked child unshares a user namespace (plus `flags`) and waits on a
/// pipe while this process (root in the parent namespace) writes its maps
/// and opens its `ns/<kind>` files; the child then exits. The child only
/// calls async-signal-safe functions, so this is safe in a threaded process.
fn unshare_in_child(
    flags: libc::c_int,
    uid_map: &str,
    gid_map: &str,
    deny_setgroups: bool,
    kinds: &[&str],
) -> io::Result<Vec<OwnedFd>> {
    let (ready_r, ready_w) = pipe()?;
    let (go_r, go_w) = pipe()?;
    // SAFETY: the child only calls close_range, unshare, write, read and _exit.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: async-signal-safe calls on fds this process owns.
        unsafe {
            // Only its two pipe ends: no other pipe of the caller's stays
            // open for as long as this child waits.
            crate::fork::close_fds_except(&[ready_w.as_raw_fd(), go_r.as_raw_fd()]);
            let ok: u8 = u8::from(libc::unshare(libc::CLONE_NEWUSER | flags) == 0);
            libc::write(ready_w.as_raw_fd(), (&ok as *const u8).cast(), 1);
            let mut b = 0u8;
            libc::read(go_r.as_raw_fd(), (&mut b as *mut u8).cast(), 1);
            libc::_exit(0);
        }
    }
    drop((ready_w, go_r));
    let out = (|| {
        let mut ok = [0u8];
        File::from(ready_r).read_exact(&mut ok)?;
        if ok[0] != 1 {
            return Err(io::Error::other("unshare(CLONE_NEWUSER) failed in the child"));
        }
        let proc = format!("/proc/{pid}");
        std::fs::write(format!("{proc}/uid_map"), uid_map)?;
        if deny_setgroups {
            std::fs::write(format!("{proc}/setgroups"), "deny")?;
        }
        std::fs::write(format!("{proc}/gid_map"), gid_map)?;
        kinds
            .iter()
            .map(|k| File::open(format!("{proc}/ns/{k}")).map(OwnedFd::from))
            .collect::<io::Result<Vec<_>>>()
    })();
    let _ = File::from(go_w).write_all(&[1]);
    let mut status = 0;
    // SAFETY: `pid` is our own child, reaped exactly once.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    out
}

/// Over-mounts `dir` (in the caller's mount namespace) with an idmapped
/// clone of its own mount, so `dir` shows files through `userns`' maps.
/// Only for a private mount namespace: the new mount must not propagate.
pub fn idmap_in_place(dir: &Path, userns: impl AsFd) -> io::Result<()> {
    let tree = idmapped_clone(dir, userns)?;
    let target = CString::new(dir.as_os_str().as_bytes()).map_err(io::Error::other)?;
    // SAFETY: both strings are NUL-terminated and `tree` is an open fd.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            target.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A detached clone of the mount at `dir`, idmapped through `userns`; the
/// clone disappears when the returned fd is closed.
pub fn idmapped_clone(dir: &Path, userns: impl AsFd) -> io::Result<OwnedFd> {
    idmapped_tree(dir, userns, false)
}

/// Like [`idmapped_clone`], with the mounts below `dir` too when
/// `recursive` (an rbind): every one of them must be idmappable.
pub fn idmapped_tree(dir: &Path, userns: impl AsFd, recursive: bool) -> io::Result<OwnedFd> {
    let path = CString::new(dir.as_os_str().as_bytes()).map_err(io::Error::other)?;
    let rec = if recursive {
        libc::AT_RECURSIVE as libc::c_uint
    } else {
        0
    };
    // SAFETY: `path` is NUL-terminated; the kernel returns a new fd or -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            path.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint | rec,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: open_tree returned a fresh fd that nothing else owns.
    let tree = unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) };
    let attr = MountAttr {
        attr_set: ATTR_IDMAP,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_fd().as_raw_fd() as u64,
    };
    // SAFETY: "" is NUL-terminated, `attr` lives across the call, whose
    // size is passed; both fds are open.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH | rec as libc::c_int,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(tree)
}

/// Binds `source` (with its submounts when `recursive`) onto the open
/// directory or file `target`, idmapped through `userns`: a bind mount
/// whose files show through the namespace's maps. The bind is built
/// detached and attached in one move, so it is never visible unmapped.
pub fn bind_idmapped(source: &Path, target: impl AsFd, userns: impl AsFd, recursive: bool) -> io::Result<()> {
    let tree = idmapped_tree(source, userns, recursive)?;
    // SAFETY: "" is NUL-terminated and both fds are open.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            target.as_fd().as_raw_fd(),
            c"".as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two fds pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 returned two fresh fds that nothing else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// As root (the CI host and the VM run tests as root), the namespace
    /// gets exactly the mappings written; elsewhere the call fails cleanly.
    #[test]
    fn a_user_namespace_gets_the_given_mappings() {
        let Ok(ns) = userns_fd("0 65536 65536\n", "0 131072 65536\n") else {
            assert!(!nix_is_root(), "root must be able to create a user namespace");
            return;
        };
        // The namespace is alive (held by the fd) after its child exited.
        let link = std::fs::read_link(format!("/proc/self/fd/{}", ns.as_raw_fd())).unwrap();
        assert!(link.to_string_lossy().starts_with("user:["), "{link:?}");
    }

    /// Through the idmapped clone a file owned by root on disk is owned by
    /// the mapped host uid, the way a pod's root will see its image layers.
    #[test]
    fn an_idmapped_clone_shows_files_owned_by_the_mapped_ids() {
        let Ok(ns) = userns_fd("0 65536 65536\n", "0 131072 65536\n") else {
            return;
        };
        let dir = std::env::temp_dir().join(format!("berth-sys-idmap-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("f"), "x").unwrap();
        let clone = idmapped_clone(&dir, &ns);
        let seen = clone
            .as_ref()
            .map(|t| std::fs::metadata(format!("/proc/self/fd/{}/f", t.as_raw_fd())));
        std::fs::remove_dir_all(&dir).unwrap();
        match clone {
            // A filesystem without idmap support (tmpfs before 6.3).
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
            Err(e) => panic!("{e}"),
            Ok(_) => {
                use std::os::unix::fs::MetadataExt;
                let m = seen.unwrap().unwrap();
                assert_eq!((m.uid(), m.gid()), (65536, 131072));
            }
        }
    }

    /// The pod's network, IPC and UTS namespaces are owned by its user
    /// namespace (NS_GET_USERNS names the very namespace `user` holds), and
    /// the user namespace has exactly the maps written.
    #[test]
    fn pod_namespaces_are_owned_by_the_pods_user_namespace() {
        let Ok(ns) = pod_namespaces("0 65536 65536\n", "0 131072 65536\n") else {
            assert!(!nix_is_root(), "root must be able to create a pod's namespaces");
            return;
        };
        let ino = |fd: &OwnedFd| {
            use std::os::unix::fs::MetadataExt;
            File::from(fd.try_clone().unwrap()).metadata().unwrap().ino()
        };
        const NS_GET_USERNS: libc::c_ulong = 0xb701;
        for owned in [&ns.net, &ns.ipc, &ns.uts] {
            // SAFETY: an ioctl without arguments on an open nsfs fd.
            let fd = unsafe { libc::ioctl(owned.as_raw_fd(), NS_GET_USERNS as _) };
            assert!(fd >= 0, "{}", io::Error::last_os_error());
            // SAFETY: the ioctl returned a new fd.
            let owner = unsafe { OwnedFd::from_raw_fd(fd) };
            assert_eq!(ino(&owner), ino(&ns.user));
        }
    }

    #[test]
    fn a_missing_directory_cannot_be_cloned() {
        let ns = File::open("/proc/self/ns/user").unwrap();
        let e = idmapped_clone(Path::new("/nonexistent/berth-sys"), &ns).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT), "{e}");
    }

    fn nix_is_root() -> bool {
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() == 0 }
    }
}
