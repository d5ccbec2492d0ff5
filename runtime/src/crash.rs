//! Crash points, for tests only: `BERTH_CRASH_AT=<point>` makes berthd abort
//! (as a kill -9 would stop it: no unwinding, no cleanup) when it reaches the
//! named step, so the VM suite (`tests/vm/crash.rs`) can check that start-up
//! recovery and kubelet's teardown leave nothing behind. Never set it in
//! production.
//!
//! Each point sits right after a side effect, before the record that names
//! it is complete. Points, by call:
//! * RunPodSandbox: `run_sandbox.intent`, `run_sandbox.cgroup`,
//!   `run_sandbox.shim`, `run_sandbox.pins`, `run_sandbox.cni_add`,
//!   `run_sandbox.record`;
//! * CreateContainer: `create_container.intent`, `create_container.dirs`
//!   (writable layer and bundle), `create_container.cgroup`,
//!   `create_container.config` (the spec in the bundle),
//!   `create_container.shim` (the shim holds the parked init),
//!   `create_container.record`;
//! * StartContainer: `start_container.shim` (running, record says Created);
//! * StopContainer: `stop_container.signal` (stop signal sent);
//! * RemoveContainer: `remove_container.shim`, `remove_container.cgroup`,
//!   `remove_container.dirs` (record still there);
//! * StopPodSandbox (and the stop inside RemovePodSandbox):
//!   `stop_sandbox.shim` (shim gone, record Ready; CNI DEL runs beside the
//!   wait for the shim, so it may be done or not), `stop_sandbox.cni_del`
//!   (DEL done, record not torn down);
//! * RemovePodSandbox: `remove_sandbox.pins`, `remove_sandbox.cgroup`,
//!   `remove_sandbox.state` (record still there);
//! * PullImage: `pull_image.layers` (snapshots, no record),
//!   `pull_image.record`;
//! * RemoveImage: `remove_image.record` (record gone, snapshots not);
//! * CheckpointContainer: `checkpoint.archive` (the temporary archive
//!   written and synced, not yet renamed into place).

/// Every crash point, in the order a pod's life reaches them.
pub const POINTS: &[&str] = &[
    "run_sandbox.intent",
    "run_sandbox.cgroup",
    "run_sandbox.shim",
    "run_sandbox.pins",
    "run_sandbox.cni_add",
    "run_sandbox.record",
    "create_container.intent",
    "create_container.dirs",
    "create_container.cgroup",
    "create_container.config",
    "create_container.shim",
    "create_container.record",
    "start_container.shim",
    "stop_container.signal",
    "remove_container.shim",
    "remove_container.cgroup",
    "remove_container.dirs",
    "stop_sandbox.shim",
    "stop_sandbox.cni_del",
    "remove_sandbox.pins",
    "remove_sandbox.cgroup",
    "remove_sandbox.state",
    "pull_image.layers",
    "pull_image.record",
    "remove_image.record",
    "checkpoint.archive",
];

/// Aborts the process if `BERTH_CRASH_AT` names `point`.
pub fn point(point: &str) {
    debug_assert!(POINTS.contains(&point), "undocumented crash point {point}");
    if std::env::var_os("BERTH_CRASH_AT").is_some_and(|v| v == point) {
        tracing::error!(point, "BERTH_CRASH_AT: aborting (test-only crash point)");
        std::process::abort();
    }
}
