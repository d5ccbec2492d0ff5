//! PodSandboxStatus.

use std::collections::HashMap;

use berth_proto::cri::{PodSandboxStatusRequest, PodSandboxStatusResponse};

use super::{convert, Cri};
use crate::error::Result;

/// Handles PodSandboxStatus.
pub async fn handle(cri: &Cri, req: PodSandboxStatusRequest) -> Result<PodSandboxStatusResponse> {
    let sb = cri.sandboxes.get(&req.pod_sandbox_id)?;
    let status = convert::pod_sandbox_status(&sb);
    let mut info = HashMap::new();
    if req.verbose {
        let r = sb.record();
        // CNI CHECK is a full plugin run, so only verbose (inspect) asks for it.
        let check = match cri.sandboxes.check_network(&sb).await {
            None => serde_json::Value::Null,
            Some(Ok(())) => "ok".into(),
            Some(Err(e)) => e.to_string().into(),
        };
        info.insert(
            "info".to_string(),
            serde_json::json!({
                "pid": r.shim_pid,
                "cgroupPath": r.cgroup_path,
                "namespaces": r.ns_paths,
                "shimSocket": r.shim_socket,
                "network": r.network,
                "networkCheck": check,
                "files": r.files,
                "shm": r.shm,
                "resources": r.resources,
                "overhead": r.overhead,
            })
            .to_string(),
        );
    }
    let containers_statuses = cri
        .containers
        .in_sandbox(&status.id)
        .iter()
        .map(|c| convert::container_status(&c.record()))
        .collect();
    Ok(PodSandboxStatusResponse {
        status: Some(status),
        info,
        containers_statuses,
        timestamp: crate::store::now_ns(),
    })
}
