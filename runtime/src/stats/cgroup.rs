//! One reading of a cgroup v2 directory: CPU, memory, swap, pids and the
//! three pressure files, straight from the kernel's files.
//!
//! Each file is optional: a controller that is not enabled, a kernel built
//! without PSI or swap accounting, or a cgroup removed mid-read only leaves
//! that part out. A reading never fails, so one odd container cannot turn
//! ListContainerStats into an error.

use std::path::Path;

use super::parse::{self, CpuStat, MemoryStat, Psi};

/// Memory of a cgroup.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MemorySample {
    /// `memory.current`: everything charged (anon, page cache, kernel).
    pub usage_bytes: u64,
    /// `memory.max`; None when unlimited.
    pub limit_bytes: Option<u64>,
    /// `memory.stat`.
    pub stat: MemoryStat,
    /// `memory.pressure`.
    pub psi: Option<Psi>,
}

impl MemorySample {
    /// Usage minus inactive page cache, floored at 0: the memory the cgroup
    /// cannot give back without reclaiming hot pages. kubelet evicts on it
    /// and cAdvisor computes it the same way.
    pub fn working_set_bytes(&self) -> u64 {
        self.usage_bytes.saturating_sub(self.stat.inactive_file)
    }

    /// Limit minus working set; None without a limit.
    pub fn available_bytes(&self) -> Option<u64> {
        self.limit_bytes
            .map(|l| l.saturating_sub(self.working_set_bytes()))
    }
}

/// Swap of a cgroup (present only with swap accounting).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SwapSample {
    /// `memory.swap.current`.
    pub usage_bytes: u64,
    /// `memory.swap.max`; None when unlimited.
    pub limit_bytes: Option<u64>,
}

impl SwapSample {
    /// Limit minus usage; None without a limit.
    pub fn available_bytes(&self) -> Option<u64> {
        self.limit_bytes.map(|l| l.saturating_sub(self.usage_bytes))
    }
}

/// Everything read from one cgroup directory at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CgroupSample {
    /// `cpu.stat`.
    pub cpu: Option<CpuStat>,
    /// `cpu.pressure`.
    pub cpu_psi: Option<Psi>,
    /// Memory files; None without `memory.current`.
    pub memory: Option<MemorySample>,
    /// Swap files; None without `memory.swap.current`.
    pub swap: Option<SwapSample>,
    /// `io.pressure`.
    pub io_psi: Option<Psi>,
    /// `pids.current`: processes and threads in the cgroup.
    pub pids: Option<u64>,
    /// `oom_kill` of `memory.events`.
    pub oom_kills: Option<u64>,
}

/// Reads a cgroup file. cgroup files report a size of 0, which makes
/// `read_to_string` stat the file and probe with small reads; the kernel
/// renders the whole file on the first read, so plain 4 KiB reads take two
/// syscalls per file (open and close aside) -- the stats read 11 files per
/// cgroup, and kubelet asks for every cgroup every 10 s.
fn read(dir: &Path, file: &str) -> Option<String> {
    use std::io::Read;
    let mut f = std::fs::File::open(dir.join(file)).ok()?;
    let mut out = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match f.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    String::from_utf8(out).ok()
}

