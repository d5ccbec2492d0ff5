//! StopPodSandbox: stops every container, then the sandbox. Unknown id is OK.

use berth_proto::cri::{StopPodSandboxRequest, StopPodSandboxResponse};

use super::Cri;
use crate::error::{Error, Result};

/// Handles StopPodSandbox.
pub async fn handle(cri: &Cri, req: StopPodSandboxRequest) -> Result<StopPodSandboxResponse> {
    let sb = match cri.sandboxes.get(&req.pod_sandbox_id) {
        Ok(sb) => sb,
        Err(Error::NotFound(_)) => return Ok(StopPodSandboxResponse {}),
        Err(e) => return Err(e),
    };
    cri.sandboxes.stop_pod(&sb, &cri.containers).await?;
    Ok(StopPodSandboxResponse {})
}
