//! ExecSync through the container's shim.

use std::time::Duration;

use berth_proto::shim as shimpb;

use super::{millis, shim_error, ContainerManager, ContainerState};
use crate::error::{Error, Result};

impl ContainerManager {
    /// ExecSync: runs `cmd` in the running container through its shim. A
    /// timeout kills the command and is reported as DeadlineExceeded.
    pub async fn exec_sync(
        &self,
        id: &str,
        cmd: Vec<String>,
        timeout: Option<Duration>,
    ) -> Result<shimpb::ExecResponse> {
        let c = self.get(id)?;
        let rec = c.record();
        if rec.state != ContainerState::Running {
            return Err(Error::FailedPrecondition(format!(
                "container {} is {:?}; ExecSync needs a running container",
                rec.id, rec.state
            )));
        }
        let sb = self.sandboxes.get(&rec.sandbox_id)?;
        let mut shim = Self::shim_of(&sb)?;
        let t = std::time::Instant::now();
        let out = shim
            .exec(shimpb::ExecRequest {
                id: rec.id.clone(),
                args: cmd,
                timeout_ms: timeout.map_or(0, millis::exec_timeout_ms),
            })
            .await
            .map_err(shim_error)?
            .into_inner();
        tracing::debug!(container = %rec.id, code = out.exit_code, elapsed_ms = t.elapsed().as_millis() as u64, "exec done");
        if out.timed_out {
            return Err(Error::Timeout(format!(
                "command in container {} timed out after {:?} and was killed",
                rec.id,
                timeout.unwrap_or_default()
            )));
        }
        Ok(out)
    }
}
