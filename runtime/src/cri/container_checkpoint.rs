//! CheckpointContainer: kubelet's forensic container checkpoint (its
//! `/checkpoint` API). The work is in [`crate::checkpoint`].

use std::time::Duration;

use berth_proto::cri::{CheckpointContainerRequest, CheckpointContainerResponse};

use super::Cri;
use crate::error::{Error, Result};

/// Handles CheckpointContainer.
pub async fn handle(cri: &Cri, req: CheckpointContainerRequest) -> Result<CheckpointContainerResponse> {
    if req.timeout < 0 {
        return Err(Error::InvalidArgument(format!(
            "negative checkpoint timeout {}",
            req.timeout
        )));
    }
    crate::checkpoint::checkpoint(
        &cri.cfg,
        &cri.containers,
        &req.container_id,
        &req.location,
        Duration::from_secs(req.timeout as u64),
    )
    .await?;
    Ok(CheckpointContainerResponse {})
}
