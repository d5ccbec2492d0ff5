//! PortForward: validates a port-forward into a ready pod and answers the
//! streaming server's URL for it.

use berth_proto::cri::{PortForwardRequest, PortForwardResponse};

use super::Cri;
use crate::error::{Error, Result};
use crate::stream::StreamRequest;

/// Handles PortForward.
pub async fn handle(cri: &Cri, req: PortForwardRequest) -> Result<PortForwardResponse> {
    let sb = cri.sandboxes.get(&req.pod_sandbox_id)?;
    if !sb.is_ready() {
        return Err(Error::FailedPrecondition(format!(
            "pod sandbox {} is not ready",
            req.pod_sandbox_id
        )));
    }
    // The ports may also come with the connection (WebSocket `port`
    // parameters, SPDY stream headers); those named here must be valid.
    if let Some(p) = req.port.iter().find(|p| !(1..=65535).contains(*p)) {
        return Err(Error::InvalidArgument(format!("port {p} is not in 1-65535")));
    }
    let url = cri.streams.register(StreamRequest::PortForward(req))?;
    Ok(PortForwardResponse { url })
}
