//! StartContainer.

use berth_proto::cri::{StartContainerRequest, StartContainerResponse};

use super::Cri;
use crate::error::Result;

/// Handles StartContainer.
pub async fn handle(
    cri: &Cri,
    req: StartContainerRequest,
    arrived: Option<std::time::Instant>,
) -> Result<StartContainerResponse> {
    crate::metrics::steps::arrived("start_container", arrived);
    cri.containers.start(&req.container_id).await?;
    Ok(StartContainerResponse {})
}
