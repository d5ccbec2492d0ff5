//! In-place resize (UpdateContainerResources) and the resources a container
//! reports (ContainerStatus.resources, read back from its cgroup).
//!
//! Cgroup writes, and the wait for reclaim during a memory decrease, run on
//! a blocking thread while holding only the container's resize lock: the
//! record lock that ContainerStatus/ListContainers take is held for copies
//! only, so a slow resize never stalls status calls (containerd#9770).

use std::sync::atomic::Ordering;
use std::time::Instant;

use berth_proto::cri::LinuxContainerResources;

use super::{ContainerManager, ContainerState};
pub use crate::cgroup::asked::Asked;
use crate::cgroup::resize::{self, CgroupDir};
use crate::error::{Error, Result};
use crate::metrics::counters::{RESIZES_APPLIED, RESIZES_REFUSED};

/// Refuses a container limit above its pod's current one: kubelet grows the
/// pod first, so this means the request would fail half-way (k8s#138760).
fn check_fits_pod(pod: &CgroupDir, r: &LinuxContainerResources) -> Result<()> {
    use resize::Files;
    if r.memory_limit_in_bytes > 0 {
        if let Ok(Ok(pod_max)) = pod.read("memory.max").map(|m| m.parse::<i64>()) {
            if r.memory_limit_in_bytes > pod_max {
                return Err(Error::FailedPrecondition(format!(
                    "memory limit {} exceeds the pod's current memory limit {pod_max}; resize the pod first",
                    r.memory_limit_in_bytes
                )));
            }
        }
    }
    if r.cpu_quota > 0 {
        if let Ok(m) = pod.read("cpu.max") {
            let mut it = m.split_whitespace();
            if let (Some(Ok(q)), Some(Ok(p))) =
                (it.next().map(str::parse::<i64>), it.next().map(str::parse::<i64>))
            {
                let period = if r.cpu_period > 0 { r.cpu_period } else { 100_000 };
                // Compare CPUs: quota/period, in integers.
                if (r.cpu_quota as i128) * (p as i128) > (q as i128) * (period as i128) {
                    return Err(Error::FailedPrecondition(format!(
                        "cpu quota {}/{period} exceeds the pod's current cpu.max {q}/{p}; resize the pod first",
                        r.cpu_quota
                    )));
                }
            }
        }
    }
    Ok(())
}

