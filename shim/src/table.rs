//! The shim's containers and their state machine.
//!
//! Created -> Running -> Exited, or Created -> Exited when the init stage dies
//! before exec. Transitions are methods that refuse illegal moves.
//!
//! One [`Container`] record holds everything the shim keeps for a
//! container (process, spec, log, attach point, phase), and the [`Table`]
//! holds the records behind one lock: a container is added and removed
//! whole, so no RPC can see a part of it without the rest.

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use oci_spec::runtime::Spec;
use tokio::sync::watch;

use crate::error::{Error, Result};
use crate::logs::LogFile;
use crate::stdio::AttachPoint;

/// Where a container is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Parked in the init stage, before exec.
    Created,
    /// The user's process has been exec'd.
    Running,
    /// Reaped; output drained (or still open after a bounded wait).
    Exited,
}

/// Mutable part of a container record.
#[derive(Debug, Clone)]
pub struct State {
    /// Current phase.
    pub phase: Phase,
    /// Exit code once exited.
    pub exit_code: i32,
    /// Unix ns of exec.
    pub started_at: i64,
    /// Unix ns of reaping.
    pub exited_at: i64,
}

/// One container owned by this shim.
pub struct Container {
    /// Container id (berthd's).
    pub id: String,
    /// Pid of the container's init (then of its exec'd process: same pid).
    /// Only a name for logs and /proc reads checked against `pidfd`: once
    /// the process is reaped the number may belong to anyone.
    pub pid: i32,
    /// The process itself, from the clone (None only in unit tests):
    /// signals and namespace joins go through it, never through `pid`.
    pub pidfd: Option<OwnedFd>,
    /// Cgroup directory, for signalling every process.
    pub cgroup_dir: Option<std::path::PathBuf>,
    /// The container's spec: exec'd processes take its identity.
    pub spec: Spec,
    /// Its CRI log, for ReopenLog and the dropped-record count.
    pub log: LogFile,
    /// Its output fan-out and stdin, for Attach.
    pub attach: Arc<AttachPoint>,
    /// Writer end of the start pipe; taken by Start.
    pub start_pipe: Mutex<Option<File>>,
    /// Reader end of the sync pipe; used by Start to learn whether exec worked.
    pub sync_pipe: Mutex<Option<File>>,
    /// Its poststart and poststop hooks' state (None: no hooks).
    pub hooks: Option<Arc<crate::hooks::Attached>>,
    /// A restore not yet run (a container created from a checkpoint has
    /// no process until Start); taken by Start.
    pub restore: Mutex<Option<crate::restore_pending::Pending>>,
    state: Mutex<State>,
    /// Set when the process is reaped, before its output has drained and
    /// its exit is reported: from then on nothing may be exec'd into it.
    reaped: AtomicBool,
    exited_tx: watch::Sender<bool>,
}

/// What Create made of a container whose init is parked.
pub struct Created {
    /// Container id (berthd's).
    pub id: String,
    /// Pid of its init.
    pub pid: i32,
    /// Its init, from the clone.
    pub pidfd: Option<OwnedFd>,
    /// Its cgroup directory.
    pub cgroup_dir: Option<std::path::PathBuf>,
    /// Its spec.
    pub spec: Spec,
    /// Its log.
    pub log: LogFile,
    /// Its attach point.
    pub attach: Arc<AttachPoint>,
    /// Writer end of the start pipe (None: no parked init).
    pub start_pipe: Option<File>,
    /// Reader end of the sync pipe (None: no parked init).
    pub sync_pipe: Option<File>,
    /// Its hooks (None: none).
    pub hooks: Option<Arc<crate::hooks::Attached>>,
    /// Its restore, for a container created from a checkpoint.
    pub restore: Option<crate::restore_pending::Pending>,
}

impl Container {
    /// A container parked in the init stage.
    pub fn new(c: Created) -> Self {
        let (exited_tx, _) = watch::channel(false);
        Container {
            id: c.id,
            pid: c.pid,
            pidfd: c.pidfd,
            cgroup_dir: c.cgroup_dir,
            spec: c.spec,
            log: c.log,
            attach: c.attach,
            start_pipe: Mutex::new(c.start_pipe),
            sync_pipe: Mutex::new(c.sync_pipe),
            hooks: c.hooks,
            restore: Mutex::new(c.restore),
            state: Mutex::new(State {
                phase: Phase::Created,
                exit_code: 0,
                started_at: 0,
                exited_at: 0,
            }),
            reaped: AtomicBool::new(false),
            exited_tx,
        }
    }

    /// A snapshot of the mutable state.
    pub fn state(&self) -> State {
        self.state.lock().expect("state lock").clone()
    }

    /// Records a start whose exec the init stage confirmed. Created ->
    /// Running; but a process that execs and exits at once can be reaped
    /// (and marked Exited) before StartContainer gets here: it did start,
    /// so the start stands and keeps its exit, with the start time no
    /// later than the exit.
    pub fn mark_started(&self, at_ns: i64) -> Result<(), String> {
        let mut s = self.state.lock().expect("state lock");
        match s.phase {
            Phase::Created => {
                s.phase = Phase::Running;
                s.started_at = at_ns;
                Ok(())
            }
            Phase::Exited if s.started_at == 0 => {
                s.started_at = at_ns.min(s.exited_at);
                Ok(())
            }
            p => Err(format!("container {} is {p:?}, not Created", self.id)),
        }
    }

