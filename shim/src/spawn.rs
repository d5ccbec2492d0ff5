//! Starts a container's first stage: `clone(2)` into a new PID namespace and
//! exec `/proc/self/exe init` there at once.
//!
//! The shim runs a multi-threaded tokio runtime, so between clone and exec the
//! child may only make async-signal-safe calls (dup2, execve, _exit). All the
//! real setup happens after the exec, in `berth-shim init`, which is a fresh
//! single-threaded process and may unshare, setns and mount freely.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::OnceLock;

use nix::sched::CloneFlags;

mod clone_into;

/// open_tree(2) flags of <linux/mount.h>: a detached copy of the mount.
const OPEN_TREE_CLONE: libc::c_uint = 1;
/// Our own binary on a detached, read-only bind mount, made once per shim
/// (None when the kernel lacks open_tree/mount_setattr, Linux < 5.12).
///
/// CVE-2019-5736 defence in depth: every stage that runs inside a
/// container's namespaces (init, exec, pod-init) is exec'd from this fd, so
/// `/proc/<pid>/exe` of those stages, and of a container whose entrypoint
/// is `/proc/self/exe`, leads to a file on a read-only mount: reopening it
/// for writing fails with EROFS instead of overwriting berth-shim on the
/// node. The mount is in no namespace, so no container can remount it, and
/// it costs no memory (unlike a memfd copy per shim).
static READ_ONLY_EXE: OnceLock<Option<OwnedFd>> = OnceLock::new();

fn read_only_exe() -> Option<RawFd> {
    READ_ONLY_EXE
        .get_or_init(|| match open_read_only_exe() {
            Ok(fd) => Some(fd),
            Err(e) => {
                eprintln!("berth-shim: no read-only copy of /proc/self/exe ({e}); stages run it directly");
                None
            }
        })
        .as_ref()
        .map(|fd| fd.as_raw_fd())
}

fn open_read_only_exe() -> std::io::Result<OwnedFd> {
    // SAFETY: a static NUL-terminated path; the returned fd is new and ours.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            c"/proc/self/exe".as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: open_tree just returned this descriptor.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
    // Above the numbers a child's dup2 sequence writes (0..=5).
    let high = nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(100))?;
    drop(fd);
    // SAFETY: fcntl just returned this new descriptor; we own it.
    let fd = unsafe { OwnedFd::from_raw_fd(high) };
    use berth_sys::mount::{set_attr, ATTR_NODEV, ATTR_NOSUID, ATTR_RDONLY};
    set_attr(
        Some(fd.as_fd()),
        c"",
        libc::AT_EMPTY_PATH as libc::c_uint,
        ATTR_RDONLY | ATTR_NOSUID | ATTR_NODEV,
    )?;
    Ok(fd)
}

/// Execs our own binary in a freshly cloned child: from the read-only
/// copy when there is one. Only async-signal-safe syscalls; returns only
/// on failure.
///
/// # Safety
/// `argv` and `envp` are NULL-terminated arrays of valid C strings, and
/// `ro_exe` (when Some) an open descriptor.
unsafe fn exec_self(
    ro_exe: Option<RawFd>,
    exe: &CString,
    argv: &[*const libc::c_char],
    envp: &[*const libc::c_char],
) {
    // SAFETY: as the caller promised.
    unsafe {
        if let Some(fd) = ro_exe {
            libc::syscall(
                libc::SYS_execveat,
                fd,
                c"".as_ptr(),
                argv.as_ptr(),
                envp.as_ptr(),
                libc::AT_EMPTY_PATH,
            );
        } else {
            libc::execve(exe.as_ptr(), argv.as_ptr(), envp.as_ptr());
        }
    }
}

/// The descriptors the child gets, by their number inside the child (see
/// [`crate::sync::fds`]).
pub struct ChildFds {
    /// fd 0.
    pub stdin: OwnedFd,
    /// fd 1.
    pub stdout: OwnedFd,
    /// fd 2.
    pub stderr: OwnedFd,
    /// fd 3.
    pub config: OwnedFd,
    /// fd 4.
    pub sync: OwnedFd,
    /// fd 5.
    pub start: OwnedFd,
    /// fd 6, when given ([`crate::sync::fds::TARGET`]).
    pub target: Option<OwnedFd>,
}

/// Clones the init stage. `new_pid_ns` gives the container its own PID
/// namespace (init becomes its pid 1); `join_pid_ns` puts it in the pod's
/// shared one instead. Returns the child's pid in the shim's namespace and
/// a pidfd of it.
///
/// With `cgroup` (the container's cgroup directory) it is born there
/// ([`clone_into`]); [`Spawned::in_cgroup`] says whether that worked
/// (when not, init joins the cgroup itself).
pub fn spawn_init(
    new_pid_ns: bool,
    join_pid_ns: Option<&File>,
    cgroup: Option<&File>,
    child_fds: ChildFds,
) -> nix::Result<Spawned> {
    spawn_in(Stage::Init, new_pid_ns, join_pid_ns, cgroup, child_fds)
}

