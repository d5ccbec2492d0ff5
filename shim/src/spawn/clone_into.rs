//! `clone3(2)` with `CLONE_INTO_CGROUP` (Linux 5.7+): a container's first
//! stage is born in the container's cgroup instead of moving itself there
//! with a write to `cgroup.procs`.
//!
//! Why: a write to `cgroup.procs` takes the kernel's cgroup threadgroup
//! rwsem for writing, which waits for an RCU grace period (unless cgroup2
//! is mounted with `favordynmods`); under emulation that wait alone is tens
//! of milliseconds of every CreateContainer. A clone into the cgroup takes
//! no such lock. The clone itself is `berth_sys::clone`, shared with
//! berthd's start of the shim.

use std::os::fd::BorrowedFd;

use nix::sched::CloneFlags;

use super::Spawned;

/// Forks (the child gets a copy of our memory and runs on its copy of our
/// stack, as after fork(2)) into the cgroup whose directory is `cgroup`,
/// with `flags` (e.g. `CLONE_NEWPID`), `CLONE_PIDFD` and `SIGCHLD`. The
/// child runs `child`, which must not return; the parent gets the child's
/// pid and pidfd.
///
/// # Safety
/// As after fork(2) in a multi-threaded process: `child` may only make
/// async-signal-safe calls (no allocation, no locks) and must exec or
/// `_exit`.
pub unsafe fn clone_into_cgroup(
    cgroup: BorrowedFd<'_>,
    flags: CloneFlags,
    child: &mut dyn FnMut() -> isize,
) -> nix::Result<Spawned> {
    let mut run = || child() as i32;
    // SAFETY: the caller's promise about `child` is clone3's.
    let c = unsafe { berth_sys::clone::clone3(flags.bits() as u64, Some(cgroup), &mut run) }
        .map_err(|e| nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EINVAL)))?;
    Ok(Spawned {
        pid: c.pid,
        pidfd: c.pidfd,
        in_cgroup: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::{AsFd, AsRawFd};

    /// The child is born in the cgroup it was given: it reads its own
    /// /proc/self/cgroup before anything else could move it. Needs root
    /// and a writable cgroup2 at /sys/fs/cgroup; skipped elsewhere.
    #[test]
    fn the_child_is_born_in_the_given_cgroup() {
        let cgroup2 = nix::sys::statfs::statfs("/sys/fs/cgroup")
            .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC);
        if !cgroup2 {
            eprintln!("no cgroup2 at /sys/fs/cgroup; skipped");
            return;
        }
        let Ok(own) = std::fs::read_to_string("/proc/self/cgroup") else {
            return;
        };
        let Some(own) = own.lines().find_map(|l| l.strip_prefix("0::")) else {
            return;
        };
        let parent = std::path::Path::new("/sys/fs/cgroup").join(own.trim_start_matches('/'));
        let dir = parent.join(format!("berth-clone-into-{}", std::process::id()));
        if std::fs::create_dir(&dir).is_err() {
            eprintln!("no writable cgroup2 here; skipped");
            return;
        }
        let cg = std::fs::File::open(&dir).unwrap();
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        let (rfd, wfd) = (r.as_raw_fd(), w.as_raw_fd());
        let mut buf = [0u8; 512];
        let bufp = buf.as_mut_ptr();
        let mut child = || -> isize {
            // SAFETY: open/read/write/close on our own buffers and fds only.
            unsafe {
                libc::close(rfd);
                let fd = libc::open(c"/proc/self/cgroup".as_ptr(), libc::O_RDONLY);
                let n = libc::read(fd, bufp as *mut libc::c_void, 512);
                libc::write(wfd, bufp as *const libc::c_void, n.max(0) as usize);
            }
            0
        };
        let res = unsafe { clone_into_cgroup(cg.as_fd(), CloneFlags::empty(), &mut child) };
        drop(w);
        let s = match res {
            Ok(s) => s,
            Err(e) => {
                let _ = std::fs::remove_dir(&dir);
                panic!("clone3 into a cgroup2 directory: {e}");
            }
        };
        let mut got = String::new();
        std::io::Read::read_to_string(&mut std::fs::File::from(r), &mut got).unwrap();
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(s.pid, &mut status, 0) };
        let _ = std::fs::remove_dir(&dir);
        let want = format!("0::/{}", dir.strip_prefix("/sys/fs/cgroup").unwrap().display());
        assert_eq!(got.trim(), want);
    }
}
