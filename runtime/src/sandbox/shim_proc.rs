//! A pod's shim process as seen from /proc: used by recovery (reconnect or
//! not), the shim watcher (has it exited?) and StopPodSandbox (wait, then
//! kill). Kept apart so those three do not import each other.

use std::path::Path;

/// Whether `pid` is the shim serving `socket` (its command line names the
/// socket, so a recycled pid is not mistaken for it).
pub(crate) fn shim_alive(pid: u32, socket: &Path) -> bool {
    let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let sock = socket.as_os_str().as_encoded_bytes();
    cmd.split(|b| *b == 0).any(|arg| arg == sock)
}

/// Waits until the shim `pid` serving `socket` has exited (at once if it is
/// not that shim any more). berthd is the shim's parent only until berthd
/// restarts, so the wait is a pidfd (pidfd_open(2), Linux >= 5.3): it
/// becomes readable when the process exits, whoever its parent is, and
/// unlike a bare pid it can never come to name another process. The
/// wakeup is the exit itself: StopPodSandbox's wait ends with the shim,
/// not at the next tick of a poll.
pub(crate) async fn exited(pid: u32, socket: &Path) {
    let fd = match berth_sys::pidfd::open(pid as i32) {
        Ok(fd) => fd,
        Err(_) => return,
    };
    // Checked after the pidfd pins the process: if it is the shim now, the
    // pidfd is the shim's.
    if !shim_alive(pid, socket) {
        return;
    }
    // SAFETY: the AsyncFd owns the OwnedFd, so the fd stays open and names
    // the same pidfd until the AsyncFd is dropped.
    let registered =
        unsafe { tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) };
    match registered {
        Ok(afd) => {
            let _ = afd.readable().await;
        }
        Err(e) => {
            // No epoll for this fd: fall back to looking now and then.
            tracing::debug!(error = %e, "pidfd not pollable; polling the shim");
            while shim_alive(pid, socket) {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::path::Path;
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    /// Generous: these waits end on an event; the deadline only stops a
    /// broken test from hanging.
    pub(crate) const DEADLINE: Duration = Duration::from_secs(30);

    /// A process whose command line names `socket`, as a shim's does,
    /// running until its stdin closes (returned once it has exec'd, as
    /// berthd watches only a serving shim).
    pub(crate) fn fake_shim(socket: &str) -> Child {
        let child = Command::new("sh")
            .args(["-c", "read _", socket])
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + DEADLINE;
        while !shim_alive(child.id(), Path::new(socket)) {
            assert!(Instant::now() < deadline, "fake shim did not start");
            std::thread::sleep(Duration::from_millis(1));
        }
        child
    }

    #[tokio::test]
    async fn the_wait_ends_when_the_shim_exits_not_before() {
        let mut child = fake_shim("/run/test/s/aaaa.sock");
        let pid = child.id();
        let mut wait = tokio::spawn(async move { exited(pid, Path::new("/run/test/s/aaaa.sock")).await });
        // While the shim lives, the wait does not end (the pidfd is not
        // readable; this bound only gives it the chance to end wrongly).
        assert!(tokio::time::timeout(Duration::from_millis(300), &mut wait)
            .await
            .is_err());
        assert!(child.try_wait().unwrap().is_none(), "the shim still runs");
        // Its exit (stdin closed) ends the wait.
        drop(child.stdin.take());
        tokio::time::timeout(DEADLINE, wait)
            .await
            .expect("the wait ended after the shim exited")
            .unwrap();
        assert!(child.try_wait().unwrap().is_some(), "ended by the exit");
    }

    #[tokio::test]
    async fn another_process_at_the_pid_is_not_waited_for() {
        let mut child = fake_shim("/run/test/s/bbbb.sock");
        tokio::time::timeout(DEADLINE, exited(child.id(), Path::new("/run/test/s/other.sock")))
            .await
            .expect("returned without waiting for the process");
        assert!(child.try_wait().unwrap().is_none(), "the process still runs");
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
