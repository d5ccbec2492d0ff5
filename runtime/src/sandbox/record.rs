//! The sandbox record: what RunPodSandbox asks for, what is persisted per
//! pod (`<root>/sandboxes/<id>.json`), and the live [`Sandbox`] holding it.

use std::collections::BTreeMap;
use std::path::PathBuf;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use super::{shim_proc, shm, SandboxManager};
use crate::error::Result;
use crate::net::cni::Attachment;
use crate::net::files::{Dns, PodFiles};
use crate::shim_client::Shim;
use crate::store;

/// Ready or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SandboxState {
    /// Namespaces and shim up.
    Ready,
    /// Stopped (or its shim died).
    NotReady,
}

/// Whose PID namespace a pod's containers use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum PidMode {
    /// Each container its own (kubelet's default).
    #[default]
    Container,
    /// One per pod, shared by its containers, with a reaper as PID 1.
    Pod,
    /// The node's.
    Node,
}

/// What RunPodSandbox asks for, already validated by the handler.
#[derive(Debug, Clone, Default)]
pub struct SandboxRequest {
    /// Pod name.
    pub name: String,
    /// Pod UID.
    pub uid: String,
    /// Pod namespace.
    pub namespace: String,
    /// Attempt number.
    pub attempt: u32,
    /// Hostname for the pod's UTS namespace.
    pub hostname: String,
    /// Directory kubelet wants container logs in.
    pub log_directory: String,
    /// CRI `cgroup_parent` (the pod cgroup); empty: the configured default.
    pub cgroup_parent: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    pub annotations: BTreeMap<String, String>,
    /// Runtime handler name.
    pub runtime_handler: String,
    /// Share the host's network namespace.
    pub host_network: bool,
    /// Share the host's IPC namespace.
    pub host_ipc: bool,
    /// PID namespace mode.
    pub pid_mode: PidMode,
    /// Pod resources + overhead for the pod cgroup (empty: leave as is).
    pub pod_limits: crate::cgroup::resources::Limits,
    /// kubelet's DNS config; None: the node's resolv.conf.
    pub dns: Option<Dns>,
    /// Port mappings for the CNI `portMappings` capability.
    pub port_mappings: Vec<PortMapping>,
    /// Pod sysctls (namespaced only).
    pub sysctls: BTreeMap<String, String>,
    /// The pod's own user namespace (mode POD); None: the node's.
    pub userns: Option<super::userns::PodUserns>,
}

/// One CRI port mapping.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PortMapping {
    /// `tcp`, `udp` or `sctp`.
    pub protocol: String,
    /// Port in the pod.
    pub container_port: i32,
    /// Port on the node.
    pub host_port: i32,
    /// Node address to bind; empty: all.
    pub host_ip: String,
}

/// The pod's CNI attachment, kept so DEL gets the same inputs as ADD (also
/// after a berthd restart).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NetworkRecord {
    /// The config file used.
    pub conf_file: PathBuf,
    /// The final ADD result (DEL's prevResult).
    pub result: serde_json::Value,
    /// Runtime config passed by capability.
    pub capabilities: BTreeMap<String, serde_json::Value>,
    /// Pod IPs, primary first.
    pub ips: Vec<String>,
    /// DEL has succeeded.
    pub torn_down: bool,
}

/// The persisted description of a sandbox.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SandboxRecord {
    /// Sandbox id.
    pub id: String,
    /// Pod name.
    pub name: String,
    /// Pod UID.
    pub uid: String,
    /// Pod namespace.
    pub namespace: String,
    /// Attempt.
    pub attempt: u32,
    /// Hostname.
    pub hostname: String,
    /// Log directory.
    pub log_directory: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    pub annotations: BTreeMap<String, String>,
    /// Runtime handler.
    pub runtime_handler: String,
    /// Unix ns.
    pub created_at: i64,
    /// Ready / NotReady.
    pub state: SandboxState,
    /// Pod cgroup path below the cgroup2 root.
    pub cgroup_path: String,
    /// Cgroup directories berthd created for this pod (removed with it).
    pub cgroup_created: Vec<PathBuf>,
    /// Shim pid.
    pub shim_pid: u32,
    /// Shim socket.
    pub shim_socket: PathBuf,
    /// Pinned namespace files, by kind (`net`, `ipc`, `uts`); absent = host's.
    pub ns_paths: BTreeMap<String, PathBuf>,
    /// PID namespace mode.
    #[serde(default)]
    pub pid_mode: PidMode,
    /// Pod resources from the last UpdatePodSandboxResources.
    #[serde(default)]
    pub resources: Option<crate::cgroup::asked::Asked>,
    /// Pod overhead from the last UpdatePodSandboxResources.
    #[serde(default)]
    pub overhead: Option<crate::cgroup::asked::Asked>,
    /// The CNI attachment; None for host-network pods.
    #[serde(default)]
    pub network: Option<NetworkRecord>,
    /// The pod's /etc/hosts, resolv.conf, hostname.
    #[serde(default)]
    pub files: Option<PodFiles>,
    /// The pod's /dev/shm; None for sandboxes of a berthd that had none
    /// (their containers keep a tmpfs each).
    #[serde(default)]
    pub shm: Option<shm::PodShm>,
    /// The pod's own user namespace (pinned as `ns_paths["user"]`); None:
    /// the node's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub userns: Option<super::userns::PodUserns>,
}

