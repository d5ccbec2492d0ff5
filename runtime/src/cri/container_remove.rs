//! RemoveContainer: kills a running container first. Unknown id is OK.

use berth_proto::cri::{RemoveContainerRequest, RemoveContainerResponse};

use super::Cri;
use crate::error::Result;

/// Handles RemoveContainer.
pub async fn handle(cri: &Cri, req: RemoveContainerRequest) -> Result<RemoveContainerResponse> {
    cri.containers.remove(&req.container_id).await?;
    Ok(RemoveContainerResponse {})
}