    /// The process, for signals: a duplicate of its pidfd (by pid only in
    /// unit tests, which have none).
    pub fn process(&self) -> std::io::Result<crate::stop_signal::Process> {
        match &self.pidfd {
            Some(fd) => Ok(crate::stop_signal::Process::from_pidfd(self.pid, fd.try_clone()?)),
            None => crate::stop_signal::Process::open(self.pid),
        }
    }

    /// The process has been reaped (its exit may not be reported yet).
    pub fn mark_reaped(&self) {
        self.reaped.store(true, Ordering::SeqCst);
    }

    /// Whether the process has been reaped: it has no namespaces left to
    /// join, and its pid may name another process.
    pub fn reaped(&self) -> bool {
        self.reaped.load(Ordering::SeqCst)
    }

    /// Any -> Exited (idempotent).
    pub fn mark_exited(&self, code: i32, at_ns: i64) {
        {
            let mut s = self.state.lock().expect("state lock");
            if s.phase == Phase::Exited {
                return;
            }
            s.phase = Phase::Exited;
            s.exit_code = code;
            s.exited_at = at_ns;
        }
        self.exited_tx.send_replace(true);
    }

    /// Resolves once the container has exited and its output is drained
    /// (or a bounded wait for it ended).
    pub async fn wait_exited(&self) -> State {
        let mut rx = self.exited_tx.subscribe();
        let _ = rx.wait_for(|e| *e).await;
        self.state()
    }
}

/// All containers of the pod, by id.
#[derive(Default, Clone)]
pub struct Table {
    inner: Arc<Mutex<HashMap<String, Arc<Container>>>>,
}

impl Table {
    /// The container `id`, or NotFound.
    pub fn container(&self, id: &str) -> Result<Arc<Container>> {
        self.get(id).ok_or_else(|| Error::NotFound(id.to_string()))
    }

    /// The container `id` if its process runs (what exec and attach need).
    pub fn running(&self, id: &str) -> Result<Arc<Container>> {
        let c = self.container(id)?;
        // A reaped process whose exit is still being drained counts as
        // gone: its pid may already be another process's.
        if c.state().phase != Phase::Running || c.reaped() {
            return Err(Error::WrongPhase(format!("container {id} is not running")));
        }
        Ok(c)
    }

    /// Adds a container; refuses a duplicate id.
    pub fn insert(&self, c: Arc<Container>) -> Result<(), String> {
        let mut m = self.inner.lock().expect("table lock");
        if m.contains_key(&c.id) {
            return Err(format!("container {} already exists", c.id));
        }
        m.insert(c.id.clone(), c);
        Ok(())
    }

    /// Looks a container up.
    pub fn get(&self, id: &str) -> Option<Arc<Container>> {
        self.inner.lock().expect("table lock").get(id).cloned()
    }

    /// Puts `c` in the place of the record with its id (a restored
    /// container's record, with its process, for the one without).
    pub fn replace(&self, c: Arc<Container>) {
        self.inner.lock().expect("table lock").insert(c.id.clone(), c);
    }

    /// Drops a container record.
    pub fn remove(&self, id: &str) -> Option<Arc<Container>> {
        self.inner.lock().expect("table lock").remove(id)
    }

    /// Every container.
    pub fn all(&self) -> Vec<Arc<Container>> {
        self.inner.lock().expect("table lock").values().cloned().collect()
    }
}

#[cfg(test)]
impl Container {
    /// A container parked in its init stage (pid 42, no pidfd, no cgroup,
    /// no log), for unit tests, holding the shim's ends of the given pipes.
    pub fn parked_for_test(id: &str, start_pipe: File, sync_pipe: File) -> Container {
        Container::new(Created {
            id: id.into(),
            pid: 42,
            pidfd: None,
            cgroup_dir: None,
            spec: Spec::default(),
            log: LogFile::open("").unwrap(),
            attach: Arc::new(AttachPoint::new(None, None, false, false)),
            start_pipe: Some(start_pipe),
            sync_pipe: Some(sync_pipe),
            hooks: None,
            restore: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container() -> Container {
        let (r, w) = std::io::pipe().unwrap();
        Container::parked_for_test(
            "c1",
            File::from(std::os::fd::OwnedFd::from(w)),
            File::from(std::os::fd::OwnedFd::from(r)),
        )
    }

    #[test]
    fn lifecycle_transitions() {
        let c = container();
        assert_eq!(c.state().phase, Phase::Created);
        c.mark_started(5).unwrap();
        assert!(c.mark_started(6).is_err(), "cannot start twice");
        c.mark_exited(3, 9);
        c.mark_exited(4, 10);
        let s = c.state();
        assert_eq!(
            (s.phase, s.exit_code, s.started_at, s.exited_at),
            (Phase::Exited, 3, 5, 9)
        );
    }

    #[test]
    fn a_start_confirmed_after_a_fast_exit_keeps_the_exit() {
        let c = container();
        c.mark_exited(0, 10);
        c.mark_started(12).unwrap();
        let s = c.state();
        assert_eq!((s.phase, s.started_at, s.exited_at), (Phase::Exited, 10, 10));
        assert!(c.mark_started(13).is_err(), "cannot start twice");
    }

    #[test]
    fn duplicate_ids_refused() {
        let t = Table::default();
        t.insert(Arc::new(container())).unwrap();
        assert!(t.insert(Arc::new(container())).is_err());
    }
}
