//! The start-up wakeup berthd waits on. berthd passes the write end of a
//! pipe as `--ready-fd N`; the shim writes one byte once its socket is
//! bound, so berthd connects once, when the shim can answer, instead of
//! polling for the socket file. If the shim dies first, berthd sees EOF.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// The byte the shim writes when it serves.
pub const READY_BYTE: u8 = b'R';

/// Takes ownership of inherited fd `fd` and marks it close-on-exec at
/// once, before the pod's PID 1 or any container is started, so no
/// process of the pod inherits it.
pub fn take(fd: RawFd) -> std::io::Result<OwnedFd> {
    if fd <= 2 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("--ready-fd {fd} is a standard stream"),
        ));
    }
    // SAFETY: fcntl on a plain integer; F_GETFD fails with EBADF when the
    // descriptor is not open, which is checked before we own it.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if flags < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is open (checked above) and berthd passed it to us for
    // this purpose alone; nothing else in the shim refers to it.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: fcntl(F_SETFD) on a descriptor we own.
    if unsafe { libc::fcntl(owned.as_raw_fd(), libc::F_SETFD, flags | libc::FD_CLOEXEC) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(owned)
}

/// Tells berthd the shim serves, and closes the pipe.
pub fn signal(fd: OwnedFd) -> std::io::Result<()> {
    let n = nix::unistd::write(&fd, &[READY_BYTE]).map_err(std::io::Error::from)?;
    if n != 1 {
        return Err(std::io::Error::new(std::io::ErrorKind::WriteZero, "ready pipe"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::fd::IntoRawFd;

    /// The inherited end becomes close-on-exec (no container inherits it)
    /// and carries exactly one byte; standard streams are refused.
    #[test]
    fn take_marks_cloexec_and_signal_writes_one_byte() {
        let (read, write) = nix::unistd::pipe().unwrap();
        let raw = write.into_raw_fd();
        // SAFETY: F_GETFD on a descriptor this test owns.
        assert_eq!(unsafe { libc::fcntl(raw, libc::F_GETFD) } & libc::FD_CLOEXEC, 0);
        let owned = take(raw).unwrap();
        // SAFETY: as above.
        assert_ne!(
            unsafe { libc::fcntl(owned.as_raw_fd(), libc::F_GETFD) } & libc::FD_CLOEXEC,
            0
        );
        signal(owned).unwrap();
        let mut got = Vec::new();
        std::fs::File::from(read).read_to_end(&mut got).unwrap();
        assert_eq!(got, vec![READY_BYTE]);
        assert!(take(2).is_err());
    }

    /// A number that is not an open descriptor is an error, not a later
    /// write into whatever gets that number.
    #[test]
    fn take_refuses_a_closed_descriptor() {
        let (read, write) = nix::unistd::pipe().unwrap();
        let raw = write.into_raw_fd();
        // SAFETY: closing a descriptor this test owns, then never using it.
        unsafe { libc::close(raw) };
        drop(read);
        assert!(take(raw).is_err());
    }
}
