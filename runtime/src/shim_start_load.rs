//! Many pods starting at once on few CPUs. With 50 RunPodSandbox calls at
//! once on 2 emulated vCPUs, 50 shims, 50 clients and the CNI plugins
//! competed for the CPUs and 5 shims did not serve within a fixed 10 s: a
//! live, merely starved shim was killed and its pod failed.
//!
//! Two remedies, both here: at most [`max_concurrent_starts`] shims are
//! between fork and serving at once (the others wait for a slot before they
//! fork, so each started shim gets its share of the CPUs), and the time a
//! started shim gets grows with the number of pods being set up at that
//! moment ([`StartSlot::timeout`]). A shim that died is still reported at
//! once: its readiness pipe reads EOF (`shim_ready`), no timeout involved.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

/// The time a shim gets on an idle node.
pub const BASE_TIMEOUT: Duration = Duration::from_secs(10);

/// Extra time per other pod being set up at the same moment.
const PER_STARTING_POD: Duration = Duration::from_secs(1);

/// The most any one shim gets, however loaded the node.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(120);

/// Pods between "wants a shim" and "its shim serves" (waiting for a slot
/// included).
static STARTING: AtomicUsize = AtomicUsize::new(0);

/// Shims started at once: two per CPU (a shim's start is CPU-bound exec,
/// page faults and runtime set-up), at least two.
pub fn max_concurrent_starts() -> usize {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    (2 * cpus).max(2)
}

fn slots() -> &'static tokio::sync::Semaphore {
    static SLOTS: OnceLock<tokio::sync::Semaphore> = OnceLock::new();
    SLOTS.get_or_init(|| tokio::sync::Semaphore::new(max_concurrent_starts()))
}

/// The start-up timeout of a shim while `starting` pods (this one
/// included) are being set up.
pub fn timeout_for(starting: usize) -> Duration {
    let others = u32::try_from(starting.saturating_sub(1)).unwrap_or(u32::MAX);
    BASE_TIMEOUT
        .saturating_add(PER_STARTING_POD.saturating_mul(others))
        .min(MAX_TIMEOUT)
}

/// Counts one pod in [`STARTING`] while it lives.
#[derive(Debug)]
pub(crate) struct Counted;

impl Counted {
    fn new() -> Self {
        STARTING.fetch_add(1, Ordering::SeqCst);
        Counted
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        STARTING.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The right to have one shim starting; held from before the fork until it
/// serves or fails.
#[must_use = "dropping the slot lets another shim start"]
#[derive(Debug)]
pub struct StartSlot {
    _permit: tokio::sync::SemaphorePermit<'static>,
    _counted: Counted,
}

impl StartSlot {
    /// Waits for a free slot (counted as starting while it waits).
    pub async fn acquire() -> Self {
        let counted = Counted::new();
        let permit = slots()
            .acquire()
            .await
            .expect("the start semaphore is never closed");
        StartSlot {
            _permit: permit,
            _counted: counted,
        }
    }

    /// The time this shim gets to serve, from the pods starting now.
    pub fn timeout(&self) -> Duration {
        timeout_for(STARTING.load(Ordering::SeqCst))
    }
}

/// Counts `n` pods as starting until dropped (tests of callers that see
/// the load).
#[cfg(test)]
pub(crate) fn pretend_starting(n: usize) -> Vec<impl Sized> {
    (0..n).map(|_| Counted::new()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Alone a shim gets the base time; each pod set up alongside adds a
    /// second, up to the cap (50 pods: 59 s, not the 10 s that failed 5).
    #[test]
    fn timeout_grows_with_the_pods_starting_and_is_capped() {
        assert_eq!(timeout_for(0), BASE_TIMEOUT);
        assert_eq!(timeout_for(1), BASE_TIMEOUT);
        assert_eq!(timeout_for(50), Duration::from_secs(59));
        assert_eq!(timeout_for(10_000), MAX_TIMEOUT);
    }

    /// No more than max_concurrent_starts slots are out at once; a waiter
    /// gets one as soon as one is returned.
    #[tokio::test]
    async fn slots_are_bounded_and_handed_on() {
        let n = max_concurrent_starts();
        let mut held = Vec::new();
        for _ in 0..n {
            held.push(StartSlot::acquire().await);
        }
        assert_eq!(slots().available_permits(), 0);
        let waiter = tokio::spawn(StartSlot::acquire());
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        held.pop();
        let slot = waiter.await.unwrap();
        assert!(slot.timeout() >= BASE_TIMEOUT);
    }
}
