//! Status: RuntimeReady / NetworkReady conditions and advertised features.

use std::collections::HashMap;

use berth_proto::cri::{
    RuntimeCondition, RuntimeFeatures, RuntimeHandler, RuntimeHandlerFeatures, RuntimeStatus, StatusRequest,
    StatusResponse,
};

use super::Cri;
use crate::error::Result;
use crate::metrics::counters;

/// Handles Status.
pub async fn handle(cri: &Cri, req: StatusRequest) -> Result<StatusResponse> {
    let problems = crate::readiness::check(&cri.cfg);
    let runtime_ready = RuntimeCondition {
        r#type: "RuntimeReady".into(),
        status: problems.is_empty(),
        reason: problems.first().map(|p| p.reason.to_string()).unwrap_or_default(),
        message: problems
            .iter()
            .map(|p| p.message.as_str())
            .collect::<Vec<_>>()
            .join("; "),
    };
    // NetworkReady means what kubelet takes it to mean: a usable CNI config.
    let not_ready = |message: String| RuntimeCondition {
        r#type: "NetworkReady".into(),
        status: false,
        reason: "NetworkPluginNotReady".into(),
        message,
    };
    let network_ready = match cri.sandboxes.network_config() {
        Ok(Some(_)) => RuntimeCondition {
            r#type: "NetworkReady".into(),
            status: true,
            reason: String::new(),
            message: String::new(),
        },
        Ok(None) => not_ready(format!(
            "no valid CNI network config in {}",
            cri.cfg.cni_conf_dir.display()
        )),
        Err(e) => not_ready(e.to_string()),
    };
    let mut info = HashMap::new();
    if req.verbose {
        info.insert(
            "config".to_string(),
            serde_json::to_string(&*cri.cfg).unwrap_or_default(),
        );
        info.insert(
            "resize".to_string(),
            serde_json::json!({
                "applied": counters::RESIZES_APPLIED.load(std::sync::atomic::Ordering::Relaxed),
                "refused": counters::RESIZES_REFUSED.load(std::sync::atomic::Ordering::Relaxed),
                "podApplied": counters::POD_RESIZES_APPLIED.load(std::sync::atomic::Ordering::Relaxed),
                "podRefused": counters::POD_RESIZES_REFUSED.load(std::sync::atomic::Ordering::Relaxed),
                "memoryDecreaseWaitMs": cri.cfg.memory_decrease_wait_ms,
            })
            .to_string(),
        );
        // The CDI spec directories and what they hold (re-read if changed).
        info.insert(
            "cdi".to_string(),
            serde_json::to_string(&cri.containers.cdi().summary()).unwrap_or_default(),
        );
        // CheckpointContainer works only where CRIU is installed. Restore
        // stops at CreateContainer: StartContainer of an archive's container
        // is not implemented yet (docs/checkpoint.md, "Restore").
        let criu = crate::checkpoint::support(&cri.cfg);
        info.insert(
            "checkpoint".to_string(),
            serde_json::json!({"supported": criu.is_some(), "criu": criu, "restore": false}).to_string(),
        );
        // Containers whose groups Merge extended from their image: the pods
        // that enforcing Strict would change.
        info.insert(
            "supplementalGroups".to_string(),
            serde_json::json!({
                "enforcement": cri.cfg.supplemental_groups_enforcement,
                "mergedImageGroupsContainers": counters::MERGED_IMAGE_GROUPS
                    .load(std::sync::atomic::Ordering::Relaxed),
            })
            .to_string(),
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
                recursive_read_only_mounts: *crate::container::mounts::RECURSIVE_READ_ONLY_SUPPORTED,
                // Only where the start-up probe could idmap Berth's root.
                user_namespaces: cri.userns.supported,
            }),
        }],
        // supplementalGroupsPolicy is advertised once Strict is verified end to end.
        features: Some(RuntimeFeatures {
            supplemental_groups_policy: true,
        }),
    })
}
