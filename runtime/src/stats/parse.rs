//! Parsers of the kernel's text formats the stats read: cgroup v2 flat-keyed
//! files (`cpu.stat`, `memory.stat`, `memory.events`), single values
//! (`memory.current`, `memory.max`), pressure files (`*.pressure`) and
//! `/proc/<pid>/net/dev`.
//!
//! They are pure functions over text so every format quirk is unit-tested on
//! any host: unknown keys are skipped (kernels add keys), a malformed line
//! is skipped rather than failing the whole file.

use std::collections::HashMap;

/// A flat-keyed cgroup file (`key value` per line), e.g. `cpu.stat`.
pub fn flat_keyed(text: &str) -> HashMap<&str, u64> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let key = it.next()?;
            let value = it.next()?.parse().ok()?;
            Some((key, value))
        })
        .collect()
}

/// A single-value cgroup file. `max` (no limit) and anything unparsable are
/// None.
pub fn single_value(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// The counters of `cpu.stat` Berth reports, in microseconds as the kernel
/// keeps them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuStat {
    /// Total CPU time.
    pub usage_usec: u64,
    /// User time.
    pub user_usec: u64,
    /// System time.
    pub system_usec: u64,
    /// CFS enforcement periods elapsed (0 without a quota).
    pub nr_periods: u64,
    /// Periods in which the cgroup was throttled.
    pub nr_throttled: u64,
    /// Time spent throttled.
    pub throttled_usec: u64,
}

/// Parses `cpu.stat`; None when `usage_usec` is missing (not a cpu.stat).
/// Without the cpu controller enabled the file still carries the three
/// usage keys (the kernel's base stats), just no throttling keys.
pub fn cpu_stat(text: &str) -> Option<CpuStat> {
    let m = flat_keyed(text);
    let get = |k: &str| m.get(k).copied().unwrap_or(0);
    Some(CpuStat {
        usage_usec: *m.get("usage_usec")?,
        user_usec: get("user_usec"),
        system_usec: get("system_usec"),
        nr_periods: get("nr_periods"),
        nr_throttled: get("nr_throttled"),
        throttled_usec: get("throttled_usec"),
    })
}

/// The keys of `memory.stat` Berth reports, in bytes (faults are counts).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryStat {
    /// Anonymous memory (incl. transparent huge pages): RSS.
    pub anon: u64,
    /// Page cache (incl. tmpfs/shmem).
    pub file: u64,
    /// Page cache on the inactive list: what reclaim takes first, so
    /// kubelet leaves it out of the working set.
    pub inactive_file: u64,
    /// Page cache mapped into processes.
    pub file_mapped: u64,
    /// Minor + major page faults.
    pub pgfault: u64,
    /// Major page faults.
    pub pgmajfault: u64,
}

/// Parses `memory.stat` (missing keys are 0).
pub fn memory_stat(text: &str) -> MemoryStat {
    let m = flat_keyed(text);
    let get = |k: &str| m.get(k).copied().unwrap_or(0);
    MemoryStat {
        anon: get("anon"),
        file: get("file"),
        inactive_file: get("inactive_file"),
        file_mapped: get("file_mapped"),
        pgfault: get("pgfault"),
        pgmajfault: get("pgmajfault"),
    }
}

/// One line of a pressure file.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PsiLine {
    /// Share of wall time stalled over the last 10 s, percent.
    pub avg10: f64,
    /// Over 60 s, percent.
    pub avg60: f64,
    /// Over 300 s, percent.
    pub avg300: f64,
    /// Total stall time, microseconds (the kernel's unit).
    pub total_usec: u64,
}

/// A pressure file (`cpu.pressure`, `memory.pressure`, `io.pressure`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Psi {
    /// Some tasks stalled.
    pub some: PsiLine,
    /// All non-idle tasks stalled at once. Kernels before 5.13 have no
    /// `full` line in `cpu.pressure` (and since 5.13 it is 0 at the system
    /// level), so it is optional.
    pub full: Option<PsiLine>,
}

/// Parses a pressure file; None without a `some` line (PSI disabled files
/// read as errors, never as text, but an empty read must not become zeros).
pub fn psi(text: &str) -> Option<Psi> {
    let mut some = None;
    let mut full = None;
    for line in text.lines() {
        let mut it = line.split_whitespace();
        let slot = match it.next() {
            Some("some") => &mut some,
            Some("full") => &mut full,
            _ => continue,
        };
        let mut p = PsiLine::default();
        let mut seen = 0;
        for kv in it {
            let Some((k, v)) = kv.split_once('=') else {
                continue;
            };
            let ok = match k {
                "avg10" => v.parse().map(|x| p.avg10 = x).is_ok(),
                "avg60" => v.parse().map(|x| p.avg60 = x).is_ok(),
                "avg300" => v.parse().map(|x| p.avg300 = x).is_ok(),
                "total" => v.parse().map(|x| p.total_usec = x).is_ok(),
                _ => false,
            };
            seen += usize::from(ok);
        }
        if seen == 4 {
            *slot = Some(p);
        }
    }
    Some(Psi { some: some?, full })
}

/// Cumulative counters of one network interface from `/proc/<pid>/net/dev`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetDev {
    /// Interface name.
    pub name: String,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Packets received.
    pub rx_packets: u64,
    /// Receive errors.
    pub rx_errors: u64,
    /// Received packets dropped.
    pub rx_dropped: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Packets sent.
    pub tx_packets: u64,
    /// Transmit errors.
    pub tx_errors: u64,
    /// Packets dropped on transmit.
    pub tx_dropped: u64,
}

