//! RunPodSandbox's two slow steps at once: the shim's start (exec of its
//! binary, its runtime, its socket) and CNI ADD (the plugin chain). CNI
//! needs only the pod's network namespace, which exists from the shim's
//! exec on and is pinned before either starts, so neither waits for the
//! other: the pod is ready after the slower of the two, not their sum.

use std::future::Future;

use crate::error::Result;
use crate::metrics::steps::Steps;
use crate::shim_client::{Shim, StartingShim};

/// Waits for `starting` to serve while `network` (CNI ADD) runs. Both run
/// to their end even when one fails, so every undo the network step pushes
/// is in place before the caller's rollback runs (dropping a CNI ADD half
/// way would leave its attachment behind); the shim's error wins.
pub(super) async fn network_while_shim_starts<N>(
    starting: StartingShim,
    network: impl Future<Output = Result<N>>,
) -> Result<(Shim, N)> {
    let shim = async {
        let _step = Steps::begin("run_pod_sandbox", "shim_ready");
        starting.serving().await
    };
    let network = async {
        let _step = Steps::begin("run_pod_sandbox", "cni_add");
        network.await
    };
    let (shim, network) = tokio::join!(shim, network);
    Ok((shim?, network?))
}
