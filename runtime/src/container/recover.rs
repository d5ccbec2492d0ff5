//! Restart recovery for containers. Records come back from disk; the pod's
//! shim (which kept running and kept every exit status) says what happened
//! while berthd was away. Running containers are watched again; ones that
//! exited meanwhile report their real exit code and time.

use std::collections::HashSet;
use std::sync::Arc;

use berth_proto::shim as shimpb;
use parking_lot::Mutex;
use tokio::sync::watch;

use super::state::{Exit, Started};
use super::{Container, ContainerManager, ContainerRecord, ContainerState};
use crate::cgroup::driver;
use crate::error::{Error, Result};
use crate::store;

impl ContainerManager {
    /// Loads every container record; returns how many were recovered.
    pub async fn recover(self: &Arc<Self>) -> Result<usize> {
        self.undo_intents().await?;
        let dir = self.cfg.root.join("containers");
        let mut n = 0;
        let records = store::list_records(&dir)?;
        // Every record file counts, readable or not (its dirs stay).
        let known: HashSet<String> = records
            .iter()
            .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
            .collect();
        self.collect_unnamed(&known)?;
        for path in records {
            let rec: ContainerRecord = match store::read_record(&path) {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(record = %path.display(), error = %e, "unreadable container record; left in place");
                    continue;
                }
            };
            let shim = self.sandboxes.get(&rec.sandbox_id).ok().and_then(|sb| sb.shim());
            let (changed, _) = watch::channel(rec.state);
            let c = Arc::new(Container {
                record: Mutex::new(rec.clone()),
                changed,
                resize: Default::default(),
                record_file: Default::default(),
            });
            self.containers.lock().insert(rec.id.clone(), c.clone());
            n += 1;
            if rec.state == ContainerState::Exited {
                continue;
            }
            let state = match shim.clone() {
                Some(mut s) => s
                    .state(shimpb::StateRequest { id: rec.id.clone() })
                    .await
                    .map(|r| r.into_inner())
                    .ok(),
                None => None,
            };
            match (state, shim) {
                (Some(st), Some(shim)) => {
                    let phase = shimpb::Status::try_from(st.status).unwrap_or(shimpb::Status::Unknown);
                    if phase == shimpb::Status::Created && rec.state == ContainerState::Created {
                        // Still parked, waiting for StartContainer.
                    } else {
                        if rec.state == ContainerState::Created {
                            // Started just before berthd went down.
                            let started = Started {
                                at: st.started_at,
                                pid: st.pid,
                                user: None,
                            };
                            self.to_running(&c, started)?;
                        }
                        // Wait answers at once for a container that already exited.
                        self.watch_exit(c.clone(), shim);
                    }
                }
                _ => {
                    let lost = Exit {
                        code: 255,
                        at: store::now_ns(),
                        reason: "Unknown".into(),
                        message: "the pod's shim was gone when berthd restarted; exit status lost".into(),
                    };
                    self.to_exited(&c, lost)?;
                }
            }
            tracing::info!(container = %rec.id, state = ?c.record().state, "container recovered");
        }
        Ok(n)
    }

    /// Removes what no container record names: writable layers and bundles
    /// (`<root>/containers/<id>/`, `<state>/containers/<id>/`) and container
    /// cgroups inside known pods' cgroups. Intents are undone before, so
    /// this only meets what a crash left outside them.
    fn collect_unnamed(&self, known: &HashSet<String>) -> Result<()> {
        for base in [
            self.cfg.root.join("containers"),
            self.cfg.state.join("containers"),
        ] {
            for e in std::fs::read_dir(&base).into_iter().flatten().flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if !driver::is_id(&name) || known.contains(&name) || !e.path().is_dir() {
                    continue;
                }
                super::image_volume::unmount_all(&e.path())?;
                std::fs::remove_dir_all(e.path())
                    .map_err(|err| Error::io(format!("remove {}", e.path().display()), err))?;
                tracing::warn!(container = %name, dir = %e.path().display(), "removed a container dir no record names");
            }
        }
        let cg = self.sandboxes.cgroups();
        let drv = self.cfg.cgroup_driver;
        for sb in self.sandboxes.list() {
            let pod = cg.dir(&sb.record().cgroup_path);
            cg.remove_children_where(&pod, |n| {
                driver::container_id_of(drv, n).is_some_and(|id| !known.contains(id))
            })?;
        }
        Ok(())
    }
}
