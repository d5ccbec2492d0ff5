//! Restart recovery for containers. Records come back from disk; the pod's
//! shim (which kept running and kept every exit status) says what happened
//! while berthd was away. Running containers are watched again; ones that
//! exited meanwhile report their real exit code and time.

use std::sync::Arc;

use berth_proto::shim as shimpb;
use parking_lot::Mutex;
use tokio::sync::watch;

use super::{Container, ContainerManager, ContainerRecord, ContainerState};
use crate::error::Result;
use crate::store;

impl ContainerManager {
    /// Loads every container record; returns how many were recovered.
    pub async fn recover(self: &Arc<Self>) -> Result<usize> {
        let dir = self.cfg.root.join("containers");
        let mut n = 0;
        for path in store::list_records(&dir)? {
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
                            let mut r = c.record.lock();
                            r.state = ContainerState::Running;
                            r.started_at = st.started_at;
                            r.pid = st.pid;
                            drop(r);
                            c.changed.send_replace(ContainerState::Running);
                            self.persist(&c)?;
                        }
                        // Wait answers at once for a container that already exited.
                        self.watch_exit(c.clone(), shim);
                    }
                }
                _ => {
                    {
                        let mut r = c.record.lock();
                        r.state = ContainerState::Exited;
                        r.exit_code = 255;
                        r.finished_at = store::now_ns();
                        r.reason = "Unknown".into();
                        r.message = "the pod's shim was gone when berthd restarted; exit status lost".into();
                    }
                    c.changed.send_replace(ContainerState::Exited);
                    self.persist(&c)?;
                }
            }
            tracing::info!(container = %rec.id, state = ?c.record().state, "container recovered");
        }
        Ok(n)
    }
}
