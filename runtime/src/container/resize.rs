//! In-place resize (UpdateContainerResources) and the resources a container
//! reports (ContainerStatus.resources, read back from its cgroup).
//!
//! Cgroup writes, and the wait for reclaim during a memory decrease, run on
//! a blocking thread while holding only the container's resize lock: the
//! record lock that ContainerStatus/ListContainers take is held for copies
//! only, so a slow resize never stalls status calls (containerd#9770).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use berth_proto::cri::LinuxContainerResources;

use super::{ContainerManager, ContainerState};
use crate::cgroup::resize::{self, Dir};
use crate::error::{Error, Result};

/// Resizes applied / refused since berthd started.
pub static RESIZES_APPLIED: AtomicU64 = AtomicU64::new(0);
/// See [`RESIZES_APPLIED`].
pub static RESIZES_REFUSED: AtomicU64 = AtomicU64::new(0);

/// The CRI resources last asked for, kept in the record (prost types do not
/// serialize): used at start after a resize of a created container, and to
/// report shares, which a weight cannot give back exactly.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Asked {
    /// cpu_shares.
    pub cpu_shares: i64,
    /// cpu_quota.
    pub cpu_quota: i64,
    /// cpu_period.
    pub cpu_period: i64,
    /// memory_limit_in_bytes.
    pub memory_limit_in_bytes: i64,
    /// memory_swap_limit_in_bytes.
    pub memory_swap_limit_in_bytes: i64,
    /// cpuset_cpus.
    pub cpuset_cpus: String,
    /// cpuset_mems.
    pub cpuset_mems: String,
    /// oom_score_adj.
    pub oom_score_adj: i64,
    /// unified.
    pub unified: std::collections::BTreeMap<String, String>,
}

impl From<&LinuxContainerResources> for Asked {
    fn from(r: &LinuxContainerResources) -> Self {
        Asked {
            cpu_shares: r.cpu_shares,
            cpu_quota: r.cpu_quota,
            cpu_period: r.cpu_period,
            memory_limit_in_bytes: r.memory_limit_in_bytes,
            memory_swap_limit_in_bytes: r.memory_swap_limit_in_bytes,
            cpuset_cpus: r.cpuset_cpus.clone(),
            cpuset_mems: r.cpuset_mems.clone(),
            oom_score_adj: r.oom_score_adj,
            unified: r.unified.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        }
    }
}

/// Refuses a container limit above its pod's current one: kubelet grows the
/// pod first, so this means the request would fail half-way (k8s#138760).
fn check_fits_pod(pod: &Dir, r: &LinuxContainerResources) -> Result<()> {
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

impl ContainerManager {
    /// UpdateContainerResources (also used at create). Idempotent.
    pub async fn update_resources(&self, id: &str, r: &LinuxContainerResources) -> Result<()> {
        let c = self.get(id)?;
        let rec = c.record();
        if rec.state == ContainerState::Exited {
            return Err(Error::FailedPrecondition(format!(
                "container {} has exited",
                rec.id
            )));
        }
        let desired = resize::desired(r)?;
        let cg = self.sandboxes.cgroups();
        let dir = cg.dir(&rec.cgroup_path);
        let pod_dir = dir.parent().map(|p| Dir(p.to_path_buf()));
        let _serial = c.resize.lock().await;
        if let Some(pod) = &pod_dir {
            check_fits_pod(pod, r).inspect_err(|_| {
                RESIZES_REFUSED.fetch_add(1, Ordering::Relaxed);
            })?;
        }
        let wait = self.cfg.memory_decrease_wait();
        let t = Instant::now();
        let files = Dir(dir);
        let res = tokio::task::spawn_blocking(move || resize::apply(&files, &desired, wait))
            .await
            .map_err(|e| Error::Internal(format!("resize task: {e}")))?;
        match &res {
            Ok(out) => {
                RESIZES_APPLIED.fetch_add(1, Ordering::Relaxed);
                tracing::info!(container = %rec.id, cpu_shares = r.cpu_shares, cpu_quota = r.cpu_quota,
                    memory_limit = r.memory_limit_in_bytes, reclaim_requested = out.reclaimed_request,
                    waited_ms = out.waited.as_millis() as u64, elapsed_ms = t.elapsed().as_millis() as u64,
                    "container resources updated");
            }
            Err(e) => {
                RESIZES_REFUSED.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(container = %rec.id, error = %e, "container resize refused");
            }
        }
        res?;
        if rec.state == ContainerState::Running && r.oom_score_adj != 0 && rec.pid > 0 {
            let _ = std::fs::write(
                format!("/proc/{}/oom_score_adj", rec.pid),
                r.oom_score_adj.to_string(),
            );
        }
        c.record.lock().expect("container lock").resources = Some(Asked::from(r));
        self.persist(&c)
    }

    /// What the container's cgroup holds, as CRI resources; None when it
    /// has no cgroup any more (exited and cleaned up).
    pub fn current_resources(&self, rec: &super::ContainerRecord) -> Option<LinuxContainerResources> {
        let dir = self.sandboxes.cgroups().dir(&rec.cgroup_path);
        if rec.state == ContainerState::Exited || !dir.is_dir() {
            return None;
        }
        let asked = rec.resources.as_ref().map_or(0, |a| a.cpu_shares);
        let mut r = resize::read_back(&Dir(dir), asked);
        r.oom_score_adj = rec.resources.as_ref().map_or(0, |a| a.oom_score_adj);
        Some(r)
    }
}
