//! ExecSync: runs a command in a running container (probes, `crictl exec -s`)
//! with the container's own identity, and returns its output and exit code.

use std::time::Duration;

use berth_proto::cri::{ExecSyncRequest, ExecSyncResponse};

use super::Cri;
use crate::error::{Error, Result};

/// Handles ExecSync.
pub async fn handle(cri: &Cri, req: ExecSyncRequest) -> Result<ExecSyncResponse> {
    if req.cmd.is_empty() {
        return Err(Error::InvalidArgument("ExecSync needs a command".into()));
    }
    if req.timeout < 0 {
        return Err(Error::InvalidArgument(format!(
            "ExecSync timeout {} is negative",
            req.timeout
        )));
    }
    let timeout = (req.timeout > 0).then(|| Duration::from_secs(req.timeout as u64));
    let out = cri
        .containers
        .exec_sync(&req.container_id, req.cmd, timeout)
        .await?;
    Ok(ExecSyncResponse {
        stdout: out.stdout,
        stderr: out.stderr,
        exit_code: out.exit_code,
    })
}
