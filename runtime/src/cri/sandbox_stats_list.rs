//! ListPodSandboxStats with id (prefix) and label filters. Only ready pods
//! are listed, as containerd does: a stopped pod uses nothing, and kubelet
//! reads PodSandboxStats of it if it wants its attributes.

use berth_proto::cri::{ListPodSandboxStatsRequest, ListPodSandboxStatsResponse};

use super::{convert, stats_convert, Cri};
use crate::error::Result;

/// Handles ListPodSandboxStats.
pub async fn handle(cri: &Cri, req: ListPodSandboxStatsRequest) -> Result<ListPodSandboxStatsResponse> {
    let f = req.filter.unwrap_or_default();
    let pods: Vec<_> = cri
        .sandboxes
        .list()
        .into_iter()
        .filter(|sb| {
            let r = sb.record();
            r.id.starts_with(&f.id) && convert::labels_match(&f.label_selector, &r.labels) && sb.is_ready()
        })
        .collect();
    let mount = stats_convert::layer_mount(cri);
    let stats = stats_convert::read_pods(cri, pods)
        .await?
        .iter()
        .map(|p| {
            let containers = p
                .containers
                .iter()
                .map(|(r, u)| stats_convert::container_stats(r, u, &mount))
                .collect();
            stats_convert::pod_stats(&p.record, &p.usage, containers)
        })
        .collect();
    Ok(ListPodSandboxStatsResponse { stats })
}
