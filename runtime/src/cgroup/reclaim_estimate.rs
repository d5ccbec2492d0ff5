//! What reclaim could free in a cgroup, read from `memory.stat`, so a
//! memory decrease that can never fit is refused before any file is
//! touched (no `memory.high` throttling, no reclaim; issue 24).
//!
//! The estimate is an upper bound on purpose. Proceeding with a decrease
//! that then does not fit costs a reclaim of page cache, unthrottled and
//! cut short when a round frees nothing; refusing one that would have fit
//! fails a resize for good. So it counts:
//!
//! - the file LRU (`active_file + inactive_file`: page cache, without shmem
//!   or mlocked pages), of which dirty and writeback pages only up to what
//!   writeback can clean in the wait at [`ASSUMED_WRITEBACK_BYTES_PER_SEC`];
//! - `slab_reclaimable` (dentries and inodes);
//! - the anon LRU (`active_anon + inactive_anon`: anonymous memory and
//!   shmem) only when the cgroup can swap: `memory.swap.max` is not 0 (or
//!   absent: no swap accounting) and the host has free swap, capped by the
//!   room left under `memory.swap.max` and by the host's free swap.
//!
//! Everything else — unevictable (mlocked, ramfs) pages, kernel stacks,
//! page tables, sockets, unreclaimable slab — stays. Known limits (see
//! `docs/architecture.md`): page cache is charged to the cgroup that first
//! touched it, so a page this cgroup uses but another was charged for is
//! neither counted nor freed; zswap stores swapped-out pages compressed in
//! memory still charged to the cgroup, so swapping frees less than counted;
//! the writeback rate is a guess; `memory.swap.max` of ancestors is not read.

use std::time::Duration;

use super::files::Files;

/// Writeback throughput assumed for dirty pages during the wait (an upper
/// bound for the block devices containers write to; the reclaim loop finds
/// out the truth, without throttling).
pub const ASSUMED_WRITEBACK_BYTES_PER_SEC: u64 = 256 << 20;

/// A cgroup's usage and the part of it reclaim could free.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Estimate {
    /// `memory.current`.
    pub usage_bytes: u64,
    /// Upper bound of what reclaim can free within the wait.
    pub reclaimable_bytes: u64,
}

impl Estimate {
    /// What stays whatever reclaim does.
    pub fn unreclaimable_bytes(&self) -> u64 {
        self.usage_bytes.saturating_sub(self.reclaimable_bytes)
    }
}

/// One counter of `memory.stat` (0 when absent: older kernels lack some).
fn stat(text: &str, key: &str) -> u64 {
    text.lines()
        .find_map(|l| {
            let (k, v) = l.split_once(' ')?;
            (k == key).then(|| v.trim().parse().ok()).flatten()
        })
        .unwrap_or(0)
}

/// How much more this cgroup may swap out: the room under its
/// `memory.swap.max` (unlimited without swap accounting) and the host's
/// free swap, whichever is less.
fn swap_room(files: &dyn Files, host_swap_free_bytes: u64) -> u64 {
    if host_swap_free_bytes == 0 || !files.exists("memory.swap.max") {
        return host_swap_free_bytes;
    }
    let Ok(max) = files.read("memory.swap.max") else {
        return host_swap_free_bytes;
    };
    let cgroup_room = if max == "max" {
        u64::MAX
    } else {
        let used = files
            .read("memory.swap.current")
            .ok()
            .and_then(|c| c.parse::<u64>().ok())
            .unwrap_or(0);
        max.parse::<u64>().unwrap_or(0).saturating_sub(used)
    };
    cgroup_room.min(host_swap_free_bytes)
}

