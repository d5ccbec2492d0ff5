//! The fork server's messages, both sides. One request per container on a
//! `SOCK_SEQPACKET` socketpair (a message is a request, whole or not at
//! all; its descriptors travel with it as `SCM_RIGHTS`), one reply.
//!
//! Request: one flags byte, then init's JSON config; descriptors stdin,
//! stdout, stderr, sync, start, then with [`CGROUP`] the container's cgroup
//! directory and with [`JOIN_PID_NS`] the pod's PID namespace. Reply: `O<pid> <in_cgroup>` with the child's pidfd, or
//! `E<message>` when nothing was cloned.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};

/// Flag: the container gets a PID namespace of its own.
pub const NEW_PID_NS: u8 = 1;
/// Flag: a cgroup directory follows the five channels.
pub const CGROUP: u8 = 2;
/// Flag: the container joins the PID namespace whose descriptor comes
/// last (the pod's shared one).
pub const JOIN_PID_NS: u8 = 4;
/// The most descriptors a request carries.
const MAX_FDS: usize = CHANNELS + 2;
/// The largest request: below the kernel's default socket send buffer
/// (`net.core.wmem_default`, 208 KiB), so a request fits one message. A
/// larger config goes the exec'd way.
pub const MAX_REQUEST: usize = 192 * 1024;
/// The container's channels, in their order in a request.
pub const CHANNELS: usize = 5;

/// A request as the server receives it.
#[derive(Debug)]
pub struct Request {
    /// [`NEW_PID_NS`] and [`CGROUP`].
    pub flags: u8,
    /// Init's config, JSON.
    pub config: Vec<u8>,
    /// stdin, stdout, stderr, sync, start.
    pub channels: [OwnedFd; CHANNELS],
    /// The container's cgroup directory, with [`CGROUP`].
    pub cgroup: Option<OwnedFd>,
    /// The PID namespace to clone into, with [`JOIN_PID_NS`].
    pub pid_ns: Option<OwnedFd>,
}

/// What the server answers.
#[derive(Debug)]
pub enum Reply {
    /// The child runs: its pid (in the server's and the shim's PID
    /// namespace), whether it was born in the cgroup, its pidfd.
    Cloned {
        /// The child's pid.
        pid: i32,
        /// Born in the request's cgroup.
        in_cgroup: bool,
        /// A pidfd of the child.
        pidfd: OwnedFd,
    },
    /// Nothing was cloned, and why.
    Failed(String),
}

