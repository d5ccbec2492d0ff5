//! Kill, Wait, State and Delete of a created container, and the kill of
//! every container on a forced Shutdown.

use std::time::Duration;

use berth_proto::shim::{DeleteResponse, KillRequest, StateResponse, WaitResponse};
use nix::sys::signal::Signal;

use crate::cgroup::signal_all;
use crate::error::{Error, Result};
use crate::table::{Container, Phase, Table};

/// How long Delete waits for a killed container to be reaped.
const DELETE_WAIT: Duration = Duration::from_secs(10);

/// Kill: a signal to the container's process, or with `all` to every
/// process in its cgroup. A stop signal its PID 1 would lose is sent again
/// once the handler appears (see `stop_signal`).
pub fn kill(table: &Table, req: KillRequest) -> Result<()> {
    let c = table.container(&req.id)?;
    let sig = Signal::try_from(req.signal as i32).map_err(|_| Error::BadSignal(req.signal))?;
    // Exited, or a restore not yet run: no process to signal.
    if c.state().phase == Phase::Exited || c.pid == 0 {
        return Ok(());
    }
    match (&c.cgroup_dir, req.all) {
        (Some(dir), true) => signal_all(dir, sig).map_err(|e| Error::io("signal cgroup", e))?,
        _ => {
            let redeliver_for = Duration::from_millis(req.redeliver_ms);
            match c
                .process()
                .and_then(|p| crate::stop_signal::send(p, sig as i32, redeliver_for))
            {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
                Err(e) => return Err(Error::io("kill", e)),
            }
        }
    }
    Ok(())
}

/// Wait: resolves once the container has exited and its output drained.
pub async fn wait(table: &Table, id: &str) -> Result<WaitResponse> {
    let c = table.container(id)?;
    let s = c.wait_exited().await;
    Ok(WaitResponse {
        exit_code: s.exit_code,
        exited_at: s.exited_at,
    })
}

/// State: the container's phase, exit and log drops.
pub fn state(table: &Table, id: &str) -> Result<StateResponse> {
    let c = table.container(id)?;
    let s = c.state();
    Ok(StateResponse {
        id: c.id.clone(),
        status: match s.phase {
            Phase::Created => berth_proto::shim::Status::Created,
            Phase::Running => berth_proto::shim::Status::Running,
            Phase::Exited => berth_proto::shim::Status::Exited,
        } as i32,
        pid: c.pid as u32,
        exit_code: s.exit_code,
        started_at: s.started_at,
        exited_at: s.exited_at,
        log_dropped_records: c.log.dropped_records(),
    })
}

/// Delete: kills a container that has not exited, waits for it, and drops
/// its record.
pub async fn delete(table: &Table, id: String) -> Result<DeleteResponse> {
    let c = table.container(&id)?;
    if c.pid == 0 {
        // A restore never run: there is no process, only the record.
        c.mark_exited(0, crate::reaper::now_ns());
    }
    if c.state().phase != Phase::Exited {
        // A parked init gives up when its start pipe closes; a running one is killed.
        drop(c.start_pipe.lock().expect("lock").take());
        match &c.cgroup_dir {
            Some(dir) => {
                let _ = signal_all(dir, Signal::SIGKILL);
            }
            None => {
                let _ = c
                    .process()
                    .and_then(|p| crate::stop_signal::Target::signal(&p, libc::SIGKILL));
            }
        }
        if tokio::time::timeout(DELETE_WAIT, c.wait_exited()).await.is_err() {
            return Err(Error::NotKilled {
                id,
                waited: DELETE_WAIT,
            });
        }
    }
    table.remove(&id);
    let s = c.state();
    tracing::info!(container = %id, "container deleted");
    Ok(DeleteResponse {
        exit_code: s.exit_code,
        exited_at: s.exited_at,
    })
}

/// Shutdown: refuses while containers remain unless `force`, which kills
/// them all.
pub fn kill_all(table: &Table, force: bool) -> Result<()> {
    let live: Vec<_> = table.all();
    if !live.is_empty() && !force {
        return Err(Error::NotEmpty(live.len()));
    }
    for c in live {
        kill_now(&c);
    }
    Ok(())
}

fn kill_now(c: &Container) {
    if let Some(dir) = &c.cgroup_dir {
        let _ = signal_all(dir, Signal::SIGKILL);
    }
    // Pid 0 (a restore never run) would be our own process group.
    if c.pid > 0 {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.pid), Signal::SIGKILL);
    }
}
