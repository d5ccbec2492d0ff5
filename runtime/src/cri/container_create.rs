//! CreateContainer.

use berth_proto::cri::{CreateContainerRequest, CreateContainerResponse};

use super::Cri;
use crate::error::{Error, Result};

/// Handles CreateContainer.
pub async fn handle(cri: &Cri, req: CreateContainerRequest) -> Result<CreateContainerResponse> {
    let cfg = req
        .config
        .ok_or_else(|| Error::InvalidArgument("CreateContainer without config".into()))?;
    if req.pod_sandbox_id.is_empty() {
        return Err(Error::InvalidArgument(
            "CreateContainer without pod_sandbox_id".into(),
        ));
    }
    let id = cri.containers.create(&req.pod_sandbox_id, &cfg).await?;
    Ok(CreateContainerResponse { container_id: id })
}