/// Which first stage the clone execs.
#[derive(Debug, Clone, Copy)]
pub enum Stage {
    /// `berth-shim init`: a new container.
    Init,
    /// `berth-shim exec`: a process joining a running container.
    Exec,
}

/// A cloned stage.
#[derive(Debug)]
pub struct Spawned {
    /// Its pid in the shim's PID namespace.
    pub pid: i32,
    /// A pidfd made by the clone itself (`CLONE_PIDFD`): it names this
    /// process even if it dies and is reaped before anyone looks, when its
    /// pid may already belong to another process.
    pub pidfd: OwnedFd,
    /// It was born in the cgroup it was given.
    pub in_cgroup: bool,
}

/// Like [`spawn_init`], for either stage.
pub fn spawn_stage(
    stage: Stage,
    new_pid_ns: bool,
    join_pid_ns: Option<&File>,
    child_fds: ChildFds,
) -> nix::Result<Spawned> {
    spawn_in(stage, new_pid_ns, join_pid_ns, None, child_fds)
}

fn spawn_in(
    stage: Stage,
    new_pid_ns: bool,
    join_pid_ns: Option<&File>,
    cgroup: Option<&File>,
    child_fds: ChildFds,
) -> nix::Result<Spawned> {
    match join_pid_ns {
        None => clone_init(stage, new_pid_ns, cgroup, child_fds),
        // setns(CLONE_NEWPID) changes where the calling *thread's* children
        // go, and a thread whose children go elsewhere can no longer create
        // threads; so a short-lived thread joins and clones, and ends.
        // Its stack is the shim's size: glibc hands an ended thread's stack
        // to the next thread that fits in it (see berth_sys::thread::STACK).
        Some(ns) => std::thread::scope(|s| {
            match crate::threads::thread().spawn_scoped(s, || {
                nix::sched::setns(ns, CloneFlags::CLONE_NEWPID)?;
                clone_init(stage, false, cgroup, child_fds)
            }) {
                Ok(t) => t.join().unwrap_or(Err(nix::errno::Errno::ECHILD)),
                Err(e) => Err(nix::errno::Errno::from_raw(
                    e.raw_os_error().unwrap_or(libc::EAGAIN),
                )),
            }
        }),
    }
}

/// Starts PID 1 of a pod's shared PID namespace (`berth-shim pod-init`),
/// with `lifeline` (the read end of a pipe the shim holds) as its fd 3.
pub fn spawn_pod_init(lifeline: &OwnedFd) -> nix::Result<i32> {
    spawn_helper(
        c"pod-init",
        lifeline,
        crate::pod_init::LIFELINE_FD,
        CloneFlags::CLONE_NEWPID,
    )
}

/// Starts the pod's fork server (`berth-shim zygote`, [`crate::zygote`])
/// with `sock` (its end of a socketpair) as its fd 3, in our own
/// namespaces.
pub fn spawn_zygote(sock: &OwnedFd) -> nix::Result<i32> {
    spawn_helper(
        c"zygote",
        sock,
        crate::zygote::server::SOCKET_FD,
        CloneFlags::empty(),
    )
}

/// Clones and execs `berth-shim <stage>` from the read-only copy, with
/// `fd` at `at` (not close-on-exec) and `flags`.
fn spawn_helper(stage: &std::ffi::CStr, fd: &OwnedFd, at: RawFd, flags: CloneFlags) -> nix::Result<i32> {
    let exe = CString::new("/proc/self/exe").expect("static path");
    let argv0 = CString::new("berth-shim").expect("static");
    let argv = [argv0.as_ptr(), stage.as_ptr(), std::ptr::null()];
    let envp: [*const libc::c_char; 1] = [std::ptr::null()];
    let fd = fd.as_raw_fd();
    let ro_exe = read_only_exe();
    let mut stack = vec![0u8; 64 * 1024];
    let child = Box::new(|| -> isize {
        // SAFETY: only async-signal-safe syscalls between clone and exec.
        unsafe {
            // dup2 onto itself would keep close-on-exec, so clear it then.
            let ok = if fd == at {
                libc::fcntl(fd, libc::F_SETFD, 0) == 0
            } else {
                libc::dup2(fd, at) >= 0
            };
            if !ok {
                libc::_exit(120);
            }
            exec_self(ro_exe, &exe, &argv, &envp);
            libc::_exit(121)
        }
    });
    // SAFETY: as in clone_init.
    let pid = unsafe { nix::sched::clone(child, &mut stack, flags, Some(libc::SIGCHLD))? };
    Ok(pid.as_raw())
}

