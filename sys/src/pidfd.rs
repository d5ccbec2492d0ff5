//! pidfds (Linux >= 5.3): a descriptor that names one process for as long
//! as it is held, so a pid reused after the process was reaped is never
//! signalled or read in its stead.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// pidfd_open(2) of `pid` (ESRCH when it is gone).
pub fn open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open(2) with integer arguments; the result is a new fd we own.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just returned by the kernel and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// pidfd_send_signal(2): sends `sig` (0: only checks) to the process
/// `pidfd` holds; ESRCH once it has been reaped, whoever has its pid by then.
pub fn send_signal(pidfd: BorrowedFd<'_>, sig: i32) -> io::Result<()> {
    // SAFETY: pidfd_send_signal(2) on a descriptor we borrow, with no siginfo.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    use super::*;

    #[test]
    fn a_pidfd_signals_its_process_until_it_is_reaped() {
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let fd = open(child.id() as i32).unwrap();
        send_signal(fd.as_fd(), 0).expect("alive");
        send_signal(fd.as_fd(), libc::SIGKILL).unwrap();
        child.wait().unwrap();
        let e = send_signal(fd.as_fd(), 0).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ESRCH));
        assert_eq!(
            open(child.id() as i32).map(drop).unwrap_err().raw_os_error(),
            Some(libc::ESRCH)
        );
    }
}
