//! The sync protocol between the shim and a first stage (`berth-shim init`
//! or `berth-shim exec`), both sides of it, and the fd numbers it runs on.
//!
//! The stage reads its JSON config on [`fds::CONFIG`] to EOF and reports on
//! [`fds::SYNC`], a close-on-exec pipe:
//! - `R`: init is set up and parked (create); it then waits for one byte on
//!   [`fds::START`] (EOF there means "give up": Delete before Start). It may
//!   come after a line `T<ns> <ns> ...\n`: the CLOCK_MONOTONIC times at
//!   which init reached each step of its setup ([`InitTimes`]), so Create
//!   can say where its time went;
//! - `I<uid> <gid> <g1,g2,...>\n`: the identity the kernel gave the process,
//!   written right before the exec; init's may come after a line
//!   `T<ns> <ns> <ns> <ns> <ns> <ns>\n` ([`StartTimes`]), so Start can say where its
//!   time went;
//! - `E<message>`: a failure, for berthd verbatim; the stage then exits;
//! - `H`: init asks for the createRuntime hooks and waits for `C` on
//!   [`fds::START`] (`crate::hooks`).
//!
//! A successful exec closes the sync pipe, so EOF after an identity line and
//! nothing else is the shim's proof that the user's process runs.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{BorrowedFd, FromRawFd, RawFd};

use berth_proto::shim::ProcessIdentity;

/// File descriptor numbers a stage finds its channels on.
pub mod fds {
    /// The stage's JSON config (`InitConfig` or `ExecConfig`), read to EOF.
    pub const CONFIG: i32 = 3;
    /// stage -> shim: the reports of this module; closed by a successful exec.
    pub const SYNC: i32 = 4;
    /// shim -> init: one byte means "exec now"; EOF means "give up".
    pub const START: i32 = 5;
    /// exec stage only: a pidfd of the container's first process, whose
    /// namespaces it joins (a pid could name another process by then).
    pub const TARGET: i32 = 6;
}

/// Init is set up and parked.
pub(crate) const READY: &[u8] = b"R";
/// The shim's "exec now".
const START: &[u8] = b"S";
/// Starts an identity line.
const IDENTITY: u8 = b'I';
/// Starts a failure message.
const ERROR: u8 = b'E';
/// Starts the line of setup times before `R`.
const TIMES: u8 = b'T';

pub use berth_sys::clock::mono_ns;

/// When init reached each step of its setup ([`mono_ns`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InitTimes {
    /// `main` entered: the clone and exec are done.
    pub main: u64,
    /// The config is read to its end (the shim has written and closed it).
    pub read: u64,
    /// The config is parsed.
    pub config: u64,
    /// The steps inside the rootfs set-up, each when it ended: namespaces
    /// joined and made, the image's root mounted, the spec's mounts, /dev,
    /// pivot_root (what is left until `rootfs` is masking and read-only
    /// paths).
    pub rootfs_steps: RootfsTimes,
    /// Namespaces joined, rootfs and mounts done, pivoted.
    pub rootfs: u64,
    /// Terminal or session set up; about to report ready.
    pub ready: u64,
}

/// When init ended each step of its rootfs set-up ([`mono_ns`]): the
/// rootfs is most of a container's set-up, and which part of it a slow
/// create spent its time in is what an operator asks next.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RootfsTimes {
    /// The pod's namespaces joined, the cgroup joined, our own made.
    pub ns: u64,
    /// The image's root (overlay) mounted.
    pub root: u64,
    /// The spec's mounts done.
    pub mounts: u64,
    /// /dev and the spec's devices made, the working directory resolved.
    pub dev: u64,
    /// pivot_root done, the old root detached.
    pub pivot: u64,
}

