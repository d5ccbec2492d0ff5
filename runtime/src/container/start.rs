//! StartContainer.

use std::sync::Arc;

use berth_proto::shim as shimpb;

use super::{shim_error, ContainerManager, ContainerState, ProcessUser};
use crate::error::{Error, Result};
use crate::events::Kind;
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
        let started = shim.start(shimpb::StartRequest { id: rec.id.clone() }).await;
        crate::crash::point("start_container.shim");
        let started = match started {
            Ok(r) => r.into_inner(),
            Err(e) => {
                // The process will never run: record why, as kubelet expects.
                {
                    let mut r = c.record.lock();
                    r.state = ContainerState::Exited;
                    r.exit_code = 128;
                    r.finished_at = store::now_ns();
                    r.reason = "StartError".into();
                    r.message = e.message().to_string();
                }
                self.events.container(Kind::Stopped, &rec.id, &rec.sandbox_id);
                c.changed.send_replace(ContainerState::Exited);
                self.persist(&c)?;
                return Err(shim_error(e));
            }
        };
        steps.next("record");
        {
            let mut r = c.record.lock();
            r.state = ContainerState::Running;
            r.started_at = started.started_at;
            r.pid = started.pid;
            r.process_user = started.identity.map(|i| ProcessUser {
                uid: i.uid,
                gid: i.gid,
                groups: i.groups,
            });
        }
        c.changed.send_replace(ContainerState::Running);
        // Before the exit watch exists, so STOPPED can never precede STARTED.
        self.events.container(Kind::Started, &rec.id, &rec.sandbox_id);
        {
            // Under the resize lock: an update that saw Created has
            // recorded its values by now, a later one sees Running.
            let _serial = c.resize.lock().await;
            self.apply_pending_oom_score_adj(&c.record());
        }
        self.persist(&c)?;
        self.watch_exit(c, shim);
        tracing::info!(container = %rec.id, "container started");
        Ok(())
    }
}
