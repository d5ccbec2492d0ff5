//! UpdateRuntimeConfig: kubelet hands over the node's pod CIDR, which later
//! pods pass to CNI plugins that declare the `ipRanges` capability.

use berth_proto::cri::{UpdateRuntimeConfigRequest, UpdateRuntimeConfigResponse};

use super::Cri;
use crate::error::Result;

/// Handles UpdateRuntimeConfig.
pub async fn handle(cri: &Cri, req: UpdateRuntimeConfigRequest) -> Result<UpdateRuntimeConfigResponse> {
    let cidr = req
        .runtime_config
        .and_then(|c| c.network_config)
        .map(|n| n.pod_cidr)
        .unwrap_or_default();
    cri.sandboxes.set_pod_cidr(&cidr)?;
    tracing::info!(pod_cidr = %cidr, "runtime config updated");
    Ok(UpdateRuntimeConfigResponse {})
}
