//! Status: RuntimeReady / NetworkReady conditions and advertised features.

use std::collections::HashMap;

use berth_proto::cri::{
    RuntimeCondition, RuntimeFeatures, RuntimeHandler, RuntimeHandlerFeatures, RuntimeStatus, StatusRequest,
    StatusResponse,
};

use super::Cri;
use crate::error::Result;

/// Whether a CNI network config exists (what kubelet's NetworkReady means).
fn cni_config_present(dir: &std::path::Path) -> Option<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".conf") || n.ends_with(".conflist") || n.ends_with(".json"))
        .collect();
    names.sort();
    names.into_iter().next()
}

/// Handles Status.
pub async fn handle(cri: &Cri, req: StatusRequest) -> Result<StatusResponse> {
    let runtime_ready = RuntimeCondition {
        r#type: "RuntimeReady".into(),
        status: true,
        reason: String::new(),
        message: String::new(),
    };
    let network_ready = match cni_config_present(&cri.cfg.cni_conf_dir) {
        Some(_) => RuntimeCondition {
            r#type: "NetworkReady".into(),
            status: true,
            reason: String::new(),
            message: String::new(),
        },
        None => RuntimeCondition {
            r#type: "NetworkReady".into(),
            status: false,
            reason: "NetworkPluginNotReady".into(),
            message: format!("no CNI network config in {}", cri.cfg.cni_conf_dir.display()),
        },
    };
    let mut info = HashMap::new();
    if req.verbose {
        info.insert(
            "config".to_string(),
            serde_json::to_string(&*cri.cfg).unwrap_or_default(),
        );
    }
    Ok(StatusResponse {
        status: Some(RuntimeStatus {
            conditions: vec![runtime_ready, network_ready],
        }),
        info,
        runtime_handlers: vec![RuntimeHandler {
            name: String::new(),
            features: Some(RuntimeHandlerFeatures {
                recursive_read_only_mounts: false,
                user_namespaces: false,
            }),
        }],
        // supplementalGroupsPolicy is advertised once Strict is verified end to end.
        features: Some(RuntimeFeatures {
            supplemental_groups_policy: false,
        }),
    })
}
