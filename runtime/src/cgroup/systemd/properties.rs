//! CRI resources as systemd unit properties (the `a(sv)` arguments of
//! `StartTransientUnit` and `SetUnitProperties`).
//!
//! systemd rewrites the cgroup files of every controller it manages for a
//! unit whenever it realises the unit's cgroup again (a `daemon-reload`, a
//! sibling unit starting): `cpu.weight`, `cpu.max`, `memory.high`,
//! `memory.max`, `memory.swap.max`, `pids.max`, `cpuset.*`. A value Berth
//! wrote only to the file would be replaced by systemd's default, so every
//! file systemd owns is also a property, and the property holds exactly
//! what the file holds. Files systemd has no property for (`hugetlb.*`,
//! most of `unified`) are written to the cgroup directly, as runc does.

use crate::cgroup::resize::Desired;
use crate::error::{Error, Result};

/// systemd's "infinity" for the `t` (u64) limit properties.
pub const INFINITY: u64 = u64::MAX;

/// A property value, in the D-Bus types systemd expects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// `b`
    Bool(bool),
    /// `t`
    U64(u64),
    /// `s`
    Str(String),
    /// `ay` (a CPU or NUMA node bitmask)
    Bytes(Vec<u8>),
    /// `au` (process ids)
    U32s(Vec<u32>),
}

/// One `(name, value)` pair.
pub type Property = (&'static str, Value);

/// The highest CPU or memory node number accepted in a cpuset list: the
/// bitmask is built in memory, so a hostile `cpuset_cpus = "0-4294967295"`
/// must not allocate half a gigabyte. Linux's NR_CPUS maximum is 8192.
const MAX_CPUSET_INDEX: u32 = 8191;

/// Parses a cgroup cpuset list (`0-3,8,10-11`) into systemd's bitmask
/// (bit `n % 8` of byte `n / 8` is CPU `n`).
pub fn cpuset_mask(list: &str) -> Result<Vec<u8>> {
    let bad = |why: &str| Error::InvalidArgument(format!("cpuset {list:?}: {why}"));
    let mut mask = Vec::new();
    for part in list.trim().split(',').filter(|p| !p.is_empty()) {
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (a, b),
            None => (part, part),
        };
        let num = |s: &str| s.trim().parse::<u32>().map_err(|_| bad("not a list of numbers"));
        let (lo, hi) = (num(lo)?, num(hi)?);
        if lo > hi {
            return Err(bad("a range runs backwards"));
        }
        if hi > MAX_CPUSET_INDEX {
            return Err(bad("index above 8191"));
        }
        let need = hi as usize / 8 + 1;
        if mask.len() < need {
            mask.resize(need, 0);
        }
        for n in lo..=hi {
            mask[n as usize / 8] |= 1 << (n % 8);
        }
    }
    Ok(mask)
}

/// `max` or a number of bytes (or tasks).
fn limit(name: &str, v: &str) -> Result<u64> {
    if v == "max" {
        return Ok(INFINITY);
    }
    v.parse()
        .map_err(|_| Error::InvalidArgument(format!("{name} value {v:?} is not a number or \"max\"")))
}

/// `CPUQuotaPerSecUSec` for a `cpu.max` of `quota` µs per `period` µs.
/// Rounded up: systemd writes `per_sec * period / 1000000` (rounded down)
/// back, which then is exactly `quota` for every period up to one second.
pub fn quota_per_sec(quota_us: u64, period_us: u64) -> u64 {
    (quota_us as u128 * 1_000_000).div_ceil(period_us.max(1) as u128) as u64
}

/// Cgroup files with no systemd property, as `(file, value)`.
pub type DirectFiles = Vec<(String, String)>;

/// The properties that make systemd hold what `d` asks of the cgroup.
/// Memory and tasks are always given (systemd's defaults are not the
/// kernel's: `TasksMax` defaults to 15% of `pid_max`), so the unit never
/// holds a limit nobody asked for. Returns the properties and the files
/// that have none (to be written directly).
pub fn from_desired(d: &Desired) -> Result<(Vec<Property>, DirectFiles)> {
    let mut props: Vec<Property> = vec![
        ("MemoryMax", Value::U64(d.memory_max.unwrap_or(INFINITY))),
        ("MemoryHigh", Value::U64(INFINITY)),
        ("TasksMax", Value::U64(INFINITY)),
    ];
    let mut direct = Vec::new();
    let set = |props: &mut Vec<Property>, name: &'static str, v: Value| {
        props.retain(|(n, _)| *n != name);
        props.push((name, v));
    };
    for (file, value) in &d.files {
        match file.as_str() {
            "cpu.weight" => set(&mut props, "CPUWeight", Value::U64(limit(file, value)?)),
            "cpu.max" => {
                let (quota, period) = value
                    .split_once(' ')
                    .ok_or_else(|| Error::InvalidArgument(format!("cpu.max {value:?}")))?;
                let period = limit("cpu.max period", period)?;
                let per_sec = match limit("cpu.max quota", quota)? {
                    INFINITY => INFINITY,
                    q => quota_per_sec(q, period),
                };
                set(&mut props, "CPUQuotaPerSecUSec", Value::U64(per_sec));
                set(&mut props, "CPUQuotaPeriodUSec", Value::U64(period));
            }
            "memory.swap.max" => set(&mut props, "MemorySwapMax", Value::U64(limit(file, value)?)),
            "pids.max" => set(&mut props, "TasksMax", Value::U64(limit(file, value)?)),
            "cpuset.cpus" => set(&mut props, "AllowedCPUs", Value::Bytes(cpuset_mask(value)?)),
            "cpuset.mems" => set(
                &mut props,
                "AllowedMemoryNodes",
                Value::Bytes(cpuset_mask(value)?),
            ),
            _ => direct.push((file.clone(), value.clone())),
        }
    }
    Ok((props, direct))
}

