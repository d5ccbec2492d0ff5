//! ListMetricDescriptors: the cAdvisor-compatible families
//! ListPodSandboxMetrics serves, with their label keys.

use berth_proto::cri::{ListMetricDescriptorsRequest, ListMetricDescriptorsResponse};

use super::Cri;
use crate::error::Result;
use crate::stats::metrics;

/// Handles ListMetricDescriptors.
pub async fn handle(_cri: &Cri, _req: ListMetricDescriptorsRequest) -> Result<ListMetricDescriptorsResponse> {
    Ok(ListMetricDescriptorsResponse {
        descriptors: metrics::descriptors(),
    })
}
