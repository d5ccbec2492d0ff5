//! The fork and exec of a pod's shim, born in its cgroup.
//!
//! std's `Command` forks, and the child then had to move itself into the
//! shims' cgroup with a write to `cgroup.procs`: that write takes the
//! kernel's cgroup threadgroup rwsem for writing, which waits for an RCU
//! grace period, and every RunPodSandbox paid it (tens of milliseconds
//! under emulation). Here the child is cloned into the cgroup
//! (`clone3(CLONE_INTO_CGROUP)`, [`berth_sys::clone`]); on a kernel or a
//! cgroup that refuses that, it is cloned plainly and writes
//! `cgroup.procs` itself, as before. The clone also hands back the shim's
//! pidfd, so no `pidfd_open` by pid comes after it.
//!
//! Between clone and exec the child of this multi-threaded process makes
//! only async-signal-safe calls on memory prepared before the clone, as
//! std's child does: stdio onto 0-2, SIGPIPE back to its default and no
//! signal blocked (Rust ignores SIGPIPE, and an ignored signal stays
//! ignored across exec), the caller's `setup`, execve. A failure sends its
//! errno through a close-on-exec pipe, whose EOF tells the parent the exec
//! happened.

use std::ffi::CString;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};

use berth_sys::clone::Child;

/// What to exec: the path, argv and the whole environment.
pub struct Exec {
    path: CString,
    argv: Vec<CString>,
    envp: Vec<CString>,
}

impl Exec {
    /// `path` with `args` (argv[0] is `path`) and exactly `env`.
    pub fn new(
        path: &std::path::Path,
        args: &[&std::ffi::OsStr],
        env: &[(&str, &str)],
    ) -> std::io::Result<Self> {
        use std::os::unix::ffi::OsStrExt;
        let c = |b: &[u8]| CString::new(b).map_err(std::io::Error::other);
        let path = c(path.as_os_str().as_bytes())?;
        let mut argv = vec![path.clone()];
        for a in args {
            argv.push(c(a.as_bytes())?);
        }
        let envp = env
            .iter()
            .map(|(k, v)| c(format!("{k}={v}").as_bytes()))
            .collect::<std::io::Result<_>>()?;
        Ok(Exec { path, argv, envp })
    }
}

/// The cgroup the child starts in: its directory and its `cgroup.procs`.
pub struct Cgroup<'a> {
    pub dir: &'a File,
    pub procs: &'a File,
}

