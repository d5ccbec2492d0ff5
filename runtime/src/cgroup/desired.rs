//! Validation and conversion of CRI `LinuxContainerResources` into the
//! cgroup v2 files an update writes (see `resize.rs` for how they are
//! written).

use std::collections::BTreeMap;

use berth_proto::cri::LinuxContainerResources;

use crate::error::{Error, Result};

/// Files a CRI `unified` map may set: these controllers' files only, never
/// `cgroup.*` (which would move processes or kill them).
const UNIFIED_PREFIXES: &[&str] = &[
    "cpu.", "memory.", "pids.", "io.", "hugetlb.", "cpuset.", "rdma.", "misc.",
];

/// Controller files that are not settings: a write is an action that cannot
/// be undone (`memory.reclaim` reclaims; writing `memory.peak` resets it),
/// so a failed update could not restore them, and reading them back gives
/// nothing to restore (`memory.reclaim` is write-only).
const ACTION_FILES: &[&str] = &["memory.reclaim", "memory.peak", "memory.swap.peak", "pids.peak"];

/// Name endings of read-only statistics files (`memory.current`,
/// `cpu.stat`, `hugetlb.2MB.events`, `cpuset.cpus.effective`, ...) and of
/// PSI files (a write there registers a poll trigger, not a setting).
const READ_ONLY_SUFFIXES: &[&str] = &[
    ".current",
    ".stat",
    ".stat.local",
    ".numa_stat",
    ".events",
    ".events.local",
    ".effective",
    ".capacity",
    ".pressure",
];

/// Files a resize must not write through `unified`: the guard owns
/// `memory.max` and `memory.high` (a raw lower `memory.max` is exactly the
/// OOM kill this module exists to avoid).
const GUARDED_FILES: &[&str] = &["memory.max", "memory.high"];

/// Why a `unified` key is refused, or None when it may be written.
fn unified_key_problem(k: &str) -> Option<&'static str> {
    if !UNIFIED_PREFIXES.iter().any(|p| k.starts_with(p)) || k.contains('/') || k.contains("..") {
        Some("controller files only")
    } else if GUARDED_FILES.contains(&k) {
        Some("memory.max and memory.high go through memory_limit_in_bytes")
    } else if ACTION_FILES.contains(&k) {
        Some("it is an action, not a setting, and cannot be undone")
    } else if READ_ONLY_SUFFIXES.iter().any(|s| k.ends_with(s)) {
        Some("it is a read-only statistics file")
    } else {
        None
    }
}

/// The cgroup v2 values a CRI `LinuxContainerResources` asks for, as file
/// name -> content, in the order they are written. Memory is handled apart.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Desired {
    /// `memory.max` in bytes; None = "max".
    pub memory_max: Option<u64>,
    /// Every other file.
    pub files: Vec<(String, String)>,
}

/// cgroup v1 `cpu.shares` range kubelet sends (0: unset); outside it no
/// cgroup v2 weight corresponds.
const SHARES_RANGE: std::ops::RangeInclusive<i64> = 2..=262_144;
/// The kernel's `cpu.max` period range, µs (0: the default 100 ms).
const PERIOD_RANGE: std::ops::RangeInclusive<i64> = 1000..=1_000_000;
/// The kernel's `cpu.max` quota range, µs (0 or -1: no limit). The top is
/// `max_cfs_runtime`: a larger quota is refused with EINVAL.
const QUOTA_RANGE: std::ops::RangeInclusive<i64> = 1000..=MAX_CPU_QUOTA_US;
/// The kernel's largest `cpu.max` quota, µs.
pub(crate) const MAX_CPU_QUOTA_US: i64 = (1 << 44) - 1;

/// Checks every integer of CRI resources against what the kernel accepts,
/// before any arithmetic or cgroup write: the values come from a CRI
/// caller and are not trusted. Errors are InvalidArgument naming the field.
pub fn check_ranges(r: &LinuxContainerResources) -> Result<()> {
    let bad = |m: String| Err(Error::InvalidArgument(m));
    if r.cpu_shares != 0 && !SHARES_RANGE.contains(&r.cpu_shares) {
        return bad(format!(
            "cpu_shares {} is outside 2..=262144 (0: unset)",
            r.cpu_shares
        ));
    }
    if r.cpu_period != 0 && !PERIOD_RANGE.contains(&r.cpu_period) {
        return bad(format!(
            "cpu_period {} is outside 1000..=1000000 µs (0: default)",
            r.cpu_period
        ));
    }
    if !matches!(r.cpu_quota, 0 | -1) && !QUOTA_RANGE.contains(&r.cpu_quota) {
        return bad(format!(
            "cpu_quota {} is outside 1000..={} µs (0 or -1: no limit)",
            r.cpu_quota,
            QUOTA_RANGE.end()
        ));
    }
    if r.memory_limit_in_bytes < 0 {
        return bad(format!(
            "memory_limit_in_bytes {} is negative (0: no limit)",
            r.memory_limit_in_bytes
        ));
    }
    if r.memory_swap_limit_in_bytes < -1 {
        return bad(format!(
            "memory_swap_limit_in_bytes {} is below -1 (-1: unlimited, 0: unset)",
            r.memory_swap_limit_in_bytes
        ));
    }
    if !(-1000..=1000).contains(&r.oom_score_adj) {
        return bad(format!(
            "oom_score_adj {} is outside -1000..=1000",
            r.oom_score_adj
        ));
    }
    Ok(())
}

