//! A terminal for `tty: true` containers, made inside the container.
//!
//! The pty pair must come from the container's own devpts instance (mounted
//! with `newinstance`), or `tty`/ttyname(3) inside would name a device the
//! container cannot see. So the init stage opens `/dev/ptmx` after
//! pivot_root, sends the master to the shim over the unix socket the shim
//! gave it as fd 0, and makes the slave its stdin/stdout/stderr and
//! controlling terminal. The shim copies the master into the CRI log.

use std::io::IoSlice;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use anyhow::{Context, Result};
use nix::fcntl::OFlag;
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};

/// Sets up the terminal; fd 0 must be the shim's console socket.
pub fn setup() -> Result<()> {
    let master = nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .context("open /dev/ptmx")?;
    nix::pty::grantpt(&master).context("grantpt")?;
    nix::pty::unlockpt(&master).context("unlockpt")?;
    let name = nix::pty::ptsname_r(&master).context("ptsname")?;
    let slave = nix::fcntl::open(
        name.as_str(),
        OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .with_context(|| format!("open {name}"))?;

    let fds = [master.as_raw_fd()];
    // SAFETY: fd 0 is the console socket the shim passed us and stays open
    // for this call.
    let sock = unsafe { BorrowedFd::borrow_raw(0) };
    sendmsg::<()>(
        sock.as_raw_fd(),
        &[IoSlice::new(b"M")],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .context("send the terminal to the shim")?;
    drop(master);

    for target in 0..=2 {
        // SAFETY: dup2 onto the standard descriptors; `slave` stays valid.
        if unsafe { libc::dup2(slave.as_raw_fd(), target) } < 0 {
            return Err(std::io::Error::last_os_error()).context("dup2 terminal");
        }
    }
    drop(slave);
    // A new session whose controlling terminal is the slave, so job control
    // and SIGWINCH/SIGHUP work as in a login shell.
    nix::unistd::setsid().context("setsid")?;
    // SAFETY: ioctl(TIOCSCTTY) on fd 0, which is the slave.
    if unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } < 0 {
        return Err(std::io::Error::last_os_error()).context("TIOCSCTTY");
    }
    Ok(())
}

/// The shim's side: receives the terminal master the init stage sent.
pub fn receive(sock: &std::os::unix::net::UnixStream) -> Result<OwnedFd> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned};
    let mut buf = [0u8; 1];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let msg = recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .context("receive the container's terminal")?;
    for c in msg.cmsgs().context("read control messages")? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            if let Some(fd) = fds.first() {
                // SAFETY: the kernel just installed this descriptor for us.
                return Ok(unsafe { OwnedFd::from_raw_fd(*fd) });
            }
        }
    }
    anyhow::bail!("the container's init sent no terminal")
}