impl SandboxRecord {
    /// The CNI attachment inputs of this pod.
    pub(super) fn attachment(&self, capabilities: BTreeMap<String, serde_json::Value>) -> Attachment {
        Attachment {
            container_id: self.id.clone(),
            netns: self.ns_paths.get("net").cloned().unwrap_or_default(),
            ifname: "eth0".into(),
            pod_name: self.name.clone(),
            pod_namespace: self.namespace.clone(),
            pod_uid: self.uid.clone(),
            capabilities,
        }
    }
}

/// A live sandbox.
pub struct Sandbox {
    pub(super) record: Mutex<SandboxRecord>,
    pub(super) shim: Mutex<Option<Shim>>,
    /// Serialises pod-level resizes (never held by status calls).
    pub(super) resize: tokio::sync::Mutex<()>,
    /// Orders the writes of its record and ends them at RemovePodSandbox.
    pub(super) record_file: store::RecordLock,
}

impl Sandbox {
    pub(super) fn new(record: SandboxRecord, shim: Option<Shim>) -> Self {
        Sandbox {
            record: Mutex::new(record),
            shim: Mutex::new(shim),
            resize: tokio::sync::Mutex::new(()),
            record_file: store::RecordLock::default(),
        }
    }

    /// A copy of the record.
    pub fn record(&self) -> SandboxRecord {
        self.record.lock().clone()
    }

    /// The shim client, if the shim is up.
    pub fn shim(&self) -> Option<Shim> {
        self.shim.lock().clone()
    }

    /// Ready -> NotReady, the sandbox's one transition after RunPodSandbox
    /// made it (NotReady is final: a stopped pod is never Ready again).
    /// Returns the record as it now is and whether this call made the move
    /// (only that caller publishes STOPPED).
    pub fn mark_not_ready(&self) -> (SandboxRecord, bool) {
        let mut r = self.record.lock();
        let moved = r.state == SandboxState::Ready;
        r.state = SandboxState::NotReady;
        (r.clone(), moved)
    }

    /// Ready, and the shim process still exists.
    pub fn is_ready(&self) -> bool {
        let r = self.record.lock();
        r.state == SandboxState::Ready && shim_proc::shim_alive(r.shim_pid, &r.shim_socket)
    }
}

impl SandboxManager {
    pub(super) fn record_path(&self, id: &str) -> PathBuf {
        self.cfg.root.join("sandboxes").join(format!("{id}.json"))
    }

    /// Writes the sandbox's current record; a no-op once it was removed
    /// (a concurrent StopPodSandbox cannot bring it back).
    pub(super) fn persist(&self, sb: &Sandbox) -> Result<()> {
        let id = sb.record.lock().id.clone();
        sb.record_file.write(&self.record_path(&id), || sb.record())
    }

    pub(super) fn state_dir(&self, id: &str) -> PathBuf {
        self.cfg.state.join("sandboxes").join(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready() -> Sandbox {
        let rec: SandboxRecord = serde_json::from_value(serde_json::json!({
            "id": "p1", "name": "p", "uid": "u", "namespace": "ns", "attempt": 0,
            "hostname": "p", "log_directory": "", "labels": {}, "annotations": {},
            "runtime_handler": "", "created_at": 1, "state": "Ready", "cgroup_path": "/p1",
            "cgroup_created": [], "shim_pid": 0, "shim_socket": "/nonexistent", "ns_paths": {},
        }))
        .unwrap();
        Sandbox::new(rec, None)
    }

    /// Two StopPodSandbox calls (kubelet's stopp, then the one inside rmp):
    /// only the first moves the pod, so STOPPED is published once.
    #[test]
    fn only_the_first_stop_moves_a_pod_to_not_ready() {
        let sb = ready();
        let (rec, moved) = sb.mark_not_ready();
        assert!(moved);
        assert_eq!(rec.state, SandboxState::NotReady);
        let (rec, moved) = sb.mark_not_ready();
        assert!(!moved);
        assert_eq!(rec.state, SandboxState::NotReady);
        assert!(!sb.is_ready());
    }
}
