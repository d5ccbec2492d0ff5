//! What to read for a container or a pod, taken from their records: the
//! only place the stats manager meets berthd's own types.

use std::path::PathBuf;

use crate::cgroup::CgroupManager;
use crate::container::{ContainerRecord, ContainerState};
use crate::sandbox::Sandbox;

/// The files of one container.
#[derive(Debug, Clone)]
pub struct ContainerTarget {
    /// Container id.
    pub id: String,
    /// Its cgroup directory.
    pub cgroup_dir: PathBuf,
    /// Created or running. An exited container's cgroup still holds its
    /// final counters (and page cache charged to it) until removal; kubelet
    /// wants a stopped container to use nothing, so it is not read.
    pub live: bool,
    /// Its overlay upper dir (the writable layer).
    pub upper_dir: PathBuf,
}

impl ContainerTarget {
    /// The target of a container record.
    pub fn of(rec: &ContainerRecord, cgroups: &CgroupManager) -> Self {
        ContainerTarget {
            id: rec.id.clone(),
            cgroup_dir: cgroups.dir(&rec.cgroup_path),
            live: rec.state != ContainerState::Exited,
            upper_dir: rec.dir.join("upper"),
        }
    }
}

/// The files of one pod.
#[derive(Debug, Clone)]
pub struct PodTarget {
    /// Sandbox id.
    pub id: String,
    /// The pod cgroup directory.
    pub cgroup_dir: PathBuf,
    /// The sandbox is ready (its shim runs).
    pub ready: bool,
    /// The pinned network namespace; None for host-network pods.
    pub netns_pin: Option<PathBuf>,
    /// Processes that may be in the pod's netns: the shim first (it was
    /// started in it), then the pod's live containers.
    pub pids: Vec<u32>,
}

impl PodTarget {
    /// The target of a sandbox whose containers are `containers`.
    pub fn of(sb: &Sandbox, containers: &[ContainerRecord], cgroups: &CgroupManager) -> Self {
        let rec = sb.record();
        let pids = std::iter::once(rec.shim_pid)
            .chain(
                containers
                    .iter()
                    .filter(|c| c.state != ContainerState::Exited)
                    .map(|c| c.pid),
            )
            .filter(|p| *p != 0)
            .collect();
        PodTarget {
            cgroup_dir: cgroups.dir(&rec.cgroup_path),
            ready: sb.is_ready(),
            netns_pin: rec.ns_paths.get("net").cloned(),
            pids,
            id: rec.id,
        }
    }
}
