//! ListPodSandboxMetrics: cAdvisor-style series of every ready pod (its
//! cgroup and network) and of its live containers (cgroup and writable
//! layer), from the same readings as the stats RPCs.

use berth_proto::cri::{
    ContainerMetrics, ListPodSandboxMetricsRequest, ListPodSandboxMetricsResponse, PodSandboxMetrics,
};

use super::{stats_convert, Cri};
use crate::error::Result;
use crate::stats::metrics::{self, BaseLabels};

/// Handles ListPodSandboxMetrics.
pub async fn handle(cri: &Cri, _req: ListPodSandboxMetricsRequest) -> Result<ListPodSandboxMetricsResponse> {
    let pods: Vec<_> = cri
        .sandboxes
        .list()
        .into_iter()
        .filter(|sb| sb.is_ready())
        .collect();
    let readings = stats_convert::read_pods(cri, pods).await?;
    let pod_metrics = readings
        .iter()
        .map(|p| {
            let pod_labels = BaseLabels {
                id: p.record.cgroup_path.clone(),
                name: p.record.id.clone(),
                namespace: p.record.namespace.clone(),
                pod: p.record.name.clone(),
                ..Default::default()
            };
            let mut pod = p
                .usage
                .cgroup
                .as_ref()
                .map(|u| metrics::cgroup_metrics(&pod_labels, u))
                .unwrap_or_default();
            if let Some(n) = &p.usage.network {
                pod.extend(metrics::network_metrics(&pod_labels, n));
            }
            let container_metrics = p
                .containers
                .iter()
                .filter(|(_, u)| u.cgroup.is_some())
                .map(|(r, u)| {
                    let labels = BaseLabels {
                        container: r.name.clone(),
                        id: r.cgroup_path.clone(),
                        image: r.image.clone(),
                        name: r.id.clone(),
                        ..pod_labels.clone()
                    };
                    let mut m: Vec<_> = u
                        .cgroup
                        .iter()
                        .flat_map(|c| metrics::cgroup_metrics(&labels, c))
                        .collect();
                    if let Some(l) = &u.layer {
                        m.extend(metrics::layer_metrics(&labels, l));
                    }
                    ContainerMetrics {
                        container_id: r.id.clone(),
                        metrics: m,
                    }
                })
                .collect();
            PodSandboxMetrics {
                pod_sandbox_id: p.record.id.clone(),
                metrics: pod,
                container_metrics,
            }
        })
        .collect();
    Ok(ListPodSandboxMetricsResponse { pod_metrics })
}
