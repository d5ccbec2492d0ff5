//! Pod sandboxes: the namespaces and cgroup a pod's containers share.
//!
//! A sandbox's network, IPC and UTS namespaces are created with its shim and
//! pinned by bind mounts under `<state>/sandboxes/<id>/ns/`, so they outlive
//! every container (and the shim itself) until RemovePodSandbox.

mod collect;
mod ids;
mod intent;
mod leases;
mod lifecycle;
mod network;
mod overlap;
mod pin;
mod record;
mod recover;
pub mod resize;
mod run;
mod shim_cgroup;
mod shim_proc;
pub mod shim_watch;
pub mod shm;
pub mod sysctl;
pub mod teardown;
pub mod userns;
pub mod userns_pod;
pub mod userns_probe;

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::cgroup::CgroupManager;
use crate::config::Config;
use crate::error::Result;
use crate::events::Events;
use crate::net::cni::Cni;
use crate::store;

pub use record::{NetworkRecord, PidMode, PortMapping, Sandbox, SandboxRecord, SandboxRequest, SandboxState};

/// Owns every sandbox.
pub struct SandboxManager {
    cfg: Config,
    cgroups: CgroupManager,
    cni: Arc<Cni>,
    shm_host: Arc<dyn shm::ShmHost>,
    /// Pod CIDR from UpdateRuntimeConfig, for the CNI `ipRanges` capability.
    pod_cidr: Mutex<String>,
    sandboxes: Mutex<HashMap<String, Arc<Sandbox>>>,
    /// Pod names whose RunPodSandbox is under way.
    names: store::names::Reservations,
    /// Where lifecycle events go (GetContainerEvents).
    events: Arc<Events>,
    /// The node key sandbox ids are tagged with, read (or made) once.
    id_key: std::sync::OnceLock<[u8; 32]>,
}

impl SandboxManager {
    /// A manager using `cfg`'s directories, `cni` for pod networks and
    /// `shm_host` to mount each pod's /dev/shm.
    pub fn new(cfg: Config, cgroups: CgroupManager, cni: Cni, shm_host: Arc<dyn shm::ShmHost>) -> Self {
        let pod_cidr = network::load_pod_cidr(&network::pod_cidr_path(&cfg));
        SandboxManager {
            cfg,
            cgroups,
            cni: Arc::new(cni),
            shm_host,
            pod_cidr: Mutex::new(pod_cidr),
            sandboxes: Mutex::new(HashMap::new()),
            names: Default::default(),
            events: Arc::new(Events::default()),
            id_key: std::sync::OnceLock::new(),
        }
    }

    /// Reports lifecycle changes to `events` (the node's one events manager).
    pub fn with_events(mut self, events: Arc<Events>) -> Self {
        self.events = events;
        self
    }

    /// Looks a sandbox up by full id or unique prefix.
    pub fn get(&self, id: &str) -> Result<Arc<Sandbox>> {
        store::lookup(&self.sandboxes.lock(), id, "pod sandbox")
    }

    /// Every sandbox.
    pub fn list(&self) -> Vec<Arc<Sandbox>> {
        self.sandboxes.lock().values().cloned().collect()
    }

    /// The cgroup manager (containers create their cgroups below the pod's).
    pub fn cgroups(&self) -> &CgroupManager {
        &self.cgroups
    }
}
