//! `cgroup_driver`: how kubelet names pod cgroups (the paths each driver
//! gives are worked out in `cgroup::driver`).

use serde::{Deserialize, Serialize};

/// Which naming scheme pod cgroups follow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupDriver {
    /// Not set: berthd picks one at start (`cgroup::detect`) and every
    /// manager sees the result. Anything handed an unresolved `Auto` (a
    /// hand-built test config) names cgroups as cgroupfs does.
    #[default]
    Auto,
    /// Plain paths.
    Cgroupfs,
    /// systemd slice names.
    Systemd,
}
