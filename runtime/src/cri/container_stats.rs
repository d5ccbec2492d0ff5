//! ContainerStats: one container's CPU, memory, swap, IO pressure and
//! writable layer. A stopped container answers with its attributes and
//! layer only; an unknown id is NotFound.

use berth_proto::cri::{ContainerStatsRequest, ContainerStatsResponse};

use super::{stats_convert, Cri};
use crate::error::Result;
use crate::stats::ContainerTarget;

/// Handles ContainerStats.
pub async fn handle(cri: &Cri, req: ContainerStatsRequest) -> Result<ContainerStatsResponse> {
    let rec = cri.containers.get(&req.container_id)?.record();
    let target = ContainerTarget::of(&rec, cri.sandboxes.cgroups());
    let reader = cri.stats.clone();
    let usage = crate::blocking::run("stats reader", move || reader.container(&target)).await?;
    Ok(ContainerStatsResponse {
        stats: Some(stats_convert::container_stats(
            &rec,
            &usage,
            &stats_convert::layer_mount(cri),
        )),
    })
}
