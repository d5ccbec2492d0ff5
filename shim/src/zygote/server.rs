//! `berth-shim zygote`: the pod's fork server, its own side.
//!
//! A single-threaded process exec'd once per pod from the shim's read-only
//! copy of its binary. For each container it decodes init's config (with
//! serde's code already paged in: [`prewarm`]), then clones the container's
//! init with `CLONE_PARENT` (the shim is its parent, and reaps it, as for
//! an exec'd init), `CLONE_INTO_CGROUP` and, when asked, `CLONE_NEWPID`.
//! The child is already init: it puts its channels at their numbers,
//! closes everything else and runs [`crate::init::run`], with no exec and
//! no decode of its own.
//!
//! Being single-threaded is what makes the fork safe: the child may
//! allocate, take locks and run any Rust, as the exec'd init does. Its
//! `/proc/self/exe` is the read-only copy this process was exec'd from
//! (CVE-2019-5736), as for the exec'd stages.

use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::wire::{self, Reply, Request};
use crate::init::InitConfig;
use crate::sync::{self, fds, InitTimes, Reporter};

/// The fd the shim puts our end of the socketpair on.
pub const SOCKET_FD: RawFd = 3;

/// Entry point of `berth-shim zygote`. Never returns: exits when the shim
/// closes its end of the socket.
pub fn main() -> ! {
    // SAFETY: the shim put our end of the socketpair at this number before
    // exec, and nothing else in this fresh process owns it.
    let sock = unsafe { OwnedFd::from_raw_fd(SOCKET_FD) };
    sync::close_on_exec(SOCKET_FD);
    // Should the shim die without closing the socket (it cannot: the
    // kernel closes it), SIGKILL is the backstop.
    // SAFETY: prctl(2) with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    if let Err(e) = crate::init::not_dumpable() {
        eprintln!("berth-shim zygote: {e:#}");
        std::process::exit(1);
    }
    if !crate::init::prewarm() {
        eprintln!("berth-shim zygote: the sample config does not round-trip");
    }
    // Read now, while we are the only one to pay for it (see args_area).
    let _ = args_area();
    trim();
    // Where our children go unless a request says otherwise: restored
    // after every clone into a pod's shared PID namespace.
    let own_pid_ns = match std::fs::File::open("/proc/self/ns/pid_for_children") {
        Ok(f) => f,
        Err(e) => {
            eprintln!("berth-shim zygote: open /proc/self/ns/pid_for_children: {e}");
            std::process::exit(1);
        }
    };
    let mut seccomp = crate::init::seccomp::Cache::default();
    loop {
        let started = sync::mono_ns();
        match wire::recv_request(sock.as_fd()) {
            Ok(None) => std::process::exit(0),
            Ok(Some(req)) => {
                let (reply, restored) = serve(req, started, &own_pid_ns, &mut seccomp);
                if let Err(e) = wire::send_reply(sock.as_fd(), &reply) {
                    eprintln!("berth-shim zygote: reply: {e}");
                    std::process::exit(1);
                }
                trim();
                if let Err(e) = restored {
                    // Our children would go to the pod's namespace: stop
                    // (the shim execs every init from now on).
                    eprintln!("berth-shim zygote: back to our own PID namespace: {e}");
                    std::process::exit(1);
                }
            }
            Err(e) => {
                // A malformed request: the shim's end is ours alone, so
                // this is a bug; say so, and let the shim fall back.
                eprintln!("berth-shim zygote: {e}");
                std::process::exit(1);
            }
        }
    }
}

