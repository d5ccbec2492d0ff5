//! Stop signals a PID namespace's init would lose.
//!
//! The kernel discards a signal sent to the init of a PID namespace when that
//! init has no handler for it (`SIGNAL_UNKILLABLE` with `SIG_DFL`; only
//! SIGKILL and SIGSTOP from an ancestor namespace get through). A container
//! whose PID 1 installs its SIGTERM handler a few milliseconds after exec
//! (busybox `top`, a shell's `trap`) would lose a StopContainer that arrived
//! first and be SIGKILLed only after the whole grace period. So when the
//! target is its namespace's init and its `SigCgt` lacks the signal at send
//! time, the signal is sent again as soon as the handler appears, within the
//! grace period. A process that had the handler is signalled exactly once.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

/// How often a watched init's status is read while its handler is awaited.
const POLL: Duration = Duration::from_millis(10);

/// The process a signal goes to.
pub trait Target: Send + 'static {
    /// Its `/proc/<pid>/status`; an error once it is gone.
    fn status(&self) -> std::io::Result<String>;
    /// Sends `sig`; an error once it is gone.
    fn signal(&self, sig: i32) -> std::io::Result<()>;
}

/// A real process, held by a pidfd: a pid reused after the process was
/// reaped is never read or signalled in its stead.
pub struct Process {
    pid: i32,
    pidfd: OwnedFd,
}

impl Process {
    /// Opens `pid` (ESRCH when it is gone).
    pub fn open(pid: i32) -> std::io::Result<Self> {
        let pidfd = berth_sys::pidfd::open(pid)?;
        Ok(Process { pid, pidfd })
    }

    /// The process `pidfd` holds, whose pid was `pid`.
    pub fn from_pidfd(pid: i32, pidfd: OwnedFd) -> Self {
        Process { pid, pidfd }
    }
}

impl Target for Process {
    fn status(&self) -> std::io::Result<String> {
        let mut text = String::new();
        File::open(format!("/proc/{}/status", self.pid))
            .and_then(|mut f| f.read_to_string(&mut text))
            .map_err(|e| match e.kind() {
                // Reaped between our open of the pidfd and this read.
                std::io::ErrorKind::NotFound => std::io::Error::from_raw_os_error(libc::ESRCH),
                _ => e,
            })?;
        // Still ours after the read: the pid cannot have been reused while
        // the process the pidfd holds exists.
        self.signal(0)?;
        Ok(text)
    }

    fn signal(&self, sig: i32) -> std::io::Result<()> {
        berth_sys::pidfd::send_signal(self.pidfd.as_fd(), sig)
    }
}

/// What sending a stop signal came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Delivery {
    /// Sent once; the kernel did not drop it (or the target is not an init).
    Once,
    /// Dropped by the kernel; a watcher sends it again when the handler appears.
    Watching,
}

/// How a watch ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Watched {
    /// The handler appeared and the signal was sent again.
    Redelivered,
    /// The process ended first.
    Gone,
    /// No handler within the grace period (the caller's SIGKILL follows).
    GaveUp,
}

/// Sends `sig` to `target`; if the kernel dropped it (init without a
/// handler), returns a task that re-sends it once the handler appears, for
/// up to `redeliver_for`.
pub fn send<T: Target>(
    target: T,
    sig: i32,
    redeliver_for: Duration,
) -> std::io::Result<(Delivery, Option<tokio::task::JoinHandle<Watched>>)> {
    let before = target.status()?;
    target.signal(sig)?;
    let dropped = is_ns_init(&before) && !mask_has(&before, "SigCgt:", sig);
    if !dropped || redeliver_for.is_zero() {
        return Ok((Delivery::Once, None));
    }
    tracing::info!(
        signal = sig,
        "stop signal reached a PID namespace init with no handler for it (the kernel drops it); \
         sending it again once a handler is installed"
    );
    let watch = tokio::spawn(async move {
        // berthd may pass any grace period a CRI caller asked for; one
        // beyond what an Instant can hold means "for as long as it lives".
        let now = tokio::time::Instant::now();
        let deadline = now
            .checked_add(redeliver_for)
            .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600));
        while tokio::time::Instant::now() < deadline {
            let status = match target.status() {
                Ok(s) => s,
                Err(_) => return Watched::Gone,
            };
            if mask_has(&status, "SigCgt:", sig) {
                return match target.signal(sig) {
                    Ok(()) => {
                        tracing::info!(signal = sig, "stop signal sent again: the handler is installed");
                        Watched::Redelivered
                    }
                    Err(_) => Watched::Gone,
                };
            }
            tokio::time::sleep(POLL).await;
        }
        Watched::GaveUp
    });
    Ok((Delivery::Watching, Some(watch)))
}

/// Whether the process is the init of a PID namespace below the shim's
/// (`NSpid` lists its pid in each namespace, innermost last).
fn is_ns_init(status: &str) -> bool {
    field(status, "NSpid:").is_some_and(|v| {
        let pids: Vec<&str> = v.split_whitespace().collect();
        pids.len() > 1 && pids.last() == Some(&"1")
    })
}

/// Whether the hex signal mask `key` (`SigCgt:`, ...) includes `sig`.
fn mask_has(status: &str, key: &str, sig: i32) -> bool {
    if !(1..=64).contains(&sig) {
        return false;
    }
    field(status, key)
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .is_some_and(|mask| mask & (1u64 << (sig - 1)) != 0)
}

