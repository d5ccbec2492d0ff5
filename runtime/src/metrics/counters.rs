//! The managers' event counters, in one place: each is bumped where the
//! event happens and read at scrape time by the node collector (and by
//! verbose Status), so managers need no metrics handle. All count since
//! berthd started; `Relaxed` ordering is enough for monotonic tallies.

use std::sync::atomic::AtomicU64;

/// Container in-place resizes (UpdateContainerResources) applied.
pub static RESIZES_APPLIED: AtomicU64 = AtomicU64::new(0);
/// Container in-place resizes refused (the request would not fit, or a
/// cgroup write failed and was undone).
pub static RESIZES_REFUSED: AtomicU64 = AtomicU64::new(0);
/// Pod-level resizes (UpdatePodSandboxResources) applied or recorded.
pub static POD_RESIZES_APPLIED: AtomicU64 = AtomicU64::new(0);
/// Pod-level resizes refused.
pub static POD_RESIZES_REFUSED: AtomicU64 = AtomicU64::new(0);
/// Containers whose supplemental groups the Merge policy extended from the
/// image's /etc/group (the pods enforcing Strict would change).
pub static MERGED_IMAGE_GROUPS: AtomicU64 = AtomicU64::new(0);
/// Pod shims berthd started (one per RunPodSandbox).
pub static SHIMS_STARTED: AtomicU64 = AtomicU64::new(0);
/// Pod shims that exited without StopPodSandbox asking them to.
pub static SHIMS_LOST: AtomicU64 = AtomicU64::new(0);
/// Running pod shims found and reconnected at start-up.
pub static SHIMS_RECONNECTED: AtomicU64 = AtomicU64::new(0);
/// Layer blob bytes downloaded (size-checked) by image pulls.
pub static LAYER_BYTES_DOWNLOADED: AtomicU64 = AtomicU64::new(0);