/// When init reached each step between its start and its exec
/// ([`mono_ns`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StartTimes {
    /// The shim's start byte read: init is awake.
    pub woke: u64,
    /// Hooks, rlimits, oom score and AppArmor done; the seccomp profile's
    /// compile begins.
    pub seccomp: u64,
    /// The seccomp filter compiled and installed (equal to `seccomp`
    /// without a profile): the bounding set, ids and capabilities change.
    pub privileges: u64,
    /// Capabilities, ids and no_new_privs set: the working directory and
    /// the `PATH` lookup (through the container's overlay) begin.
    pub lookup: u64,
    /// The program found, its argv and environment built: the identity is
    /// read back from the kernel.
    pub identity: u64,
    /// The identity read: the exec is next.
    pub exec: u64,
}

// ---- The stage's side ----

/// Takes over the descriptor `fd` the shim placed before exec, and marks
/// it close-on-exec: the sync pipe must close on a successful exec (that
/// EOF is the shim's proof), and no channel may leak into the container.
///
/// # Safety
/// `fd` is open and nothing else in this process owns it.
pub unsafe fn inherit(fd: RawFd) -> File {
    close_on_exec(fd);
    // SAFETY: the caller promised `fd` is open and ours alone.
    unsafe { File::from_raw_fd(fd) }
}

/// Marks `fd` close-on-exec if it is open (the exec stage gets /dev/null
/// on [`fds::START`], which it never reads but must not pass on).
pub fn close_on_exec(fd: RawFd) {
    // SAFETY: the borrow lasts only for this fcntl(2); on a closed number
    // the call fails with EBADF and nothing happens.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    let _ = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC));
}

/// The stage's end of the sync pipe.
pub struct Reporter<W: Write = File>(W);

impl<W: Write> Reporter<W> {
    /// Reports on `w` (the file from [`inherit`]`(fds::SYNC)`).
    pub fn new(w: W) -> Self {
        Reporter(w)
    }

    /// Init is set up and parked; an error means the shim is gone. (Init
    /// itself sends [`Self::ready_at`]; the bare form is for tests.)
    #[cfg(test)]
    pub fn ready(&mut self) -> std::io::Result<()> {
        self.0.write_all(READY)
    }

    /// [`Self::ready`], after the line of setup times (one write, so the
    /// shim never sees half of it without the rest coming).
    pub fn ready_at(&mut self, t: InitTimes) -> std::io::Result<()> {
        let r = t.rootfs_steps;
        let mut msg = format!(
            "{}{} {} {} {} {} {} {} {} {} {}\n",
            TIMES as char,
            t.main,
            t.read,
            t.config,
            r.ns,
            r.root,
            r.mounts,
            r.dev,
            r.pivot,
            t.rootfs,
            t.ready
        )
        .into_bytes();
        msg.extend_from_slice(READY);
        self.0.write_all(&msg)
    }

    /// The identity line, right before the exec.
    pub fn identity(&mut self, line: &str) {
        let _ = self.0.write_all(line.as_bytes());
    }

    /// [`Self::identity`], after init's line of start times (one write).
    pub fn identity_at(&mut self, line: &str, t: &StartTimes) {
        let msg = format!(
            "{}{} {} {} {} {} {}\n{line}",
            TIMES as char, t.woke, t.seccomp, t.privileges, t.lookup, t.identity, t.exec
        );
        let _ = self.0.write_all(msg.as_bytes());
    }

    /// A failure, for berthd verbatim (the stage exits next).
    pub fn fail(&mut self, message: &str) {
        let mut msg = Vec::with_capacity(message.len() + 1);
        msg.push(ERROR);
        msg.extend_from_slice(message.as_bytes());
        let _ = self.0.write_all(&msg);
    }
}

/// The identity line for `uid`, `gid` and supplementary `groups` as the
/// kernel lists them (`/proc/self/status`).
pub fn identity_line(uid: &str, gid: &str, groups: &[&str]) -> String {
    format!("{}{uid} {gid} {}\n", IDENTITY as char, groups.join(","))
}