/// The shim's side: sends one request. `flags` says [`NEW_PID_NS`] or
/// not; the others follow from the descriptors given.
pub fn send_request(
    sock: BorrowedFd<'_>,
    flags: u8,
    config: &[u8],
    channels: [BorrowedFd<'_>; CHANNELS],
    cgroup: Option<BorrowedFd<'_>>,
    pid_ns: Option<BorrowedFd<'_>>,
) -> std::io::Result<()> {
    if config.len() + 1 > MAX_REQUEST {
        return Err(std::io::Error::from_raw_os_error(libc::EMSGSIZE));
    }
    let mut fds: Vec<RawFd> = channels.iter().map(|f| f.as_raw_fd()).collect();
    let mut flags = flags & NEW_PID_NS;
    if let Some(cg) = cgroup {
        fds.push(cg.as_raw_fd());
        flags |= CGROUP;
    }
    if let Some(ns) = pid_ns {
        fds.push(ns.as_raw_fd());
        flags |= JOIN_PID_NS;
    }
    let head = [flags];
    let iov = [IoSlice::new(&head), IoSlice::new(config)];
    sendmsg::<()>(
        sock.as_raw_fd(),
        &iov,
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::MSG_NOSIGNAL,
        None,
    )?;
    Ok(())
}

/// The server's side: the next request, or None when the shim closed its
/// end (it exited: so do we).
pub fn recv_request(sock: BorrowedFd<'_>) -> std::io::Result<Option<Request>> {
    let mut buf = vec![0u8; MAX_REQUEST];
    let (n, fds, truncated) = recv(sock, &mut buf, MAX_FDS)?;
    if n == 0 && fds.is_empty() {
        return Ok(None);
    }
    if truncated {
        return Err(invalid("a request larger than its limit"));
    }
    let flags = buf[0];
    let want = CHANNELS + usize::from(flags & CGROUP != 0) + usize::from(flags & JOIN_PID_NS != 0);
    if n == 0 || fds.len() != want {
        return Err(invalid(&format!(
            "a request with {} descriptors, not {want}",
            fds.len()
        )));
    }
    buf.truncate(n);
    buf.remove(0);
    let mut fds = fds.into_iter();
    let channels = std::array::from_fn(|_| fds.next().expect("counted above"));
    let cgroup = if flags & CGROUP != 0 { fds.next() } else { None };
    Ok(Some(Request {
        flags,
        config: buf,
        channels,
        cgroup,
        pid_ns: fds.next(),
    }))
}

/// The server's side: answers the request it just served.
pub fn send_reply(sock: BorrowedFd<'_>, reply: &Reply) -> std::io::Result<()> {
    match reply {
        Reply::Cloned {
            pid,
            in_cgroup,
            pidfd,
        } => {
            let text = format!("O{pid} {}", u8::from(*in_cgroup));
            sendmsg::<()>(
                sock.as_raw_fd(),
                &[IoSlice::new(text.as_bytes())],
                &[ControlMessage::ScmRights(&[pidfd.as_raw_fd()])],
                MsgFlags::MSG_NOSIGNAL,
                None,
            )?;
        }
        Reply::Failed(msg) => {
            let text = format!("E{msg}");
            sendmsg::<()>(
                sock.as_raw_fd(),
                &[IoSlice::new(text.as_bytes())],
                &[],
                MsgFlags::MSG_NOSIGNAL,
                None,
            )?;
        }
    }
    Ok(())
}

/// The shim's side: the server's answer to its request.
pub fn recv_reply(sock: BorrowedFd<'_>) -> std::io::Result<Reply> {
    let mut buf = vec![0u8; 4096];
    let (n, fds, _) = recv(sock, &mut buf, 1)?;
    if n == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "the fork server closed its socket",
        ));
    }
    let text = String::from_utf8_lossy(&buf[1..n]).into_owned();
    match buf[0] {
        b'E' => Ok(Reply::Failed(text)),
        b'O' => {
            let mut words = text.split(' ');
            let pid = words
                .next()
                .and_then(|p| p.parse::<i32>().ok())
                .filter(|p| *p > 0);
            let in_cgroup = words.next() == Some("1");
            match (pid, fds.into_iter().next()) {
                (Some(pid), Some(pidfd)) => Ok(Reply::Cloned {
                    pid,
                    in_cgroup,
                    pidfd,
                }),
                _ => Err(invalid(&format!("a malformed reply {text:?}"))),
            }
        }
        other => Err(invalid(&format!("a reply starting with byte {other}"))),
    }
}

/// One message into `buf`: its length, the descriptors that came with it
/// (ours now, close-on-exec) and whether it was cut to fit.
fn recv(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
    max_fds: usize,
) -> std::io::Result<(usize, Vec<OwnedFd>, bool)> {
    let mut iov = [IoSliceMut::new(buf)];
    let mut cmsg = nix::cmsg_space!([RawFd; MAX_FDS]);
    let msg = loop {
        match recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Err(nix::errno::Errno::EINTR) => continue,
            other => break other?,
        }
    };
    let mut fds = Vec::new();
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(got) = c {
            // SAFETY: the kernel just installed these descriptors for us.
            fds.extend(got.into_iter().map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }));
        }
    }
    let truncated = msg.flags.intersects(MsgFlags::MSG_TRUNC | MsgFlags::MSG_CTRUNC);
    let n = msg.bytes;
    if fds.len() > max_fds {
        return Err(invalid(&format!("{} descriptors, at most {max_fds}", fds.len())));
    }
    Ok((n, fds, truncated))
}

