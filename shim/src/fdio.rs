//! Non-blocking, shareable async I/O over a pipe end or a terminal master.
//!
//! Streaming exec moves stdio through the shim's tokio runtime instead of a
//! thread per stream. `FdStream` puts a descriptor the shim alone owns into
//! O_NONBLOCK and drives it with `AsyncFd`; its methods take `&self`, so one
//! terminal master can be read by the output pump while the input pump
//! writes keystrokes to it. Never use it on a descriptor that a blocking
//! reader also uses (the log copier): O_NONBLOCK is a property of the open
//! file, shared by every dup.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use tokio::io::unix::AsyncFd;

/// An owned descriptor in non-blocking mode, registered with tokio.
pub struct FdStream(AsyncFd<OwnedFd>);

impl FdStream {
    /// Takes ownership of `fd` and makes it non-blocking.
    pub fn new(fd: OwnedFd) -> io::Result<Self> {
        let flags = OFlag::from_bits_truncate(fcntl(&fd, FcntlArg::F_GETFL)?);
        fcntl(&fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
        // SAFETY: an OwnedFd stays open, on the same open file, until the
        // AsyncFd that owns it is dropped.
        let registered = unsafe { AsyncFd::register(fd) }.map_err(io::Error::from)?;
        Ok(FdStream(registered))
    }

    /// Reads some bytes; 0 is end of stream. A terminal whose every slave
    /// descriptor closed answers EIO, which is its end of stream too.
    pub async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut guard = self.0.readable().await?;
            match guard.try_io(|fd| nix::unistd::read(fd.get_ref(), buf).map_err(io::Error::from)) {
                Ok(Err(e)) if e.raw_os_error() == Some(libc::EIO) => return Ok(0),
                Ok(r) => return r,
                Err(_would_block) => continue,
            }
        }
    }

    /// Writes all of `data`.
    pub async fn write_all(&self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let mut guard = self.0.writable().await?;
            match guard.try_io(|fd| nix::unistd::write(fd.get_ref(), data).map_err(io::Error::from)) {
                Ok(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(Ok(n)) => data = &data[n..],
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => {}
            }
        }
        Ok(())
    }
}

impl AsFd for FdStream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.get_ref().as_fd()
    }
}

/// Sets a terminal's size (TIOCSWINSZ on the master): the kernel stores it
/// and sends SIGWINCH to the terminal's foreground process group.
pub fn set_window_size(master: &impl AsFd, width: u16, height: u16) -> io::Result<()> {
    let ws = libc::winsize {
        ws_row: height,
        ws_col: width,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize from a valid pointer.
    if unsafe { libc::ioctl(master.as_fd().as_raw_fd(), libc::TIOCSWINSZ, &ws) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pipe_round_trip_and_eof() {
        let (r, w) = nix::unistd::pipe().unwrap();
        let (r, w) = (FdStream::new(r).unwrap(), FdStream::new(w).unwrap());
        w.write_all(b"hello").await.unwrap();
        drop(w);
        let mut buf = [0u8; 16];
        let n = r.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"hello");
        assert_eq!(r.read(&mut buf).await.unwrap(), 0, "EOF once the writer is gone");
    }

    #[tokio::test]
    async fn terminal_size_is_set_and_hangup_reads_as_eof() {
        let master = nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY).unwrap();
        nix::pty::grantpt(&master).unwrap();
        nix::pty::unlockpt(&master).unwrap();
        let name = nix::pty::ptsname_r(&master).unwrap();
        let slave = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&name)
            .unwrap();
        let master = FdStream::new(OwnedFd::from(master)).unwrap();
        set_window_size(&master, 120, 40).unwrap();
        // SAFETY: an all-zero winsize is a valid value to overwrite.
        let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
        // SAFETY: TIOCGWINSZ writes one winsize.
        assert_eq!(
            unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) },
            0
        );
        assert_eq!((ws.ws_col, ws.ws_row), (120, 40));
        drop(slave);
        let mut buf = [0u8; 16];
        assert_eq!(master.read(&mut buf).await.unwrap(), 0);
    }
}
