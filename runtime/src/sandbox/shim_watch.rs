//! Notices at once when a pod's shim dies on its own (killed, crashed, OOM).
//!
//! The wait is [`shim_proc::exited`] (a pidfd). A shim that berthd stopped
//! itself (StopPodSandbox takes the shim client first) is not reported.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::{shim_proc, Sandbox, SandboxState};
use crate::events::{Events, Kind};
use crate::metrics::counters::SHIMS_LOST;

/// Follows `sb`'s shim; if it dies while the sandbox is meant to be ready,
/// logs it, counts it and reports the sandbox STOPPED.
pub fn watch(sb: Arc<Sandbox>, events: Arc<Events>) {
    let rec = sb.record();
    tokio::spawn(async move {
        shim_proc::exited(rec.shim_pid, &rec.shim_socket).await;
        let deliberate = sb.shim().is_none() || sb.record().state != SandboxState::Ready;
        if deliberate {
            return;
        }
        SHIMS_LOST.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(sandbox = %rec.id, pid = rec.shim_pid, "pod shim exited unexpectedly; the sandbox is NotReady");
        events.sandbox(Kind::Stopped, &rec.id);
    });
}
