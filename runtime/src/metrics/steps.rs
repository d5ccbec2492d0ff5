//! Per-step timing of the lifecycle RPCs (RunPodSandbox, CreateContainer,
//! StartContainer, StopPodSandbox, RemovePodSandbox): each step's duration
//! goes into `berth_step_duration_seconds{rpc,step}` and, at debug, into a
//! `step` tracing span's event, so a benchmark can say where a call's time
//! goes without a profiler.
//!
//! The managers own no metrics handle (see the module doc of `metrics`), so
//! the histogram family is process-wide and [`super::Metrics`] registers it.
//! A call site marks step boundaries with one line each:
//! `let mut steps = Steps::begin("run_pod_sandbox", "validate");` then
//! `steps.next("cni_add");` ... ; the last step ends when `steps` is dropped,
//! on success and on every error path alike.

use std::sync::OnceLock;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;

/// Step buckets (seconds): from a cached lookup (0.1 ms) to a slow CNI
/// plugin chain under emulation (seconds).
const STEP_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Labels of one step.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct StepLabels {
    rpc: String,
    step: String,
}

/// The step histogram family.
pub(super) type StepFamily = Family<StepLabels, Histogram, fn() -> Histogram>;

fn new_histogram() -> Histogram {
    Histogram::new(STEP_BUCKETS)
}

/// The process-wide family every [`Steps`] records into.
pub(super) fn family() -> &'static StepFamily {
    static FAMILY: OnceLock<StepFamily> = OnceLock::new();
    FAMILY.get_or_init(|| Family::new_with_constructor(new_histogram as fn() -> Histogram))
}

/// Records one finished step that took `took`.
fn observe(rpc: &'static str, step: &'static str, took: std::time::Duration) {
    family()
        .get_or_create(&StepLabels {
            rpc: rpc.into(),
            step: step.into(),
        })
        .observe(took.as_secs_f64());
    tracing::debug_span!("step", rpc, step).in_scope(|| {
        tracing::debug!(duration_us = took.as_micros() as u64, "step finished");
    });
}

/// The steps a shim times inside its call (`CreateResponse.steps`,
/// `StartResponse.steps`): only these become labels, so a shim cannot grow
/// the metric family.
const SHIM_STEPS: [&str; 24] = [
    "shim.request",
    "shim.reply",
    "shim.prep",
    "shim.clone",
    "shim.exec",
    "shim.read",
    "shim.config",
    "shim.rootfs_ns",
    "shim.rootfs_root",
    "shim.rootfs_mounts",
    "shim.rootfs_dev",
    "shim.rootfs_pivot",
    "shim.rootfs_harden",
    "shim.park",
    "shim.report",
    "shim.table",
    "shim.start_wake",
    "shim.start_prep",
    "shim.start_seccomp",
    "shim.start_privs",
    "shim.start_lookup",
    "shim.start_identity",
    "shim.start_exec",
    "shim.start_reply",
];

/// Records a step the shim timed (`name` without the `shim.` prefix);
/// names outside [`SHIM_STEPS`] are dropped.
pub fn observe_shim(rpc: &'static str, name: &str, nanos: u64) {
    let Some(step) = SHIM_STEPS.iter().find(|s| s.strip_prefix("shim.") == Some(name)) else {
        return;
    };
    observe(rpc, step, std::time::Duration::from_nanos(nanos));
}

/// Records one shim call: the steps the shim timed inside it, and the
/// transport's part, from `sent` (berthd's [`berth_sys::clock::mono_ns`]
/// before the call) to the shim handler's `received`, and from its
/// `replied` to `back` (after the call). A shim that stamps nothing (0)
/// adds no transport steps.
pub fn observe_shim_call(
    rpc: &'static str,
    steps: &[berth_proto::shim::Step],
    (sent, back): (u64, u64),
    (received, replied): (u64, u64),
) {
    for s in steps {
        observe_shim(rpc, &s.name, s.nanos);
    }
    if received == 0 || replied == 0 {
        return;
    }
    observe_shim(rpc, "request", received.saturating_sub(sent));
    observe_shim(rpc, "reply", back.saturating_sub(replied));
}

/// Records step `rpc_in`: from the moment the call's headers reached
/// berthd (`arrived`, stamped by the CRI request layer) to the manager's
/// first step, i.e. the request body, its decoding, tonic's routing and
/// any hand-off to a task. Without a stamp (a call from a test) nothing.
pub fn arrived(rpc: &'static str, arrived: Option<Instant>) {
    if let Some(at) = arrived {
        observe(rpc, "rpc_in", at.elapsed());
    }
}

/// Runs `fut` and records its duration as `rpc`'s `step`: for work that
/// overlaps other steps (its time is also inside the enclosing [`Steps`]
/// step, so the two are not added up).
pub async fn timed<F: std::future::Future>(rpc: &'static str, step: &'static str, fut: F) -> F::Output {
    let started = Instant::now();
    let out = fut.await;
    observe(rpc, step, started.elapsed());
    out
}

/// The running step of one RPC; the next step (or drop) ends it.
#[must_use = "dropping Steps ends the current step at once"]
#[derive(Debug)]
pub struct Steps {
    rpc: &'static str,
    step: &'static str,
    started: Instant,
}

impl Steps {
    /// Starts timing `rpc`'s first step.
    pub fn begin(rpc: &'static str, step: &'static str) -> Self {
        Steps {
            rpc,
            step,
            started: Instant::now(),
        }
    }

    /// Ends the current step and starts `step`.
    pub fn next(&mut self, step: &'static str) {
        let now = Instant::now();
        observe(self.rpc, self.step, self.started.elapsed());
        self.step = step;
        self.started = now;
    }
}

impl Drop for Steps {
    fn drop(&mut self) {
        observe(self.rpc, self.step, self.started.elapsed());
    }
}
