//! Defaults of config values whose managers also use them on their own
//! (unit tests, callers that build no config): kept here so the config's
//! defaults and the managers' agree, with the managers importing them.

use std::time::Duration;

/// Default time a memory decrease may wait for reclaim
/// (`memory_decrease_wait_ms`).
pub const DEFAULT_RECLAIM_WAIT: Duration = Duration::from_secs(5);

/// The size of a pod's `/dev/shm` unless configured otherwise
/// (`pod_shm_size_bytes`): 64 MiB, the default of containerd
/// (`defaultShmSize`), CRI-O (`shm_size`) and Docker. Pods that need more
/// mount a memory-backed emptyDir at `/dev/shm`, which replaces this one (a
/// CRI mount of the same path wins).
pub const DEFAULT_SHM_SIZE_BYTES: u64 = 64 * 1024 * 1024;

/// How long a streaming token stays valid by default
/// (`stream_token_ttl_ms`; one minute, like kubelet's streaming server).
pub const DEFAULT_STREAM_TOKEN_TTL: Duration = Duration::from_secs(60);