fn clone_init(
    stage: Stage,
    new_pid_ns: bool,
    cgroup: Option<&File>,
    child_fds: ChildFds,
) -> nix::Result<Spawned> {
    let exe = CString::new("/proc/self/exe").expect("static path");
    let argv0 = CString::new("berth-shim").expect("static");
    let arg1 = CString::new(match stage {
        Stage::Init => "init",
        Stage::Exec => "exec",
    })
    .expect("static");
    let argv = [argv0.as_ptr(), arg1.as_ptr(), std::ptr::null()];
    let envp: [*const libc::c_char; 1] = [std::ptr::null()];

    // Move every source fd above the target range first, so that the dup2
    // sequence in the child can never overwrite a source it still needs.
    let mut sources = vec![
        &child_fds.stdin,
        &child_fds.stdout,
        &child_fds.stderr,
        &child_fds.config,
        &child_fds.sync,
        &child_fds.start,
    ];
    sources.extend(child_fds.target.as_ref());
    let mut high: Vec<OwnedFd> = Vec::with_capacity(sources.len());
    for s in sources {
        let fd = nix::fcntl::fcntl(s, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(100))?;
        // SAFETY: fcntl just returned this new descriptor; we own it.
        high.push(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) });
    }
    let high_raw: Vec<RawFd> = high.iter().map(|f| f.as_raw_fd()).collect();

    let ro_exe = read_only_exe();
    let mut flags = CloneFlags::empty();
    if new_pid_ns {
        flags |= CloneFlags::CLONE_NEWPID;
    }
    let mut child = || -> isize {
        // SAFETY: only async-signal-safe syscalls between clone and exec.
        unsafe {
            for (target, src) in high_raw.iter().enumerate() {
                if libc::dup2(*src, target as i32) < 0 {
                    libc::_exit(120);
                }
            }
            exec_self(ro_exe, &exe, &argv, &envp);
            libc::_exit(121)
        }
    };
    if let Some(cg) = cgroup {
        // SAFETY: the child only makes the async-signal-safe calls above.
        // Any refusal (an old kernel, a cgroup that cannot take processes)
        // falls back to the plain clone: init's own join then says why.
        if let Ok(s) = unsafe { clone_into::clone_into_cgroup(cg.as_fd(), flags, &mut child) } {
            return Ok(s);
        }
    }
    let mut stack = vec![0u8; 64 * 1024];
    // SAFETY: the callback only uses memory prepared above and calls
    // async-signal-safe functions; SIGCHLD makes it a normal reapable child.
    unsafe { clone_with_pidfd(Box::new(child), &mut stack, flags) }
}

type CloneCb<'a> = Box<dyn FnMut() -> isize + 'a>;

/// `clone(2)` with `CLONE_PIDFD` (nix's `clone` cannot return the pidfd):
/// the pidfd comes from the same syscall that made the process, so no
/// reap-and-reuse of the pid can come in between, as it could before a
/// later `pidfd_open`.
///
/// # Safety
/// As `nix::sched::clone`: between clone and exec the callback may only make
/// async-signal-safe calls.
unsafe fn clone_with_pidfd(mut cb: CloneCb, stack: &mut [u8], flags: CloneFlags) -> nix::Result<Spawned> {
    extern "C" fn trampoline(data: *mut libc::c_void) -> libc::c_int {
        // SAFETY: `data` is the `&mut CloneCb` passed to clone below, alive
        // in the child's copy of our memory.
        let cb = unsafe { &mut *(data as *mut CloneCb) };
        (*cb)() as libc::c_int
    }
    let mut pidfd: libc::c_int = -1;
    // SAFETY: the stack top is inside `stack`, aligned down to 16 bytes as
    // the ABI wants; `cb` and `pidfd` outlive the call (the child runs on
    // its own copy of memory and execs or exits).
    let pid = unsafe {
        let top = stack.as_mut_ptr().add(stack.len());
        let top = top.sub(top as usize % 16);
        libc::clone(
            trampoline,
            top as *mut libc::c_void,
            flags.bits() | libc::CLONE_PIDFD | libc::SIGCHLD,
            &mut cb as *mut CloneCb as *mut libc::c_void,
            &mut pidfd as *mut libc::c_int,
        )
    };
    if pid < 0 {
        return Err(nix::errno::Errno::last());
    }
    Ok(Spawned {
        pid,
        // SAFETY: CLONE_PIDFD stored a new descriptor, ours alone, at `pidfd`.
        pidfd: unsafe { OwnedFd::from_raw_fd(pidfd) },
        in_cgroup: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn the_clone_pidfd_names_its_child_until_it_is_reaped() {
        let mut stack = vec![0u8; 64 * 1024];
        // SAFETY: the child only calls _exit, which is async-signal-safe.
        let child: CloneCb = Box::new(|| unsafe { libc::_exit(7) });
        let s = unsafe { clone_with_pidfd(child, &mut stack, CloneFlags::empty()) }.expect("clone");
        // Waiting through the pidfd reaps exactly this child, with its status.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waitid(2) on our pidfd into a live siginfo_t.
        let rc = unsafe {
            libc::waitid(
                libc::P_PIDFD,
                s.pidfd.as_raw_fd() as libc::id_t,
                &mut info,
                libc::WEXITED,
            )
        };
        assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
        // SAFETY: waitid filled in a CLD_EXITED siginfo.
        let (pid, status) = unsafe { (info.si_pid(), info.si_status()) };
        assert_eq!((pid, status), (s.pid, 7));
        // Reaped: the pidfd now says so, whoever gets the pid next.
        let e = berth_sys::pidfd::send_signal(s.pidfd.as_fd(), 0).expect_err("reaped");
        assert_eq!(e.raw_os_error(), Some(libc::ESRCH));
    }
}
