//! The scrape-time half of the metrics: the node's pods and containers by
//! state, and the counters the managers bump themselves (atomics in
//! [`super::counters`], so no manager needs a metrics handle).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;

use super::{counters, Recovery};
use crate::container::{ContainerManager, ContainerState};
use crate::events::Events;
use crate::sandbox::SandboxManager;

/// Where the collector reads pods and containers from.
pub enum NodeView {
    /// The running managers (weak: they outlive no scrape they are not in).
    Live {
        /// Sandboxes.
        sandboxes: Weak<SandboxManager>,
        /// Containers.
        containers: Weak<ContainerManager>,
        /// Events (subscribers, counts).
        events: Arc<Events>,
    },
    /// Fixed counts (unit tests).
    #[cfg_attr(not(test), allow(dead_code))]
    Fixed {
        /// Pods by state.
        pods: Vec<(&'static str, i64)>,
        /// Containers by state.
        containers: Vec<(&'static str, i64)>,
    },
}

impl NodeView {
    /// Reads the managers at each scrape.
    pub fn live(
        sandboxes: &Arc<SandboxManager>,
        containers: &Arc<ContainerManager>,
        events: Arc<Events>,
    ) -> Self {
        NodeView::Live {
            sandboxes: Arc::downgrade(sandboxes),
            containers: Arc::downgrade(containers),
            events,
        }
    }

    /// Always these counts.
    #[cfg(test)]
    pub fn fixed(pods: Vec<(&'static str, i64)>, containers: Vec<(&'static str, i64)>) -> Self {
        NodeView::Fixed { pods, containers }
    }

    fn pods(&self) -> Vec<(&'static str, i64)> {
        match self {
            NodeView::Fixed { pods, .. } => pods.clone(),
            NodeView::Live { sandboxes, .. } => {
                let all = sandboxes.upgrade().map(|m| m.list()).unwrap_or_default();
                let ready = all.iter().filter(|s| s.is_ready()).count() as i64;
                vec![("ready", ready), ("notready", all.len() as i64 - ready)]
            }
        }
    }

    fn containers(&self) -> Vec<(&'static str, i64)> {
        match self {
            NodeView::Fixed { containers, .. } => containers.clone(),
            NodeView::Live { containers, .. } => {
                let mut n = [0i64; 3];
                for c in containers.upgrade().map(|m| m.list()).unwrap_or_default() {
                    n[match c.record().state {
                        ContainerState::Created => 0,
                        ContainerState::Running => 1,
                        ContainerState::Exited => 2,
                    }] += 1;
                }
                vec![("created", n[0]), ("running", n[1]), ("exited", n[2])]
            }
        }
    }

    fn events(&self) -> Option<&Events> {
        match self {
            NodeView::Live { events, .. } => Some(events),
            NodeView::Fixed { .. } => None,
        }
    }
}

/// Registered once; encodes the scrape-time families.
pub(super) struct NodeCollector {
    pub(super) view: NodeView,
    pub(super) recovery: Arc<Recovery>,
}

impl std::fmt::Debug for NodeCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NodeCollector")
    }
}

fn gauge_family(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &str,
    values: &[(&str, i64)],
) -> std::fmt::Result {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (v, n) in values {
        ConstGauge::new(*n).encode(m.encode_family(&[(label, *v)])?)?;
    }
    Ok(())
}

fn counter_family(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &str,
    values: &[(&str, u64)],
) -> std::fmt::Result {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (v, n) in values {
        ConstCounter::new(*n).encode(m.encode_family(&[(label, *v)])?)?;
    }
    Ok(())
}

fn counter(enc: &mut DescriptorEncoder, name: &str, help: &str, n: u64) -> std::fmt::Result {
    ConstCounter::new(n).encode(enc.encode_descriptor(name, help, None, MetricType::Counter)?)
}

fn gauge(enc: &mut DescriptorEncoder, name: &str, help: &str, v: f64) -> std::fmt::Result {
    ConstGauge::new(v).encode(enc.encode_descriptor(name, help, None, MetricType::Gauge)?)
}

