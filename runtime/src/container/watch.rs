//! The exit watch: one task per running container waits for the shim to
//! report its exit and records it (with the kernel's OOM-kill count).

use std::path::Path;
use std::sync::Arc;

use berth_proto::shim as shimpb;

use super::state::Exit;
use super::{Container, ContainerManager};
use crate::shim_client::Shim;
use crate::store;

impl ContainerManager {
    /// Follows a running container until the shim reports its exit.
    pub(super) fn watch_exit(self: &Arc<Self>, c: Arc<Container>, mut shim: Shim) {
        let mgr = self.clone();
        tokio::spawn(async move {
            let id = c.record().id;
            let (code, at, msg) = match shim.wait(shimpb::WaitRequest { id: id.clone() }).await {
                Ok(r) => {
                    let r = r.into_inner();
                    (r.exit_code, r.exited_at, String::new())
                }
                Err(e) => (
                    255,
                    store::now_ns(),
                    format!("lost contact with the shim: {}", e.message()),
                ),
            };
            // The kernel's count, not a guess from exit code 137: a SIGKILL
            // from StopContainer is not an OOM kill.
            let cgroup = mgr.sandboxes.cgroups().dir(&c.record().cgroup_path);
            let oom_killed = code != 0 && oom_kills(&cgroup) > 0;
            let exit = Exit {
                code,
                at,
                reason: match (code, oom_killed) {
                    (0, _) => "Completed".into(),
                    (_, true) => "OOMKilled".into(),
                    _ => "Error".into(),
                },
                message: msg,
            };
            if let Err(e) = mgr.to_exited(&c, exit) {
                tracing::warn!(container = %id, error = %e, "persist exit");
            }
            tracing::info!(container = %id, code, "container exited");
        });
    }
}

/// `oom_kill` from a cgroup's memory.events (0 when unreadable).
fn oom_kills(cgroup: &Path) -> u64 {
    std::fs::read_to_string(cgroup.join("memory.events"))
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("oom_kill ").map(|v| v.trim().parse().unwrap_or(0)))
        })
        .unwrap_or(0)
}
