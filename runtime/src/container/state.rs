//! A container's state machine: Created → Running → Exited (or Created →
//! Exited for one that never starts). After CreateContainer makes the
//! record, these transitions are the only writers of its state: each
//! checks that the move is allowed, records it with its facts, wakes
//! whoever waits on `changed`, publishes the CRI event and persists the
//! record. A move that is no longer allowed (a second exit, a start that
//! lost to a stop) changes nothing and says so, so racing callers (the
//! exit watch, StartContainer's error path, StopContainer of a created
//! container, recovery) cannot overwrite each other's facts.

use super::{Container, ContainerManager, ContainerState, ProcessUser};
use crate::error::Result;
use crate::events::Kind;

/// What a successful start tells.
pub(super) struct Started {
    /// Unix ns.
    pub at: i64,
    /// The process in the node's pid namespace.
    pub pid: u32,
    /// The identity the kernel held right before exec (None when unknown,
    /// e.g. learnt again from the shim after a restart).
    pub user: Option<ProcessUser>,
}

/// How and when a container's process ended.
pub(super) struct Exit {
    /// Exit code (128+n for a signal).
    pub code: i32,
    /// Unix ns.
    pub at: i64,
    /// CRI reason: `Completed`, `Error`, `OOMKilled`, `StartError`, ...
    pub reason: String,
    /// Human message ("" for none).
    pub message: String,
}

/// Whether `from` may move to `to`. Exited is final.
pub(super) fn may_move(from: ContainerState, to: ContainerState) -> bool {
    use ContainerState::*;
    matches!(
        (from, to),
        (Created, Running) | (Created, Exited) | (Running, Exited)
    )
}

impl ContainerManager {
    /// Created → Running, publishing STARTED. Ok(false), with nothing
    /// changed, when the container is no longer Created.
    pub(super) fn to_running(&self, c: &Container, s: Started) -> Result<bool> {
        let (id, sandbox_id) = {
            let mut r = c.record.lock();
            if !may_move(r.state, ContainerState::Running) {
                return Ok(false);
            }
            r.state = ContainerState::Running;
            r.started_at = s.at;
            r.pid = s.pid;
            if s.user.is_some() {
                r.process_user = s.user;
            }
            (r.id.clone(), r.sandbox_id.clone())
        };
        c.changed.send_replace(ContainerState::Running);
        self.events.container(Kind::Started, &id, &sandbox_id);
        self.persist(c)?;
        Ok(true)
    }

    /// Created or Running → Exited, once: the first exit recorded wins.
    /// Publishes STOPPED before it wakes waiters on `changed` (a
    /// StopContainer woken here lets its caller's RemoveContainer publish
    /// DELETED, which must come after STOPPED). Ok(false), with nothing
    /// changed, when the container had already exited.
    pub(super) fn to_exited(&self, c: &Container, e: Exit) -> Result<bool> {
        let (id, sandbox_id) = {
            let mut r = c.record.lock();
            if !may_move(r.state, ContainerState::Exited) {
                return Ok(false);
            }
            r.state = ContainerState::Exited;
            r.exit_code = e.code;
            r.finished_at = e.at;
            r.reason = e.reason;
            r.message = e.message;
            (r.id.clone(), r.sandbox_id.clone())
        };
        self.events.container(Kind::Stopped, &id, &sandbox_id);
        c.changed.send_replace(ContainerState::Exited);
        self.persist(c)?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ContainerState::*;

    #[test]
    fn exited_is_final_and_nothing_moves_backwards() {
        for to in [Created, Running, Exited] {
            assert!(!may_move(Exited, to), "Exited -> {to:?}");
            assert!(!may_move(Running, Created));
        }
        assert!(!may_move(Running, Running), "a second start");
        assert!(!may_move(Created, Created));
        assert!(may_move(Created, Running));
        assert!(may_move(Created, Exited));
        assert!(may_move(Running, Exited));
    }
}
