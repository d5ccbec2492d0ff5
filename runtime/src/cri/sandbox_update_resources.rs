//! UpdatePodSandboxResources: kubelet reports a pod-level resize.

use berth_proto::cri::{UpdatePodSandboxResourcesRequest, UpdatePodSandboxResourcesResponse};

use super::Cri;
use crate::error::Result;

/// Handles UpdatePodSandboxResources.
pub async fn handle(
    cri: &Cri,
    req: UpdatePodSandboxResourcesRequest,
) -> Result<UpdatePodSandboxResourcesResponse> {
    // Range and overflow checks on the caller's integers before the
    // manager adds them up.
    crate::cgroup::resources::pod_total(req.resources.as_ref(), req.overhead.as_ref())?;
    let sb = cri.sandboxes.get(&req.pod_sandbox_id)?;
    cri.sandboxes
        .update_resources(&sb, req.overhead.as_ref(), req.resources.as_ref())
        .await?;
    Ok(UpdatePodSandboxResourcesResponse {})
}
