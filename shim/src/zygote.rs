//! The pod's fork server ("zygote"): clones each container's init without
//! an exec per container.
//!
//! Why: under emulation, a container's init spent most of its set-up
//! before any container work: the exec of the shim's static binary
//! (`shim.exec`, ~23 ms in the VM bench) and the decode of its JSON config
//! in a process whose code and heap are touched for the first time
//! (`shim.config`, ~19 ms). The shim itself cannot fork a ready-made init:
//! it runs a multi-threaded tokio runtime, so a child may only make
//! async-signal-safe calls until it execs. The fork server is exec'd once,
//! when the shim starts (in the shadow of the pod's CNI ADD), stays
//! single-threaded, decodes each config with warm code and forks init from
//! there ([`server`]).
//!
//! The server lives in the shim's PID namespace and clones each init where
//! the shim would: a PID namespace of its own, the pod's shared one, or
//! the shim's. A config too large for one request, or a server that is
//! gone, takes the exec'd path, which stays as it was.

pub mod server;
pub mod wire;

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::Mutex;
use std::time::Duration;

use crate::spawn::{ChildFds, Spawned};

/// How long the shim waits for a reply: a decode and a clone, normally
/// milliseconds. Past it the server is taken for hung, killed and not used
/// again.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// The shim's handle on its fork server.
pub struct Zygote {
    pid: i32,
    /// Our end of the socketpair; None once the server failed us.
    sock: Mutex<Option<OwnedFd>>,
}

/// What a request to the server came to.
pub enum Forked {
    /// The container's init runs.
    Cloned(Spawned),
    /// Nothing was asked or cloned (no server, a config too large for a
    /// request): the exec'd path instead.
    Unavailable(String),
    /// The request went out and failed: the container's creation fails
    /// (its init may have been cloned; it exits on EOF of its start pipe).
    Failed(String),
}

impl Zygote {
    /// Starts the fork server. None (and why, on stderr) when it cannot
    /// run: the exec'd path then serves every container.
    pub fn start() -> Option<Zygote> {
        match Self::try_start() {
            Ok(z) => Some(z),
            Err(e) => {
                eprintln!("berth-shim: no fork server ({e}); every init is exec'd");
                None
            }
        }
    }

    fn try_start() -> nix::Result<Zygote> {
        use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )?;
        let timeout = nix::sys::time::TimeVal::new(REPLY_TIMEOUT.as_secs() as i64, 0);
        nix::sys::socket::setsockopt(&ours, nix::sys::socket::sockopt::ReceiveTimeout, &timeout)?;
        let pid = crate::spawn::spawn_zygote(&theirs)?;
        Ok(Zygote {
            pid,
            sock: Mutex::new(Some(ours)),
        })
    }

    /// The server's pid (the shim's child).
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Asks the server to clone a container's init with `config` (init's
    /// JSON config) and the child's channels; in a PID namespace of its own
    /// (`new_pid_ns`) or in `join_pid_ns` (the pod's) or in ours; born in
    /// the cgroup `cgroup` when given.
    pub fn clone_init(
        &self,
        config: &[u8],
        new_pid_ns: bool,
        join_pid_ns: Option<&File>,
        cgroup: Option<&File>,
        fds: &ChildFds,
    ) -> Forked {
        let mut guard = self.sock.lock().unwrap_or_else(|p| p.into_inner());
        let Some(sock) = guard.as_ref() else {
            return Forked::Unavailable("the fork server failed earlier".into());
        };
        let channels = [
            fds.stdin.as_fd(),
            fds.stdout.as_fd(),
            fds.stderr.as_fd(),
            fds.sync.as_fd(),
            fds.start.as_fd(),
        ];
        let flags = if new_pid_ns { wire::NEW_PID_NS } else { 0 };
        let sent = wire::send_request(
            sock.as_fd(),
            flags,
            config,
            channels,
            cgroup.map(|c| c.as_fd()),
            join_pid_ns.map(|n| n.as_fd()),
        );
        if let Err(e) = sent {
            if e.raw_os_error() == Some(libc::EMSGSIZE) {
                return Forked::Unavailable(format!("an init config of {} bytes", config.len()));
            }
            // Not sent (the server is gone): nothing was cloned.
            self.give_up(&mut guard);
            return Forked::Unavailable(format!("send to the fork server: {e}"));
        }
        match wire::recv_reply(sock.as_fd()) {
            Ok(wire::Reply::Cloned {
                pid,
                in_cgroup,
                pidfd,
            }) => Forked::Cloned(Spawned {
                pid,
                pidfd,
                in_cgroup,
            }),
            // The server cloned nothing: a config init could not decode
            // fails the same way exec'd.
            Ok(wire::Reply::Failed(msg)) => Forked::Failed(msg),
            Err(e) => {
                self.give_up(&mut guard);
                Forked::Failed(format!("the fork server's reply: {e}"))
            }
        }
    }

    /// Stops using the server: kills it (the shim's reaper collects it).
    fn give_up(&self, sock: &mut Option<OwnedFd>) {
        if let Some(s) = sock.take() {
            tracing::warn!(
                pid = self.pid,
                fd = s.as_raw_fd(),
                "fork server failed; inits are exec'd from now on"
            );
        }
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}
