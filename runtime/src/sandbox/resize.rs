//! UpdatePodSandboxResources: recording, and (for pod cgroups berthd
//! created) applying, a pod-level resize.
//!
//! Pod resizes of one sandbox are serialised by the sandbox's resize lock,
//! which PodSandboxStatus/ListPodSandbox never take; the cgroup writes and
//! the reclaim wait run on a blocking thread.

use std::sync::atomic::Ordering;
use std::time::Instant;

use berth_proto::cri::LinuxContainerResources;

use super::{Sandbox, SandboxManager};
use crate::cgroup::resize;
use crate::error::{Error, Result};
use crate::metrics::counters::{POD_RESIZES_APPLIED, POD_RESIZES_REFUSED};

/// Pod resources plus overhead: what the pod cgroup is limited to.
fn pod_total(
    resources: Option<&LinuxContainerResources>,
    overhead: Option<&LinuxContainerResources>,
) -> LinuxContainerResources {
    let zero = LinuxContainerResources::default();
    let (r, o) = (resources.unwrap_or(&zero), overhead.unwrap_or(&zero));
    let sum = |a: i64, b: i64| if a > 0 { a + b.max(0) } else { 0 };
    LinuxContainerResources {
        cpu_shares: sum(r.cpu_shares, o.cpu_shares),
        cpu_quota: sum(r.cpu_quota, o.cpu_quota),
        cpu_period: r.cpu_period,
        memory_limit_in_bytes: sum(r.memory_limit_in_bytes, o.memory_limit_in_bytes),
        ..Default::default()
    }
}

impl SandboxManager {
    /// UpdatePodSandboxResources: kubelet has resized the pod cgroup itself
    /// (growing it before its containers, shrinking it after); Berth records
    /// the values, and applies them — with the OOM-safe decrease — only to a
    /// pod cgroup it created itself (no kubelet, e.g. crictl).
    pub async fn update_resources(
        &self,
        sb: &Sandbox,
        overhead: Option<&LinuxContainerResources>,
        resources: Option<&LinuxContainerResources>,
    ) -> Result<()> {
        let total = pod_total(resources, overhead);
        let desired = resize::desired(&total)?;
        let _serial = sb.resize.lock().await;
        let rec = sb.record();
        let dir = self.cgroups.dir(&rec.cgroup_path);
        let applied = rec.cgroup_created.contains(&dir);
        let t = Instant::now();
        let outcome = if applied {
            let wait = self.cfg.memory_decrease_wait();
            // systemd driver: the slice Berth made learns the values once
            // the cgroup took them (systemd re-applies its properties).
            let slice_props = match self.cgroups.systemd() {
                Some(_) => Some(crate::cgroup::systemd::properties::from_desired(&desired)?.0),
                None => None,
            };
            let mut out = crate::blocking::run("pod resize task", move || {
                resize::apply(&resize::CgroupDir(dir), &desired, wait)
            })
            .await?;
            if let (Ok(_), Some(props), Some(sd)) = (&out, slice_props, self.cgroups.systemd()) {
                let slice = crate::cgroup::systemd::slice_of(&rec.cgroup_path);
                if let Err(e) = sd.set_properties(slice, props).await {
                    out = Err(Error::Internal(format!(
                        "the pod cgroup took the new resources but systemd's SetUnitProperties for {slice} failed: {e}"
                    )));
                }
            }
            out
        } else {
            Ok(resize::Outcome::default())
        };
        let out = match outcome {
            Ok(out) => out,
            Err(e) => {
                POD_RESIZES_REFUSED.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(sandbox = %rec.id, memory_limit = total.memory_limit_in_bytes,
                    cpu_quota = total.cpu_quota, elapsed_ms = t.elapsed().as_millis() as u64, error = %e,
                    "pod resize refused");
                return Err(e);
            }
        };
        let rec = {
            let mut r = sb.record.lock();
            r.resources = resources.map(Into::into);
            r.overhead = overhead.map(Into::into);
            r.clone()
        };
        self.persist(sb)?;
        POD_RESIZES_APPLIED.fetch_add(1, Ordering::Relaxed);
        tracing::info!(sandbox = %rec.id, applied, memory_limit = total.memory_limit_in_bytes,
            cpu_quota = total.cpu_quota, reclaim_requested = out.reclaimed_request,
            waited_ms = out.waited.as_millis() as u64, elapsed_ms = t.elapsed().as_millis() as u64,
            "pod resources updated");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_total_adds_overhead_to_set_limits_only() {
        let r = LinuxContainerResources {
            cpu_quota: 50_000,
            cpu_period: 100_000,
            memory_limit_in_bytes: 256 << 20,
            ..Default::default()
        };
        let o = LinuxContainerResources {
            cpu_quota: 10_000,
            memory_limit_in_bytes: 16 << 20,
            cpu_shares: 10,
            ..Default::default()
        };
        let t = pod_total(Some(&r), Some(&o));
        assert_eq!(
            (t.cpu_quota, t.cpu_period, t.memory_limit_in_bytes, t.cpu_shares),
            (60_000, 100_000, 272 << 20, 0)
        );
        assert_eq!(pod_total(None, Some(&o)), LinuxContainerResources::default());
    }
}
