//! Applying CRI resources to a live cgroup v2, with a memory-limit decrease
//! that can never OOM-kill (in-place pod resize, Kubernetes v1.35).
//!
//! Lowering `memory.max` below what a cgroup uses makes the kernel reclaim,
//! and when it cannot reclaim enough it OOM-kills. kubelet's check before a
//! decrease is best effort, so Berth does the check itself:
//!
//! 1. before any file is written, estimate from `memory.stat` what reclaim
//!    could free ([`reclaim_estimate`]); when usage minus that, plus
//!    [`HEADROOM`], exceeds the new limit, refuse at once with
//!    FailedPrecondition: nothing written, nothing reclaimed, no throttling
//!    (kubelet retries a refused resize, so a slow refusal would throttle a
//!    pod again and again);
//! 2. otherwise ask the kernel to reclaim the excess with `memory.reclaim`,
//!    round after round, without `memory.high`: the workload runs freely
//!    while its cache is dropped. A round that frees nothing ends the wait;
//! 3. once usage fits under the new limit with [`HEADROOM`] to spare, the
//!    switch: hold `memory.high` at the new limit (allocations over `high`
//!    are throttled, never killed), check usage again, write `memory.max`,
//!    restore `memory.high`. Only these three writes run throttled;
//! 4. if it does not fit within the wait, restore every file changed and
//!    refuse with FailedPrecondition, stating usage and limit. The container
//!    keeps running.
//!
//! Pod cgroups (UpdatePodSandboxResources) go through the same [`apply`].
//! All file access goes through [`Files`], so the procedure is unit-tested
//! against a scripted fake and a temp dir; the VM tests run it on real
//! cgroups.

use std::time::{Duration, Instant};

use berth_proto::cri::LinuxContainerResources;

use super::desired::shares_to_weight;
pub use super::desired::{desired, Desired};
pub use super::files::{CgroupDir, Files};
use super::reclaim_estimate;
use crate::error::{Error, Result};

/// Usage must be this far below a new, lower memory limit before it is set.
pub const HEADROOM: u64 = 2 << 20;

pub use crate::config::defaults::DEFAULT_RECLAIM_WAIT;

/// What an update did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outcome {
    /// Bytes the kernel was asked to reclaim for a memory decrease.
    pub reclaimed_request: u64,
    /// How long the memory step waited.
    pub waited: Duration,
}

fn parse_max(s: &str) -> Option<u64> {
    if s == "max" {
        None
    } else {
        s.parse().ok()
    }
}

fn io_err(what: String) -> impl FnOnce(std::io::Error) -> Error {
    move |e| Error::io(what, e)
}

/// Applies `d`; on any error every file changed so far is restored.
pub fn apply(files: &dyn Files, d: &Desired, wait: Duration) -> Result<Outcome> {
    // Unknown files (a controller not enabled, a typo in `unified`) and
    // files whose value cannot be read back, so a failure could not restore
    // it (write-only files), are caught before anything changes.
    let mut old_values = Vec::with_capacity(d.files.len());
    for (name, value) in &d.files {
        if !files.exists(name) {
            // No swap accounting in this kernel: "no swap limit" holds already.
            if name == "memory.swap.max" && value == "max" {
                continue;
            }
            return Err(Error::InvalidArgument(format!(
                "cgroup file {name} does not exist (controller not enabled?)"
            )));
        }
        let old = files.read(name).map_err(|e| {
            Error::InvalidArgument(format!(
                "cgroup file {name} cannot be read back ({e}), so a failed update could not restore it"
            ))
        })?;
        old_values.push((name, value, old));
    }
    let mut undo: Vec<(String, String)> = Vec::new();
    let result = (|| -> Result<Outcome> {
        let old_max = files
            .read("memory.max")
            .map_err(io_err("read memory.max".into()))?;
        let lower = match (d.memory_max, parse_max(&old_max)) {
            (Some(new), Some(old)) => new < old,
            (Some(_), None) => true,
            _ => false,
        };
        if lower {
            let new = d.memory_max.expect("lower implies a limit");
            // The swap limit the request sets holds during the reclaim.
            let swap_max = d.files.iter().find(|(n, _)| n == "memory.swap.max");
            match swap_max {
                Some((_, v)) if files.exists("memory.swap.max") => refuse_if_it_cannot_fit(
                    &Requested {
                        files,
                        name: "memory.swap.max",
                        value: v,
                    },
                    new,
                    wait,
                )?,
                _ => refuse_if_it_cannot_fit(files, new, wait)?,
            }
        }
        let mut outcome = Outcome::default();
        // Growing: memory first, so the other limits never see a smaller one.
        if !lower {
            let v = d.memory_max.map_or("max".into(), |m| m.to_string());
            if v != old_max {
                files
                    .write("memory.max", &v)
                    .map_err(io_err(format!("write {v} to memory.max")))?;
                undo.push(("memory.max".into(), old_max.clone()));
            }
        }
        for (name, value, old) in old_values {
            if old == *value {
                continue;
            }
            match files.write(name, value) {
                Ok(()) => undo.push((name.clone(), old)),
                Err(e) => return Err(Error::InvalidArgument(format!("write {value:?} to {name}: {e}"))),
            }
        }
        if lower {
            let new = d.memory_max.expect("lower implies a limit");
            outcome = decrease_memory(files, new, wait)?;
            undo.push(("memory.max".into(), old_max));
        }
        Ok(outcome)
    })();
    if result.is_err() {
        for (name, old) in undo.iter().rev() {
            if let Err(e) = files.write(name, old) {
                tracing::error!(file = %name, value = %old, error = %e, "could not restore a cgroup value");
            }
        }
    }
    result
}