/// Clones one container's init; what the shim gets back, and whether our
/// children's PID namespace is ours again after a clone into the pod's.
/// The spec's seccomp profile is compiled here, once per distinct profile
/// (`seccomp`), and the child installs the program at its exec: a pod's
/// containers share one profile, and the compile was part of every Start.
fn serve(
    req: Request,
    started: u64,
    own_pid_ns: &std::fs::File,
    seccomp: &mut crate::init::seccomp::Cache,
) -> (Reply, nix::Result<()>) {
    let mut times = InitTimes {
        main: started,
        read: sync::mono_ns(),
        ..Default::default()
    };
    let cfg: InitConfig = match serde_json::from_slice(&req.config) {
        Ok(c) => c,
        Err(e) => return (Reply::Failed(format!("parse init config: {e}")), Ok(())),
    };
    let compiled = cfg
        .spec
        .linux()
        .as_ref()
        .and_then(|l| l.seccomp().as_ref())
        .map(|profile| seccomp.get(profile));
    times.config = sync::mono_ns();
    let mut flags = libc::CLONE_PARENT as u64;
    if req.flags & wire::NEW_PID_NS != 0 {
        flags |= libc::CLONE_NEWPID as u64;
    }
    // Single-threaded, so changing where our children go is safe (the
    // shim needs a thread of its own for it).
    if let Some(ns) = &req.pid_ns {
        if let Err(e) = nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWPID) {
            return (
                Reply::Failed(format!("join the pod's PID namespace: {e}")),
                Ok(()),
            );
        }
    }
    let reply = clone_init(&req, cfg, compiled, flags, times);
    let restored = match req.pid_ns {
        Some(_) => nix::sched::setns(own_pid_ns, nix::sched::CloneFlags::CLONE_NEWPID),
        None => Ok(()),
    };
    (reply, restored)
}

/// The clone itself: into the request's cgroup, else a plain one (init's
/// own join then says why, as in the exec'd path).
fn clone_init(
    req: &Request,
    cfg: InitConfig,
    seccomp: Option<crate::init::seccomp::Compiled>,
    flags: u64,
    times: InitTimes,
) -> Reply {
    let channels: [RawFd; wire::CHANNELS] = std::array::from_fn(|i| req.channels[i].as_raw_fd());
    let mut cfg = Some((cfg, seccomp));
    let in_cgroup = std::cell::Cell::new(false);
    let mut child = || -> i32 {
        let Some((mut cfg, seccomp)) = cfg.take() else {
            return 120;
        };
        cfg.in_cgroup = in_cgroup.get();
        child_main(cfg, seccomp, channels, times)
    };
    let mut last_err = None;
    for cgroup in [req.cgroup.as_ref().map(|c| c.as_fd()), None] {
        in_cgroup.set(cgroup.is_some());
        // SAFETY: this process is single-threaded, so the child may run
        // any code (it becomes init, and never returns).
        match unsafe { berth_sys::clone::clone3(flags, cgroup, &mut child) } {
            Ok(c) => {
                return Reply::Cloned {
                    pid: c.pid,
                    in_cgroup: in_cgroup.get(),
                    pidfd: c.pidfd,
                };
            }
            Err(e) => last_err = Some(e),
        }
        if req.cgroup.is_none() {
            break;
        }
    }
    Reply::Failed(format!(
        "clone container init: {}",
        last_err.map_or_else(|| "no attempt".into(), |e| e.to_string())
    ))
}

/// The cloned child: becomes the container's init.
fn child_main(
    cfg: InitConfig,
    seccomp: Option<crate::init::seccomp::Compiled>,
    channels: [RawFd; wire::CHANNELS],
    mut times: InitTimes,
) -> i32 {
    times.main = sync::mono_ns();
    retitle(ZYGOTE_TITLE, INIT_TITLE);
    // stdin, stdout, stderr at 0..=2; sync and start at theirs.
    let targets = [0, 1, 2, fds::SYNC, fds::START];
    // Every source above the targets first, so no dup2 overwrites a
    // source still needed.
    let mut high = [0; wire::CHANNELS];
    for (h, src) in high.iter_mut().zip(channels) {
        // SAFETY: fcntl(2) on a descriptor we hold.
        *h = unsafe { libc::fcntl(src, libc::F_DUPFD_CLOEXEC, 100) };
        if *h < 0 {
            return 120;
        }
    }
    for (src, target) in high.into_iter().zip(targets) {
        // SAFETY: dup2(2) of a descriptor we hold onto a number we own.
        if unsafe { libc::dup2(src, target) } < 0 {
            return 120;
        }
    }
    // Nothing of the server's reaches the container: not its socket, not
    // another container's channels.
    berth_sys::fork::close_fds_except(&targets);
    // SAFETY: just put there, and nothing else in this process owns them.
    let (sync_pipe, start) = unsafe { (sync::inherit(fds::SYNC), sync::inherit(fds::START)) };
    crate::init::run(cfg, Reporter::new(sync_pipe), start, times, seccomp)
}

/// Gives the heap's free memory back to the kernel: the server idles
/// between containers, and its Pss is a pod's cost.
fn trim() {
    // SAFETY: malloc_trim(3) only releases free memory of the allocator.
    unsafe { libc::malloc_trim(0) };
}

