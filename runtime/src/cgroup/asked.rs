//! The CRI resources a container or pod last asked for, as kept in its
//! record. In cgroup/ because both the container and the pod record hold
//! one, and neither manager may import the other for it.

use berth_proto::cri::LinuxContainerResources;

/// The CRI resources last asked for, kept in the record (prost types do not
/// serialize): used at start after a resize of a created container, and to
/// report shares, which a weight cannot give back exactly.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Asked {
    /// cpu_shares.
    pub cpu_shares: i64,
    /// cpu_quota.
    pub cpu_quota: i64,
    /// cpu_period.
    pub cpu_period: i64,
    /// memory_limit_in_bytes.
    pub memory_limit_in_bytes: i64,
    /// memory_swap_limit_in_bytes.
    pub memory_swap_limit_in_bytes: i64,
    /// cpuset_cpus.
    pub cpuset_cpus: String,
    /// cpuset_mems.
    pub cpuset_mems: String,
    /// oom_score_adj.
    pub oom_score_adj: i64,
    /// unified.
    pub unified: std::collections::BTreeMap<String, String>,
}

impl From<&LinuxContainerResources> for Asked {
    fn from(r: &LinuxContainerResources) -> Self {
        Asked {
            cpu_shares: r.cpu_shares,
            cpu_quota: r.cpu_quota,
            cpu_period: r.cpu_period,
            memory_limit_in_bytes: r.memory_limit_in_bytes,
            memory_swap_limit_in_bytes: r.memory_swap_limit_in_bytes,
            cpuset_cpus: r.cpuset_cpus.clone(),
            cpuset_mems: r.cpuset_mems.clone(),
            oom_score_adj: r.oom_score_adj,
            unified: r.unified.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        }
    }
}
