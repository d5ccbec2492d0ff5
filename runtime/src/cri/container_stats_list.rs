//! ListContainerStats with id (prefix), pod sandbox id (prefix) and label
//! filters, ANDed like ListContainers'.

use berth_proto::cri::{ListContainerStatsRequest, ListContainerStatsResponse};

use super::{convert, stats_convert, Cri};
use crate::error::Result;
use crate::stats::{self, ContainerTarget};

/// Handles ListContainerStats.
pub async fn handle(cri: &Cri, req: ListContainerStatsRequest) -> Result<ListContainerStatsResponse> {
    let f = req.filter.unwrap_or_default();
    let records: Vec<_> = cri
        .containers
        .list()
        .iter()
        .map(|c| c.record())
        .filter(|r| {
            r.id.starts_with(&f.id)
                && r.sandbox_id.starts_with(&f.pod_sandbox_id)
                && convert::labels_match(&f.label_selector, &r.labels)
        })
        .collect();
    let cgroups = cri.sandboxes.cgroups();
    let targets: Vec<_> = records.iter().map(|r| ContainerTarget::of(r, cgroups)).collect();
    let reader = cri.stats.clone();
    let usages = crate::blocking::run("stats reader", move || {
        stats::read_all(&targets, |t| reader.container(t))
    })
    .await?;
    let mount = stats_convert::layer_mount(cri);
    Ok(ListContainerStatsResponse {
        stats: records
            .iter()
            .zip(&usages)
            .map(|(r, u)| stats_convert::container_stats(r, u, &mount))
            .collect(),
    })
}