/// Init parks here until the shim says start: true for "exec now", false
/// when the start pipe closed (the shim gave up on us or died).
pub fn wait_for_start(start: &mut impl Read) -> bool {
    let mut go = [0u8; 1];
    matches!(start.read(&mut go), Ok(1))
}

// ---- The shim's side ----

/// Tells a parked init to exec, and closes the start pipe.
pub fn send_start(mut start: File) -> std::io::Result<()> {
    start.write_all(START)
}

/// Reads what the stage wrote on the sync pipe, up to EOF or, with
/// `stop_at_ready`, up to init's ready report.
pub fn read(f: &mut impl Read, stop_at_ready: bool) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(out);
        }
        out.extend_from_slice(&buf[..n]);
        if stop_at_ready && is_ready(&out) {
            return Ok(out);
        }
    }
}

/// Like [`read`], stopping when what was read is one of `stops`.
pub fn read_until(f: &mut impl Read, stops: &[&[u8]]) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = [0u8; 1];
    loop {
        if f.read(&mut buf)? == 0 {
            return Ok(out);
        }
        out.push(buf[0]);
        if stops.contains(&out.as_slice()) || (stops.contains(&READY) && is_ready(&out)) {
            return Ok(out);
        }
    }
}

/// The report a stage would write for a failure with `message`.
pub fn failure_report(message: &str) -> Vec<u8> {
    let mut msg = Vec::with_capacity(message.len() + 1);
    msg.push(ERROR);
    msg.extend_from_slice(message.as_bytes());
    msg
}

/// Splits the line of setup times off the front of create's report:
/// the times (None when there is no whole, well-formed line) and the rest.
pub fn split_times(report: &[u8]) -> (Option<InitTimes>, &[u8]) {
    let Some((v, rest)) = times_line(report) else {
        return (None, report);
    };
    let times = match v[..] {
        [main, read, config, ns, root, mounts, dev, pivot, rootfs, ready] => Some(InitTimes {
            main,
            read,
            config,
            rootfs_steps: RootfsTimes {
                ns,
                root,
                mounts,
                dev,
                pivot,
            },
            rootfs,
            ready,
        }),
        _ => None,
    };
    (times, rest)
}

/// Whether create's report says init is parked.
pub fn is_ready(report: &[u8]) -> bool {
    split_times(report).1 == READY
}

/// What create's report says went wrong (it was not [`is_ready`]).
pub fn setup_failure(report: &[u8]) -> String {
    let report = split_times(report).1;
    let msg = String::from_utf8_lossy(report.strip_prefix(&[ERROR]).unwrap_or(report)).into_owned();
    if msg.is_empty() {
        "init exited during setup".to_string()
    } else {
        msg
    }
}

/// Splits the identity line a stage reports before exec from what follows.
pub fn split_identity(msg: &[u8]) -> (Option<ProcessIdentity>, &[u8]) {
    let Some(rest) = msg.strip_prefix(&[IDENTITY]) else {
        return (None, msg);
    };
    let end = rest.iter().position(|b| *b == b'\n').unwrap_or(rest.len());
    let line = String::from_utf8_lossy(&rest[..end]).into_owned();
    let after = rest.get(end + 1..).unwrap_or(&[]);
    let mut f = line.split(' ');
    let uid = f.next().and_then(|v| v.parse().ok());
    let gid = f.next().and_then(|v| v.parse().ok());
    let groups = f
        .next()
        .unwrap_or("")
        .split(',')
        .filter_map(|g| g.parse().ok())
        .collect();
    match (uid, gid) {
        (Some(uid), Some(gid)) => (Some(ProcessIdentity { uid, gid, groups }), after),
        _ => (None, after),
    }
}

/// Splits init's line of start times off the front of Start's report:
/// the times (None when there is no whole, well-formed line) and the rest.
pub fn split_start_times(report: &[u8]) -> (Option<StartTimes>, &[u8]) {
    let Some((line, rest)) = times_line(report) else {
        return (None, report);
    };
    let times = match line[..] {
        [woke, seccomp, privileges, lookup, identity, exec] => Some(StartTimes {
            woke,
            seccomp,
            privileges,
            lookup,
            identity,
            exec,
        }),
        _ => None,
    };
    (times, rest)
}

