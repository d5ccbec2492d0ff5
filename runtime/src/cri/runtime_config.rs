//! RuntimeConfig: tells kubelet which cgroup driver Berth uses.

use berth_proto::cri::{
    CgroupDriver, LinuxRuntimeConfiguration, RuntimeConfigRequest, RuntimeConfigResponse,
};

use super::Cri;
use crate::error::Result;

/// Handles RuntimeConfig.
pub async fn handle(_cri: &Cri, _req: RuntimeConfigRequest) -> Result<RuntimeConfigResponse> {
    Ok(RuntimeConfigResponse {
        linux: Some(LinuxRuntimeConfiguration {
            cgroup_driver: CgroupDriver::Cgroupfs as i32,
        }),
    })
}
