//! berthd's Prometheus metrics (`/metrics`, text format 0.0.4), kept with
//! the `prometheus-client` crate.
//!
//! Two kinds: what happens in the CRI layer is recorded as it happens (per-RPC
//! counts by gRPC code and latency histograms, image pulls); the node's state
//! (pods and containers by state) and the managers' own counters (resizes,
//! group merges, shims, events) are read at scrape time by a collector, so
//! the managers need no metrics handle and a scrape always shows the truth.

pub mod counters;
mod node;
pub mod steps;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

pub use node::{NodeView, STARTED_AT};

/// The `Content-Type` of [`Metrics::render`].
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// CRI call latency buckets (seconds): sub-millisecond status calls up to
/// minute-long pulls.
const RPC_BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Image pull duration buckets (seconds).
const PULL_BUCKETS: [f64; 11] = [0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0];

/// A gRPC code as Go's grpc `codes.Code.String()` (and so every Kubernetes
/// dashboard) names it: `OK`, `NotFound`, `FailedPrecondition`, ...
fn code_name(code: tonic::Code) -> String {
    match code {
        tonic::Code::Ok => "OK".into(),
        other => format!("{other:?}"),
    }
}

/// Labels of a finished CRI call.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RpcCode {
    rpc: String,
    code: String,
}

/// Labels of a CRI call's latency.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Rpc {
    rpc: String,
}

/// Labels of an image pull.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PullResult {
    result: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// What start-up recovery found (set once, before serving).
#[derive(Debug, Default)]
pub struct Recovery {
    /// Sandboxes read back from their records.
    pub sandboxes: AtomicU64,
    /// Containers read back from their records.
    pub containers: AtomicU64,
    /// How long recovery took (milliseconds).
    pub duration_ms: AtomicU64,
}

/// Every metric berthd exports.
pub struct Metrics {
    registry: Registry,
    requests: Family<RpcCode, Counter>,
    latency: HistogramFamily<Rpc>,
    pulls: Family<PullResult, Counter>,
    pull_seconds: Histogram,
    /// What recovery found at start-up.
    pub recovery: Arc<Recovery>,
}

