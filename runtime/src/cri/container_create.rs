//! CreateContainer.

use berth_proto::cri::{CreateContainerRequest, CreateContainerResponse};

use super::Cri;
use crate::error::{Error, Result};

/// Handles CreateContainer.
pub async fn handle(
    cri: &Cri,
    req: CreateContainerRequest,
    arrived: Option<std::time::Instant>,
) -> Result<CreateContainerResponse> {
    let cfg = req
        .config
        .ok_or_else(|| Error::InvalidArgument("CreateContainer without config".into()))?;
    if req.pod_sandbox_id.is_empty() {
        return Err(Error::InvalidArgument(
            "CreateContainer without pod_sandbox_id".into(),
        ));
    }
    // Runs to its end even when the caller goes away (kubelet's deadline
    // drops this future): a create dropped while the shim is still making
    // its half of the container leaves that half (files in the bundle, a
    // parked init) where berthd's undo cannot reach it. A create that
    // finishes after its caller left is listed like any other container,
    // so kubelet removes it.
    let containers = cri.containers.clone();
    let sandbox = req.pod_sandbox_id;
    let id = tokio::spawn(async move {
        crate::metrics::steps::arrived("create_container", arrived);
        containers.create(&sandbox, &cfg).await
    })
    .await
    .map_err(|e| Error::Internal(format!("CreateContainer task: {e}")))??;
    Ok(CreateContainerResponse { container_id: id })
}
