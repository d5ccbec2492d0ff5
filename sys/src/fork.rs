//! What a child forked from a threaded process and not (yet) exec'd must do
//! first: drop the descriptors it inherited. Every descriptor berthd has
//! open at the fork is copied into the child, close-on-exec or not; a child
//! that never execs (a placeholder process, a namespace helper) would keep
//! the write ends of other children's pipes open for its whole life, and
//! whoever waits for EOF on them (a CNI plugin's stdout) waits that long.

use std::os::fd::RawFd;

/// Closes every descriptor of the calling process but those in `keep`.
/// Async-signal-safe (close_range(2), or close(2) one by one on kernels
/// before 5.9), so a forked child of a threaded process may call it.
pub fn close_fds_except(keep: &[RawFd]) {
    let mut low: u32 = 0;
    loop {
        // The lowest kept fd at or above `low` (no allocation, no sort).
        let next = keep
            .iter()
            .filter_map(|&k| u32::try_from(k).ok())
            .filter(|&k| k >= low)
            .min();
        let high = next.map_or(u32::MAX, |k| k.saturating_sub(1));
        if next != Some(low) {
            close_range(low, high);
        }
        match next {
            Some(k) if k < u32::MAX => low = k + 1,
            _ => return,
        }
    }
}

/// Closes fds `low..=high`.
fn close_range(low: u32, high: u32) {
    // SAFETY: close_range(2) with no flags only closes descriptors.
    let rc = unsafe { libc::syscall(libc::SYS_close_range, low, high, 0) };
    if rc == 0 {
        return;
    }
    // Before Linux 5.9: one by one, up to the usual hard limit.
    for fd in low..=high.min(1 << 20) {
        // SAFETY: close(2) of a number; EBADF for one not open is harmless.
        unsafe { libc::close(fd as RawFd) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

    fn pipe() -> (OwnedFd, OwnedFd) {
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two fds pipe2 writes.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: two fresh fds nothing else owns.
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
    }

    /// Seen from outside: the child keeps exactly the fd it was told to,
    /// and none of the others this (threaded) test process had open.
    #[test]
    fn a_forked_child_keeps_only_what_it_was_told() {
        let (other_r, other_w) = pipe();
        let (r, w) = pipe();
        let keep = w.as_raw_fd();
        // SAFETY: the child calls only close_range/close, write, pause.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            // SAFETY: async-signal-safe calls only.
            unsafe {
                close_fds_except(&[keep]);
                libc::write(keep, b"x".as_ptr().cast(), 1);
                loop {
                    libc::pause();
                }
            }
        }
        let mut b = [0u8; 1];
        std::fs::File::from(r).read_exact(&mut b).unwrap();
        let fds: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        // SAFETY: our own child, killed and reaped once.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
        assert_eq!(fds, vec![keep.to_string()]);
        drop((other_r, other_w));
    }
}