impl Metrics {
    /// The metrics, with `view` read at each scrape.
    pub fn new(view: NodeView) -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RpcCode, Counter>::default();
        registry.register(
            "berth_cri_requests",
            "CRI calls finished, by RPC and gRPC status code (OK included)",
            requests.clone(),
        );
        let latency: HistogramFamily<Rpc> = Family::new_with_constructor(|| Histogram::new(RPC_BUCKETS));
        registry.register(
            "berth_cri_request_duration_seconds",
            "Time from a CRI call's arrival to its response headers, by RPC",
            latency.clone(),
        );
        let pulls = Family::<PullResult, Counter>::default();
        registry.register(
            "berth_image_pulls",
            "PullImage calls by result (success or failure)",
            pulls.clone(),
        );
        let pull_seconds = Histogram::new(PULL_BUCKETS);
        registry.register(
            "berth_image_pull_duration_seconds",
            "Duration of successful image pulls",
            pull_seconds.clone(),
        );
        registry.register(
            "berth_step_duration_seconds",
            "Duration of each step of the lifecycle calls (RunPodSandbox, CreateContainer, ...), by rpc and step",
            steps::family().clone(),
        );
        let recovery = Arc::new(Recovery::default());
        registry.register_collector(Box::new(node::NodeCollector {
            view,
            recovery: recovery.clone(),
        }));
        Metrics {
            registry,
            requests,
            latency,
            pulls,
            pull_seconds,
            recovery,
        }
    }

    /// Records one finished CRI call (`code` as gRPC names it: `OK`, `NotFound`, ...).
    pub fn observe_rpc(&self, rpc: &str, code: tonic::Code, seconds: f64) {
        self.requests
            .get_or_create(&RpcCode {
                rpc: rpc.to_string(),
                code: code_name(code),
            })
            .inc();
        self.latency
            .get_or_create(&Rpc { rpc: rpc.to_string() })
            .observe(seconds);
    }

    /// Records one PullImage result (its duration counts only on success:
    /// failures are often instant and would blur the histogram).
    pub fn observe_pull(&self, ok: bool, seconds: f64) {
        let result = if ok { "success" } else { "failure" };
        self.pulls
            .get_or_create(&PullResult {
                result: result.into(),
            })
            .inc();
        if ok {
            self.pull_seconds.observe(seconds);
        }
    }

    /// Records what start-up recovery found.
    pub fn set_recovered(&self, sandboxes: usize, containers: usize, took: std::time::Duration) {
        self.recovery.sandboxes.store(sandboxes as u64, Ordering::Relaxed);
        self.recovery
            .containers
            .store(containers as u64, Ordering::Relaxed);
        self.recovery
            .duration_ms
            .store(took.as_millis() as u64, Ordering::Relaxed);
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A node with two pods (one ready) and three containers.
    fn metrics() -> Metrics {
        Metrics::new(NodeView::fixed(
            vec![("ready", 1), ("notready", 1)],
            vec![("created", 0), ("running", 2), ("exited", 1)],
        ))
    }

    fn sample(samples: &[berth_tests::prom::Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        samples
            .iter()
            .find(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
    }

    #[test]
    fn rendering_is_valid_prometheus_text_with_every_family() {
        let m = metrics();
        m.observe_rpc("RunPodSandbox", tonic::Code::Ok, 0.2);
        m.observe_rpc("ContainerStatus", tonic::Code::NotFound, 0.0001);
        m.observe_rpc("ContainerStatus", tonic::Code::NotFound, 0.0001);
        m.observe_pull(true, 3.0);
        m.observe_pull(false, 0.1);
        m.set_recovered(4, 9, std::time::Duration::from_millis(12));
        let text = m.render();
        let samples = berth_tests::prom::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let get = |n: &str, l: &[(&str, &str)]| {
            sample(&samples, n, l).unwrap_or_else(|| panic!("{n} {l:?} missing:\n{text}"))
        };
        assert_eq!(
            get(
                "berth_cri_requests_total",
                &[("rpc", "ContainerStatus"), ("code", "NotFound")]
            ),
            2.0
        );
        assert_eq!(
            get(
                "berth_cri_requests_total",
                &[("rpc", "RunPodSandbox"), ("code", "OK")]
            ),
            1.0
        );
        assert_eq!(
            get(
                "berth_cri_request_duration_seconds_count",
                &[("rpc", "RunPodSandbox")]
            ),
            1.0
        );
        assert_eq!(
            get(
                "berth_cri_request_duration_seconds_bucket",
                &[("rpc", "RunPodSandbox"), ("le", "0.25")]
            ),
            1.0
        );
        assert_eq!(
            get(
                "berth_cri_request_duration_seconds_bucket",
                &[("rpc", "RunPodSandbox"), ("le", "0.1")]
            ),
            0.0
        );
        assert_eq!(get("berth_image_pulls_total", &[("result", "failure")]), 1.0);
        assert_eq!(get("berth_image_pull_duration_seconds_count", &[]), 1.0);
        assert_eq!(get("berth_pods", &[("state", "ready")]), 1.0);
        assert_eq!(get("berth_containers", &[("state", "running")]), 2.0);
        assert_eq!(get("berth_containers", &[("state", "created")]), 0.0);
        assert_eq!(get("berth_recovered_objects", &[("kind", "container")]), 9.0);
        assert_eq!(get("berth_recovery_duration_seconds", &[]), 0.012);
        for family in [
            "berth_image_pull_bytes_total",
            "berth_resizes_total",
            "berth_supplemental_groups_merged_total",
            "berth_shims_started_total",
            "berth_shims_lost_total",
            "berth_shims_reconnected_total",
            "berth_container_events_total",
            "berth_container_event_subscribers",
            "berth_container_event_subscribers_dropped_total",
            "berth_start_time_seconds",
        ] {
            assert!(
                samples.iter().any(|s| s.name == family),
                "{family} missing:\n{text}"
            );
        }
    }

    #[test]
    fn step_histograms_render_as_prometheus_histograms() {
        let m = metrics();
        {
            let mut s = steps::Steps::begin("test_render", "one");
            s.next("two");
        }
        let text = m.render();
        assert!(
            text.contains("# TYPE berth_step_duration_seconds histogram"),
            "{text}"
        );
        let samples = berth_tests::prom::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let get = |n: &str, l: &[(&str, &str)]| {
            sample(&samples, n, l).unwrap_or_else(|| panic!("{n} {l:?} missing:\n{text}"))
        };
        for step in ["one", "two"] {
            let labels = [("rpc", "test_render"), ("step", step)];
            assert_eq!(get("berth_step_duration_seconds_count", &labels), 1.0);
            // Buckets are cumulative: the widest finite one and +Inf hold
            // the one observation (a step of this test takes far under 10 s).
            let le = |b: &'static str| [labels[0], labels[1], ("le", b)];
            assert_eq!(get("berth_step_duration_seconds_bucket", &le("10")), 1.0);
            assert_eq!(get("berth_step_duration_seconds_bucket", &le("+Inf")), 1.0);
            assert!(get("berth_step_duration_seconds_sum", &labels) >= 0.0);
        }
    }

    /// A shim's own steps are recorded under `shim.<name>` with the
    /// duration it measured; a name outside the known set adds no series.
    #[test]
    fn shim_steps_are_recorded_and_unknown_names_dropped() {
        let m = metrics();
        steps::observe_shim("test_shim", "rootfs_root", 2_500_000);
        steps::observe_shim("test_shim", "read", 1_000_000);
        steps::observe_shim("test_shim", "made-up", 1);
        steps::observe_shim("test_shim", "start_seccomp", 3_000_000);
        // Sent at 1 ms, handled from 3 to 10 ms, back at 14 ms.
        let ms = 1_000_000;
        steps::observe_shim_call("test_shim", &[], (ms, 14 * ms), (3 * ms, 10 * ms));
        // An older shim stamps nothing: no transport step from it.
        steps::observe_shim_call("test_old_shim", &[], (ms, 14 * ms), (0, 0));
        let text = m.render();
        let samples = berth_tests::prom::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let labels = [("rpc", "test_shim"), ("step", "shim.rootfs_root")];
        assert_eq!(
            sample(&samples, "berth_step_duration_seconds_count", &labels),
            Some(1.0)
        );
        assert_eq!(
            sample(&samples, "berth_step_duration_seconds_sum", &labels),
            Some(0.0025)
        );
        let read = [("rpc", "test_shim"), ("step", "shim.read")];
        assert_eq!(
            sample(&samples, "berth_step_duration_seconds_sum", &read),
            Some(0.001),
            "init's wait for its config is a step of its own"
        );
        assert!(!text.contains("made-up"), "{text}");
        let seccomp = [("rpc", "test_shim"), ("step", "shim.start_seccomp")];
        assert_eq!(
            sample(&samples, "berth_step_duration_seconds_sum", &seccomp),
            Some(0.003),
            "Start's steps are shim steps too"
        );
        let request = [("rpc", "test_shim"), ("step", "shim.request")];
        let reply = [("rpc", "test_shim"), ("step", "shim.reply")];
        assert_eq!(
            sample(&samples, "berth_step_duration_seconds_sum", &request),
            Some(0.002)
        );
        assert_eq!(
            sample(&samples, "berth_step_duration_seconds_sum", &reply),
            Some(0.004)
        );
        assert!(!text.contains("test_old_shim"), "{text}");
    }

    /// `rpc_in` runs from the request layer's stamp to the handler; a
    /// call without a stamp (from a test, not through the layer) adds none.
    #[test]
    fn a_calls_arrival_is_the_rpc_in_step() {
        let m = metrics();
        let at = std::time::Instant::now() - std::time::Duration::from_millis(30);
        steps::arrived("test_arrived", Some(at));
        steps::arrived("test_unstamped", None);
        let text = m.render();
        let samples = berth_tests::prom::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let labels = [("rpc", "test_arrived"), ("step", "rpc_in")];
        assert_eq!(
            sample(&samples, "berth_step_duration_seconds_count", &labels),
            Some(1.0)
        );
        let sum = sample(&samples, "berth_step_duration_seconds_sum", &labels).unwrap();
        assert!((0.03..10.0).contains(&sum), "{sum}");
        assert!(!text.contains("test_unstamped"), "{text}");
    }

    #[test]
    fn rpc_codes_use_grpc_names() {
        assert_eq!(code_name(tonic::Code::FailedPrecondition), "FailedPrecondition");
        assert_eq!(code_name(tonic::Code::Ok), "OK");
        assert_eq!(code_name(tonic::Code::DeadlineExceeded), "DeadlineExceeded");
    }
}
