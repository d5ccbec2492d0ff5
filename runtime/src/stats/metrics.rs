//! ListMetricDescriptors / ListPodSandboxMetrics: the cAdvisor metric
//! families kubelet serves on `/metrics/cadvisor` when stats come from the
//! CRI, built from the same readings as the stats RPCs.
//!
//! Every family carries cAdvisor's label keys `container`, `id` (the cgroup
//! path), `image`, `name` (the container id), `namespace` and `pod`, plus
//! its own (`cpu`, `interface`), so dashboards written for cAdvisor select
//! the same series. Pod-level series have an empty `container` and `image`,
//! as cAdvisor's pod cgroup series do. The CRI carries values as integers:
//! `*_seconds_total` are whole seconds.

use berth_proto::cri::{Metric, MetricDescriptor, MetricType};

use super::{CgroupUsage, LayerUsage, NetworkUsage, Psi};

/// Label keys every family starts with.
pub const BASE_LABELS: [&str; 6] = ["container", "id", "image", "name", "namespace", "pod"];

/// One metric family.
#[derive(Debug)]
pub struct Family {
    /// Prometheus name.
    pub name: &'static str,
    /// HELP text.
    pub help: &'static str,
    /// Label keys after [`BASE_LABELS`].
    pub extra_labels: &'static [&'static str],
    /// Counter or gauge.
    pub kind: MetricType,
}

macro_rules! family {
    ($id:ident, $name:literal, $help:literal, $kind:ident $(, $extra:literal)*) => {
        #[doc = $help]
        pub const $id: Family = Family {
            name: $name,
            help: $help,
            extra_labels: &[$($extra),*],
            kind: MetricType::$kind,
        };
    };
}

family!(
    CPU_USAGE,
    "container_cpu_usage_seconds_total",
    "Cumulative cpu time consumed in seconds.",
    Counter,
    "cpu"
);
family!(
    CPU_USER,
    "container_cpu_user_seconds_total",
    "Cumulative user cpu time consumed in seconds.",
    Counter
);
family!(
    CPU_SYSTEM,
    "container_cpu_system_seconds_total",
    "Cumulative system cpu time consumed in seconds.",
    Counter
);
family!(
    CFS_PERIODS,
    "container_cpu_cfs_periods_total",
    "Number of elapsed enforcement period intervals.",
    Counter
);
family!(
    CFS_THROTTLED_PERIODS,
    "container_cpu_cfs_throttled_periods_total",
    "Number of throttled period intervals.",
    Counter
);
family!(
    CFS_THROTTLED_SECONDS,
    "container_cpu_cfs_throttled_seconds_total",
    "Total time duration the container has been throttled.",
    Counter
);
family!(
    MEMORY_USAGE,
    "container_memory_usage_bytes",
    "Current memory usage in bytes, including all memory regardless of when it was accessed.",
    Gauge
);
family!(
    MEMORY_WORKING_SET,
    "container_memory_working_set_bytes",
    "Current working set in bytes.",
    Gauge
);
family!(MEMORY_RSS, "container_memory_rss", "Size of RSS in bytes.", Gauge);
family!(
    MEMORY_CACHE,
    "container_memory_cache",
    "Number of bytes of page cache memory.",
    Gauge
);
family!(
    MEMORY_MAPPED_FILE,
    "container_memory_mapped_file",
    "Size of memory mapped files in bytes.",
    Gauge
);
family!(
    MEMORY_SWAP,
    "container_memory_swap",
    "Container swap usage in bytes.",
    Gauge
);
family!(
    MEMORY_LIMIT,
    "container_spec_memory_limit_bytes",
    "Memory limit for the container in bytes.",
    Gauge
);
family!(
    OOM_EVENTS,
    "container_oom_events_total",
    "Count of out of memory events observed for the container.",
    Counter
);
family!(
    THREADS,
    "container_threads",
    "Number of threads running inside the container.",
    Gauge
);
family!(
    FS_USAGE,
    "container_fs_usage_bytes",
    "Number of bytes that are consumed by the container on this filesystem.",
    Gauge
);
family!(
    NET_RX_BYTES,
    "container_network_receive_bytes_total",
    "Cumulative count of bytes received.",
    Counter,
    "interface"
);
family!(
    NET_RX_PACKETS,
    "container_network_receive_packets_total",
    "Cumulative count of packets received.",
    Counter,
    "interface"
);
family!(
    NET_RX_ERRORS,
    "container_network_receive_errors_total",
    "Cumulative count of errors encountered while receiving.",
    Counter,
    "interface"
);
family!(
    NET_RX_DROPPED,
    "container_network_receive_packets_dropped_total",
    "Cumulative count of packets dropped while receiving.",
    Counter,
    "interface"
);
family!(
    NET_TX_BYTES,
    "container_network_transmit_bytes_total",
    "Cumulative count of bytes transmitted.",
    Counter,
    "interface"
);
family!(
    NET_TX_PACKETS,
    "container_network_transmit_packets_total",
    "Cumulative count of packets transmitted.",
    Counter,
    "interface"
);
family!(
    NET_TX_ERRORS,
    "container_network_transmit_errors_total",
    "Cumulative count of errors encountered while transmitting.",
    Counter,
    "interface"
);
family!(
    NET_TX_DROPPED,
    "container_network_transmit_packets_dropped_total",
    "Cumulative count of packets dropped while transmitting.",
    Counter,
    "interface"
);
family!(
    PSI_CPU_WAITING,
    "container_pressure_cpu_waiting_seconds_total",
    "Total time duration tasks in the container have waited due to CPU congestion.",
    Counter
);
family!(
    PSI_CPU_STALLED,
    "container_pressure_cpu_stalled_seconds_total",
    "Total time duration no tasks in the container could make progress due to CPU congestion.",
    Counter
);
family!(
    PSI_MEMORY_WAITING,
    "container_pressure_memory_waiting_seconds_total",
    "Total time duration tasks in the container have waited due to memory congestion.",
    Counter
);
family!(
    PSI_MEMORY_STALLED,
    "container_pressure_memory_stalled_seconds_total",
    "Total time duration no tasks in the container could make progress due to memory congestion.",
    Counter
);
family!(
    PSI_IO_WAITING,
    "container_pressure_io_waiting_seconds_total",
    "Total time duration tasks in the container have waited due to IO congestion.",
    Counter
);
family!(
    PSI_IO_STALLED,
    "container_pressure_io_stalled_seconds_total",
    "Total time duration no tasks in the container could make progress due to IO congestion.",
    Counter
);

