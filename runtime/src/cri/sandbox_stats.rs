//! PodSandboxStats: the pod cgroup's CPU, memory, process count and IO
//! pressure, its network interfaces, and every container's stats. A pod
//! that is not ready answers with its attributes and containers only; an
//! unknown id is NotFound.

use berth_proto::cri::{PodSandboxStatsRequest, PodSandboxStatsResponse};

use super::{stats_convert, Cri};
use crate::error::{Error, Result};

/// Handles PodSandboxStats.
pub async fn handle(cri: &Cri, req: PodSandboxStatsRequest) -> Result<PodSandboxStatsResponse> {
    let sb = cri.sandboxes.get(&req.pod_sandbox_id)?;
    let reading = stats_convert::read_pods(cri, vec![sb])
        .await?
        .pop()
        .ok_or_else(|| Error::Internal("pod stats: no reading".into()))?;
    let mount = stats_convert::layer_mount(cri);
    let containers = reading
        .containers
        .iter()
        .map(|(r, u)| stats_convert::container_stats(r, u, &mount))
        .collect();
    Ok(PodSandboxStatsResponse {
        stats: Some(stats_convert::pod_stats(
            &reading.record,
            &reading.usage,
            containers,
        )),
    })
}
