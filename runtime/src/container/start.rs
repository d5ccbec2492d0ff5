//! StartContainer.

use std::sync::Arc;

use berth_proto::shim as shimpb;

use super::state::{Exit, Started};
use super::{shim_error, ContainerManager, ContainerState, ProcessUser};
use crate::error::{Error, Result};
use crate::store;

impl ContainerManager {
    /// StartContainer.
    pub async fn start(self: &Arc<Self>, id: &str) -> Result<()> {
        let mut steps = crate::metrics::steps::Steps::begin("start_container", "validate");
        let c = self.get(id)?;
        let rec = c.record();
        if rec.state != ContainerState::Created {
            return Err(Error::FailedPrecondition(format!(
                "container {} is {:?}, only a created container can start",
                rec.id, rec.state
            )));
        }
        let sb = self.sandboxes.get(&rec.sandbox_id)?;
        let mut shim = Self::shim_of(&sb)?;
        steps.next("shim_start");
        let sent = berth_sys::clock::mono_ns();
        let req = shimpb::StartRequest { id: rec.id.clone() };
        let started = shim.start_fast(req).await;
        let back = berth_sys::clock::mono_ns();
        crate::crash::point("start_container.shim");
        let started = match started {
            Ok(r) => r.into_inner(),
            Err(e) => {
                // The process will never run: record why, as kubelet expects.
                self.to_exited(
                    &c,
                    Exit {
                        code: 128,
                        at: store::now_ns(),
                        reason: "StartError".into(),
                        message: e.message().to_string(),
                    },
                )?;
                return Err(shim_error(e));
            }
        };
        crate::metrics::steps::observe_shim_call(
            "start_container",
            &started.steps,
            (sent, back),
            (started.received_ns, started.replied_ns),
        );
        steps.next("record");
        // Before the exit watch exists, so STOPPED can never precede STARTED.
        let started = Started {
            at: started.started_at,
            pid: started.pid,
            user: started.identity.map(|i| ProcessUser {
                uid: i.uid,
                gid: i.gid,
                groups: i.groups,
            }),
        };
        if !self.to_running(&c, started)? {
            // A StopContainer recorded the exit while the start was under
            // way: stopped stays stopped, the process must not run on.
            let _ = shim
                .kill(shimpb::KillRequest {
                    id: rec.id.clone(),
                    signal: libc::SIGKILL as u32,
                    all: true,
                    redeliver_ms: 0,
                })
                .await;
            return Err(Error::FailedPrecondition(format!(
                "container {} was stopped while it started",
                rec.id
            )));
        }
        {
            // Under the resize lock: an update that saw Created has
            // recorded its values by now, a later one sees Running.
            let _serial = c.resize.lock().await;
            self.apply_pending_oom_score_adj(&c.record());
        }
        self.watch_exit(c, shim);
        tracing::info!(container = %rec.id, "container started");
        Ok(())
    }
}