/// A leading `T` line's numbers and what follows it.
fn times_line(report: &[u8]) -> Option<(Vec<u64>, &[u8])> {
    let rest = report.strip_prefix(&[TIMES])?;
    let end = rest.iter().position(|b| *b == b'\n')?;
    let line = String::from_utf8_lossy(&rest[..end]).into_owned();
    let v = line.split(' ').filter_map(|n| n.parse().ok()).collect();
    Some((v, &rest[end + 1..]))
}

/// What init wrote between Start's go and its exec, as the shim read it.
#[derive(Debug, PartialEq)]
pub struct StartReport {
    /// Init's marks (None from an init that sends none, or a bad line).
    pub times: Option<StartTimes>,
    /// The identity the kernel gave the process right before its exec.
    pub identity: Option<ProcessIdentity>,
    /// The failure text when anything but those came before EOF.
    pub result: Result<(), String>,
}

/// Start's report: the times and identity, and the failure text when
/// anything but those came before EOF (each part read once).
pub fn start_report(report: &[u8]) -> StartReport {
    let (times, rest) = split_start_times(report);
    let (identity, rest) = split_identity(rest);
    let result = if rest.is_empty() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(rest.strip_prefix(&[ERROR]).unwrap_or(rest)).into_owned())
    };
    StartReport {
        times,
        identity,
        result,
    }
}

