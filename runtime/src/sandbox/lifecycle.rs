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
        use crate::metrics::steps::{timed, Steps};
        const RPC: &str = "stop_pod_sandbox";
        let mut steps = Steps::begin(RPC, "shim_shutdown");
        let shim = sb.shim.lock().take();
        if let Some(mut shim) = shim {
            let _ = shim
                .shutdown(berth_proto::shim::ShutdownRequest { force: true })
                .await;
        }
        let (rec, was_ready) = sb.mark_not_ready();
        // The shim's own exit (its runtime's teardown, the kernel's) and
        // CNI DEL overlap: the caller has stopped every container and the
        // shim has killed whatever was left, so nothing of the pod uses the
        // network while it goes, and the namespace stays pinned. The wait
        // also runs when no client was held (a shim berthd could not
        // reconnect to after a restart): it checks the shim's identity,
        // never a bare pid that may since belong to another process.
        // Both are timed as steps of their own, inside `shim_exit_and_cni_del`.
        steps.next("shim_exit_and_cni_del");
        let gone = async {
            timed(RPC, "shim_wait_gone", wait_gone(rec.shim_pid, &rec.shim_socket)).await;
            crate::crash::point("stop_sandbox.shim");
        };
        // A failure is returned (after the record) so kubelet retries
        // StopPodSandbox, and remove cannot skip it.
        let ((), net) = tokio::join!(gone, timed(RPC, "cni_del", self.teardown_network(sb)));
        steps.next("record");
        self.persist(sb)?;
        if was_ready {
            self.events.sandbox(Kind::Stopped, &rec.id);
        }
        net
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

/// How long a shim asked to shut down has before it is killed.
const SHIM_EXIT_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// Waits (bounded) until the pod's shim has gone, then kills it if it has
/// not. The shim is recognised by its socket path on its command line
/// ([`shim_proc::shim_alive`]): a pid reused by another process since (a second
/// StopPodSandbox, kubelet retrying a NotReady pod) is never waited for or
/// killed.
async fn wait_gone(pid: u32, socket: &Path) {
    if tokio::time::timeout(SHIM_EXIT_GRACE, shim_proc::exited(pid, socket))
        .await
        .is_ok()
    {
        return;
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

#[cfg(test)]
mod tests {
    use super::shim_proc::tests::{fake_shim, DEADLINE};
    use super::*;
    use std::time::Instant;

    #[tokio::test]
    async fn the_wait_for_a_stopped_shim_ends_with_its_exit() {
        let mut child = fake_shim("/run/test/s/gone.sock");
        let pid = child.id();
        let mut wait = tokio::spawn(async move { wait_gone(pid, Path::new("/run/test/s/gone.sock")).await });
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(200), &mut wait)
                .await
                .is_err()
        );
        drop(child.stdin.take());
        tokio::time::timeout(DEADLINE, wait)
            .await
            .expect("ended")
            .unwrap();
        assert!(
            child.try_wait().unwrap().is_some(),
            "ended by the exit, not the kill"
        );
    }

    #[tokio::test]
    async fn a_shim_that_outlives_the_grace_is_killed() {
        let mut child = fake_shim("/run/test/s/stuck.sock");
        let begun = Instant::now();
        wait_gone(child.id(), Path::new("/run/test/s/stuck.sock")).await;
        assert!(begun.elapsed() >= SHIM_EXIT_GRACE, "waited the grace first");
        let status = child.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
    }
}
