//! ListPodSandbox with id / state / label filters.

use berth_proto::cri::{ListPodSandboxRequest, ListPodSandboxResponse};

use super::{convert, Cri};
use crate::error::Result;

/// Handles ListPodSandbox.
pub async fn handle(cri: &Cri, req: ListPodSandboxRequest) -> Result<ListPodSandboxResponse> {
    let f = req.filter.unwrap_or_default();
    let mut items: Vec<_> = cri
        .sandboxes
        .list()
        .iter()
        .map(|sb| (convert::pod_sandbox(sb), sb.record()))
        .filter(|(p, r)| {
            (f.id.is_empty() || p.id.starts_with(&f.id))
                && f.state.as_ref().is_none_or(|s| s.state == p.state)
                && convert::labels_match(&f.label_selector, &r.labels)
        })
        .map(|(p, _)| p)
        .collect();
    items.sort_by_key(|p| std::cmp::Reverse(p.created_at));
    Ok(ListPodSandboxResponse { items })
}
