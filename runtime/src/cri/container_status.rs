//! ContainerStatus.

use std::collections::HashMap;

use berth_proto::cri::{ContainerStatusRequest, ContainerStatusResponse};

use super::{convert, Cri};
use crate::error::Result;

/// Handles ContainerStatus.
pub async fn handle(cri: &Cri, req: ContainerStatusRequest) -> Result<ContainerStatusResponse> {
    let rec = cri.containers.get(&req.container_id)?.record();
    let mut info = HashMap::new();
    if req.verbose {
        // A container created by an older berthd has no config.json: null.
        let spec: serde_json::Value = std::fs::read(rec.bundle.join("config.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let log_dropped = cri.containers.log_dropped_records(&rec).await;
        info.insert(
            "info".to_string(),
            serde_json::json!({
                "pid": rec.pid,
                "sandboxID": rec.sandbox_id,
                "cgroupPath": rec.cgroup_path,
                "bundle": rec.bundle,
                "writableLayer": rec.dir.join("upper"),
                "runtimeSpec": spec,
                "logDroppedRecords": log_dropped,
            })
            .to_string(),
        );
    }
    let mut status = convert::container_status(&rec);
    // What the cgroup holds now, read back from its files.
    status.resources =
        cri.containers
            .current_resources(&rec)
            .map(|linux| berth_proto::cri::ContainerResources {
                linux: Some(linux),
                windows: None,
            });
    Ok(ContainerStatusResponse {
        status: Some(status),
        info,
    })
}
