//! Attach: validates an attach to a running container's stdio and answers
//! the streaming server's URL for it.

use berth_proto::cri::{AttachRequest, AttachResponse};

use super::container_exec::check_streams;
use super::Cri;
use crate::error::Result;
use crate::stream::StreamRequest;

/// Handles Attach.
pub async fn handle(cri: &Cri, req: AttachRequest) -> Result<AttachResponse> {
    check_streams("Attach", req.tty, req.stdin, req.stdout, req.stderr)?;
    // A unique prefix names the container too; the shim needs the full id.
    let rec = cri.containers.running(&req.container_id, "Attach")?;
    let mut req = req;
    req.container_id = rec.id;
    let url = cri.streams.register(StreamRequest::Attach(req))?;
    Ok(AttachResponse { url })
}
