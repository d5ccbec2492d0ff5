//! RemovePodSandbox: stops it if needed, removes its containers and itself.
//! Unknown id is OK.

use berth_proto::cri::{RemovePodSandboxRequest, RemovePodSandboxResponse};

use super::Cri;
use crate::error::{Error, Result};

/// Handles RemovePodSandbox.
pub async fn handle(cri: &Cri, req: RemovePodSandboxRequest) -> Result<RemovePodSandboxResponse> {
    let sb = match cri.sandboxes.get(&req.pod_sandbox_id) {
        Ok(sb) => sb,
        Err(Error::NotFound(_)) => return Ok(RemovePodSandboxResponse {}),
        Err(e) => return Err(e),
    };
    cri.sandboxes.remove_pod(&sb, &cri.containers).await?;
    Ok(RemovePodSandboxResponse {})
}
