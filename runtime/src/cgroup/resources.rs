//! CRI resources as cgroup v2 files.
//!
//! cpu shares -> cpu.weight uses the quadratic-in-log mapping of runc >= 1.3.2,
//! crun and youki, not the old linear one (which maps the default 1024 shares
//! to weight 39 instead of cgroup v2's default 100): with l = log2(shares),
//! weight = ceil(10^((l² + 125·l)/612 − 7/34)), clamped to 1..=10000, so
//! 2 -> 1, 1024 -> 100, 262144 -> 10000.

use std::path::Path;

use berth_proto::cri::LinuxContainerResources;

use super::desired::shares_to_weight;
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

/// Pod resources plus overhead: what the pod cgroup is limited to. Each
/// side is range-checked and the sums use checked adds, so a caller's
/// `i64::MAX` is an InvalidArgument, not a wrapped (negative, so silently
/// unlimited) or panicking limit. A limit the pod does not set stays unset.
pub fn pod_total(
    resources: Option<&LinuxContainerResources>,
    overhead: Option<&LinuxContainerResources>,
) -> Result<LinuxContainerResources> {
    let zero = LinuxContainerResources::default();
    let (r, o) = (resources.unwrap_or(&zero), overhead.unwrap_or(&zero));
    super::desired::check_ranges(r)?;
    super::desired::check_ranges(o)?;
    let sum = |field: &str, a: i64, b: i64| -> Result<i64> {
        if a <= 0 {
            return Ok(0);
        }
        a.checked_add(b.max(0))
            .ok_or_else(|| Error::InvalidArgument(format!("pod {field} {a} plus overhead {b} overflows")))
    };
    let cpu_quota = sum("cpu_quota", r.cpu_quota, o.cpu_quota)?;
    if cpu_quota > super::desired::MAX_CPU_QUOTA_US {
        return Err(Error::InvalidArgument(format!(
            "pod cpu_quota {cpu_quota} with overhead is above the kernel's {} µs",
            super::desired::MAX_CPU_QUOTA_US
        )));
    }
    Ok(LinuxContainerResources {
        cpu_shares: sum("cpu_shares", r.cpu_shares, o.cpu_shares)?,
        cpu_quota,
        cpu_period: r.cpu_period,
        memory_limit_in_bytes: sum(
            "memory_limit_in_bytes",
            r.memory_limit_in_bytes,
            o.memory_limit_in_bytes,
        )?,
        ..Default::default()
    })
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

    /// Pod resources plus pod overhead (both from LinuxPodSandboxConfig),
    /// checked as [`pod_total`] does.
    pub fn pod(
        resources: Option<&LinuxContainerResources>,
        overhead: Option<&LinuxContainerResources>,
    ) -> Result<Self> {
        Ok(Limits::from_cri(&pod_total(resources, overhead)?))
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

    /// Hostile pod limits: sums that overflow, values out of range and
    /// negative overheads are InvalidArgument, never a wrapped limit.
    #[test]
    fn pod_sums_are_checked() {
        let res = |memory: i64, quota: i64, shares: i64| LinuxContainerResources {
            memory_limit_in_bytes: memory,
            cpu_quota: quota,
            cpu_shares: shares,
            ..Default::default()
        };
        let refused = [
            (res(i64::MAX, 0, 0), res(1, 0, 0), "memory_limit_in_bytes"),
            (
                res(i64::MAX - 10, 0, 0),
                res(i64::MAX - 10, 0, 0),
                "memory_limit_in_bytes",
            ),
            (
                res(0, super::super::desired::MAX_CPU_QUOTA_US, 0),
                res(0, 1000, 0),
                "cpu_quota",
            ),
            (res(0, i64::MAX, 0), res(0, 0, 0), "cpu_quota"),
            (res(1 << 30, 0, 0), res(-1, 0, 0), "memory_limit_in_bytes"),
            (res(0, 0, i64::MAX), res(0, 0, 2), "cpu_shares"),
        ];
        for (r, o, field) in refused {
            match pod_total(Some(&r), Some(&o)).unwrap_err() {
                Error::InvalidArgument(m) => assert!(m.contains(field), "{m}"),
                e => panic!("{e:?}"),
            }
            assert!(Limits::pod(Some(&r), Some(&o)).is_err());
        }
        // Largest legal values add up without overflow; shares clamp to the top weight.
        let l = Limits::pod(
            Some(&res(i64::MAX / 2, 1000, 262_144)),
            Some(&res(i64::MAX / 2, 0, 262_144)),
        )
        .unwrap();
        assert_eq!(l.memory_max, Some(i64::MAX - 1));
        assert_eq!(l.cpu_weight, Some(10_000));
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
        let l = Limits::pod(Some(&r), Some(&o)).unwrap();
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
            Limits::pod(None, Some(&o)).unwrap().is_empty(),
            "overhead alone sets no limit"
        );
    }
}