/// Parses `/proc/<pid>/net/dev`: two header lines, then
/// `name: rx(bytes packets errs drop fifo frame compressed multicast)
/// tx(bytes packets errs drop fifo colls carrier compressed)`. Old kernels
/// print no space between the colon and a large first number
/// (`eth0:123456`), so the name is split at the colon, not at whitespace.
pub fn net_dev(text: &str) -> Vec<NetDev> {
    text.lines()
        .filter_map(|line| {
            let (name, rest) = line.split_once(':')?;
            let name = name.trim();
            let v: Vec<u64> = rest
                .split_whitespace()
                .map(|f| f.parse().ok())
                .collect::<Option<_>>()?;
            if name.is_empty() || v.len() < 16 {
                return None;
            }
            Some(NetDev {
                name: name.to_string(),
                rx_bytes: v[0],
                rx_packets: v[1],
                rx_errors: v[2],
                rx_dropped: v[3],
                tx_bytes: v[8],
                tx_packets: v[9],
                tx_errors: v[10],
                tx_dropped: v[11],
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_stat_with_and_without_the_cpu_controller() {
        let full = "usage_usec 123456\nuser_usec 100000\nsystem_usec 23456\ncore_sched.force_idle_usec 0\n\
                    nr_periods 10\nnr_throttled 3\nthrottled_usec 4500\nnr_bursts 0\nburst_usec 0\n";
        assert_eq!(
            cpu_stat(full),
            Some(CpuStat {
                usage_usec: 123456,
                user_usec: 100000,
                system_usec: 23456,
                nr_periods: 10,
                nr_throttled: 3,
                throttled_usec: 4500,
            })
        );
        // cpu controller not enabled: only the base keys.
        let base = "usage_usec 5\nuser_usec 3\nsystem_usec 2\n";
        let s = cpu_stat(base).unwrap();
        assert_eq!((s.usage_usec, s.nr_periods, s.throttled_usec), (5, 0, 0));
        assert_eq!(cpu_stat("user_usec 3\n"), None);
        assert_eq!(cpu_stat(""), None);
    }

    #[test]
    fn memory_stat_keys_and_garbage() {
        let text = "anon 1048576\nfile 4096\nkernel 8192\nkernel_stack 16384\nfile_mapped 2048\n\
                    inactive_anon 0\nactive_anon 1048576\ninactive_file 3072\nactive_file 1024\n\
                    pgfault 77\npgmajfault 5\nbroken line here\nthp_fault_alloc x\n";
        assert_eq!(
            memory_stat(text),
            MemoryStat {
                anon: 1048576,
                file: 4096,
                inactive_file: 3072,
                file_mapped: 2048,
                pgfault: 77,
                pgmajfault: 5,
            }
        );
        assert_eq!(memory_stat(""), MemoryStat::default());
    }

    #[test]
    fn single_values_and_max() {
        assert_eq!(single_value("67108864\n"), Some(67108864));
        assert_eq!(single_value("max\n"), None);
        assert_eq!(single_value(""), None);
        assert_eq!(flat_keyed("oom 1\noom_kill 2\n").get("oom_kill"), Some(&2));
    }

    #[test]
    fn pressure_with_both_lines() {
        let text = "some avg10=1.50 avg60=0.25 avg300=0.05 total=123456\n\
                    full avg10=0.75 avg60=0.10 avg300=0.00 total=6543\n";
        let p = psi(text).unwrap();
        assert_eq!(
            p.some,
            PsiLine {
                avg10: 1.5,
                avg60: 0.25,
                avg300: 0.05,
                total_usec: 123456
            }
        );
        assert_eq!(p.full.unwrap().total_usec, 6543);
        assert_eq!(p.full.unwrap().avg10, 0.75);
    }

    #[test]
    fn cpu_pressure_of_a_kernel_without_the_full_line() {
        // Linux < 5.13: cpu.pressure has only `some`.
        let p = psi("some avg10=0.00 avg60=0.00 avg300=0.00 total=42\n").unwrap();
        assert_eq!(p.some.total_usec, 42);
        assert_eq!(p.full, None);
    }

    #[test]
    fn pressure_that_is_not_pressure() {
        assert_eq!(psi(""), None);
        assert_eq!(psi("full avg10=0.00 avg60=0.00 avg300=0.00 total=1\n"), None);
        // A truncated line is not taken as zeros.
        assert_eq!(psi("some avg10=0.00 avg60=0.00\n"), None);
        let p = psi("some avg10=0.00 avg60=0.00 avg300=0.00 total=1\nfull avg10=x\n").unwrap();
        assert_eq!(p.full, None);
    }

    #[test]
    fn proc_net_dev() {
        let text = "Inter-|   Receive                                                |  Transmit\n \
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
    lo:     280       4    0    0    0     0          0         0      280       4    0    0    0     0       0          0\n  \
  eth0:12345678    1000    2    3    0     0          0         0     4321      50    1    4    0     0       0          0\n";
        let devs = net_dev(text);
        assert_eq!(devs.len(), 2);
        assert_eq!(devs[0].name, "lo");
        assert_eq!(
            devs[1],
            NetDev {
                name: "eth0".into(),
                rx_bytes: 12345678,
                rx_packets: 1000,
                rx_errors: 2,
                rx_dropped: 3,
                tx_bytes: 4321,
                tx_packets: 50,
                tx_errors: 1,
                tx_dropped: 4,
            }
        );
        // Short or non-numeric lines are skipped.
        assert!(net_dev("eth1: 1 2 3\nx: a b c d e f g h i j k l m n o p\n").is_empty());
    }
}