/// Reads cgroup `dir`; None when the directory does not exist (the
/// container's cgroup is gone or was never made).
pub fn sample(dir: &Path) -> Option<CgroupSample> {
    if !dir.is_dir() {
        return None;
    }
    let memory = read(dir, "memory.current")
        .and_then(|t| parse::single_value(&t))
        .map(|usage_bytes| MemorySample {
            usage_bytes,
            limit_bytes: read(dir, "memory.max").and_then(|t| parse::single_value(&t)),
            stat: read(dir, "memory.stat")
                .map(|t| parse::memory_stat(&t))
                .unwrap_or_default(),
            psi: read(dir, "memory.pressure").and_then(|t| parse::psi(&t)),
        });
    let swap = read(dir, "memory.swap.current")
        .and_then(|t| parse::single_value(&t))
        .map(|usage_bytes| SwapSample {
            usage_bytes,
            limit_bytes: read(dir, "memory.swap.max").and_then(|t| parse::single_value(&t)),
        });
    Some(CgroupSample {
        cpu: read(dir, "cpu.stat").and_then(|t| parse::cpu_stat(&t)),
        cpu_psi: read(dir, "cpu.pressure").and_then(|t| parse::psi(&t)),
        memory,
        swap,
        io_psi: read(dir, "io.pressure").and_then(|t| parse::psi(&t)),
        pids: read(dir, "pids.current").and_then(|t| parse::single_value(&t)),
        oom_kills: read(dir, "memory.events").and_then(|t| parse::flat_keyed(&t).get("oom_kill").copied()),
    })
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// Writes a cgroup directory the way the kernel lays one out.
    pub fn fake_cgroup(dir: &Path, usage_usec: u64, memory_current: u64, memory_max: &str) {
        std::fs::create_dir_all(dir).unwrap();
        let w = |f: &str, t: &str| std::fs::write(dir.join(f), t).unwrap();
        w(
            "cpu.stat",
            &format!("usage_usec {usage_usec}\nuser_usec {usage_usec}\nsystem_usec 0\nnr_periods 0\nnr_throttled 0\nthrottled_usec 0\n"),
        );
        w(
            "cpu.pressure",
            "some avg10=0.00 avg60=0.00 avg300=0.00 total=10\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=5\n",
        );
        w("memory.current", &format!("{memory_current}\n"));
        w("memory.max", &format!("{memory_max}\n"));
        w(
            "memory.stat",
            "anon 3000\nfile 2000\ninactive_file 1500\nfile_mapped 100\npgfault 9\npgmajfault 1\n",
        );
        w(
            "memory.pressure",
            "some avg10=2.00 avg60=1.00 avg300=0.50 total=777\nfull avg10=1.00 avg60=0.50 avg300=0.25 total=333\n",
        );
        w("memory.swap.current", "4096\n");
        w("memory.swap.max", "max\n");
        w(
            "io.pressure",
            "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
        );
        w("pids.current", "3\n");
        w("memory.events", "low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\n");
    }

    #[test]
    fn a_full_cgroup() {
        let d = tempfile::tempdir().unwrap();
        fake_cgroup(d.path(), 2_000_000, 5000, "10000");
        let s = sample(d.path()).unwrap();
        assert_eq!(s.cpu.unwrap().usage_usec, 2_000_000);
        assert_eq!(s.cpu_psi.unwrap().full.unwrap().total_usec, 5);
        let m = s.memory.unwrap();
        assert_eq!(m.working_set_bytes(), 3500);
        assert_eq!(m.available_bytes(), Some(6500));
        assert_eq!(m.stat.anon, 3000);
        assert_eq!(m.psi.unwrap().some.total_usec, 777);
        assert_eq!(
            s.swap,
            Some(SwapSample {
                usage_bytes: 4096,
                limit_bytes: None
            })
        );
        assert_eq!(s.pids, Some(3));
        assert_eq!(s.oom_kills, Some(1));
        assert!(s.io_psi.is_some());
    }

    #[test]
    fn unlimited_and_cache_heavy_memory() {
        let m = MemorySample {
            usage_bytes: 1000,
            limit_bytes: None,
            stat: MemoryStat {
                inactive_file: 4000,
                ..Default::default()
            },
            psi: None,
        };
        // inactive_file can exceed usage (it is counted hierarchically and
        // read at another instant): floored at 0, never wrapped.
        assert_eq!(m.working_set_bytes(), 0);
        assert_eq!(m.available_bytes(), None);
        let limited = MemorySample {
            limit_bytes: Some(500),
            stat: MemoryStat::default(),
            ..m
        };
        assert_eq!(
            limited.available_bytes(),
            Some(0),
            "over the limit: 0, not a wrap"
        );
    }

    #[test]
    fn missing_files_leave_parts_out() {
        let d = tempfile::tempdir().unwrap();
        // A cgroup with no controllers enabled: only cpu.stat's base keys.
        std::fs::write(
            d.path().join("cpu.stat"),
            "usage_usec 7\nuser_usec 7\nsystem_usec 0\n",
        )
        .unwrap();
        let s = sample(d.path()).unwrap();
        assert_eq!(s.cpu.unwrap().usage_usec, 7);
        assert_eq!((s.memory, s.swap, s.pids, s.cpu_psi), (None, None, None, None));
        assert_eq!(sample(&d.path().join("gone")), None);
    }
}
