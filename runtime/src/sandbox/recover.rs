//! Restart recovery: sandboxes come back from their records. A shim that is
//! still running (its pid's command line names its socket, so a recycled pid
//! is not mistaken for it) is reconnected; otherwise the sandbox is NotReady,
//! so kubelet stops, removes and recreates it, and DEL still runs then.

use std::path::Path;
use std::sync::Arc;

use super::{Sandbox, SandboxManager, SandboxRecord, SandboxState};
use crate::error::Result;
use crate::{shim_client, store};

/// Whether `pid` is the shim serving `socket`.
pub(crate) fn shim_alive(pid: u32, socket: &Path) -> bool {
    let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let sock = socket.as_os_str().as_encoded_bytes();
    cmd.split(|b| *b == 0).any(|arg| arg == sock)
}

impl SandboxManager {
    /// Loads every sandbox record; returns how many were recovered.
    pub async fn recover(&self) -> Result<usize> {
        let dir = self.cfg.root.join("sandboxes");
        let mut n = 0;
        for path in store::list_records(&dir)? {
            let mut rec: SandboxRecord = match store::read_record(&path) {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(record = %path.display(), error = %e, "unreadable sandbox record; left in place");
                    continue;
                }
            };
            let mut shim = None;
            if rec.state == SandboxState::Ready {
                if shim_alive(rec.shim_pid, &rec.shim_socket) {
                    match shim_client::connect(&rec.shim_socket).await {
                        Ok(s) => shim = Some(s),
                        Err(e) => tracing::warn!(sandbox = %rec.id, error = %e, "shim alive but unreachable"),
                    }
                }
                if shim.is_none() {
                    tracing::warn!(sandbox = %rec.id, "shim gone while berthd was down; sandbox NotReady");
                    rec.state = SandboxState::NotReady;
                    store::write_record(&path, &rec)?;
                }
            }
            tracing::info!(sandbox = %rec.id, state = ?rec.state, "sandbox recovered");
            self.sandboxes
                .lock()
                .expect("sandboxes lock")
                .insert(rec.id.clone(), Arc::new(Sandbox::new(rec, shim)));
            n += 1;
        }
        Ok(n)
    }
}
