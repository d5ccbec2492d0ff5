//! StopPodSandbox and RemovePodSandbox: the shim stopped, the network torn
//! down, then pins, /dev/shm, cgroups, socket, state dir and record removed.
//! Both are idempotent (kubelet retries them).

use std::path::Path;

use super::{pin, shim_proc, shm, Sandbox, SandboxManager};
use crate::error::{Error, Result};
use crate::events::Kind;

impl SandboxManager {
    /// Stops the shim and marks the sandbox NotReady. The caller stops the
    /// containers first. Namespaces stay pinned until remove. Idempotent.
    pub async fn stop(&self, sb: &Sandbox) -> Result<()> {
        let mut steps = crate::metrics::steps::Steps::begin("stop_pod_sandbox", "shim_shutdown");
        let shim = sb.shim.lock().take();
        if let Some(mut shim) = shim {
            let _ = shim
                .shutdown(berth_proto::shim::ShutdownRequest { force: true })
                .await;
        }
        let (rec, was_ready) = sb.mark_not_ready();
        // Also when no client was held (a shim berthd could not reconnect to
        // after a restart): the wait checks the shim's identity, never a
        // bare pid that may since belong to another process.
        steps.next("shim_wait_gone");
        wait_gone(rec.shim_pid, &rec.shim_socket).await;
        crate::crash::point("stop_sandbox.shim");
        steps.next("record");
        self.persist(sb)?;
        if was_ready {
            self.events.sandbox(Kind::Stopped, &rec.id);
        }
        // After the containers are gone; a failure is returned so kubelet
        // retries StopPodSandbox, and remove cannot skip it.
        steps.next("cni_del");
        self.teardown_network(sb).await
    }

    /// Removes a stopped sandbox: namespace pins, cgroup, state. Idempotent.
    pub async fn remove(&self, sb: &Sandbox) -> Result<()> {
        self.stop(sb).await?;
        let mut steps = crate::metrics::steps::Steps::begin("remove_pod_sandbox", "ns_unpin");
        let rec = sb.record();
        for p in rec.ns_paths.values() {
            pin::unpin(p)?;
        }
        crate::crash::point("remove_sandbox.pins");
        // Before the state dir goes: removing files under a live mount point
        // would empty the tmpfs and then fail with EBUSY.
        if let Some(s) = &rec.shm {
            shm::teardown(&*self.shm_host, s)?;
        }
        // The pod's containers are removed by now: a container cgroup still
        // here is one no record names (a CreateContainer berthd did not
        // finish). Also under a pod cgroup kubelet made, which kubelet
        // could otherwise never remove.
        steps.next("cgroup");
        let leaf = self.cgroups.dir(&rec.cgroup_path);
        let driver = self.cfg.cgroup_driver;
        self.cgroups.remove_children_where(&leaf, |n| {
            crate::cgroup::driver::container_id_of(driver, n).is_some()
        })?;
        match self.cgroups.systemd() {
            Some(sd) => {
                sd.stop(&crate::cgroup::systemd::shim_scope(&rec.id)).await?;
                if !rec.cgroup_created.is_empty() {
                    sd.stop(crate::cgroup::systemd::slice_of(&rec.cgroup_path))
                        .await?;
                }
            }
            None => self.cgroups.remove_created(&rec.cgroup_created, &leaf)?,
        }
        crate::crash::point("remove_sandbox.cgroup");
        steps.next("state");
        if let Err(e) = std::fs::remove_file(&rec.shim_socket) {
            if e.kind() != std::io::ErrorKind::NotFound {
                return Err(Error::io(format!("remove {}", rec.shim_socket.display()), e));
            }
        }
        let dir = self.state_dir(&rec.id);
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                return Err(Error::io(format!("remove {}", dir.display()), e));
            }
        }
        crate::crash::point("remove_sandbox.state");
        sb.record_file.remove(&self.record_path(&rec.id))?;
        // Read while the sandbox is still known: kubelet drops a DELETED
        // event that has no sandbox status.
        let last = self.events.snapshot(&rec.id);
        self.sandboxes.lock().remove(&rec.id);
        self.events.sandbox_with(Kind::Deleted, &rec.id, last);
        tracing::info!(sandbox = %rec.id, "pod sandbox removed");
        Ok(())
    }
}

/// Waits (bounded) until the pod's shim has gone, then kills it if it has
/// not. The shim is recognised by its socket path on its command line
/// ([`shim_proc::shim_alive`]): a pid reused by another process since (a second
/// StopPodSandbox, kubelet retrying a NotReady pod) is never waited for or
/// killed.
async fn wait_gone(pid: u32, socket: &Path) {
    for _ in 0..500 {
        if !shim_proc::shim_alive(pid, socket) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    if shim_proc::shim_alive(pid, socket) {
        tracing::warn!(pid, "shim still present 1s after shutdown; killing it");
        // The pid was just seen to be this pod's shim.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}
