//! `clone3(2)` as a plain fork with a pidfd, optionally born in a cgroup
//! (`CLONE_INTO_CGROUP`, Linux 5.7).
//!
//! Why a cgroup at birth: moving a process with a write to `cgroup.procs`
//! takes the kernel's cgroup threadgroup rwsem for writing, which waits for
//! an RCU grace period (unless cgroup2 is mounted with `favordynmods`);
//! under emulation that wait alone is tens of milliseconds. A clone into
//! the cgroup takes no such lock. berthd starts every shim this way, and
//! the shim every container's first stage.

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// `CLONE_INTO_CGROUP` of <linux/sched.h> (a 64-bit flag, clone3 only).
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// `struct clone_args` of <linux/sched.h>, up to `cgroup`
/// (`CLONE_ARGS_SIZE_VER2`).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// A cloned child, seen from the parent.
#[derive(Debug)]
pub struct Child {
    /// Its pid in the caller's PID namespace.
    pub pid: i32,
    /// The pidfd the clone itself made (`CLONE_PIDFD`): it names this
    /// process even if it dies and is reaped before anyone looks.
    pub pidfd: OwnedFd,
}

/// Forks (the child gets a copy of our memory and runs on its copy of our
/// stack, as after fork(2)) with the clone `flags` (e.g. `CLONE_NEWPID`)
/// plus `CLONE_PIDFD` and `SIGCHLD`, into the cgroup whose directory is
/// `cgroup` when given. With `CLONE_PARENT` the child is our parent's
/// child, and the kernel gives it our own exit signal (clone3 refuses any
/// other). The child runs `child`, and `_exit`s with what it
/// returns if it returns (it should exec).
///
/// # Safety
/// As after fork(2) in a multi-threaded process: `child` may only make
/// async-signal-safe calls (no allocation, no locks) and must exec or
/// return.
pub unsafe fn clone3(
    flags: u64,
    cgroup: Option<BorrowedFd<'_>>,
    child: &mut dyn FnMut() -> i32,
) -> std::io::Result<Child> {
    let mut pidfd: libc::c_int = -1;
    let args = CloneArgs {
        flags: flags | libc::CLONE_PIDFD as u64 | cgroup.map_or(0, |_| CLONE_INTO_CGROUP),
        pidfd: &mut pidfd as *mut libc::c_int as u64,
        exit_signal: if flags & libc::CLONE_PARENT as u64 != 0 {
            0
        } else {
            libc::SIGCHLD as u64
        },
        cgroup: cgroup.map_or(0, |c| c.as_raw_fd() as u64),
        ..Default::default()
    };
    // SAFETY: `args` is a valid clone_args of the size we pass, its pidfd
    // pointer is live; with no CLONE_VM and no stack the child runs on a
    // copy of our memory, as after fork(2).
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if pid == 0 {
        // The child: the caller promised `child` execs or returns.
        let code = child();
        // SAFETY: _exit is async-signal-safe and ends only this process.
        unsafe { libc::_exit(code) }
    }
    if pid < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(Child {
        pid: pid as i32,
        // SAFETY: CLONE_PIDFD stored a new descriptor, ours alone, at `pidfd`.
        pidfd: unsafe { OwnedFd::from_raw_fd(pidfd) },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A plain clone (no cgroup): the child runs, its exit code comes back
    /// through the pidfd's process.
    #[test]
    fn a_plain_clone_runs_the_child_and_gives_its_pidfd() {
        let mut child = || 7;
        // SAFETY: the child only returns.
        let c = unsafe { clone3(0, None, &mut child) }.unwrap();
        let mut status = 0;
        // SAFETY: waiting for our own child.
        assert_eq!(unsafe { libc::waitpid(c.pid, &mut status, 0) }, c.pid);
        assert!(libc::WIFEXITED(status));
        assert_eq!(libc::WEXITSTATUS(status), 7);
        assert!(c.pidfd.as_raw_fd() >= 0);
    }

    /// A fork server's clone: the grandchild made with `CLONE_PARENT` is
    /// our child, so we reap it (clone3 refuses `CLONE_PARENT` with an exit
    /// signal, which this also proves is not sent).
    #[test]
    fn a_clone_parent_child_is_our_child() {
        let mut p = [0; 2];
        // SAFETY: pipe2(2) into a two-int array.
        assert_eq!(unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: pipe2 just made these two descriptors; they are ours.
        let (r, w) = unsafe { (OwnedFd::from_raw_fd(p[0]), OwnedFd::from_raw_fd(p[1])) };
        let wfd = w.as_raw_fd();
        let mut middle = || {
            let mut grandchild = || 9;
            // SAFETY: the grandchild only returns.
            match unsafe { clone3(libc::CLONE_PARENT as u64, None, &mut grandchild) } {
                Ok(g) => {
                    let pid = g.pid.to_ne_bytes();
                    // SAFETY: a write of 4 bytes from our own buffer to our pipe.
                    unsafe { libc::write(wfd, pid.as_ptr() as *const libc::c_void, 4) };
                    0
                }
                Err(e) => e.raw_os_error().unwrap_or(1),
            }
        };
        // SAFETY: the middle child clones, writes and returns.
        let m = unsafe { clone3(0, None, &mut middle) }.unwrap();
        drop(w);
        let mut status = 0;
        assert_eq!(unsafe { libc::waitpid(m.pid, &mut status, 0) }, m.pid);
        assert_eq!(
            libc::WEXITSTATUS(status),
            0,
            "clone3(CLONE_PARENT) failed in the middle child"
        );
        let mut pid = [0u8; 4];
        std::io::Read::read_exact(&mut std::fs::File::from(r), &mut pid).unwrap();
        let g = i32::from_ne_bytes(pid);
        assert_eq!(
            unsafe { libc::waitpid(g, &mut status, 0) },
            g,
            "the grandchild is ours to reap"
        );
        assert_eq!(libc::WEXITSTATUS(status), 9);
    }
}
