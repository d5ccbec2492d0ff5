//! ListContainers with id / state / sandbox / label filters.

use berth_proto::cri::{ListContainersRequest, ListContainersResponse};

use super::{convert, Cri};
use crate::error::Result;

/// Handles ListContainers.
pub async fn handle(cri: &Cri, req: ListContainersRequest) -> Result<ListContainersResponse> {
    let f = req.filter.unwrap_or_default();
    let mut containers: Vec<_> = cri
        .containers
        .list()
        .iter()
        .map(|c| c.record())
        .filter(|r| {
            (f.id.is_empty() || r.id.starts_with(&f.id))
                && (f.pod_sandbox_id.is_empty() || r.sandbox_id.starts_with(&f.pod_sandbox_id))
                && convert::labels_match(&f.label_selector, &r.labels)
        })
        .map(|r| convert::container(&r))
        .filter(|c| f.state.as_ref().is_none_or(|s| s.state == c.state))
        .collect();
    containers.sort_by_key(|c| std::cmp::Reverse(c.created_at));
    Ok(ListContainersResponse { containers })
}
