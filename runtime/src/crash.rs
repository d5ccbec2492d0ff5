//! Crash points, for tests only: `BERTH_CRASH_AT=<point>` makes berthd abort
//! (as a kill -9 would stop it: no unwinding, no cleanup) when it reaches the
//! named step, so the VM suite can check that start-up recovery and kubelet's
//! teardown leave nothing behind. Never set it in production.
//!
//! Points: `run_sandbox.intent`, `run_sandbox.cgroup`, `run_sandbox.shim`,
//! `run_sandbox.pins`, `run_sandbox.cni_add`, `run_sandbox.record`.

/// Aborts the process if `BERTH_CRASH_AT` names `point`.
pub fn point(point: &str) {
    if std::env::var_os("BERTH_CRASH_AT").is_some_and(|v| v == point) {
        tracing::error!(point, "BERTH_CRASH_AT: aborting (test-only crash point)");
        std::process::abort();
    }
}
