//! Usage readings -> CRI stats messages, in one place for the four stats
//! RPCs, plus the gathering of a pod with its containers that
//! PodSandboxStats, ListPodSandboxStats and ListPodSandboxMetrics share.
//!
//! A value the kernel did not give is left unset (kubelet treats a missing
//! UInt64Value as unknown), never reported as 0.

use berth_proto::cri;

use super::{convert, Cri};
use crate::container::ContainerRecord;
use crate::error::Result;
use crate::sandbox::{Sandbox, SandboxRecord};
use crate::stats::{self, CgroupUsage, ContainerTarget, ContainerUsage, PodTarget, PodUsage, Psi};

fn v(value: u64) -> Option<cri::UInt64Value> {
    Some(cri::UInt64Value { value })
}

/// The pod's default interface (the one CNI attaches).
pub const DEFAULT_INTERFACE: &str = "eth0";

fn psi(p: Option<Psi>) -> Option<cri::PsiStats> {
    // The kernel counts stall time in microseconds; the CRI in nanoseconds.
    let line = |l: stats::parse::PsiLine| cri::PsiData {
        total: l.total_usec * 1000,
        avg10: l.avg10,
        avg60: l.avg60,
        avg300: l.avg300,
    };
    p.map(|p| cri::PsiStats {
        some: Some(line(p.some)),
        full: p.full.map(line),
    })
}

fn cpu(u: &CgroupUsage) -> Option<cri::CpuUsage> {
    let c = u.sample.cpu?;
    Some(cri::CpuUsage {
        timestamp: u.timestamp_ns,
        usage_core_nano_seconds: v(c.usage_usec * 1000),
        usage_nano_cores: u.nano_cores.and_then(v),
        psi: psi(u.sample.cpu_psi),
    })
}

fn memory(u: &CgroupUsage) -> Option<cri::MemoryUsage> {
    let m = u.sample.memory.as_ref()?;
    Some(cri::MemoryUsage {
        timestamp: u.timestamp_ns,
        working_set_bytes: v(m.working_set_bytes()),
        available_bytes: m.available_bytes().and_then(v),
        usage_bytes: v(m.usage_bytes),
        rss_bytes: v(m.stat.anon),
        page_faults: v(m.stat.pgfault),
        major_page_faults: v(m.stat.pgmajfault),
        psi: psi(m.psi),
    })
}

fn io(u: &CgroupUsage) -> Option<cri::IoUsage> {
    u.sample.io_psi.map(|p| cri::IoUsage {
        timestamp: u.timestamp_ns,
        psi: psi(Some(p)),
    })
}

fn swap(u: &CgroupUsage) -> Option<cri::SwapUsage> {
    u.sample.swap.map(|s| cri::SwapUsage {
        timestamp: u.timestamp_ns,
        swap_available_bytes: s.available_bytes().and_then(v),
        swap_usage_bytes: v(s.usage_bytes),
    })
}

/// ContainerStats of one container.
pub fn container_stats(rec: &ContainerRecord, u: &ContainerUsage, layer_mount: &str) -> cri::ContainerStats {
    let cg = u.cgroup.as_ref();
    cri::ContainerStats {
        attributes: Some(cri::ContainerAttributes {
            id: rec.id.clone(),
            metadata: Some(cri::ContainerMetadata {
                name: rec.name.clone(),
                attempt: rec.attempt,
            }),
            labels: convert::map(&rec.labels),
            annotations: convert::map(&rec.annotations),
        }),
        cpu: cg.and_then(cpu),
        memory: cg.and_then(memory),
        writable_layer: u.layer.map(|l| cri::FilesystemUsage {
            timestamp: l.timestamp_ns,
            fs_id: Some(cri::FilesystemIdentifier {
                mountpoint: layer_mount.to_string(),
            }),
            used_bytes: v(l.usage.used_bytes),
            inodes_used: v(l.usage.inodes_used),
        }),
        swap: cg.and_then(swap),
        io: cg.and_then(io),
    }
}