/// Clones a child into `cgroup`, puts `stdio` on its fds 0-2, runs `setup`
/// in it and execs `exec`. Returns once the exec happened, with whether the
/// child was born in the cgroup (false: it moved itself); an error of
/// `setup` or of the exec comes back as this call's error (the child is
/// reaped then).
///
/// # Safety
/// `setup` runs in the child of a multi-threaded process: only
/// async-signal-safe calls, no allocation, no locks.
pub unsafe fn spawn(
    exec: &Exec,
    stdio: [&File; 3],
    cgroup: Cgroup<'_>,
    setup: &dyn Fn() -> std::io::Result<()>,
) -> std::io::Result<(Child, bool)> {
    let mut argv: Vec<*const libc::c_char> = exec.argv.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = exec.envp.iter().map(|e| e.as_ptr()).collect();
    envp.push(std::ptr::null());
    // Plain pointers, so each child closure below copies them (the
    // vectors live until this function returns).
    let (argv, envp, path) = (argv.as_ptr(), envp.as_ptr(), exec.path.as_ptr());
    // Above 0-2, so the dup2s below never overwrite a source still needed.
    let high = |f: &File| -> std::io::Result<OwnedFd> {
        nix::fcntl::fcntl(f.as_fd(), nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(3))
            .map(|fd| {
                // SAFETY: fcntl just returned this new descriptor; we own it.
                unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) }
            })
            .map_err(std::io::Error::from)
    };
    let sources = [high(stdio[0])?, high(stdio[1])?, high(stdio[2])?];
    let src: [RawFd; 3] = [0, 1, 2].map(|i| sources[i].as_raw_fd());
    let (err_read, err_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let err_fd = err_write.as_raw_fd();
    let procs_fd = cgroup.procs.as_raw_fd();

    let child = |move_self: bool| {
        move || -> i32 {
            // SAFETY: async-signal-safe calls on fds and memory prepared
            // before the clone; `setup`'s are the caller's promise.
            unsafe {
                let fail = |step: u8| -> i32 {
                    let errno = *libc::__errno_location();
                    let mut msg = [0u8; 5];
                    msg[0] = step;
                    msg[1..].copy_from_slice(&errno.to_le_bytes());
                    libc::write(err_fd, msg.as_ptr().cast(), msg.len());
                    127
                };
                if move_self && libc::write(procs_fd, b"0".as_ptr().cast(), 1) != 1 {
                    return fail(b'c');
                }
                for (target, s) in src.iter().enumerate() {
                    if libc::dup2(*s, target as RawFd) < 0 {
                        return fail(b'd');
                    }
                }
                let mut none: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut none);
                if libc::signal(libc::SIGPIPE, libc::SIG_DFL) == libc::SIG_ERR
                    || libc::pthread_sigmask(libc::SIG_SETMASK, &none, std::ptr::null_mut()) != 0
                {
                    return fail(b'g');
                }
                if let Err(e) = setup() {
                    *libc::__errno_location() = e.raw_os_error().unwrap_or(libc::EINVAL);
                    return fail(b's');
                }
                libc::execve(path, argv, envp);
                fail(b'e')
            }
        }
    };
    // SAFETY: the child closure only makes async-signal-safe calls.
    let (cloned, born_in_cgroup) =
        match unsafe { berth_sys::clone::clone3(0, Some(cgroup.dir.as_fd()), &mut child(false)) } {
            Ok(c) => (c, true),
            // An old kernel, or a directory that is not a cgroup2 one that
            // can take processes: a plain clone that moves itself.
            Err(_) => (
                unsafe { berth_sys::clone::clone3(0, None, &mut child(true)) }?,
                false,
            ),
        };
    drop(err_write);
    let mut msg = Vec::new();
    File::from(err_read).read_to_end(&mut msg)?;
    if msg.is_empty() {
        return Ok((cloned, born_in_cgroup));
    }
    let mut status = 0;
    // SAFETY: reaping our own child, which exits right after its report.
    unsafe { libc::waitpid(cloned.pid, &mut status, 0) };
    let errno = msg
        .get(1..5)
        .and_then(|b| b.try_into().ok())
        .map(i32::from_le_bytes)
        .unwrap_or(libc::EIO);
    let step = match msg[0] {
        b'c' => "join the shims' cgroup",
        b'd' => "set up stdio",
        b'g' => "reset signals",
        b's' => "set up namespaces",
        _ => "exec",
    };
    let e = std::io::Error::from_raw_os_error(errno);
    Err(std::io::Error::new(e.kind(), format!("{step}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `sh -c script` through [`spawn`] with stdout to a file, in a
    /// "cgroup" that is a plain dir (so the fallback moves the child by
    /// writing `procs`); returns the child's stdout and what it wrote
    /// into `procs`.
    fn run(script: &str, setup: &dyn Fn() -> std::io::Result<()>) -> std::io::Result<(String, String)> {
        let d = tempfile::tempdir().unwrap();
        let out = File::create(d.path().join("out")).unwrap();
        let null = File::open("/dev/null").unwrap();
        let procs = File::create(d.path().join("procs")).unwrap();
        let dir = File::open(d.path()).unwrap();
        let exec = Exec::new(
            std::path::Path::new("/bin/sh"),
            &["-c".as_ref(), script.as_ref()],
            &[("PATH", "/usr/bin:/bin"), ("ONLY", "this")],
        )
        .unwrap();
        let cgroup = Cgroup {
            dir: &dir,
            procs: &procs,
        };
        // SAFETY: the setups below make no allocation.
        let (c, born) = unsafe { spawn(&exec, [&null, &out, &null], cgroup, setup) }?;
        assert!(!born, "a plain directory is no cgroup to be born in");
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(c.pid, &mut status, 0) };
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "{status}"
        );
        Ok((
            std::fs::read_to_string(d.path().join("out")).unwrap(),
            std::fs::read_to_string(d.path().join("procs")).unwrap(),
        ))
    }

    /// The child has exactly the given environment and stdout, no signal
    /// ignored or blocked (berthd ignores SIGPIPE; an ignored signal would
    /// stay ignored in the shim), and, refused by a directory that is no
    /// cgroup2 one, it moves itself through `cgroup.procs`.
    #[test]
    fn the_child_gets_its_stdio_env_and_default_signals_and_moves_itself() {
        // As berthd's runtime has it.
        // SAFETY: setting a disposition of this test process.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
        let (out, procs) = run(
            "env | sort; grep -E '^Sig(Ign|Blk)' /proc/self/status",
            &|| Ok(()),
        )
        .unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[..2], ["ONLY=this", "PATH=/usr/bin:/bin"], "{out}");
        assert!(lines.iter().all(|l| !l.starts_with("HOME=")), "{out}");
        assert!(out.contains("SigBlk:\t0000000000000000"), "{out}");
        let ign = out.lines().find_map(|l| l.strip_prefix("SigIgn:\t")).unwrap();
        let ign = u64::from_str_radix(ign.trim(), 16).unwrap();
        assert_eq!(
            ign & (1 << (libc::SIGPIPE - 1)),
            0,
            "SIGPIPE still ignored: {out}"
        );
        assert_eq!(procs, "0", "the fallback child writes itself into cgroup.procs");
    }

    /// A setup or exec failure is this call's error, naming the step.
    #[test]
    fn a_failed_setup_or_exec_is_an_error_naming_the_step() {
        let e = run("exit 0", &|| Err(std::io::Error::from_raw_os_error(libc::EPERM))).unwrap_err();
        assert!(e.to_string().starts_with("set up namespaces:"), "{e}");
        assert_eq!(e.raw_os_error(), None);
        assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied);

        let d = tempfile::tempdir().unwrap();
        let null = File::open("/dev/null").unwrap();
        let procs = File::create(d.path().join("procs")).unwrap();
        let dir = File::open(d.path()).unwrap();
        let exec = Exec::new(&d.path().join("no-such-shim"), &[], &[]).unwrap();
        let cgroup = Cgroup {
            dir: &dir,
            procs: &procs,
        };
        // SAFETY: no setup at all.
        let e = unsafe { spawn(&exec, [&null, &null, &null], cgroup, &|| Ok(())) }.unwrap_err();
        assert!(e.to_string().starts_with("exec:"), "{e}");
        assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
    }
}
