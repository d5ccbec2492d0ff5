//! Waiting for a new shim to serve without polling: the shim inherits the
//! write end of a pipe as descriptor [`READY_FD`] and writes one byte once
//! its socket listens; berthd blocks on the read end. EOF means the shim
//! exited (or closed it) before serving.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

/// The descriptor number the shim finds its end of the pipe at.
pub const READY_FD: RawFd = 3;

/// How a shim's start-up ended, seen from the pipe.
#[derive(Debug, PartialEq, Eq)]
pub enum Startup {
    /// The shim wrote its byte: its socket accepts connections.
    Ready,
    /// EOF: the shim is gone (or closed the pipe) without serving.
    Closed,
    /// Nothing within the timeout.
    TimedOut,
}

/// The pipe for one spawn: berthd keeps `read`, the shim gets `write`.
pub fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(std::io::Error::from)
}

/// In the child between fork and exec: puts `write` at [`READY_FD`]
/// without close-on-exec. Async-signal-safe (dup2/fcntl only).
pub fn install_in_child(write: RawFd) -> std::io::Result<()> {
    if write == READY_FD {
        // dup2 onto itself would keep close-on-exec: clear it instead.
        // SAFETY: fcntl(F_SETFD) on a descriptor open in this process.
        if unsafe { libc::fcntl(write, libc::F_SETFD, 0) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        return Ok(());
    }
    // SAFETY: dup2 of an open descriptor; the copy has no close-on-exec.
    if unsafe { libc::dup2(write, READY_FD) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Blocks until the shim writes its byte, closes the pipe, or `timeout`
/// passes. Run it off the async runtime (spawn_blocking).
pub fn wait(read: &OwnedFd, timeout: Duration) -> std::io::Result<Startup> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut pfd = libc::pollfd {
            fd: read.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = i32::try_from(left.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: poll on one pollfd that lives across the call.
        let n = unsafe { libc::poll(&mut pfd, 1, ms) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Ok(Startup::TimedOut);
        }
        let mut byte = [0u8; 1];
        match nix::unistd::read(read, &mut byte) {
            Ok(1) => return Ok(Startup::Ready),
            Ok(_) => return Ok(Startup::Closed),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One byte is "serving"; a closed write end (the shim died) is EOF,
    /// told apart from silence.
    #[test]
    fn wait_tells_ready_from_closed_from_silent() {
        let (read, write) = pipe().unwrap();
        nix::unistd::write(&write, b"R").unwrap();
        assert_eq!(wait(&read, Duration::from_secs(10)).unwrap(), Startup::Ready);

        let (read, write) = pipe().unwrap();
        drop(write);
        assert_eq!(wait(&read, Duration::from_secs(10)).unwrap(), Startup::Closed);

        let (read, _write) = pipe().unwrap();
        assert_eq!(wait(&read, Duration::ZERO).unwrap(), Startup::TimedOut);
    }

    /// The child's copy lands at READY_FD without close-on-exec, whatever
    /// number the pipe got; a fork keeps this process's descriptors intact.
    #[test]
    fn install_in_child_leaves_ready_fd_inheritable() {
        let (read, write) = pipe().unwrap();
        let raw = write.as_raw_fd();
        let mut cmd = std::process::Command::new("sh");
        cmd.arg("-c").arg(format!("printf R >&{READY_FD}"));
        // SAFETY: the closure only calls dup2/fcntl.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || install_in_child(raw));
        }
        let mut child = cmd.spawn().unwrap();
        drop(write);
        assert_eq!(wait(&read, Duration::from_secs(10)).unwrap(), Startup::Ready);
        assert!(child.wait().unwrap().success());
    }
}
