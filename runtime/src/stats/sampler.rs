//! The background housekeeping round, like cAdvisor's: every
//! [`INTERVAL`] (or sooner, when an RPC met a container whose layer was
//! never walked) it reads every live cgroup, so the first stats call after a
//! container starts already has a CPU rate, and walks the writable layers,
//! so no RPC ever walks a tree.

use std::sync::Arc;
use std::time::Duration;

use super::{ContainerTarget, PodTarget, StatsManager};
use crate::container::ContainerManager;
use crate::sandbox::SandboxManager;

/// Time between rounds (kubelet's housekeeping period).
pub const INTERVAL: Duration = Duration::from_secs(10);

/// Shortest time between two rounds, however often RPCs ask for one.
const MIN_GAP: Duration = Duration::from_secs(1);

/// Every container and pod as targets now.
pub fn targets(
    containers: &ContainerManager,
    sandboxes: &SandboxManager,
) -> (Vec<ContainerTarget>, Vec<PodTarget>) {
    let cgroups = sandboxes.cgroups();
    let records: Vec<_> = containers.list().iter().map(|c| c.record()).collect();
    let ctrs = records.iter().map(|r| ContainerTarget::of(r, cgroups)).collect();
    let pods = sandboxes
        .list()
        .iter()
        .map(|sb| {
            let id = sb.record().id;
            let mine: Vec<_> = records.iter().filter(|r| r.sandbox_id == id).cloned().collect();
            PodTarget::of(sb, &mine, cgroups)
        })
        .collect();
    (ctrs, pods)
}

/// Starts the housekeeping loop; it runs as long as berthd does.
pub fn spawn(stats: Arc<StatsManager>, containers: Arc<ContainerManager>, sandboxes: Arc<SandboxManager>) {
    tokio::spawn(async move {
        loop {
            let (ctrs, pods) = targets(&containers, &sandboxes);
            let s = stats.clone();
            let t = std::time::Instant::now();
            if let Err(e) = crate::blocking::run("stats reader", move || s.sample_all(&ctrs, &pods)).await {
                tracing::warn!(error = %e, "stats housekeeping round failed");
            }
            tracing::trace!(
                elapsed_ms = t.elapsed().as_millis() as u64,
                "stats housekeeping round"
            );
            tokio::time::sleep(MIN_GAP).await;
            tokio::select! {
                _ = tokio::time::sleep(INTERVAL - MIN_GAP) => {}
                _ = stats.layer_wanted() => {}
            }
        }
    });
}
