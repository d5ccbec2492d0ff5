//! StopContainer and RemoveContainer; both idempotent, an unknown id is OK.

use std::time::Duration;

use berth_proto::shim as shimpb;

use super::state::Exit;
use super::{millis, shim_error, ContainerManager, ContainerState};
use crate::error::{Error, Result};
use crate::events::Kind;
use crate::store;

impl ContainerManager {
    /// StopContainer: stop signal, up to `timeout`, then SIGKILL. Idempotent;
    /// an unknown id is OK (the CRI: kubelet retries teardown of what may
    /// already be gone).
    pub async fn stop(&self, id: &str, timeout: Duration) -> Result<()> {
        let c = match self.get(id) {
            Ok(c) => c,
            Err(Error::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        let rec = c.record();
        match rec.state {
            ContainerState::Exited => return Ok(()),
            ContainerState::Created => {
                // Never started: release the parked init; it counts as exited.
                if let Ok(sb) = self.sandboxes.get(&rec.sandbox_id) {
                    if let Some(mut shim) = sb.shim() {
                        let _ = shim.delete(shimpb::DeleteRequest { id: rec.id.clone() }).await;
                    }
                }
                self.to_exited(
                    &c,
                    Exit {
                        code: 0,
                        at: store::now_ns(),
                        reason: "Completed".into(),
                        message: String::new(),
                    },
                )?;
                return Ok(());
            }
            ContainerState::Running => {}
        }
        let sb = self.sandboxes.get(&rec.sandbox_id)?;
        let mut shim = Self::shim_of(&sb)?;
        let mut rx = c.changed.subscribe();
        if !timeout.is_zero() {
            unless_removed(
                shim.kill(shimpb::KillRequest {
                    id: rec.id.clone(),
                    signal: rec.stop_signal as u32,
                    all: false,
                    // A stop that arrives before the process installed its
                    // handler must not be lost (critest stops busybox `top`
                    // milliseconds after starting it).
                    redeliver_ms: millis::redeliver_ms(timeout),
                })
                .await,
            )?;
            crate::crash::point("stop_container.signal");
            if tokio::time::timeout(timeout, rx.wait_for(|s| *s == ContainerState::Exited))
                .await
                .is_ok()
            {
                return Ok(());
            }
        }
        unless_removed(
            shim.kill(shimpb::KillRequest {
                id: rec.id.clone(),
                signal: libc::SIGKILL as u32,
                all: true,
                redeliver_ms: 0,
            })
            .await,
        )?;
        tokio::time::timeout(
            Duration::from_secs(30),
            rx.wait_for(|s| *s == ContainerState::Exited),
        )
        .await
        .map_err(|_| Error::Timeout(format!("container {} did not exit after SIGKILL", rec.id)))?
        .map_err(|_| Error::Internal("container state channel closed".into()))?;
        Ok(())
    }

    /// RemoveContainer: kills it if needed, then frees everything. Unknown id is OK.
    pub async fn remove(&self, id: &str) -> Result<()> {
        let c = match self.get(id) {
            Ok(c) => c,
            Err(Error::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        let rec = c.record();
        if rec.state == ContainerState::Running {
            self.stop(&rec.id, Duration::ZERO).await?;
        }
        if let Ok(sb) = self.sandboxes.get(&rec.sandbox_id) {
            if let Some(mut shim) = sb.shim() {
                match shim.delete(shimpb::DeleteRequest { id: rec.id.clone() }).await {
                    Ok(_) => {}
                    Err(s) if s.code() == tonic::Code::NotFound => {}
                    Err(s) => return Err(shim_error(s)),
                }
            }
        }
        crate::crash::point("remove_container.shim");
        let cg = self.sandboxes.cgroups();
        if let Some(sd) = cg.systemd() {
            sd.stop(&crate::cgroup::systemd::container_scope(&rec.id)).await?;
        }
        cg.remove(&cg.dir(&rec.cgroup_path))?;
        crate::crash::point("remove_container.cgroup");
        super::image_volume::unmount_all(&rec.dir)?;
        for d in [&rec.bundle, &rec.dir] {
            if let Err(e) = std::fs::remove_dir_all(d) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    return Err(Error::io(format!("remove {}", d.display()), e));
                }
            }
        }
        crate::crash::point("remove_container.dirs");
        c.record_file.remove(&self.record_path(&rec.id))?;
        self.containers.lock().remove(&rec.id);
        self.events.container(Kind::Deleted, &rec.id, &rec.sandbox_id);
        tracing::info!(container = %rec.id, "container removed");
        Ok(())
    }
}

/// A kill the shim answers NotFound for: a concurrent RemoveContainer took
/// the container out of the shim, which killed it first. Not an error for
/// StopContainer (the CRI's stop of a gone container succeeds), which still
/// waits for the exit to be recorded.
fn unless_removed(
    r: std::result::Result<tonic::Response<shimpb::KillResponse>, tonic::Status>,
) -> Result<()> {
    match r {
        Ok(_) => Ok(()),
        Err(s) if s.code() == tonic::Code::NotFound => Ok(()),
        Err(s) => Err(shim_error(s)),
    }
}