impl Collector for NodeCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        gauge_family(
            &mut enc,
            "berth_pods",
            "Pod sandboxes by state",
            "state",
            &self.view.pods(),
        )?;
        gauge_family(
            &mut enc,
            "berth_containers",
            "Containers by state",
            "state",
            &self.view.containers(),
        )?;
        counter(
            &mut enc,
            "berth_image_pull_bytes",
            "Layer bytes downloaded (size-checked) by image pulls",
            load(&counters::LAYER_BYTES_DOWNLOADED),
        )?;
        {
            use counters::{POD_RESIZES_APPLIED, POD_RESIZES_REFUSED, RESIZES_APPLIED, RESIZES_REFUSED};
            let mut m = enc.encode_descriptor(
                "berth_resizes",
                "In-place resizes (UpdateContainerResources, UpdatePodSandboxResources) applied or refused",
                None,
                MetricType::Counter,
            )?;
            for (scope, result, n) in [
                ("container", "applied", load(&RESIZES_APPLIED)),
                ("container", "refused", load(&RESIZES_REFUSED)),
                ("pod", "applied", load(&POD_RESIZES_APPLIED)),
                ("pod", "refused", load(&POD_RESIZES_REFUSED)),
            ] {
                ConstCounter::new(n).encode(m.encode_family(&[("scope", scope), ("result", result)])?)?;
            }
        }
        counter(
            &mut enc,
            "berth_supplemental_groups_merged",
            "Containers whose groups the Merge supplementalGroupsPolicy extended from the image's /etc/group",
            load(&counters::MERGED_IMAGE_GROUPS),
        )?;
        {
            use counters::{SHIMS_LOST, SHIMS_RECONNECTED, SHIMS_STARTED};
            counter(
                &mut enc,
                "berth_shims_started",
                "Pod shims started (one per RunPodSandbox)",
                load(&SHIMS_STARTED),
            )?;
            counter(
                &mut enc,
                "berth_shims_lost",
                "Pod shims that exited without StopPodSandbox (their pod goes NotReady; kubelet recreates it)",
                load(&SHIMS_LOST),
            )?;
            counter(
                &mut enc,
                "berth_shims_reconnected",
                "Running pod shims berthd reconnected to at start-up (a berthd restart they survived)",
                load(&SHIMS_RECONNECTED),
            )?;
        }
        gauge_family(
            &mut enc,
            "berth_recovered_objects",
            "Records start-up recovery read back from an earlier berthd",
            "kind",
            &[
                ("sandbox", load(&self.recovery.sandboxes) as i64),
                ("container", load(&self.recovery.containers) as i64),
            ],
        )?;
        gauge(
            &mut enc,
            "berth_recovery_duration_seconds",
            "How long start-up recovery took",
            load(&self.recovery.duration_ms) as f64 / 1000.0,
        )?;
        gauge(
            &mut enc,
            "berth_start_time_seconds",
            "When this berthd started (Unix seconds)",
            STARTED_AT
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0),
        )?;
        let (published, subscribers, dropped) = match self.view.events() {
            Some(e) => (
                e.counts.published(),
                e.subscriber_count() as i64,
                load(&e.counts.subscribers_dropped),
            ),
            None => (crate::events::EventCounts::default().published(), 0, 0),
        };
        counter_family(
            &mut enc,
            "berth_container_events",
            "GetContainerEvents events sent, by type",
            "type",
            &published,
        )?;
        gauge(
            &mut enc,
            "berth_container_event_subscribers",
            "Attached GetContainerEvents streams",
            subscribers as f64,
        )?;
        counter(
            &mut enc,
            "berth_container_event_subscribers_dropped",
            "GetContainerEvents streams ended because they fell too far behind",
            dropped,
        )
    }
}

/// When berthd started (fixed on first use; main uses it first thing).
pub static STARTED_AT: std::sync::LazyLock<std::time::SystemTime> =
    std::sync::LazyLock::new(std::time::SystemTime::now);
