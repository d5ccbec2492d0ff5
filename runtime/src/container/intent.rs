//! CreateContainer's intent record: what the call is about to make (the
//! writable layer and bundle dirs, the image volumes mounted below the
//! former, the container cgroup, the shim's parked init), written before
//! the first side effect and removed once the container record exists.
//! A berthd killed in between leaves the intent;
//! start-up recovery undoes what it names, since no RemoveContainer will
//! ever name a container that has no record (and a container cgroup left
//! under the pod cgroup would make RemovePodSandbox fail with EBUSY).

use std::path::PathBuf;

use berth_proto::shim as shimpb;
use serde::{Deserialize, Serialize};

use super::ContainerManager;
use crate::error::Result;
use crate::store;

/// The side effects a CreateContainer may have made.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct CreateIntent {
    /// Container id.
    pub id: String,
    /// Owning sandbox.
    pub sandbox_id: String,
    /// Container cgroup path below the cgroup2 root (always berthd's own).
    pub cgroup_path: String,
    /// Writable layer dir under root.
    pub dir: PathBuf,
    /// Bundle dir under state.
    pub bundle: PathBuf,
}

impl ContainerManager {
    pub(crate) fn intent_path(&self, id: &str) -> PathBuf {
        self.cfg.root.join("container-intents").join(format!("{id}.json"))
    }

    /// Persists `intent` before the side effects it announces.
    pub(crate) fn write_intent(&self, intent: &CreateIntent) -> Result<()> {
        store::write_record(&self.intent_path(&intent.id), intent)
    }

    /// Undoes every intent whose container has no record, then removes it.
    /// Runs after the sandboxes are recovered (their shims are reconnected).
    /// Each undo tolerates "already gone", so a crash here is retried at
    /// the next start.
    pub(crate) async fn undo_intents(&self) -> Result<usize> {
        let dir = self.cfg.root.join("container-intents");
        let mut n = 0;
        for path in store::list_records(&dir)? {
            let intent: CreateIntent = match store::read_record(&path) {
                Ok(i) => i,
                Err(e) => {
                    tracing::error!(intent = %path.display(), error = %e, "unreadable container intent; left in place");
                    continue;
                }
            };
            if !self.record_path(&intent.id).exists() {
                self.undo(&intent).await?;
                n += 1;
            }
            store::remove_record(&path)?;
        }
        Ok(n)
    }

    async fn undo(&self, i: &CreateIntent) -> Result<()> {
        // The shim may hold the container's parked init: it goes first, so
        // the cgroup is empty when it is removed (cgroup.kill covers a shim
        // that is unreachable).
        if let Some(mut shim) = self.sandboxes.get(&i.sandbox_id).ok().and_then(|sb| sb.shim()) {
            if let Err(e) = shim.delete(shimpb::DeleteRequest { id: i.id.clone() }).await {
                if e.code() != tonic::Code::NotFound {
                    tracing::warn!(container = %i.id, error = %e.message(), "shim delete of a half-made container failed");
                }
            }
        }
        if !i.cgroup_path.is_empty() {
            let cg = self.sandboxes.cgroups();
            cg.remove(&cg.dir(&i.cgroup_path))?;
        }
        if !i.dir.as_os_str().is_empty() {
            super::image_volume::unmount_all(&i.dir)?;
        }
        for d in [&i.bundle, &i.dir] {
            if d.as_os_str().is_empty() {
                continue;
            }
            if let Err(e) = std::fs::remove_dir_all(d) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    return Err(crate::error::Error::io(format!("remove {}", d.display()), e));
                }
            }
        }
        tracing::warn!(container = %i.id, "undid a CreateContainer that berthd did not finish");
        Ok(())
    }
}
