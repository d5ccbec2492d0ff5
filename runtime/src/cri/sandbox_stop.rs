//! StopPodSandbox: stops every container, then the sandbox. Unknown id is OK.

use std::time::Duration;

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
    let id = sb.record().id;
    stop_all_containers(cri, &id).await?;
    cri.sandboxes.stop(&sb).await?;
    Ok(StopPodSandboxResponse {})
}

/// Stops a sandbox's containers concurrently, with no grace period (kubelet
/// has already stopped them gracefully when it wanted to).
pub async fn stop_all_containers(cri: &Cri, sandbox_id: &str) -> Result<()> {
    let mut tasks = tokio::task::JoinSet::new();
    for c in cri.containers.in_sandbox(sandbox_id) {
        let containers = cri.containers.clone();
        let cid = c.record().id;
        tasks.spawn(async move { containers.stop(&cid, Duration::ZERO).await });
    }
    while let Some(r) = tasks.join_next().await {
        r.map_err(|e| Error::Internal(format!("stop task: {e}")))??;
    }
    Ok(())
}