/// Reads a process's `oom_score_adj`.
fn read_oom_score_adj(pid: u32) -> Option<i64> {
    std::fs::read_to_string(format!("/proc/{pid}/oom_score_adj"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Sets a process's `oom_score_adj`; a process that is gone is an error
/// the caller sees (the container exited under the update).
fn write_oom_score_adj(pid: u32, value: i64) -> Result<()> {
    std::fs::write(format!("/proc/{pid}/oom_score_adj"), value.to_string())
        .map_err(|e| Error::FailedPrecondition(format!("set oom_score_adj {value} of process {pid}: {e}")))
}

impl ContainerManager {
    /// UpdateContainerResources, for a created or running container. Idempotent: every
    /// field is the full new state, so a resend writes nothing new.
    pub async fn update_resources(&self, id: &str, r: &LinuxContainerResources) -> Result<()> {
        let c = self.get(id)?;
        let desired = resize::desired(r)?;
        // Held across the cgroup writes and the reclaim wait; the record
        // lock that status calls take is only taken for copies.
        let _serial = c.resize.lock().await;
        // Read after taking the lock: a start or exit in the meantime is seen.
        let rec = c.record();
        if rec.state == ContainerState::Exited {
            return Err(Error::FailedPrecondition(format!(
                "container {} has exited",
                rec.id
            )));
        }
        let dir = self.sandboxes.cgroups().dir(&rec.cgroup_path);
        let pod_dir = dir.parent().map(|p| CgroupDir(p.to_path_buf()));
        let t = Instant::now();
        let res = match pod_dir.as_ref().map_or(Ok(()), |pod| check_fits_pod(pod, r)) {
            Ok(()) => self.apply_live(&rec, dir, desired, r.oom_score_adj).await,
            Err(e) => Err(e),
        };
        match &res {
            Ok(out) => {
                RESIZES_APPLIED.fetch_add(1, Ordering::Relaxed);
                tracing::info!(container = %rec.id, cpu_shares = r.cpu_shares, cpu_quota = r.cpu_quota,
                    memory_limit = r.memory_limit_in_bytes, oom_score_adj = r.oom_score_adj,
                    reclaim_requested = out.reclaimed_request, waited_ms = out.waited.as_millis() as u64,
                    elapsed_ms = t.elapsed().as_millis() as u64, "container resources updated");
            }
            Err(e) => {
                RESIZES_REFUSED.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(container = %rec.id, memory_limit = r.memory_limit_in_bytes,
                    cpu_quota = r.cpu_quota, elapsed_ms = t.elapsed().as_millis() as u64, error = %e,
                    "container resize refused");
            }
        }
        res?;
        c.record.lock().resources = Some(Asked::from(r));
        self.persist(&c)
    }

    /// Writes the cgroup files (on a blocking thread: the reclaim wait
    /// sleeps) and, for a running process, its oom_score_adj — first, so a
    /// refused cgroup update can put the old score back.
    async fn apply_live(
        &self,
        rec: &super::ContainerRecord,
        dir: std::path::PathBuf,
        desired: resize::Desired,
        oom_score_adj: i64,
    ) -> Result<resize::Outcome> {
        let pid = (rec.state == ContainerState::Running && rec.pid > 0).then_some(rec.pid);
        let old_score = pid.and_then(read_oom_score_adj);
        if let (Some(pid), Some(old)) = (pid, old_score) {
            if old != oom_score_adj {
                write_oom_score_adj(pid, oom_score_adj)?;
            }
        }
        let wait = self.cfg.memory_decrease_wait();
        let files = CgroupDir(dir);
        // systemd driver: the unit learns the values only once the cgroup
        // took them (a refused decrease has restored every file by then),
        // so systemd never holds, and never re-applies, a refused limit.
        let props = match self.sandboxes.cgroups().systemd() {
            Some(_) => Some(crate::cgroup::systemd::properties::from_desired(&desired)?.0),
            None => None,
        };
        let mut res =
            crate::blocking::run("resize task", move || resize::apply(&files, &desired, wait)).await?;
        if let (Ok(_), Some(props), Some(sd)) = (&res, props, self.sandboxes.cgroups().systemd()) {
            let unit = crate::cgroup::systemd::container_scope(&rec.id);
            if let Err(e) = sd.set_properties(&unit, props).await {
                res = Err(Error::Internal(format!(
                    "the cgroup took the new resources but systemd's SetUnitProperties for {unit} failed: {e}"
                )));
            }
        }
        if res.is_err() {
            if let (Some(pid), Some(old)) = (pid, old_score) {
                if old != oom_score_adj {
                    let _ = write_oom_score_adj(pid, old);
                }
            }
        }
        res
    }

    /// At start: a created container keeps the oom_score_adj of its spec
    /// (the init stage writes it right before exec); an update made while
    /// it waited is applied now. StartContainer returns after that write, so
    /// ours comes last.
    pub(super) fn apply_pending_oom_score_adj(&self, rec: &super::ContainerRecord) {
        let Some(want) = rec.resources.as_ref().map(|a| a.oom_score_adj) else {
            return;
        };
        if rec.pid == 0 || read_oom_score_adj(rec.pid) == Some(want) {
            return;
        }
        if let Err(e) = write_oom_score_adj(rec.pid, want) {
            tracing::warn!(container = %rec.id, error = %e, "oom_score_adj not applied at start");
        }
    }

    /// What the container's cgroup holds, as CRI resources; None when it
    /// has no cgroup any more (exited and cleaned up). oom_score_adj is the
    /// process's own, read from /proc while it runs.
    pub fn current_resources(&self, rec: &super::ContainerRecord) -> Option<LinuxContainerResources> {
        let dir = self.sandboxes.cgroups().dir(&rec.cgroup_path);
        if rec.state == ContainerState::Exited || !dir.is_dir() {
            return None;
        }
        let asked = rec.resources.as_ref().map_or(0, |a| a.cpu_shares);
        let mut r = resize::read_back(&CgroupDir(dir), asked);
        let running = rec.state == ContainerState::Running && rec.pid > 0;
        r.oom_score_adj = running
            .then(|| read_oom_score_adj(rec.pid))
            .flatten()
            .unwrap_or_else(|| rec.resources.as_ref().map_or(0, |a| a.oom_score_adj));
        Some(r)
    }
}
