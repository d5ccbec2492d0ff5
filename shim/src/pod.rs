//! What every RPC of one shim works with: the pod's containers, the reaper
//! that collects their exits, the pod's shared PID namespace and where
//! cgroup v2 is mounted.

use std::fs::File;
use std::path::PathBuf;

use crate::reaper::Reaper;
use crate::table::Table;

/// The shim's state, shared by its RPCs.
pub struct Pod {
    /// berthd's id of the pod sandbox.
    pub sandbox_id: String,
    /// The pod's shared PID namespace (`shareProcessNamespace`), if any.
    pub pid_ns: Option<File>,
    /// Every child's exit, kept until claimed.
    pub reaper: Reaper,
    /// The pod's containers.
    pub table: Table,
    /// Where cgroup v2 is mounted (berthd's `cgroup_root`).
    pub cgroup_root: PathBuf,
    /// The fork server that clones containers' inits, when the pod has
    /// one (`crate::zygote`; not with a shared PID namespace).
    pub zygote: Option<crate::zygote::Zygote>,
}
