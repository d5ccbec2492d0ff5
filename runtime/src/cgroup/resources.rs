//! CRI resources as cgroup v2 files. The conversions follow Kubernetes
//! (shares -> weight) so a value reads the same through any runtime.

use std::path::Path;

use berth_proto::cri::LinuxContainerResources;

use crate::error::{Error, Result};

/// Limits to write; None leaves a file as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Limits {
    /// `cpu.weight` (1..=10000).
    pub cpu_weight: Option<u64>,
    /// `cpu.max`: quota and period in µs (quota None = "max").
    pub cpu_max: Option<(Option<i64>, u64)>,
    /// `memory.max` in bytes.
    pub memory_max: Option<i64>,
}

/// cgroup v1 shares (2..=262144) to cgroup v2 weight (1..=10000), as
/// Kubernetes and runc convert them.
pub fn shares_to_weight(shares: i64) -> u64 {
    if shares <= 0 {
        return 0;
    }
    let s = shares.clamp(2, 262_144) as u64;
    1 + ((s - 2) * 9999) / 262_142
}

impl Limits {
    /// The limits CRI resources ask for; zero fields mean "not set".
    pub fn from_cri(r: &LinuxContainerResources) -> Self {
        let period = if r.cpu_period > 0 {
            r.cpu_period as u64
        } else {
            100_000
        };
        Limits {
            cpu_weight: (r.cpu_shares > 0).then(|| shares_to_weight(r.cpu_shares)),
            cpu_max: (r.cpu_quota > 0).then_some((Some(r.cpu_quota), period)),
            memory_max: (r.memory_limit_in_bytes > 0).then_some(r.memory_limit_in_bytes),
        }
    }

    /// Pod resources plus pod overhead (both from LinuxPodSandboxConfig).
    pub fn pod(
        resources: Option<&LinuxContainerResources>,
        overhead: Option<&LinuxContainerResources>,
    ) -> Self {
        let zero = LinuxContainerResources::default();
        let (r, o) = (resources.unwrap_or(&zero), overhead.unwrap_or(&zero));
        let sum = |a: i64, b: i64| if a > 0 { a + b.max(0) } else { 0 };
        Limits::from_cri(&LinuxContainerResources {
            cpu_shares: sum(r.cpu_shares, o.cpu_shares),
            cpu_quota: sum(r.cpu_quota, o.cpu_quota),
            cpu_period: r.cpu_period,
            memory_limit_in_bytes: sum(r.memory_limit_in_bytes, o.memory_limit_in_bytes),
            ..Default::default()
        })
    }

    /// Nothing to write.
    pub fn is_empty(&self) -> bool {
        *self == Limits::default()
    }

    /// Writes the limits into cgroup directory `dir`.
    pub fn apply(&self, dir: &Path) -> Result<()> {
        let write = |file: &str, value: String| {
            std::fs::write(dir.join(file), &value)
                .map_err(|e| Error::io(format!("write {value:?} to {}/{file}", dir.display()), e))
        };
        if let Some(w) = self.cpu_weight {
            write("cpu.weight", w.to_string())?;
        }
        if let Some((quota, period)) = self.cpu_max {
            let q = quota.map_or("max".to_string(), |q| q.to_string());
            write("cpu.max", format!("{q} {period}"))?;
        }
        if let Some(m) = self.memory_max {
            write("memory.max", m.to_string())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_convert_like_kubernetes() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(262_144), 10_000);
        assert_eq!(shares_to_weight(0), 0);
    }

    #[test]
    fn pod_limits_add_the_overhead_and_write_files() {
        let r = LinuxContainerResources {
            cpu_quota: 50_000,
            cpu_period: 100_000,
            cpu_shares: 512,
            memory_limit_in_bytes: 256 << 20,
            ..Default::default()
        };
        let o = LinuxContainerResources {
            cpu_quota: 10_000,
            memory_limit_in_bytes: 64 << 20,
            ..Default::default()
        };
        let l = Limits::pod(Some(&r), Some(&o));
        assert_eq!(l.cpu_max, Some((Some(60_000), 100_000)));
        assert_eq!(l.memory_max, Some(320 << 20));
        let d = tempfile::tempdir().unwrap();
        l.apply(d.path()).unwrap();
        assert_eq!(
            std::fs::read_to_string(d.path().join("cpu.max")).unwrap(),
            "60000 100000"
        );
        assert_eq!(
            std::fs::read_to_string(d.path().join("memory.max")).unwrap(),
            (320u64 << 20).to_string()
        );
        assert_eq!(
            std::fs::read_to_string(d.path().join("cpu.weight")).unwrap(),
            "20"
        );
        assert!(
            Limits::pod(None, Some(&o)).is_empty(),
            "overhead alone sets no limit"
        );
    }
}
