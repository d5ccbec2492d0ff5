//! The container record: its state, what is persisted per container
//! (`<root>/containers/<id>.json`), and the live [`Container`] holding it.

use std::collections::BTreeMap;
use std::path::PathBuf;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::{resize, ContainerManager};
use crate::error::Result;
use crate::store;

/// Where a container is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ContainerState {
    /// Set up, not started.
    Created,
    /// Its process runs.
    Running,
    /// Its process ended (or it never started and was stopped).
    Exited,
}

/// The persisted container record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerRecord {
    /// Container id.
    pub id: String,
    /// Owning sandbox.
    pub sandbox_id: String,
    /// CRI metadata name.
    pub name: String,
    /// CRI metadata attempt.
    pub attempt: u32,
    /// Image as the request named it.
    pub image: String,
    /// Resolved image id.
    pub image_ref: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    pub annotations: BTreeMap<String, String>,
    /// Absolute log path ("" = no log).
    pub log_path: String,
    /// State.
    pub state: ContainerState,
    /// Unix ns.
    pub created_at: i64,
    /// Unix ns (0 = never).
    pub started_at: i64,
    /// Unix ns (0 = not yet).
    pub finished_at: i64,
    /// Exit code when exited.
    pub exit_code: i32,
    /// CRI reason (`Completed`, `Error`, ...).
    pub reason: String,
    /// Human message.
    pub message: String,
    /// Pid in the host pid namespace while it runs.
    pub pid: u32,
    /// Cgroup path below the cgroup2 root.
    pub cgroup_path: String,
    /// Container-specific dir under root (writable layer).
    pub dir: PathBuf,
    /// Bundle dir under state.
    pub bundle: PathBuf,
    /// CRI mounts as requested (for ContainerStatus).
    pub mounts: Vec<MountRecord>,
    /// Signal StopContainer sends first.
    pub stop_signal: i32,
    /// CRI resources last applied (create or UpdateContainerResources).
    #[serde(default)]
    pub resources: Option<resize::Asked>,
    /// uid/gid/groups the kernel held for the first process right before
    /// its exec (ContainerStatus.user); None until started.
    #[serde(default)]
    pub process_user: Option<ProcessUser>,
    /// uid/gid/groups the spec asked for.
    pub uid: u32,
    /// Primary gid.
    pub gid: u32,
    /// Supplementary groups.
    pub additional_gids: Vec<u32>,
    /// Image volumes (KEP-4639) it mounts: their images are in use.
    #[serde(default)]
    pub image_volumes: Vec<super::image_volume::ImageVolumeRecord>,
    /// Restore from a checkpoint: CRIU's images dir (unpacked from the
    /// archive into the container's dir), which StartContainer restores
    /// the processes from instead of starting the spec's process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_from: Option<PathBuf>,
}

/// An identity read from the kernel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessUser {
    /// Real uid.
    pub uid: u32,
    /// Real gid.
    pub gid: u32,
    /// Supplementary groups.
    pub groups: Vec<u32>,
}

/// A CRI mount, as ContainerStatus reports it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MountRecord {
    /// Path inside.
    pub container_path: String,
    /// Path on the host.
    pub host_path: String,
    /// Read-only.
    pub readonly: bool,
    /// CRI propagation enum value.
    pub propagation: i32,
}

/// A live container.
pub struct Container {
    pub(super) record: Mutex<ContainerRecord>,
    pub(super) changed: watch::Sender<ContainerState>,
    /// Serialises resizes of this container (never held by status calls).
    pub(super) resize: tokio::sync::Mutex<()>,
    /// Orders the writes of its record and ends them at RemoveContainer.
    pub(super) record_file: store::RecordLock,
}

impl Container {
    /// A copy of the record.
    pub fn record(&self) -> ContainerRecord {
        self.record.lock().clone()
    }
}

impl ContainerManager {
    pub(super) fn record_path(&self, id: &str) -> PathBuf {
        self.cfg.root.join("containers").join(format!("{id}.json"))
    }

    /// Writes the container's current record; a no-op once it was removed.
    pub(super) fn persist(&self, c: &Container) -> Result<()> {
        let id = c.record.lock().id.clone();
        c.record_file.write(&self.record_path(&id), || c.record())
    }
}