fn invalid(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, format!("fork server: {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::AsFd;

    fn pair() -> (OwnedFd, OwnedFd) {
        nix::sys::socket::socketpair(
            nix::sys::socket::AddressFamily::Unix,
            nix::sys::socket::SockType::SeqPacket,
            None,
            nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        )
        .unwrap()
    }

    fn pipe() -> (OwnedFd, OwnedFd) {
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap()
    }

    #[test]
    fn a_request_carries_its_config_and_channels_whole() {
        let (shim, server) = pair();
        let pipes: Vec<(OwnedFd, OwnedFd)> = (0..CHANNELS).map(|_| pipe()).collect();
        let dir = std::fs::File::open("/").unwrap();
        let config = vec![b'x'; 100_000];
        let ends: [BorrowedFd; CHANNELS] = std::array::from_fn(|i| pipes[i].1.as_fd());
        send_request(shim.as_fd(), NEW_PID_NS, &config, ends, Some(dir.as_fd()), None).unwrap();
        let req = recv_request(server.as_fd()).unwrap().expect("a request");
        assert_eq!(req.flags, NEW_PID_NS | CGROUP);
        assert_eq!(req.config, config);
        assert!(req.cgroup.is_some() && req.pid_ns.is_none());
        // Each received channel is the same pipe as the one sent.
        for (i, ch) in req.channels.into_iter().enumerate() {
            std::fs::File::from(ch).write_all(&[i as u8]).unwrap();
            let mut b = [0u8; 1];
            std::fs::File::from(pipes[i].0.try_clone().unwrap())
                .read_exact(&mut b)
                .unwrap();
            assert_eq!(b[0], i as u8);
        }
        // The shim closing its end ends the server's loop.
        drop(shim);
        assert!(recv_request(server.as_fd()).unwrap().is_none());
    }

    #[test]
    fn the_flags_follow_the_descriptors_given() {
        let (shim, server) = pair();
        let pipes: Vec<(OwnedFd, OwnedFd)> = (0..CHANNELS).map(|_| pipe()).collect();
        let ends = || -> [BorrowedFd; CHANNELS] { std::array::from_fn(|i| pipes[i].1.as_fd()) };
        send_request(shim.as_fd(), CGROUP | JOIN_PID_NS, b"{}", ends(), None, None).unwrap();
        let req = recv_request(server.as_fd()).unwrap().unwrap();
        assert_eq!(
            (req.flags, req.cgroup.is_none(), req.pid_ns.is_none()),
            (0, true, true)
        );
        // A PID namespace without a cgroup comes as the PID namespace.
        let ns = std::fs::File::open("/proc/self/ns/pid").unwrap();
        send_request(shim.as_fd(), 0, b"{}", ends(), None, Some(ns.as_fd())).unwrap();
        let req = recv_request(server.as_fd()).unwrap().unwrap();
        assert_eq!(
            (req.flags, req.cgroup.is_none(), req.pid_ns.is_some()),
            (JOIN_PID_NS, true, true)
        );
    }

    #[test]
    fn a_config_over_the_limit_is_refused_before_it_is_sent() {
        let (shim, _server) = pair();
        let pipes: Vec<(OwnedFd, OwnedFd)> = (0..CHANNELS).map(|_| pipe()).collect();
        let ends: [BorrowedFd; CHANNELS] = std::array::from_fn(|i| pipes[i].1.as_fd());
        let e = send_request(shim.as_fd(), 0, &vec![0; MAX_REQUEST], ends, None, None).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EMSGSIZE));
    }

    #[test]
    fn a_request_with_missing_channels_is_refused() {
        let (shim, server) = pair();
        let (_r, w) = pipe();
        sendmsg::<()>(
            shim.as_raw_fd(),
            &[IoSlice::new(b"\0{}")],
            &[ControlMessage::ScmRights(&[w.as_raw_fd()])],
            MsgFlags::empty(),
            None,
        )
        .unwrap();
        let e = recv_request(server.as_fd()).unwrap_err();
        assert!(e.to_string().contains("1 descriptors, not 5"), "{e}");
    }

    #[test]
    fn replies_come_back_as_sent() {
        let (shim, server) = pair();
        let (r, _w) = pipe();
        send_reply(
            server.as_fd(),
            &Reply::Cloned {
                pid: 4242,
                in_cgroup: true,
                pidfd: r,
            },
        )
        .unwrap();
        match recv_reply(shim.as_fd()).unwrap() {
            Reply::Cloned { pid, in_cgroup, .. } => assert_eq!((pid, in_cgroup), (4242, true)),
            other => panic!("{other:?}"),
        }
        send_reply(server.as_fd(), &Reply::Failed("parse init config: eof".into())).unwrap();
        match recv_reply(shim.as_fd()).unwrap() {
            Reply::Failed(m) => assert_eq!(m, "parse init config: eof"),
            other => panic!("{other:?}"),
        }
        drop(server);
        assert_eq!(
            recv_reply(shim.as_fd()).unwrap_err().kind(),
            std::io::ErrorKind::UnexpectedEof
        );
    }
}