fn interface(d: &stats::NetDev) -> cri::NetworkInterfaceUsage {
    cri::NetworkInterfaceUsage {
        name: d.name.clone(),
        rx_bytes: v(d.rx_bytes),
        rx_errors: v(d.rx_errors),
        tx_bytes: v(d.tx_bytes),
        tx_errors: v(d.tx_errors),
    }
}

/// PodSandboxStats of one pod, with its containers' stats.
pub fn pod_stats(
    rec: &SandboxRecord,
    u: &PodUsage,
    containers: Vec<cri::ContainerStats>,
) -> cri::PodSandboxStats {
    let cg = u.cgroup.as_ref();
    let network = u.network.as_ref().map(|n| cri::NetworkUsage {
        timestamp: n.timestamp_ns,
        default_interface: n
            .interfaces
            .iter()
            .find(|d| d.name == DEFAULT_INTERFACE)
            .map(interface),
        interfaces: n
            .interfaces
            .iter()
            .filter(|d| d.name != DEFAULT_INTERFACE)
            .map(interface)
            .collect(),
    });
    cri::PodSandboxStats {
        attributes: Some(cri::PodSandboxAttributes {
            id: rec.id.clone(),
            metadata: Some(cri::PodSandboxMetadata {
                name: rec.name.clone(),
                uid: rec.uid.clone(),
                namespace: rec.namespace.clone(),
                attempt: rec.attempt,
            }),
            labels: convert::map(&rec.labels),
            annotations: convert::map(&rec.annotations),
        }),
        linux: Some(cri::LinuxPodSandboxStats {
            cpu: cg.and_then(cpu),
            memory: cg.and_then(memory),
            network,
            process: cg.and_then(|c| {
                c.sample.pids.map(|n| cri::ProcessUsage {
                    timestamp: c.timestamp_ns,
                    process_count: v(n),
                })
            }),
            containers,
            io: cg.and_then(io),
        }),
        windows: None,
    }
}

/// A pod and its containers, read together.
pub struct PodReading {
    /// The sandbox record.
    pub record: SandboxRecord,
    /// The pod's own usage.
    pub usage: PodUsage,
    /// Each container with its usage.
    pub containers: Vec<(ContainerRecord, ContainerUsage)>,
}

/// Reads `pods` with all their containers on the blocking pool.
pub async fn read_pods(cri: &Cri, pods: Vec<std::sync::Arc<Sandbox>>) -> Result<Vec<PodReading>> {
    let cgroups = cri.sandboxes.cgroups();
    let work: Vec<_> = pods
        .iter()
        .map(|sb| {
            let record = sb.record();
            let ctrs: Vec<ContainerRecord> = cri
                .containers
                .in_sandbox(&record.id)
                .iter()
                .map(|c| c.record())
                .collect();
            let target = PodTarget::of(sb, &ctrs, cgroups);
            let ctr_targets: Vec<_> = ctrs.iter().map(|c| ContainerTarget::of(c, cgroups)).collect();
            (record, target, ctrs, ctr_targets)
        })
        .collect();
    let stats = cri.stats.clone();
    crate::blocking::run("stats reader", move || {
        let usages = stats::read_all(&work, |(_, target, _, ctr_targets)| {
            (
                stats.pod(target),
                ctr_targets.iter().map(|t| stats.container(t)).collect::<Vec<_>>(),
            )
        });
        work.into_iter()
            .zip(usages)
            .map(|((record, _, ctrs, _), (usage, ctr_usages))| PodReading {
                record,
                usage,
                containers: ctrs.into_iter().zip(ctr_usages).collect(),
            })
            .collect()
    })
    .await
}

/// The mountpoint writable layers live on (reported as their fs id).
pub fn layer_mount(cri: &Cri) -> String {
    cri.cfg.root.join("containers").to_string_lossy().into_owned()
}
