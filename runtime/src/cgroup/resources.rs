//! CRI resources as cgroup v2 files.
//!
//! cpu shares -> cpu.weight uses the quadratic-in-log mapping of runc >= 1.3.2,
//! crun and youki, not the old linear one (which maps the default 1024 shares
//! to weight 39 instead of cgroup v2's default 100): with l = log2(shares),
//! weight = ceil(10^((l² + 125·l)/612 − 7/34)), clamped to 1..=10000, so
//! 2 -> 1, 1024 -> 100, 262144 -> 10000.

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

/// cgroup v1 shares (2..=262144) to cgroup v2 weight (1..=10000); 0 = unset.
pub fn shares_to_weight(shares: i64) -> u64 {
    if shares <= 0 {
        return 0;
    }
    if shares <= 2 {
        return 1;
    }
    if shares >= 262_144 {
        return 10_000;
    }
    let l = (shares as f64).log2();
    let exponent = (l * l + 125.0 * l) / 612.0 - 7.0 / 34.0;
    // The tiny epsilon keeps exact powers (1024 -> 10^2) from rounding up.
    let w = (10f64.powf(exponent) - 1e-9).ceil();
    w.clamp(1.0, 10_000.0) as u64
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
    fn shares_convert_like_runc_crun_and_youki() {
        assert_eq!(shares_to_weight(0), 0);
        assert_eq!(shares_to_weight(1), 1);
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(512), 59);
        assert_eq!(shares_to_weight(1024), 100);
        assert_eq!(shares_to_weight(2048), 174);
        assert_eq!(shares_to_weight(262_144), 10_000);
        assert_eq!(shares_to_weight(1_000_000), 10_000);
        // Monotonic in between.
        let mut last = 0;
        for s in [3, 10, 100, 512, 1023, 1025, 2048, 100_000, 262_143] {
            let w = shares_to_weight(s);
            assert!(w >= last && (1..=10_000).contains(&w), "{s} -> {w}");
            last = w;
        }
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
            "59"
        );
        assert!(
            Limits::pod(None, Some(&o)).is_empty(),
            "overhead alone sets no limit"
        );
    }
}
