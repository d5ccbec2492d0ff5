//! The container manager as the pod teardown sees it
//! ([`crate::sandbox::teardown::PodContainers`]).

use std::future::Future;
use std::time::Duration;

use super::ContainerManager;
use crate::error::Result;
use crate::sandbox::teardown::PodContainers;

impl PodContainers for ContainerManager {
    fn ids_in_pod(&self, sandbox_id: &str) -> Vec<String> {
        self.in_sandbox(sandbox_id)
            .iter()
            .map(|c| c.record().id)
            .collect()
    }

    fn stop_container(&self, id: &str, timeout: Duration) -> impl Future<Output = Result<()>> + Send {
        self.stop(id, timeout)
    }

    fn remove_container(&self, id: &str) -> impl Future<Output = Result<()>> + Send {
        self.remove(id)
    }
}