/// `files` as they will be once the request wrote `name`: the estimate
/// reads it, nothing is written.
struct Requested<'a> {
    files: &'a dyn Files,
    name: &'a str,
    value: &'a str,
}

impl Files for Requested<'_> {
    fn read(&self, name: &str) -> std::io::Result<String> {
        if name == self.name {
            return Ok(self.value.to_string());
        }
        self.files.read(name)
    }
    fn write(&self, name: &str, _: &str) -> std::io::Result<()> {
        Err(std::io::Error::other(format!(
            "{name}: the estimate writes nothing"
        )))
    }
    fn exists(&self, name: &str) -> bool {
        self.files.exists(name)
    }
    fn host_swap_free_bytes(&self) -> u64 {
        self.files.host_swap_free_bytes()
    }
}

/// Step 1 of the module docs: refuses, before anything is written, a
/// decrease to `new` bytes that reclaim cannot make room for.
fn refuse_if_it_cannot_fit(files: &dyn Files, new: u64, wait: Duration) -> Result<()> {
    let Some(e) = reclaim_estimate::estimate(files, files.host_swap_free_bytes(), wait) else {
        return Ok(());
    };
    let stays = e.unreclaimable_bytes();
    if stays.saturating_add(HEADROOM) <= new {
        return Ok(());
    }
    Err(Error::FailedPrecondition(format!(
        "memory limit decrease to {new} bytes refused: the cgroup uses {} bytes, of which {stays} bytes \
         cannot be reclaimed (anonymous memory and shmem without swap, locked or dirty pages, kernel \
         memory), so it cannot fit under {new} bytes with {HEADROOM} bytes of headroom; nothing was changed",
        e.usage_bytes
    )))
}

fn usage(files: &dyn Files) -> Result<u64> {
    files
        .read("memory.current")
        .map_err(io_err("read memory.current".into()))?
        .parse()
        .map_err(|e| Error::Internal(format!("memory.current: {e}")))
}