/// A pod slice's properties for pod-level limits (RunPodSandbox's
/// resources plus overhead); what is unset stays systemd's default.
pub fn from_pod_limits(l: &crate::cgroup::resources::Limits) -> Vec<Property> {
    let mut props = Vec::new();
    if let Some(w) = l.cpu_weight {
        props.push(("CPUWeight", Value::U64(w)));
    }
    if let Some((quota, period)) = l.cpu_max {
        let per_sec = quota.map_or(INFINITY, |q| quota_per_sec(q.max(0) as u64, period));
        props.push(("CPUQuotaPerSecUSec", Value::U64(per_sec)));
        props.push(("CPUQuotaPeriodUSec", Value::U64(period)));
    }
    if let Some(m) = l.memory_max {
        props.push(("MemoryMax", Value::U64(m.max(0) as u64)));
    }
    props
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get<'a>(p: &'a [Property], name: &str) -> Option<&'a Value> {
        p.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    #[test]
    fn every_file_systemd_owns_becomes_a_property() {
        let d = Desired {
            memory_max: Some(64 << 20),
            files: vec![
                ("cpu.weight".into(), "79".into()),
                ("cpu.max".into(), "50000 100000".into()),
                ("memory.swap.max".into(), "0".into()),
                ("cpuset.cpus".into(), "0-1,9".into()),
                ("cpuset.mems".into(), "0".into()),
                ("hugetlb.2MB.max".into(), "0".into()),
                ("cpu.idle".into(), "1".into()),
            ],
        };
        let (p, direct) = from_desired(&d).unwrap();
        assert_eq!(get(&p, "MemoryMax"), Some(&Value::U64(64 << 20)));
        assert_eq!(get(&p, "MemoryHigh"), Some(&Value::U64(INFINITY)));
        assert_eq!(get(&p, "TasksMax"), Some(&Value::U64(INFINITY)));
        assert_eq!(get(&p, "CPUWeight"), Some(&Value::U64(79)));
        assert_eq!(get(&p, "CPUQuotaPerSecUSec"), Some(&Value::U64(500_000)));
        assert_eq!(get(&p, "CPUQuotaPeriodUSec"), Some(&Value::U64(100_000)));
        assert_eq!(get(&p, "MemorySwapMax"), Some(&Value::U64(0)));
        assert_eq!(get(&p, "AllowedCPUs"), Some(&Value::Bytes(vec![0b11, 0b10])));
        assert_eq!(get(&p, "AllowedMemoryNodes"), Some(&Value::Bytes(vec![1])));
        assert_eq!(
            direct,
            vec![
                ("hugetlb.2MB.max".to_string(), "0".to_string()),
                ("cpu.idle".to_string(), "1".to_string())
            ]
        );
    }

    #[test]
    fn no_limits_are_infinity_and_a_later_file_wins() {
        let d = Desired {
            memory_max: None,
            files: vec![
                ("cpu.max".into(), "max 100000".into()),
                ("pids.max".into(), "100".into()),
                ("pids.max".into(), "max".into()),
            ],
        };
        let (p, direct) = from_desired(&d).unwrap();
        assert_eq!(get(&p, "MemoryMax"), Some(&Value::U64(INFINITY)));
        assert_eq!(get(&p, "CPUQuotaPerSecUSec"), Some(&Value::U64(INFINITY)));
        assert_eq!(get(&p, "TasksMax"), Some(&Value::U64(INFINITY)));
        assert_eq!(p.iter().filter(|(n, _)| *n == "TasksMax").count(), 1);
        assert!(direct.is_empty());
    }

    /// systemd writes `per_sec * period / 1e6` rounded down: the rounded-up
    /// per-second quota gives back the exact quota for awkward periods.
    #[test]
    fn cpu_quota_round_trips_through_systemd_arithmetic() {
        for (q, p) in [
            (1000, 3000),
            (1234, 10_000),
            (50_000, 100_000),
            (999_999, 1_000_000),
            (7, 1000),
        ] {
            let per_sec = quota_per_sec(q, p);
            assert_eq!(per_sec * p / 1_000_000, q, "{q}/{p}");
        }
    }

    #[test]
    fn pod_limits_become_slice_properties() {
        let l = crate::cgroup::resources::Limits {
            cpu_weight: Some(10),
            cpu_max: Some((Some(20_000), 100_000)),
            memory_max: Some(1 << 30),
        };
        assert_eq!(
            from_pod_limits(&l),
            vec![
                ("CPUWeight", Value::U64(10)),
                ("CPUQuotaPerSecUSec", Value::U64(200_000)),
                ("CPUQuotaPeriodUSec", Value::U64(100_000)),
                ("MemoryMax", Value::U64(1 << 30)),
            ]
        );
        assert!(from_pod_limits(&Default::default()).is_empty());
    }

    #[test]
    fn hostile_cpusets_are_refused_without_allocating() {
        for bad in ["0-4294967295", "8192", "3-1", "a", "1-b", "-1"] {
            assert!(cpuset_mask(bad).is_err(), "{bad}");
        }
        assert_eq!(cpuset_mask("8191").unwrap().len(), 1024);
        assert_eq!(cpuset_mask("").unwrap(), Vec::<u8>::new());
    }
}