/// An exec stage's failure message, if its report carries one.
pub fn failure(report: &[u8]) -> Option<String> {
    let (_, rest) = split_identity(report);
    rest.strip_prefix(&[ERROR])
        .map(|m| String::from_utf8_lossy(m).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the stage writes, as the shim reads it back.
    fn round_trip(stage: impl FnOnce(&mut Reporter<&mut Vec<u8>>)) -> Vec<u8> {
        let mut wire = Vec::new();
        stage(&mut Reporter::new(&mut wire));
        read(&mut wire.as_slice(), false).unwrap()
    }

    #[test]
    fn a_parked_init_is_ready_and_stops_the_read() {
        let got = round_trip(|r| r.ready().unwrap());
        assert!(is_ready(&got));
        // The read stops at R while init stays parked with the pipe open.
        let (r, w) = std::io::pipe().unwrap();
        let mut rep = Reporter::new(w);
        rep.ready().unwrap();
        assert_eq!(read(&mut { r }, true).unwrap(), b"R");
        drop(rep);
    }

    #[test]
    fn a_ready_report_with_times_is_ready_and_gives_them_back() {
        let t = InitTimes {
            main: 10,
            read: 12,
            config: 20,
            rootfs_steps: RootfsTimes {
                ns: 22,
                root: 25,
                mounts: 28,
                dev: 30,
                pivot: 33,
            },
            rootfs: 35,
            ready: 36,
        };
        let got = round_trip(|r| r.ready_at(t).unwrap());
        assert!(is_ready(&got));
        assert_eq!(split_times(&got), (Some(t), READY));
        // Both readers stop at it while init stays parked.
        let (r, w) = std::io::pipe().unwrap();
        let mut rep = Reporter::new(w);
        rep.ready_at(t).unwrap();
        let mut r = r;
        assert!(is_ready(&read(&mut r, true).unwrap()));
        rep.ready_at(t).unwrap();
        assert!(is_ready(&read_until(&mut r, &[READY, b"H"]).unwrap()));
        drop(rep);
        // Half a line is not ready yet; a failure after times is a failure.
        assert!(!is_ready(b"T10 20"));
        let failed = [b"T1 2 3 4 5\n".as_slice(), b"Ebad mount"].concat();
        assert!(!is_ready(&failed));
        assert_eq!(setup_failure(&failed), "bad mount");
    }

    #[test]
    fn a_setup_failure_is_berthds_message_verbatim() {
        let got = round_trip(|r| r.fail("mount point /data: refused"));
        assert!(!is_ready(&got));
        assert_eq!(setup_failure(&got), "mount point /data: refused");
        // Died without a word (killed, or the pipe closed early).
        assert_eq!(setup_failure(b""), "init exited during setup");
    }

    #[test]
    fn a_started_process_reports_its_identity_then_eof() {
        let got = round_trip(|r| r.identity(&identity_line("1000", "1000", &["10", "20"])));
        let StartReport {
            times,
            identity,
            result,
        } = start_report(&got);
        let id = identity.expect("identity");
        assert_eq!((id.uid, id.gid, id.groups), (1000, 1000, vec![10, 20]));
        assert_eq!(result, Ok(()));
        assert_eq!(times, None, "identity() sends no times");
        assert_eq!(failure(&got), None);
    }

    /// Init's start times come before its identity, in one write; Start
    /// gets both back, and an exec failure after them is still the error.
    #[test]
    fn a_started_init_reports_its_times_then_its_identity() {
        let t = StartTimes {
            woke: 5,
            seccomp: 7,
            privileges: 11,
            lookup: 12,
            identity: 13,
            exec: 17,
        };
        let got = round_trip(|r| r.identity_at(&identity_line("0", "0", &["1"]), &t));
        assert_eq!(split_start_times(&got).0, Some(t));
        let report = start_report(&got);
        assert_eq!(report.times, Some(t));
        assert_eq!(
            report.identity.map(|i| (i.uid, i.gid, i.groups)),
            Some((0, 0, vec![1]))
        );
        assert_eq!(report.result, Ok(()));
        let failed = round_trip(|r| {
            r.identity_at(&identity_line("0", "0", &[]), &t);
            r.fail("exec \"nope\": ENOENT");
        });
        let report = start_report(&failed);
        assert_eq!(report.times, Some(t));
        assert_eq!(report.result, Err("exec \"nope\": ENOENT".to_string()));
        // A short line is no times, and is still skipped.
        assert_eq!(split_start_times(b"T1 2\nI0 0 \n"), (None, b"I0 0 \n".as_slice()));
        // Without a line (an older init), nothing is lost either.
        assert_eq!(split_start_times(b"I0 0 \n").0, None);
    }

    #[test]
    fn an_exec_failure_after_the_identity_is_the_error() {
        let got = round_trip(|r| {
            r.identity(&identity_line("0", "0", &[]));
            r.fail("exec \"nope\": ENOENT");
        });
        let report = start_report(&got);
        assert_eq!(
            report.identity.map(|i| (i.uid, i.gid, i.groups)),
            Some((0, 0, vec![]))
        );
        assert_eq!(report.result, Err("exec \"nope\": ENOENT".to_string()));
        assert_eq!(failure(&got).as_deref(), Some("exec \"nope\": ENOENT"));
        // Before any identity (setup of an exec stage failed).
        assert_eq!(failure(b"Ejoin cgroup").as_deref(), Some("join cgroup"));
    }

    #[test]
    fn garbage_from_the_stage_is_no_identity() {
        assert!(split_identity(b"Ix y\n").0.is_none());
        let report = start_report(b"hello");
        assert!(report.identity.is_none());
        assert_eq!(report.result, Err("hello".to_string()));
    }

    #[test]
    fn init_starts_on_one_byte_and_gives_up_on_eof() {
        let (r, w) = std::io::pipe().unwrap();
        send_start(File::from(std::os::fd::OwnedFd::from(w))).unwrap();
        let mut r = r;
        assert!(wait_for_start(&mut r));
        assert!(
            !wait_for_start(&mut r),
            "EOF after the start byte: the pipe closed"
        );
        assert!(!wait_for_start(&mut std::io::empty()));
    }
}
