//! Containers: create (spec, writable layer, cgroup, shim), start, stop,
//! remove, and the state machine Created -> Running -> Exited.

pub mod apparmor;
mod create;
pub mod devices;
mod exec;
pub mod groups_policy;
mod idmap_mounts;
mod image_files;
pub mod image_volume;
mod intent;
mod lifecycle;
mod log;
mod millis;
pub mod mounts;
mod record;
#[cfg(test)]
mod record_tests;
mod recover;
pub mod resize;
mod seccomp;
pub mod signal;
pub mod spec;
mod start;
mod state;
mod streaming;
mod teardown;
pub mod user;
mod volume_owner;
mod watch;

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::events::Events;
use crate::image::ImageStore;
use crate::sandbox::{Sandbox, SandboxManager};
use crate::shim_client::Shim;
use crate::store;

pub use record::{Container, ContainerRecord, ContainerState, MountRecord, ProcessUser};

/// Owns every container.
pub struct ContainerManager {
    cfg: Config,
    images: Arc<ImageStore>,
    sandboxes: Arc<SandboxManager>,
    containers: Mutex<HashMap<String, Arc<Container>>>,
    /// Container names whose CreateContainer is under way.
    names: store::names::Reservations,
    /// Each image's user database (read once: images are immutable), so
    /// re-creating a pod's containers (in-place restart) reads no image files.
    users_cache: Mutex<HashMap<String, Arc<spec::ImageUsers>>>,
    /// The node's AppArmor (profile checks, the default profile).
    apparmor: apparmor::AppArmor,
    /// The node's device nodes (CRI devices, privileged containers).
    host_devices: Arc<dyn devices::HostDevices>,
    /// Where lifecycle events go (GetContainerEvents).
    events: Arc<Events>,
    /// The node's CDI spec files (`CDI_devices`).
    cdi: crate::cdi::Cdi,
}

impl ContainerManager {
    /// A manager over the given stores.
    pub fn new(cfg: Config, images: Arc<ImageStore>, sandboxes: Arc<SandboxManager>) -> Self {
        ContainerManager {
            cdi: crate::cdi::Cdi::new(cfg.cdi_spec_dirs.clone()),
            cfg,
            images,
            sandboxes,
            containers: Mutex::new(HashMap::new()),
            names: Default::default(),
            users_cache: Mutex::new(HashMap::new()),
            apparmor: apparmor::AppArmor::default(),
            host_devices: Arc::new(devices::RealHostDevices),
            events: Arc::new(Events::default()),
        }
    }

    /// Reports lifecycle changes to `events` (the node's one events manager).
    pub fn with_events(mut self, events: Arc<Events>) -> Self {
        self.events = events;
        self
    }

    /// Work done once at start rather than in a first CreateContainer:
    /// the AppArmor default profile is loaded in the background.
    pub fn preload(self: &Arc<Self>) {
        let me = self.clone();
        tokio::task::spawn_blocking(move || me.apparmor.preload_default());
    }

    /// The node's CDI specs (verbose Status reports them).
    pub fn cdi(&self) -> &crate::cdi::Cdi {
        &self.cdi
    }

    /// Looks a container up by id or unique prefix.
    pub fn get(&self, id: &str) -> Result<Arc<Container>> {
        store::lookup(&self.containers.lock(), id, "container")
    }

    /// Every container.
    pub fn list(&self) -> Vec<Arc<Container>> {
        self.containers.lock().values().cloned().collect()
    }

    /// Containers of one sandbox.
    pub fn in_sandbox(&self, sandbox_id: &str) -> Vec<Arc<Container>> {
        self.list()
            .into_iter()
            .filter(|c| c.record.lock().sandbox_id == sandbox_id)
            .collect()
    }

    pub(super) fn shim_of(sb: &Sandbox) -> Result<Shim> {
        sb.shim()
            .ok_or_else(|| Error::FailedPrecondition(format!("pod sandbox {} is not ready", sb.record().id)))
    }
}

/// Maps a shim status to our error, keeping client-facing codes meaningful.
pub(super) fn shim_error(s: tonic::Status) -> Error {
    match s.code() {
        tonic::Code::NotFound => Error::NotFound(s.message().to_string()),
        tonic::Code::InvalidArgument => Error::InvalidArgument(s.message().to_string()),
        tonic::Code::FailedPrecondition => Error::FailedPrecondition(s.message().to_string()),
        _ => Error::Shim(s.message().to_string()),
    }
}
