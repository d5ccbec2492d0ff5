//! RuntimeConfig: tells kubelet which cgroup driver Berth uses (configured
//! or detected at start; kubelet's KubeletCgroupDriverFromCRI follows it).

use berth_proto::cri::{
    CgroupDriver, LinuxRuntimeConfiguration, RuntimeConfigRequest, RuntimeConfigResponse,
};

use super::Cri;
use crate::error::Result;

/// Handles RuntimeConfig.
pub async fn handle(cri: &Cri, _req: RuntimeConfigRequest) -> Result<RuntimeConfigResponse> {
    let driver = match cri.cfg.cgroup_driver {
        crate::cgroup::driver::CgroupDriver::Cgroupfs | crate::cgroup::driver::CgroupDriver::Auto => {
            CgroupDriver::Cgroupfs
        }
        crate::cgroup::driver::CgroupDriver::Systemd => CgroupDriver::Systemd,
    };
    Ok(RuntimeConfigResponse {
        linux: Some(LinuxRuntimeConfiguration {
            cgroup_driver: driver as i32,
        }),
    })
}
