//! StartContainer.

use berth_proto::cri::{StartContainerRequest, StartContainerResponse};

use super::Cri;
use crate::error::Result;

/// Handles StartContainer.
pub async fn handle(cri: &Cri, req: StartContainerRequest) -> Result<StartContainerResponse> {
    cri.containers.start(&req.container_id).await?;
    Ok(StartContainerResponse {})
}