/// Every family Berth serves, in ListMetricDescriptors order.
pub const FAMILIES: &[&Family] = &[
    &CPU_USAGE,
    &CPU_USER,
    &CPU_SYSTEM,
    &CFS_PERIODS,
    &CFS_THROTTLED_PERIODS,
    &CFS_THROTTLED_SECONDS,
    &MEMORY_USAGE,
    &MEMORY_WORKING_SET,
    &MEMORY_RSS,
    &MEMORY_CACHE,
    &MEMORY_MAPPED_FILE,
    &MEMORY_SWAP,
    &MEMORY_LIMIT,
    &OOM_EVENTS,
    &THREADS,
    &FS_USAGE,
    &NET_RX_BYTES,
    &NET_RX_PACKETS,
    &NET_RX_ERRORS,
    &NET_RX_DROPPED,
    &NET_TX_BYTES,
    &NET_TX_PACKETS,
    &NET_TX_ERRORS,
    &NET_TX_DROPPED,
    &PSI_CPU_WAITING,
    &PSI_CPU_STALLED,
    &PSI_MEMORY_WAITING,
    &PSI_MEMORY_STALLED,
    &PSI_IO_WAITING,
    &PSI_IO_STALLED,
];

/// The descriptors ListMetricDescriptors answers.
pub fn descriptors() -> Vec<MetricDescriptor> {
    FAMILIES
        .iter()
        .map(|f| MetricDescriptor {
            name: f.name.into(),
            help: f.help.into(),
            label_keys: BASE_LABELS
                .iter()
                .chain(f.extra_labels)
                .map(|k| k.to_string())
                .collect(),
        })
        .collect()
}

/// Values of [`BASE_LABELS`] for one container or pod.
#[derive(Debug, Clone, Default)]
pub struct BaseLabels {
    /// CRI container name ("" for the pod).
    pub container: String,
    /// Cgroup path.
    pub id: String,
    /// Image ("" for the pod).
    pub image: String,
    /// Container id (sandbox id for the pod).
    pub name: String,
    /// Pod namespace.
    pub namespace: String,
    /// Pod name.
    pub pod: String,
}

/// Collects metrics with one set of base labels and one timestamp.
struct Out<'a> {
    base: [&'a str; 6],
    timestamp_ns: i64,
    metrics: Vec<Metric>,
}

