//! UpdateContainerResources: in-place resize of a running (or created)
//! container; see `container/resize.rs` and `cgroup/resize.rs`.

use berth_proto::cri::{UpdateContainerResourcesRequest, UpdateContainerResourcesResponse};

use super::Cri;
use crate::error::{Error, Result};

/// Handles UpdateContainerResources.
pub async fn handle(
    cri: &Cri,
    req: UpdateContainerResourcesRequest,
) -> Result<UpdateContainerResourcesResponse> {
    let linux = req
        .linux
        .ok_or_else(|| Error::InvalidArgument("UpdateContainerResources without linux resources".into()))?;
    cri.containers.update_resources(&req.container_id, &linux).await?;
    Ok(UpdateContainerResourcesResponse {})
}
