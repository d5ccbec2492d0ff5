//! CPU usage rate (nanocores) between cached samples.
//!
//! `usage_nano_cores` is a rate, so it needs two readings of the cumulative
//! counter. Sleeping inside an RPC to take the second one would make every
//! ListContainerStats slow, so each cgroup keeps its previous reading here
//! and the rate is computed against it. The first reading of a cgroup has
//! no rate; the next one at least [`MIN_WINDOW_NS`] later has.
//!
//! kubelet often asks twice in a row (ListContainerStats, then
//! ListPodSandboxStats): a window of a few milliseconds would make the rate
//! mostly noise, so a reading less than [`MIN_WINDOW_NS`] after the base
//! keeps the base and answers the last rate computed.

use std::collections::HashMap;

use parking_lot::Mutex;

/// The shortest window a rate is computed over.
pub const MIN_WINDOW_NS: u64 = 1_000_000_000;

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Monotonic time of the base reading.
    base_ns: u64,
    /// Cumulative usage at the base reading, nanoseconds.
    base_usage_ns: u64,
    /// Rate over the last completed window.
    rate: Option<u64>,
}

/// Per-cgroup previous readings, keyed by container or pod.
#[derive(Debug, Default)]
pub struct RateCache {
    entries: Mutex<HashMap<String, Entry>>,
}

impl RateCache {
    /// Records a reading of `key`'s cumulative CPU time `usage_ns` taken at
    /// monotonic time `now_ns`, and returns its current rate in nanocores
    /// (None until a window of at least [`MIN_WINDOW_NS`] exists).
    pub fn observe(&self, key: &str, now_ns: u64, usage_ns: u64) -> Option<u64> {
        let mut entries = self.entries.lock();
        let fresh = Entry {
            base_ns: now_ns,
            base_usage_ns: usage_ns,
            rate: None,
        };
        let e = entries.entry(key.to_string()).or_insert(fresh);
        if usage_ns < e.base_usage_ns || now_ns < e.base_ns {
            // A counter that went back means the cgroup under this key was
            // re-created: start over rather than report a huge rate.
            *e = fresh;
            return None;
        }
        let window = now_ns - e.base_ns;
        if window >= MIN_WINDOW_NS {
            let used = (usage_ns - e.base_usage_ns) as u128;
            e.rate = Some((used * 1_000_000_000 / window as u128) as u64);
            e.base_ns = now_ns;
            e.base_usage_ns = usage_ns;
        }
        e.rate
    }

    /// Drops every key `keep` refuses (containers and pods that are gone).
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        self.entries.lock().retain(|k, _| keep(k));
    }

    /// How many keys are cached.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn first_reading_has_no_rate_then_one_core() {
        let c = RateCache::default();
        assert_eq!(c.observe("a", 10 * S, 0), None);
        // One second of CPU in two seconds: half a core.
        assert_eq!(c.observe("a", 12 * S, S), Some(S / 2));
        // Two seconds of CPU in two seconds: one core.
        assert_eq!(c.observe("a", 14 * S, 3 * S), Some(S));
    }

    #[test]
    fn a_short_window_keeps_the_last_rate_and_the_base() {
        let c = RateCache::default();
        c.observe("a", 0, 0);
        assert_eq!(c.observe("a", S / 10, S / 10), None, "no window yet");
        assert_eq!(c.observe("a", 2 * S, 2 * S), Some(S));
        // 5 ms later (ListPodSandboxStats right after ListContainerStats):
        // the same answer, not a 5 ms sample of noise.
        assert_eq!(c.observe("a", 2 * S + 5_000_000, 2 * S + 5_000_000), Some(S));
        // The base stayed at 2 s: from there 1 s of CPU in 2 s.
        assert_eq!(c.observe("a", 4 * S, 3 * S), Some(S / 2));
    }

    #[test]
    fn a_counter_going_back_restarts_and_keys_are_separate() {
        let c = RateCache::default();
        c.observe("a", 0, 5 * S);
        c.observe("b", 0, 0);
        assert_eq!(c.observe("a", 2 * S, S), None, "reset");
        assert_eq!(c.observe("b", 2 * S, 4 * S), Some(2 * S), "two cores");
        assert_eq!(c.observe("a", 4 * S, 2 * S), Some(S / 2));
        c.retain(|k| k == "b");
        assert_eq!(c.len(), 1);
    }
}