impl Out<'_> {
    fn push(&mut self, f: &Family, extra: &[&str], value: u64) {
        debug_assert_eq!(extra.len(), f.extra_labels.len(), "{}", f.name);
        self.metrics.push(Metric {
            name: f.name.into(),
            timestamp: self.timestamp_ns,
            metric_type: f.kind as i32,
            label_values: self.base.iter().chain(extra).map(|v| v.to_string()).collect(),
            value: Some(berth_proto::cri::UInt64Value { value }),
        });
    }

    fn psi(&mut self, p: Option<Psi>, waiting: &Family, stalled: &Family) {
        if let Some(p) = p {
            self.push(waiting, &[], p.some.total_usec / 1_000_000);
            if let Some(full) = p.full {
                self.push(stalled, &[], full.total_usec / 1_000_000);
            }
        }
    }
}

fn out<'a>(labels: &'a BaseLabels, timestamp_ns: i64) -> Out<'a> {
    Out {
        base: [
            &labels.container,
            &labels.id,
            &labels.image,
            &labels.name,
            &labels.namespace,
            &labels.pod,
        ],
        timestamp_ns,
        metrics: Vec::new(),
    }
}

/// The CPU, memory, thread and pressure series of one cgroup reading.
pub fn cgroup_metrics(labels: &BaseLabels, u: &CgroupUsage) -> Vec<Metric> {
    let mut o = out(labels, u.timestamp_ns);
    let s = &u.sample;
    if let Some(cpu) = s.cpu {
        o.push(&CPU_USAGE, &["total"], cpu.usage_usec / 1_000_000);
        o.push(&CPU_USER, &[], cpu.user_usec / 1_000_000);
        o.push(&CPU_SYSTEM, &[], cpu.system_usec / 1_000_000);
        o.push(&CFS_PERIODS, &[], cpu.nr_periods);
        o.push(&CFS_THROTTLED_PERIODS, &[], cpu.nr_throttled);
        o.push(&CFS_THROTTLED_SECONDS, &[], cpu.throttled_usec / 1_000_000);
    }
    if let Some(m) = &s.memory {
        o.push(&MEMORY_USAGE, &[], m.usage_bytes);
        o.push(&MEMORY_WORKING_SET, &[], m.working_set_bytes());
        o.push(&MEMORY_RSS, &[], m.stat.anon);
        o.push(&MEMORY_CACHE, &[], m.stat.file);
        o.push(&MEMORY_MAPPED_FILE, &[], m.stat.file_mapped);
        if let Some(limit) = m.limit_bytes {
            o.push(&MEMORY_LIMIT, &[], limit);
        }
    }
    if let Some(swap) = s.swap {
        o.push(&MEMORY_SWAP, &[], swap.usage_bytes);
    }
    if let Some(n) = s.oom_kills {
        o.push(&OOM_EVENTS, &[], n);
    }
    if let Some(n) = s.pids {
        o.push(&THREADS, &[], n);
    }
    o.psi(s.cpu_psi, &PSI_CPU_WAITING, &PSI_CPU_STALLED);
    o.psi(
        s.memory.as_ref().and_then(|m| m.psi),
        &PSI_MEMORY_WAITING,
        &PSI_MEMORY_STALLED,
    );
    o.psi(s.io_psi, &PSI_IO_WAITING, &PSI_IO_STALLED);
    o.metrics
}

/// The writable-layer series of a container.
pub fn layer_metrics(labels: &BaseLabels, l: &LayerUsage) -> Vec<Metric> {
    let mut o = out(labels, l.timestamp_ns);
    o.push(&FS_USAGE, &[], l.usage.used_bytes);
    o.metrics
}