/// Where the kernel put our argument area (`arg_start`, `arg_end` of
/// /proc/self/stat), read once: the server reads it before its first clone,
/// so each child finds it in its copy of our memory instead of reading
/// and parsing the file again (nine syscalls on every container's path).
fn args_area() -> Option<(usize, usize)> {
    static AREA: std::sync::OnceLock<Option<(usize, usize)>> = std::sync::OnceLock::new();
    *AREA.get_or_init(|| {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // Fields after the command name, which may hold spaces: the first of
        // them is field 3, so arg_start and arg_end (48 and 49) are 45 and 46.
        let rest = stat.rfind(')').and_then(|i| stat.get(i + 2..))?;
        let fields: Vec<&str> = rest.split(' ').collect();
        let num = |i: usize| fields.get(i).and_then(|v| v.trim().parse::<usize>().ok());
        Some((num(45)?, num(46)?))
    })
}

/// Our command line, as the kernel laid it out.
const ZYGOTE_TITLE: &[u8] = b"berth-shim\0zygote\0";
/// An exec'd init's, padded to the same length.
const INIT_TITLE: &[u8] = b"berth-shim\0init\0\0\0";

/// Rewrites our command line from `from` to `to` (same length) in place,
/// so a forked init reads `berth-shim init` in ps and /proc, as an exec'd
/// one does: operators and tools that look for parked inits find them
/// either way. Does nothing unless the argument area holds `from` exactly.
fn retitle(from: &[u8], to: &[u8]) -> bool {
    let Some((start, end)) = args_area() else {
        return false;
    };
    if from.len() != to.len() || end.checked_sub(start) != Some(from.len()) || start == 0 {
        return false;
    }
    // SAFETY: [start, end) is this process's argument area, as the kernel
    // reports it: mapped and writable (the initial stack), ours alone
    // (single-threaded), and checked to hold `from` before it is written.
    unsafe {
        let area = std::slice::from_raw_parts_mut(start as *mut u8, from.len());
        if area != from {
            return false;
        }
        area.copy_from_slice(to);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::BorrowedFd;

    fn pipe() -> (OwnedFd, OwnedFd) {
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap()
    }

    /// A config init could not decode is refused before any clone, with
    /// the decoder's reason.
    #[test]
    fn a_bad_config_clones_nothing_and_says_why() {
        let pipes: Vec<(OwnedFd, OwnedFd)> = (0..wire::CHANNELS).map(|_| pipe()).collect();
        let (shim, server) = nix::sys::socket::socketpair(
            nix::sys::socket::AddressFamily::Unix,
            nix::sys::socket::SockType::SeqPacket,
            None,
            nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        )
        .unwrap();
        let ends: [BorrowedFd; wire::CHANNELS] = std::array::from_fn(|i| pipes[i].1.as_fd());
        wire::send_request(shim.as_fd(), 0, b"{\"spec\": 7}", ends, None, None).unwrap();
        let req = wire::recv_request(server.as_fd()).unwrap().unwrap();
        let own = std::fs::File::open("/proc/self/ns/pid_for_children").unwrap();
        match serve(req, sync::mono_ns(), &own, &mut Default::default()).0 {
            Reply::Failed(m) => assert!(m.starts_with("parse init config:"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    /// On the test process itself (and back): the argument area changes
    /// only when it holds `from`, and /proc then shows the new title.
    #[test]
    fn a_title_is_rewritten_only_from_what_is_there() {
        let cmdline = std::fs::read("/proc/self/cmdline").unwrap();
        let mut to = cmdline.clone();
        to.iter_mut().filter(|b| **b != 0).for_each(|b| *b = b'x');
        assert!(!retitle(b"not-what-is-there", b"xxxxxxxxxxxxxxxxx"));
        assert!(!retitle(&to, &cmdline), "the area does not hold `to` yet");
        assert!(retitle(&cmdline, &to));
        let now = std::fs::read("/proc/self/cmdline").unwrap();
        assert!(retitle(&to, &cmdline), "and back");
        assert_eq!(now, to);
        assert_eq!(std::fs::read("/proc/self/cmdline").unwrap(), cmdline);
    }

    #[test]
    fn the_prewarm_config_round_trips() {
        assert!(crate::init::prewarm());
    }
}