/// Estimates what reclaim can free in the cgroup within `wait`; None when
/// `memory.current` or `memory.stat` cannot be read (then nothing is
/// refused up front and the reclaim loop decides).
pub fn estimate(files: &dyn Files, host_swap_free_bytes: u64, wait: Duration) -> Option<Estimate> {
    let usage_bytes = files.read("memory.current").ok()?.parse().ok()?;
    let s = files.read("memory.stat").ok()?;
    let file_lru = stat(&s, "active_file").saturating_add(stat(&s, "inactive_file"));
    let unclean = stat(&s, "file_dirty")
        .saturating_add(stat(&s, "file_writeback"))
        .min(file_lru);
    let cleanable =
        (ASSUMED_WRITEBACK_BYTES_PER_SEC as u128 * wait.as_millis() / 1000).min(u64::MAX as u128) as u64;
    let file = file_lru - unclean + unclean.min(cleanable);
    let anon_lru = stat(&s, "active_anon").saturating_add(stat(&s, "inactive_anon"));
    let anon = anon_lru.min(swap_room(files, host_swap_free_bytes));
    let reclaimable_bytes = file
        .saturating_add(stat(&s, "slab_reclaimable"))
        .saturating_add(anon)
        .min(usage_bytes);
    Some(Estimate {
        usage_bytes,
        reclaimable_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroup::files::CgroupDir;

    const MIB: u64 = 1 << 20;

    /// A temp dir laid out like a cgroup: `memory.current`, `memory.stat`
    /// and, when given, the swap files.
    fn cgroup(
        current: u64,
        stat: &[(&str, u64)],
        swap: Option<(&str, u64)>,
    ) -> (tempfile::TempDir, CgroupDir) {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("memory.current"), format!("{current}\n")).unwrap();
        let text: String = stat.iter().map(|(k, v)| format!("{k} {v}\n")).collect();
        std::fs::write(d.path().join("memory.stat"), text).unwrap();
        if let Some((max, used)) = swap {
            std::fs::write(d.path().join("memory.swap.max"), format!("{max}\n")).unwrap();
            std::fs::write(d.path().join("memory.swap.current"), format!("{used}\n")).unwrap();
        }
        let dir = CgroupDir(d.path().to_path_buf());
        (d, dir)
    }

    const WAIT: Duration = Duration::from_secs(5);

    #[test]
    fn anonymous_memory_and_shmem_without_swap_are_unreclaimable() {
        // 48 MiB anonymous + 16 MiB shmem (both on the anon LRU), 8 MiB of
        // page cache, 1 MiB of kernel memory.
        let (_t, d) = cgroup(
            73 * MIB,
            &[
                ("anon", 48 * MIB),
                ("file", 24 * MIB),
                ("shmem", 16 * MIB),
                ("active_anon", 60 * MIB),
                ("inactive_anon", 4 * MIB),
                ("active_file", 5 * MIB),
                ("inactive_file", 3 * MIB),
            ],
            Some(("max", 0)),
        );
        let e = estimate(&d, 0, WAIT).unwrap();
        assert_eq!(e.usage_bytes, 73 * MIB);
        assert_eq!(e.reclaimable_bytes, 8 * MIB, "only the page cache");
        assert_eq!(e.unreclaimable_bytes(), 65 * MIB);
    }

    #[test]
    fn anonymous_memory_counts_when_the_cgroup_can_swap() {
        let stat = [
            ("active_anon", 40 * MIB),
            ("inactive_anon", 8 * MIB),
            ("inactive_file", 2 * MIB),
        ];
        // Unlimited cgroup swap, 1 GiB free on the host.
        let (_t, d) = cgroup(52 * MIB, &stat, Some(("max", 0)));
        assert_eq!(estimate(&d, 1 << 30, WAIT).unwrap().reclaimable_bytes, 50 * MIB);
        // Swap present but the cgroup may not use it.
        let (_t, d) = cgroup(52 * MIB, &stat, Some(("0", 0)));
        assert_eq!(estimate(&d, 1 << 30, WAIT).unwrap().reclaimable_bytes, 2 * MIB);
        // Capped by the room under memory.swap.max, and by the host's free swap.
        let (_t, d) = cgroup(52 * MIB, &stat, Some(((32 * MIB).to_string().as_str(), 20 * MIB)));
        assert_eq!(estimate(&d, 1 << 30, WAIT).unwrap().reclaimable_bytes, 14 * MIB);
        let (_t, d) = cgroup(52 * MIB, &stat, Some(("max", 0)));
        assert_eq!(estimate(&d, 5 * MIB, WAIT).unwrap().reclaimable_bytes, 7 * MIB);
        // No swap accounting in the kernel: the host's swap decides.
        let (_t, d) = cgroup(52 * MIB, &stat, None);
        assert_eq!(estimate(&d, 1 << 30, WAIT).unwrap().reclaimable_bytes, 50 * MIB);
        assert_eq!(estimate(&d, 0, WAIT).unwrap().reclaimable_bytes, 2 * MIB);
    }

    #[test]
    fn dirty_pages_count_only_as_far_as_writeback_cleans_them_in_the_wait() {
        let stat = [
            ("active_file", 600 * MIB),
            ("inactive_file", 400 * MIB),
            ("file_dirty", 700 * MIB),
            ("file_writeback", 100 * MIB),
            ("slab_reclaimable", 3 * MIB),
            ("unevictable", 50 * MIB),
        ];
        let (_t, d) = cgroup(1100 * MIB, &stat, None);
        // 200 MiB clean + 3 MiB slab, plus what writeback cleans.
        let clean = |ms: u64| ASSUMED_WRITEBACK_BYTES_PER_SEC * ms / 1000;
        let e = estimate(&d, 0, Duration::from_millis(1000)).unwrap();
        assert_eq!(e.reclaimable_bytes, 203 * MIB + clean(1000));
        assert_eq!(
            estimate(&d, 0, Duration::ZERO).unwrap().reclaimable_bytes,
            203 * MIB
        );
        // A long wait cleans all 800 MiB; unevictable and the rest stay.
        let e = estimate(&d, 0, Duration::from_secs(3600)).unwrap();
        assert_eq!(e.reclaimable_bytes, 1003 * MIB);
        assert_eq!(e.unreclaimable_bytes(), 97 * MIB);
    }

    #[test]
    fn unreadable_or_odd_files_never_refuse() {
        let (t, d) = cgroup(10 * MIB, &[("inactive_file", 4 * MIB)], None);
        // Garbage lines and unknown keys are ignored.
        std::fs::write(
            t.path().join("memory.stat"),
            "inactive_file 4194304\nbogus\nactive_file x\n\n",
        )
        .unwrap();
        assert_eq!(estimate(&d, 0, WAIT).unwrap().reclaimable_bytes, 4 * MIB);
        // More counted than used (stat and current read at different times).
        std::fs::write(t.path().join("memory.current"), "1048576").unwrap();
        let e = estimate(&d, 0, WAIT).unwrap();
        assert_eq!((e.reclaimable_bytes, e.unreclaimable_bytes()), (MIB, 0));
        std::fs::remove_file(t.path().join("memory.stat")).unwrap();
        assert_eq!(estimate(&d, 0, WAIT), None);
    }
}