/// The per-interface series of a pod.
pub fn network_metrics(labels: &BaseLabels, n: &NetworkUsage) -> Vec<Metric> {
    let mut o = out(labels, n.timestamp_ns);
    for d in &n.interfaces {
        let i = [d.name.as_str()];
        o.push(&NET_RX_BYTES, &i, d.rx_bytes);
        o.push(&NET_RX_PACKETS, &i, d.rx_packets);
        o.push(&NET_RX_ERRORS, &i, d.rx_errors);
        o.push(&NET_RX_DROPPED, &i, d.rx_dropped);
        o.push(&NET_TX_BYTES, &i, d.tx_bytes);
        o.push(&NET_TX_PACKETS, &i, d.tx_packets);
        o.push(&NET_TX_ERRORS, &i, d.tx_errors);
        o.push(&NET_TX_DROPPED, &i, d.tx_dropped);
    }
    o.metrics
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use super::*;
    use crate::stats::cgroup::MemorySample;
    use crate::stats::parse::{CpuStat, MemoryStat, NetDev, PsiLine};
    use crate::stats::{CgroupSample, TreeUsage};

    fn labels() -> BaseLabels {
        BaseLabels {
            container: "app".into(),
            id: "/berth/pod/c1".into(),
            image: "busybox".into(),
            name: "c1".into(),
            namespace: "default".into(),
            pod: "web".into(),
        }
    }

    fn usage() -> CgroupUsage {
        let psi = Psi {
            some: PsiLine {
                total_usec: 2_500_000,
                ..Default::default()
            },
            full: Some(PsiLine {
                total_usec: 1_000_000,
                ..Default::default()
            }),
        };
        CgroupUsage {
            timestamp_ns: 99,
            sample: CgroupSample {
                cpu: Some(CpuStat {
                    usage_usec: 7_900_000,
                    ..Default::default()
                }),
                cpu_psi: Some(Psi { full: None, ..psi }),
                memory: Some(MemorySample {
                    usage_bytes: 1000,
                    limit_bytes: Some(4096),
                    stat: MemoryStat {
                        anon: 600,
                        inactive_file: 300,
                        ..Default::default()
                    },
                    psi: Some(psi),
                }),
                swap: None,
                io_psi: Some(psi),
                pids: Some(4),
                oom_kills: Some(0),
            },
            nano_cores: None,
        }
    }

    #[test]
    fn every_metric_matches_its_descriptor() {
        let descs: HashMap<String, usize> = descriptors()
            .into_iter()
            .map(|d| (d.name, d.label_keys.len()))
            .collect();
        assert_eq!(descs.len(), FAMILIES.len(), "names are unique");
        for required in [
            "container_cpu_usage_seconds_total",
            "container_memory_working_set_bytes",
            "container_memory_rss",
            "container_network_receive_bytes_total",
            "container_network_transmit_bytes_total",
            "container_fs_usage_bytes",
            "container_pressure_memory_stalled_seconds_total",
        ] {
            assert!(descs.contains_key(required), "{required}");
        }
        let l = labels();
        let mut all = cgroup_metrics(&l, &usage());
        all.extend(layer_metrics(
            &l,
            &LayerUsage {
                timestamp_ns: 5,
                usage: TreeUsage {
                    used_bytes: 10,
                    inodes_used: 2,
                },
            },
        ));
        all.extend(network_metrics(
            &l,
            &NetworkUsage {
                timestamp_ns: 6,
                interfaces: vec![NetDev {
                    name: "eth0".into(),
                    rx_bytes: 11,
                    ..Default::default()
                }],
            },
        ));
        let mut seen = HashSet::new();
        for m in &all {
            // kubelet builds a Prometheus metric from the descriptor's keys
            // and these values: a count mismatch would fail its scrape.
            assert_eq!(Some(&m.label_values.len()), descs.get(&m.name), "{m:?}");
            assert!(
                seen.insert((m.name.clone(), m.label_values.clone())),
                "duplicate {m:?}"
            );
        }
        let value = |name: &str| all.iter().find(|m| m.name == name).unwrap().value.unwrap().value;
        assert_eq!(value("container_cpu_usage_seconds_total"), 7);
        assert_eq!(value("container_memory_working_set_bytes"), 700);
        assert_eq!(value("container_memory_rss"), 600);
        assert_eq!(value("container_spec_memory_limit_bytes"), 4096);
        assert_eq!(value("container_pressure_memory_waiting_seconds_total"), 2);
        assert_eq!(value("container_pressure_io_stalled_seconds_total"), 1);
        assert_eq!(value("container_network_receive_bytes_total"), 11);
        assert_eq!(value("container_fs_usage_bytes"), 10);
        assert!(
            !all.iter()
                .any(|m| m.name == "container_pressure_cpu_stalled_seconds_total"),
            "no `full` line, no stalled series"
        );
        let cpu = all
            .iter()
            .find(|m| m.name == "container_cpu_usage_seconds_total")
            .unwrap();
        assert_eq!(
            cpu.label_values,
            ["app", "/berth/pod/c1", "busybox", "c1", "default", "web", "total"]
        );
        assert_eq!(cpu.metric_type, MetricType::Counter as i32);
        assert_eq!(cpu.timestamp, 99);
    }
}
