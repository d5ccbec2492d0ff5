//! StopContainer: stop signal, `timeout` seconds, then SIGKILL.

use std::time::Duration;

use berth_proto::cri::{StopContainerRequest, StopContainerResponse};

use super::Cri;
use crate::error::{Error, Result};

/// Handles StopContainer. Unknown id is OK, as the CRI says.
pub async fn handle(cri: &Cri, req: StopContainerRequest) -> Result<StopContainerResponse> {
    if req.timeout < 0 {
        return Err(Error::InvalidArgument(format!(
            "negative stop timeout {}",
            req.timeout
        )));
    }
    cri.containers
        .stop(&req.container_id, Duration::from_secs(req.timeout as u64))
        .await?;
    Ok(StopContainerResponse {})
}