fn field<'a>(status: &'a str, key: &str) -> Option<&'a str> {
    status.lines().find_map(|l| l.strip_prefix(key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::sync::{Arc, Mutex};

    const TERM: i32 = libc::SIGTERM;

    fn status(nspid: &str, sigcgt: u64) -> String {
        format!("Name:\tsh\nNSpid:\t{nspid}\nSigBlk:\t0000000000000000\nSigCgt:\t{sigcgt:016x}\n")
    }

    fn catches_term() -> u64 {
        1 << (TERM - 1)
    }

    /// Serves a scripted sequence of statuses (the last repeats; none left
    /// and `exits`: gone) and records every signal.
    #[derive(Clone)]
    struct Fake {
        statuses: Arc<Mutex<VecDeque<String>>>,
        exits: bool,
        sent: Arc<Mutex<Vec<i32>>>,
    }

    impl Fake {
        fn new(statuses: Vec<String>, exits: bool) -> Self {
            Fake {
                statuses: Arc::new(Mutex::new(statuses.into())),
                exits,
                sent: Arc::default(),
            }
        }
        fn sent(&self) -> Vec<i32> {
            self.sent.lock().unwrap().clone()
        }
    }

    impl Target for Fake {
        fn status(&self) -> std::io::Result<String> {
            let mut q = self.statuses.lock().unwrap();
            match (q.len(), self.exits) {
                (0, _) => Err(std::io::Error::from_raw_os_error(libc::ESRCH)),
                (1, false) => Ok(q[0].clone()),
                _ => Ok(q.pop_front().unwrap()),
            }
        }
        fn signal(&self, sig: i32) -> std::io::Result<()> {
            self.sent.lock().unwrap().push(sig);
            Ok(())
        }
    }

    #[tokio::test]
    async fn an_init_with_the_handler_gets_exactly_one_signal() {
        let f = Fake::new(vec![status("4242\t1", catches_term())], false);
        let (d, w) = send(f.clone(), TERM, Duration::from_secs(30)).unwrap();
        assert_eq!((d, w.is_none()), (Delivery::Once, true));
        assert_eq!(f.sent(), vec![TERM]);
    }

    #[tokio::test]
    async fn a_dropped_signal_is_sent_again_once_the_handler_appears() {
        let f = Fake::new(
            vec![
                status("4242\t1", 0),
                status("4242\t1", 0),
                status("4242\t1", 0),
                status("4242\t1", catches_term()),
            ],
            false,
        );
        let (d, w) = send(f.clone(), TERM, Duration::from_secs(30)).unwrap();
        assert_eq!(d, Delivery::Watching);
        assert_eq!(w.unwrap().await.unwrap(), Watched::Redelivered);
        assert_eq!(f.sent(), vec![TERM, TERM], "the lost one and the one that counts");
    }

    #[tokio::test]
    async fn a_non_init_gets_one_signal_even_without_a_handler() {
        // Its default action (terminate) applies: nothing is dropped.
        for nspid in ["4242", "4242\t7"] {
            let f = Fake::new(vec![status(nspid, 0), status(nspid, catches_term())], false);
            let (d, w) = send(f.clone(), TERM, Duration::from_secs(30)).unwrap();
            assert_eq!((d, w.is_none()), (Delivery::Once, true), "{nspid}");
            assert_eq!(f.sent(), vec![TERM]);
        }
    }

    #[tokio::test]
    async fn the_watch_ends_when_the_process_does() {
        let f = Fake::new(vec![status("4242\t1", 0), status("4242\t1", 0)], true);
        let (_, w) = send(f.clone(), TERM, Duration::from_secs(30)).unwrap();
        assert_eq!(w.unwrap().await.unwrap(), Watched::Gone);
        assert_eq!(f.sent(), vec![TERM]);
    }

    #[tokio::test]
    async fn the_watch_ends_with_the_grace_period() {
        let f = Fake::new(vec![status("4242\t1", 0)], false);
        let (_, w) = send(f.clone(), TERM, Duration::from_millis(50)).unwrap();
        assert_eq!(w.unwrap().await.unwrap(), Watched::GaveUp);
        assert_eq!(f.sent(), vec![TERM]);
        // No grace period: nothing to wait for.
        let f = Fake::new(vec![status("4242\t1", 0)], false);
        let (d, w) = send(f.clone(), TERM, Duration::ZERO).unwrap();
        assert_eq!((d, w.is_none()), (Delivery::Once, true));
    }

    #[test]
    fn masks_and_namespaces_parse() {
        let s = status("10\t3\t1", 0x4002);
        assert!(is_ns_init(&s));
        assert!(mask_has(&s, "SigCgt:", 2) && mask_has(&s, "SigCgt:", 15));
        assert!(!mask_has(&s, "SigCgt:", 9));
        assert!(!mask_has(&s, "SigCgt:", 0) && !mask_has(&s, "SigCgt:", 65));
        assert!(!is_ns_init("Name:\tx\n"));
        assert!(!mask_has("SigCgt:\tzz\n", "SigCgt:", 1));
    }

    #[test]
    fn a_real_process_is_read_and_signalled_through_its_pidfd() {
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let p = Process::open(child.id() as i32).unwrap();
        assert!(p.status().unwrap().contains("SigCgt:"));
        p.signal(libc::SIGKILL).unwrap();
        child.wait().unwrap();
        assert!(
            p.status().is_err(),
            "a reaped process is gone, whatever now has its pid"
        );
        assert!(p.signal(libc::SIGTERM).is_err());
    }
}
