//! ReopenContainerLog: kubelet's log rotation renames the file, then asks
//! the runtime to write to a fresh one at the same path.

use berth_proto::cri::{ReopenContainerLogRequest, ReopenContainerLogResponse};

use super::Cri;
use crate::error::Result;

/// Handles ReopenContainerLog.
pub async fn handle(cri: &Cri, req: ReopenContainerLogRequest) -> Result<ReopenContainerLogResponse> {
    cri.containers.reopen_log(&req.container_id).await?;
    Ok(ReopenContainerLogResponse {})
}
