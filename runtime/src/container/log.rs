//! The container's log as kept by its shim: reopen (ReopenContainerLog)
//! and the count of records it dropped.

use berth_proto::shim as shimpb;

use super::{shim_error, ContainerManager, ContainerRecord, ContainerState};
use crate::error::{Error, Result};

impl ContainerManager {
    /// ReopenContainerLog: after kubelet renamed the log file away, output
    /// continues in a new file at the same path, without losing a line.
    pub async fn reopen_log(&self, id: &str) -> Result<()> {
        let c = self.get(id)?;
        let rec = c.record();
        if rec.state != ContainerState::Running {
            return Err(Error::FailedPrecondition(format!(
                "container {} is {:?}; only a running container's log can be reopened",
                rec.id, rec.state
            )));
        }
        let sb = self.sandboxes.get(&rec.sandbox_id)?;
        let mut shim = Self::shim_of(&sb)?;
        shim.reopen_log(shimpb::ReopenLogRequest { id: rec.id.clone() })
            .await
            .map_err(shim_error)?;
        Ok(())
    }

    /// Log records the shim dropped for this container because they could
    /// not be written (disk full); None when its shim cannot be asked.
    pub async fn log_dropped_records(&self, rec: &ContainerRecord) -> Option<u64> {
        let mut shim = self.sandboxes.get(&rec.sandbox_id).ok()?.shim()?;
        let st = shim
            .state(shimpb::StateRequest { id: rec.id.clone() })
            .await
            .ok()?;
        Some(st.into_inner().log_dropped_records)
    }
}