/// Validates and converts CRI resources for an update (every field is the
/// full new state: an unset limit means "no limit").
pub fn desired(r: &LinuxContainerResources) -> Result<Desired> {
    check_ranges(r)?;
    let bad = |m: String| Err(Error::InvalidArgument(m));
    let mut files = Vec::new();
    if r.cpu_shares > 0 {
        files.push(("cpu.weight".into(), shares_to_weight(r.cpu_shares).to_string()));
    }
    let period = if r.cpu_period > 0 { r.cpu_period } else { 100_000 };
    if !(1000..=1_000_000).contains(&period) {
        return bad(format!("cpu_period {period} is outside 1000..=1000000 µs"));
    }
    let quota = if r.cpu_quota > 0 {
        if r.cpu_quota < 1000 {
            return bad(format!(
                "cpu_quota {} is below the kernel's 1000 µs minimum",
                r.cpu_quota
            ));
        }
        r.cpu_quota.to_string()
    } else {
        "max".into()
    };
    files.push(("cpu.max".into(), format!("{quota} {period}")));
    let memory_max = (r.memory_limit_in_bytes > 0).then_some(r.memory_limit_in_bytes as u64);
    // CRI's swap limit is memory + swap (cgroup v1 semantics); v2 wants swap alone.
    match r.memory_swap_limit_in_bytes {
        -1 => files.push(("memory.swap.max".into(), "max".into())),
        0 => {}
        s if memory_max.is_some_and(|m| (s as u64) < m) => {
            return bad(format!(
                "memory_swap_limit {s} is below memory_limit {}",
                r.memory_limit_in_bytes
            ))
        }
        s => files.push((
            "memory.swap.max".into(),
            (s as u64 - memory_max.unwrap_or(0)).to_string(),
        )),
    }
    if !r.cpuset_cpus.is_empty() {
        files.push(("cpuset.cpus".into(), r.cpuset_cpus.clone()));
    }
    if !r.cpuset_mems.is_empty() {
        files.push(("cpuset.mems".into(), r.cpuset_mems.clone()));
    }
    for h in &r.hugepage_limits {
        if h.page_size.is_empty() || !h.page_size.chars().all(|c| c.is_ascii_alphanumeric()) {
            return bad(format!("hugepage page_size {:?} is not valid", h.page_size));
        }
        files.push((format!("hugetlb.{}.max", h.page_size), h.limit.to_string()));
    }
    let unified: BTreeMap<_, _> = r.unified.iter().collect();
    for (k, v) in unified {
        if let Some(why) = unified_key_problem(k) {
            return bad(format!("unified key {k:?} is not allowed: {why}"));
        }
        files.push((k.clone(), v.clone()));
    }
    Ok(Desired { memory_max, files })
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

    /// Out-of-range and hostile integers are refused with InvalidArgument
    /// naming the field, before any arithmetic.
    #[test]
    fn integers_outside_the_kernel_ranges_are_refused() {
        let r = |f: fn(&mut LinuxContainerResources)| {
            let mut r = LinuxContainerResources::default();
            f(&mut r);
            r
        };
        let refused: &[(&str, LinuxContainerResources)] = &[
            ("cpu_shares", r(|r| r.cpu_shares = 1)),
            ("cpu_shares", r(|r| r.cpu_shares = 262_145)),
            ("cpu_shares", r(|r| r.cpu_shares = i64::MAX)),
            ("cpu_shares", r(|r| r.cpu_shares = i64::MIN)),
            ("cpu_period", r(|r| r.cpu_period = 999)),
            ("cpu_period", r(|r| r.cpu_period = 1_000_001)),
            ("cpu_period", r(|r| r.cpu_period = i64::MAX)),
            ("cpu_period", r(|r| r.cpu_period = -1)),
            ("cpu_quota", r(|r| r.cpu_quota = -2)),
            ("cpu_quota", r(|r| r.cpu_quota = i64::MIN)),
            ("cpu_quota", r(|r| r.cpu_quota = 999)),
            ("cpu_quota", r(|r| r.cpu_quota = i64::MAX)),
            ("cpu_quota", r(|r| r.cpu_quota = 1 << 44)),
            ("memory_limit_in_bytes", r(|r| r.memory_limit_in_bytes = -1)),
            ("memory_limit_in_bytes", r(|r| r.memory_limit_in_bytes = i64::MIN)),
            (
                "memory_swap_limit_in_bytes",
                r(|r| r.memory_swap_limit_in_bytes = -2),
            ),
            ("oom_score_adj", r(|r| r.oom_score_adj = i64::MAX)),
        ];
        for (field, res) in refused {
            for e in [check_ranges(res).unwrap_err(), desired(res).unwrap_err()] {
                match e {
                    Error::InvalidArgument(m) => assert!(m.contains(field), "{m}"),
                    e => panic!("{field}: {e:?}"),
                }
            }
        }
        let accepted = [
            r(|r| r.cpu_shares = 2),
            r(|r| r.cpu_shares = 262_144),
            r(|r| r.cpu_period = 1000),
            r(|r| r.cpu_period = 1_000_000),
            r(|r| r.cpu_quota = -1),
            r(|r| r.cpu_quota = 1000),
            r(|r| r.cpu_quota = (1 << 44) - 1),
            r(|r| r.memory_limit_in_bytes = i64::MAX),
            r(|r| r.memory_swap_limit_in_bytes = -1),
        ];
        for res in accepted {
            check_ranges(&res).unwrap();
            desired(&res).unwrap();
        }
    }

    #[test]
    fn validation_and_conversions() {
        let d = desired(&LinuxContainerResources {
            cpu_shares: 1024,
            cpu_quota: 50_000,
            cpu_period: 100_000,
            memory_limit_in_bytes: 1 << 30,
            memory_swap_limit_in_bytes: (1 << 30) + (1 << 20),
            unified: [("pids.max".to_string(), "100".to_string())].into(),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(d.memory_max, Some(1 << 30));
        assert!(d.files.contains(&("cpu.weight".into(), "100".into())));
        assert!(d.files.contains(&("cpu.max".into(), "50000 100000".into())));
        assert!(d
            .files
            .contains(&("memory.swap.max".into(), (1u64 << 20).to_string())));
        assert!(d.files.contains(&("pids.max".into(), "100".into())));
        let unlimited = desired(&LinuxContainerResources::default()).unwrap();
        assert!(unlimited.files.contains(&("cpu.max".into(), "max 100000".into())));
        assert_eq!(unlimited.memory_max, None);
        for bad in [
            LinuxContainerResources {
                cpu_shares: -1,
                ..Default::default()
            },
            LinuxContainerResources {
                memory_limit_in_bytes: -5,
                ..Default::default()
            },
            LinuxContainerResources {
                cpu_quota: 10,
                ..Default::default()
            },
            LinuxContainerResources {
                oom_score_adj: 5000,
                ..Default::default()
            },
            LinuxContainerResources {
                unified: [("cgroup.procs".to_string(), "1".to_string())].into(),
                ..Default::default()
            },
            LinuxContainerResources {
                unified: [("memory.max".to_string(), "1".to_string())].into(),
                ..Default::default()
            },
            LinuxContainerResources {
                unified: [("cpu.max/../x".to_string(), "1".to_string())].into(),
                ..Default::default()
            },
        ] {
            assert!(matches!(desired(&bad), Err(Error::InvalidArgument(_))), "{bad:?}");
        }
    }

    #[test]
    fn write_only_action_and_statistics_keys_are_refused() {
        for key in [
            "memory.reclaim",
            "memory.peak",
            "memory.current",
            "memory.stat",
            "memory.events",
            "memory.events.local",
            "memory.pressure",
            "cpu.stat",
            "pids.current",
            "cpuset.cpus.effective",
            "hugetlb.2MB.events",
            "memory.high",
            "cgroup.kill",
        ] {
            let r = LinuxContainerResources {
                unified: [(key.to_string(), "1".to_string())].into(),
                ..Default::default()
            };
            match desired(&r) {
                Err(Error::InvalidArgument(m)) => assert!(m.contains(key), "{m}"),
                other => panic!("{key}: {other:?}"),
            }
        }
        for key in [
            "memory.low",
            "memory.swap.high",
            "pids.max",
            "io.weight",
            "memory.oom.group",
        ] {
            let r = LinuxContainerResources {
                unified: [(key.to_string(), "1".to_string())].into(),
                ..Default::default()
            };
            desired(&r).unwrap_or_else(|e| panic!("{key}: {e}"));
        }
    }
}