/// Steps 2–4 of the module docs.
fn decrease_memory(files: &dyn Files, new: u64, wait: Duration) -> Result<Outcome> {
    let start = Instant::now();
    let old_high = files
        .read("memory.high")
        .map_err(io_err("read memory.high".into()))?;
    let mut outcome = Outcome::default();
    let (used, why) = loop {
        let used = usage(files)?;
        let progress = if used + HEADROOM <= new {
            if switch(files, new, &old_high)? {
                outcome.waited = start.elapsed();
                return Ok(outcome);
            }
            // Usage grew between the two reads: reclaim again.
            false
        } else {
            let excess = used + HEADROOM - new;
            outcome.reclaimed_request += excess;
            // EAGAIN: the kernel gave up before reclaiming it all.
            let all = if files.exists("memory.reclaim") {
                files.write("memory.reclaim", &excess.to_string()).is_ok()
            } else {
                // A round through memory.high reports nothing: whether
                // usage fell decides, as after an EAGAIN.
                reclaim_through_high(files, new, &old_high)?;
                false
            };
            let after = usage(files)?;
            if !all && after >= used {
                break (after, "reclaim freed nothing more".to_string());
            }
            all
        };
        if start.elapsed() >= wait {
            break (used, format!("the kernel could not reclaim enough in {wait:?}"));
        }
        if !progress {
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    Err(Error::FailedPrecondition(format!(
        "memory limit decrease to {new} bytes refused: the cgroup uses {used} bytes and {why} \
         (needs {HEADROOM} bytes of headroom); nothing was changed"
    )))
}

/// Step 2 on kernels before 5.19, which have no `memory.reclaim`: a write
/// of `memory.high` below usage reclaims the excess in the writer's context
/// (as the pre-5.19 decrease did). It is restored at once, so the workload
/// is throttled only while that write runs, and only after the estimate
/// said the decrease can fit.
fn reclaim_through_high(files: &dyn Files, new: u64, old_high: &str) -> Result<()> {
    // The kernel reclaims down to memory.high, and the switch needs the
    // headroom below the new limit.
    let target = new.saturating_sub(HEADROOM);
    let held = files.write("memory.high", &target.to_string());
    files
        .write("memory.high", old_high)
        .map_err(io_err("restore memory.high".into()))?;
    held.map_err(io_err(format!("write {target} to memory.high")))
}

/// Step 3: the only moment `memory.high` is held at the new limit. Returns
/// false, with `memory.high` restored and nothing else changed, when usage
/// no longer fits (it grew since the caller read it).
fn switch(files: &dyn Files, new: u64, old_high: &str) -> Result<bool> {
    files
        .write("memory.high", &new.to_string())
        .map_err(io_err(format!("write {new} to memory.high")))?;
    let switched = usage(files).and_then(|used| {
        if used + HEADROOM > new {
            return Ok(false);
        }
        files
            .write("memory.max", &new.to_string())
            .map_err(io_err(format!("write {new} to memory.max")))?;
        Ok(true)
    });
    let restore = files.write("memory.high", old_high);
    let switched = switched?;
    restore.map_err(io_err("restore memory.high".into()))?;
    Ok(switched)
}

/// What the cgroup holds now, as CRI resources (ContainerStatus.resources).
/// `asked_shares` resolves the weight -> shares mapping, which is not
/// one-to-one: the requested shares are reported when they produce the
/// weight the file holds, otherwise the smallest shares that do.
pub fn read_back(files: &dyn Files, asked_shares: i64) -> LinuxContainerResources {
    let mut r = LinuxContainerResources::default();
    if let Ok(w) = files.read("cpu.weight").map(|w| w.parse::<u64>().unwrap_or(0)) {
        r.cpu_shares = if asked_shares > 0 && shares_to_weight(asked_shares) == w {
            asked_shares
        } else {
            // Smallest shares with this weight (the mapping is monotonic).
            let (mut lo, mut hi) = (2i64, 262_144i64);
            while lo < hi {
                let mid = (lo + hi) / 2;
                if shares_to_weight(mid) >= w {
                    hi = mid;
                } else {
                    lo = mid + 1;
                }
            }
            lo
        };
    }
    if let Ok(m) = files.read("cpu.max") {
        let mut it = m.split_whitespace();
        r.cpu_quota = it.next().and_then(parse_max).map_or(0, |q| q as i64);
        r.cpu_period = it.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    }
    if let Ok(m) = files.read("memory.max") {
        r.memory_limit_in_bytes = parse_max(&m).map_or(0, |m| m as i64);
    }
    if let Ok(s) = files.read("memory.swap.max") {
        r.memory_swap_limit_in_bytes = match parse_max(&s) {
            None => -1,
            Some(s) => s as i64 + r.memory_limit_in_bytes,
        };
    }
    r.cpuset_cpus = files.read("cpuset.cpus").unwrap_or_default();
    r.cpuset_mems = files.read("cpuset.mems").unwrap_or_default();
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::Mutex;

    /// A cgroup whose `memory.current` follows a script: each write to
    /// memory.reclaim frees what it asks for, down to a floor, and fails
    /// with EAGAIN like the kernel when the floor stops it.
    struct Fake {
        files: Mutex<HashMap<String, String>>,
        floor: u64,
        log: Mutex<Vec<String>>,
        /// Files that exist but fail to read, like write-only ones.
        unreadable: Mutex<Vec<String>>,
    }

    impl Fake {
        fn new(current: u64, floor: u64) -> Self {
            let files = [
                ("memory.max", "max".to_string()),
                ("memory.high", "max".to_string()),
                ("memory.current", current.to_string()),
                ("memory.reclaim", String::new()),
                ("cpu.max", "max 100000".to_string()),
                ("cpu.weight", "100".to_string()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
            Fake {
                files: Mutex::new(files),
                floor,
                log: Mutex::new(vec![]),
                unreadable: Mutex::new(vec![]),
            }
        }
        fn get(&self, n: &str) -> String {
            self.files.lock().unwrap()[n].clone()
        }
    }

    impl Files for Fake {
        fn read(&self, name: &str) -> std::io::Result<String> {
            if self.unreadable.lock().unwrap().iter().any(|n| n == name) {
                return Err(std::io::Error::from(std::io::ErrorKind::PermissionDenied));
            }
            self.files
                .lock()
                .unwrap()
                .get(name)
                .cloned()
                .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))
        }
        fn write(&self, name: &str, value: &str) -> std::io::Result<()> {
            self.log.lock().unwrap().push(format!("{name}={value}"));
            let mut f = self.files.lock().unwrap();
            if name == "memory.reclaim" {
                let cur: u64 = f["memory.current"].parse().unwrap();
                let want: u64 = value.parse().unwrap();
                f.insert(
                    "memory.current".into(),
                    cur.saturating_sub(want).max(self.floor).to_string(),
                );
                if cur.saturating_sub(want) < self.floor {
                    return Err(std::io::Error::from_raw_os_error(libc::EAGAIN));
                }
                return Ok(());
            }
            if name == "memory.high" && !f.contains_key("memory.reclaim") {
                // Before 5.19: a memory.high below usage reclaims, down to the floor.
                if let Ok(high) = value.parse::<u64>() {
                    let cur: u64 = f["memory.current"].parse().unwrap();
                    f.insert("memory.current".into(), cur.min(high.max(self.floor)).to_string());
                }
            }
            if name == "memory.max" {
                let cur: u64 = f["memory.current"].parse().unwrap();
                assert!(
                    value == "max" || value.parse::<u64>().unwrap() >= cur,
                    "would OOM: max {value} < usage {cur}"
                );
            }
            f.insert(name.into(), value.into());
            Ok(())
        }
        fn exists(&self, name: &str) -> bool {
            self.files.lock().unwrap().contains_key(name)
        }
        fn host_swap_free_bytes(&self) -> u64 {
            0
        }
    }

    fn mem(limit: i64) -> Desired {
        desired(&LinuxContainerResources {
            memory_limit_in_bytes: limit,
            ..Default::default()
        })
        .unwrap()
    }

    #[test]
    fn decrease_reclaims_then_sets_the_limit() {
        let f = Fake::new(100 << 20, 20 << 20); // 100 MiB used, 20 MiB of it anonymous
        apply(&f, &mem(256 << 20), DEFAULT_RECLAIM_WAIT).unwrap();
        assert_eq!(f.get("memory.max"), (256u64 << 20).to_string());
        let out = apply(&f, &mem(64 << 20), DEFAULT_RECLAIM_WAIT).unwrap();
        assert!(out.reclaimed_request > 0);
        assert_eq!(f.get("memory.max"), (64u64 << 20).to_string());
        assert_eq!(f.get("memory.high"), "max", "memory.high restored");
        let log = f.log.lock().unwrap().join(" ");
        let reclaim = log.rfind("memory.reclaim=").unwrap();
        let high = log.find(&format!("memory.high={}", 64u64 << 20)).unwrap();
        let max = log.rfind(&format!("memory.max={}", 64u64 << 20)).unwrap();
        let restored = log.rfind("memory.high=max").unwrap();
        assert!(
            reclaim < high && high < max && max < restored,
            "reclaim unthrottled, then high held only around the switch: {log}"
        );
    }

    #[test]
    fn without_memory_reclaim_a_decrease_reclaims_through_memory_high() {
        // Linux 5.14-5.18: no memory.reclaim file.
        let f = Fake::new(100 << 20, 20 << 20);
        f.files.lock().unwrap().remove("memory.reclaim");
        apply(&f, &mem(64 << 20), DEFAULT_RECLAIM_WAIT).unwrap();
        assert_eq!(f.get("memory.max"), (64u64 << 20).to_string());
        assert_eq!(f.get("memory.high"), "max", "memory.high restored");
        let log = f.log.lock().unwrap().clone();
        assert!(!log.iter().any(|l| l.starts_with("memory.reclaim=")), "{log:?}");
        // Nothing to reclaim below the floor: refused, everything restored.
        let f = Fake::new(100 << 20, 90 << 20);
        f.files.lock().unwrap().remove("memory.reclaim");
        let e = apply(&f, &mem(64 << 20), DEFAULT_RECLAIM_WAIT).unwrap_err();
        assert!(matches!(e, Error::FailedPrecondition(_)), "{e}");
        assert_eq!(f.get("memory.max"), "max");
        assert_eq!(f.get("memory.high"), "max");
    }

    /// 100 MiB used: 90 MiB anonymous (no swap), 8 MiB page cache, the
    /// rest kernel memory.
    fn anon_heavy() -> Fake {
        let f = Fake::new(100 << 20, 92 << 20);
        let stat = format!(
            "anon {}\nfile {}\nactive_anon {}\ninactive_file {}\n",
            90u64 << 20,
            8u64 << 20,
            90u64 << 20,
            8u64 << 20
        );
        f.files.lock().unwrap().insert("memory.stat".into(), stat);
        f
    }

    #[test]
    fn an_impossible_decrease_is_refused_before_any_write() {
        let f = anon_heavy();
        let before: HashMap<_, _> = f.files.lock().unwrap().clone();
        let e = apply(
            &f,
            &desired(&LinuxContainerResources {
                memory_limit_in_bytes: 64 << 20,
                cpu_quota: 50_000,
                ..Default::default()
            })
            .unwrap(),
            Duration::from_secs(3600),
        )
        .unwrap_err();
        assert!(matches!(e, Error::FailedPrecondition(_)), "{e}");
        let msg = e.to_string();
        for part in [100u64 << 20, 92 << 20, 64 << 20] {
            assert!(
                msg.contains(&part.to_string()),
                "usage, unreclaimable, limit: {msg}"
            );
        }
        assert!(f.log.lock().unwrap().is_empty(), "nothing written: {:?}", f.log);
        assert_eq!(*f.files.lock().unwrap(), before);
        // With the headroom it fits: reclaim of the page cache, then the switch.
        apply(&f, &mem((92 << 20) + HEADROOM as i64), Duration::from_secs(3600)).unwrap();
        assert_eq!(f.get("memory.max"), ((92u64 << 20) + HEADROOM).to_string());
    }

    #[test]
    fn the_requested_swap_limit_decides_whether_anonymous_memory_counts() {
        struct Swapping(Fake);
        impl Files for Swapping {
            fn read(&self, name: &str) -> std::io::Result<String> {
                self.0.read(name)
            }
            fn write(&self, name: &str, value: &str) -> std::io::Result<()> {
                self.0.write(name, value)
            }
            fn exists(&self, name: &str) -> bool {
                self.0.exists(name)
            }
            fn host_swap_free_bytes(&self) -> u64 {
                1 << 30
            }
        }
        let f = Swapping(anon_heavy());
        for (k, v) in [("memory.swap.max", "max"), ("memory.swap.current", "0")] {
            f.0.files.lock().unwrap().insert(k.into(), v.into());
        }
        // memory 64 MiB, memory + swap 64 MiB: no swap from now on.
        let no_swap = desired(&LinuxContainerResources {
            memory_limit_in_bytes: 64 << 20,
            memory_swap_limit_in_bytes: 64 << 20,
            ..Default::default()
        })
        .unwrap();
        let e = apply(&f, &no_swap, Duration::from_secs(3600)).unwrap_err();
        assert!(e.to_string().contains("cannot be reclaimed"), "{e}");
        assert!(f.0.log.lock().unwrap().is_empty(), "{:?}", f.0.log);
        // Swap allowed: the estimate lets it through, reclaim decides (the
        // fake cannot swap, so a round frees nothing and it is refused).
        let e = apply(&f, &mem(64 << 20), Duration::from_secs(3600)).unwrap_err();
        assert!(e.to_string().contains("freed nothing"), "{e}");
    }

    #[test]
    fn a_reclaim_round_that_frees_nothing_ends_the_wait() {
        // No memory.stat: nothing to estimate from, so reclaim decides.
        let f = Fake::new(100 << 20, 90 << 20);
        let e = apply(&f, &mem(32 << 20), Duration::from_secs(3600)).unwrap_err();
        assert!(e.to_string().contains("freed nothing"), "{e}");
        let log = f.log.lock().unwrap().clone();
        let rounds = log.iter().filter(|l| l.starts_with("memory.reclaim=")).count();
        assert_eq!(rounds, 2, "one partial round, one that freed nothing: {log:?}");
        assert!(
            !log.iter()
                .any(|l| l.starts_with("memory.high=") || l.starts_with("memory.max=")),
            "never throttled, never switched: {log:?}"
        );
    }

    #[test]
    fn a_decrease_that_cannot_fit_is_refused_and_restored() {
        let f = Fake::new(100 << 20, 90 << 20);
        apply(&f, &mem(256 << 20), DEFAULT_RECLAIM_WAIT).unwrap();
        let before: HashMap<_, _> = f.files.lock().unwrap().clone();
        let e = apply(
            &f,
            &desired(&LinuxContainerResources {
                memory_limit_in_bytes: 32 << 20,
                cpu_quota: 50_000,
                ..Default::default()
            })
            .unwrap(),
            Duration::from_millis(100),
        )
        .unwrap_err();
        assert!(matches!(e, Error::FailedPrecondition(_)), "{e}");
        let msg = e.to_string();
        assert!(
            msg.contains(&(32u64 << 20).to_string()) && msg.contains("uses"),
            "{msg}"
        );
        let mut after = f.files.lock().unwrap().clone();
        after.insert("memory.current".into(), before["memory.current"].clone());
        assert_eq!(after, before, "every value restored (cpu.max too)");
    }

    #[test]
    fn unknown_or_unreadable_files_are_refused_before_any_write() {
        let f = Fake::new(0, 0);
        let d = desired(&LinuxContainerResources {
            memory_limit_in_bytes: 1 << 30,
            unified: [("pids.max".to_string(), "5".to_string())].into(),
            ..Default::default()
        })
        .unwrap();
        assert!(matches!(
            apply(&f, &d, DEFAULT_RECLAIM_WAIT),
            Err(Error::InvalidArgument(_))
        ));
        assert_eq!(f.get("memory.max"), "max");
        // A file that exists but cannot be read (write-only on cgroupfs):
        // its old value could not be restored, so nothing is written.
        f.write("io.weight", "default 100").unwrap();
        f.unreadable.lock().unwrap().push("io.weight".into());
        let d = desired(&LinuxContainerResources {
            memory_limit_in_bytes: 1 << 30,
            cpu_quota: 50_000,
            unified: [("io.weight".to_string(), "200".to_string())].into(),
            ..Default::default()
        })
        .unwrap();
        let e = apply(&f, &d, DEFAULT_RECLAIM_WAIT).unwrap_err();
        assert!(e.to_string().contains("read back"), "{e}");
        assert_eq!(
            (f.get("memory.max"), f.get("cpu.max")),
            ("max".into(), "max 100000".into())
        );
    }

    #[test]
    fn read_back_reports_the_files() {
        let f = Fake::new(0, 0);
        apply(
            &f,
            &desired(&LinuxContainerResources {
                cpu_shares: 512,
                cpu_quota: 20_000,
                memory_limit_in_bytes: 64 << 20,
                ..Default::default()
            })
            .unwrap(),
            DEFAULT_RECLAIM_WAIT,
        )
        .unwrap();
        let r = read_back(&f, 512);
        assert_eq!(
            (r.cpu_shares, r.cpu_quota, r.cpu_period, r.memory_limit_in_bytes),
            (512, 20_000, 100_000, 64 << 20)
        );
        // Someone else changed the weight: the shares reported follow the file.
        f.write("cpu.weight", "100").unwrap();
        assert_eq!(shares_to_weight(read_back(&f, 512).cpu_shares), 100);
    }
}
