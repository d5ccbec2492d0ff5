//! Version: what kubelet checks first.

use berth_proto::cri::{VersionRequest, VersionResponse};

use super::Cri;
use crate::error::Result;

/// The CRI `version` field kubelet requires verbatim.
pub const KUBELET_API_VERSION: &str = "0.1.0";

/// Handles Version.
pub async fn handle(_cri: &Cri, _req: VersionRequest) -> Result<VersionResponse> {
    Ok(VersionResponse {
        version: KUBELET_API_VERSION.into(),
        runtime_name: "berth".into(),
        runtime_version: env!("CARGO_PKG_VERSION").into(),
        runtime_api_version: "v1".into(),
    })
}
