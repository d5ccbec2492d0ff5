//! GetContainerEvents: a stream of container and sandbox lifecycle events
//! (kubelet's Evented PLEG). Each subscriber gets its own bounded buffer; one
//! that falls behind is dropped and its stream ends with RESOURCE_EXHAUSTED,
//! so it knows to resubscribe and relist.

use std::pin::Pin;
use std::sync::{Arc, Weak};

use berth_proto::cri::{self, ContainerEventResponse, GetEventsRequest};
use tokio_stream::{Stream, StreamExt};

use super::{convert, Cri};
use crate::container::ContainerManager;
use crate::error::{Error, Result};
use crate::events::{PodSnapshot, PodView};
use crate::sandbox::SandboxManager;

/// What the RPC streams.
pub type EventStream =
    Pin<Box<dyn Stream<Item = std::result::Result<ContainerEventResponse, tonic::Status>> + Send>>;

/// Handles GetContainerEvents.
pub async fn handle(cri: &Cri, _req: GetEventsRequest) -> Result<EventStream> {
    let sub = cri.events.subscribe();
    let id = sub.id();
    tracing::info!(subscriber = id, "container events subscriber attached");
    Ok(Box::pin(sub.map(move |e| match e {
        Ok(ev) => Ok(Arc::unwrap_or_clone(ev)),
        Err(overflow) => {
            tracing::info!(subscriber = id, "container events stream ended: {overflow}");
            Err(
                Error::ResourceExhausted(format!("container events: {overflow}; resubscribe and relist"))
                    .into(),
            )
        }
    })))
}

/// Pod status for events, read from the managers exactly as
/// PodSandboxStatus and ContainerStatus report it (without the cgroup
/// reads of `resources`: events are built under the events lock).
pub struct ManagerPodView {
    sandboxes: Weak<SandboxManager>,
    containers: Weak<ContainerManager>,
}

impl ManagerPodView {
    /// A view over the two managers; weak, since they hold the events
    /// manager that holds this view.
    pub fn new(sandboxes: &Arc<SandboxManager>, containers: &Arc<ContainerManager>) -> Self {
        ManagerPodView {
            sandboxes: Arc::downgrade(sandboxes),
            containers: Arc::downgrade(containers),
        }
    }
}

impl PodView for ManagerPodView {
    fn snapshot(&self, sandbox_id: &str) -> Option<PodSnapshot> {
        let sb = self.sandboxes.upgrade()?.get(sandbox_id).ok()?;
        let status = convert::pod_sandbox_status(&sb);
        let mut records: Vec<_> = self
            .containers
            .upgrade()?
            .in_sandbox(&status.id)
            .iter()
            .map(|c| c.record())
            .collect();
        records.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        let statuses: Vec<cri::ContainerStatus> = records.iter().map(convert::container_status).collect();
        Some((status, statuses))
    }
}
