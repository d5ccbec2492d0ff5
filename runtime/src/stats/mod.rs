//! Resource usage of containers and pods, read straight from the kernel:
//! cgroup v2 files for CPU, memory, swap, pids and pressure (PSI), the
//! pod's `/proc/<pid>/net/dev` for network, and a background walk of each
//! writable layer.
//!
//! The manager knows nothing of records or gRPC: callers describe what to
//! read as [`ContainerTarget`]s and [`PodTarget`]s (`targets.rs` builds them
//! from records), so every part runs in unit tests against a temp dir laid
//! out as a cgroup tree and a fake `/proc`. Reads are synchronous file reads;
//! the CRI handlers run them on the blocking pool.

mod cgroup;
pub mod du;
pub mod metrics;
mod network;
pub mod parse;
mod rate;
pub mod sampler;
pub mod targets;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::Mutex;

pub use self::cgroup::CgroupSample;
pub use self::du::TreeUsage;
pub use self::parse::{NetDev, Psi};
pub use self::targets::{ContainerTarget, PodTarget};

/// Where time comes from: wall time stamps the CRI answers, monotonic time
/// measures rate windows (a wall-clock step must not fake a CPU spike).
pub trait Clock: Send + Sync {
    /// Unix time, nanoseconds.
    fn wall_ns(&self) -> i64;
    /// A monotonic reading, nanoseconds.
    fn mono_ns(&self) -> u64;
}

/// The system's clocks.
#[derive(Debug)]
pub struct SystemClock(std::time::Instant);

impl Default for SystemClock {
    fn default() -> Self {
        SystemClock(std::time::Instant::now())
    }
}

impl Clock for SystemClock {
    fn wall_ns(&self) -> i64 {
        crate::store::now_ns()
    }
    fn mono_ns(&self) -> u64 {
        self.0.elapsed().as_nanos() as u64
    }
}

/// A cgroup reading with its CPU rate.
#[derive(Debug, Clone, PartialEq)]
pub struct CgroupUsage {
    /// When it was read (unix ns).
    pub timestamp_ns: i64,
    /// The files' values.
    pub sample: CgroupSample,
    /// CPU rate in nanocores since the previous reading; None on the first.
    pub nano_cores: Option<u64>,
}

/// A cached writable-layer measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerUsage {
    /// When the walk finished (unix ns).
    pub timestamp_ns: i64,
    /// Bytes and inodes.
    pub usage: TreeUsage,
}

/// What a container uses.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerUsage {
    /// Its cgroup; None once it stopped (absent, never an error).
    pub cgroup: Option<CgroupUsage>,
    /// Its writable layer as last walked; None until the first walk.
    pub layer: Option<LayerUsage>,
}

/// A pod's network interfaces at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkUsage {
    /// When they were read (unix ns).
    pub timestamp_ns: i64,
    /// Every interface but loopback.
    pub interfaces: Vec<NetDev>,
}

/// What a pod uses as a whole.
#[derive(Debug, Clone, PartialEq)]
pub struct PodUsage {
    /// The pod cgroup; None when the pod is not ready.
    pub cgroup: Option<CgroupUsage>,
    /// Its network namespace; None for host-network or stopped pods.
    pub network: Option<NetworkUsage>,
}

/// Reads usage and keeps the state rates and layer sizes need.
pub struct StatsManager {
    proc_root: PathBuf,
    clock: Arc<dyn Clock>,
    rates: rate::RateCache,
    layers: Mutex<HashMap<String, LayerUsage>>,
    /// Wakes the sampler early when an RPC met a layer never walked.
    layer_wanted: tokio::sync::Notify,
}

impl StatsManager {
    /// A manager reading processes below `proc_root` (`/proc`).
    pub fn new(proc_root: impl Into<PathBuf>) -> Self {
        Self::with_clock(proc_root, Arc::new(SystemClock::default()))
    }

    /// Like [`StatsManager::new`] with other clocks (tests step time).
    pub fn with_clock(proc_root: impl Into<PathBuf>, clock: Arc<dyn Clock>) -> Self {
        StatsManager {
            proc_root: proc_root.into(),
            clock,
            rates: rate::RateCache::default(),
            layers: Mutex::new(HashMap::new()),
            layer_wanted: tokio::sync::Notify::new(),
        }
    }

    fn cgroup(&self, key: &str, dir: &std::path::Path) -> Option<CgroupUsage> {
        let sample = cgroup::sample(dir)?;
        let timestamp_ns = self.clock.wall_ns();
        let nano_cores = sample
            .cpu
            .and_then(|c| self.rates.observe(key, self.clock.mono_ns(), c.usage_usec * 1000));
        Some(CgroupUsage {
            timestamp_ns,
            sample,
            nano_cores,
        })
    }

    /// A container's usage now (its layer as last walked).
    pub fn container(&self, t: &ContainerTarget) -> ContainerUsage {
        let layer = self.layers.lock().get(&t.id).copied();
        if layer.is_none() {
            self.layer_wanted.notify_one();
        }
        ContainerUsage {
            cgroup: t
                .live
                .then(|| self.cgroup(&container_key(&t.id), &t.cgroup_dir))
                .flatten(),
            layer,
        }
    }

    /// A pod's own usage now (the pod cgroup and its network).
    pub fn pod(&self, t: &PodTarget) -> PodUsage {
        if !t.ready {
            return PodUsage {
                cgroup: None,
                network: None,
            };
        }
        let network = t.netns_pin.as_ref().and_then(|pin| {
            network::pod_interfaces(&self.proc_root, pin, &t.pids).map(|interfaces| NetworkUsage {
                timestamp_ns: self.clock.wall_ns(),
                interfaces,
            })
        });
        PodUsage {
            cgroup: self.cgroup(&pod_key(&t.id), &t.cgroup_dir),
            network,
        }
    }

    /// One housekeeping round: reads every live cgroup (so a rate exists
    /// before kubelet's next call), walks every writable layer, and forgets
    /// containers and pods that are gone.
    pub fn sample_all(&self, containers: &[ContainerTarget], pods: &[PodTarget]) {
        for c in containers.iter().filter(|c| c.live) {
            self.cgroup(&container_key(&c.id), &c.cgroup_dir);
        }
        for p in pods.iter().filter(|p| p.ready) {
            self.cgroup(&pod_key(&p.id), &p.cgroup_dir);
        }
        // Walk without the lock; an RPC meanwhile sees the previous value.
        let walked: Vec<(String, LayerUsage)> = containers
            .iter()
            .filter_map(|c| {
                let usage = du::measure(&c.upper_dir)?;
                Some((
                    c.id.clone(),
                    LayerUsage {
                        timestamp_ns: self.clock.wall_ns(),
                        usage,
                    },
                ))
            })
            .collect();
        let keep: HashSet<String> = containers
            .iter()
            .map(|c| container_key(&c.id))
            .chain(pods.iter().map(|p| pod_key(&p.id)))
            .collect();
        self.rates.retain(|k| keep.contains(k));
        let mut layers = self.layers.lock();
        layers.retain(|id, _| keep.contains(&container_key(id)));
        layers.extend(walked);
    }

    /// Resolves when an RPC asked for a layer that was never walked.
    pub async fn layer_wanted(&self) {
        self.layer_wanted.notified().await
    }
}

fn container_key(id: &str) -> String {
    format!("c/{id}")
}

fn pod_key(id: &str) -> String {
    format!("p/{id}")
}

/// Least targets a reader thread of [`read_all`] takes.
const PER_THREAD: usize = 8;

/// Most reader threads [`read_all`] uses for one call.
const MAX_THREADS: usize = 4;

/// `f` of every item, in order, spread over up to [`MAX_THREADS`] threads
/// (no more than the node's CPUs, at least [`PER_THREAD`] items each): the
/// list calls read ~11 files per cgroup, and the kernel renders them on
/// whichever CPU asks, so a big node answers kubelet in a fraction of the
/// time one thread takes.
pub fn read_all<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = cpus.min(MAX_THREADS).min(items.len().div_ceil(PER_THREAD));
    if threads <= 1 {
        return items.iter().map(f).collect();
    }
    let chunk = items.len().div_ceil(threads);
    let f = &f;
    std::thread::scope(|s| {
        let readers: Vec<_> = items
            .chunks(chunk)
            .map(|c| {
                berth_sys::thread::builder()
                    .spawn_scoped(s, move || c.iter().map(f).collect::<Vec<_>>())
                    .expect("spawn a stats reader thread")
            })
            .collect();
        readers
            .into_iter()
            .flat_map(|r| r.join().expect("stats reader thread panicked"))
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;

    /// Time that moves only when the test says so.
    #[derive(Default)]
    pub struct StepClock(AtomicU64);

    impl StepClock {
        fn advance_s(&self, s: u64) {
            self.0.fetch_add(s * 1_000_000_000, Ordering::SeqCst);
        }
    }

    impl Clock for StepClock {
        fn wall_ns(&self) -> i64 {
            1_700_000_000_000_000_000 + self.0.load(Ordering::SeqCst) as i64
        }
        fn mono_ns(&self) -> u64 {
            self.0.load(Ordering::SeqCst)
        }
    }

    fn target(root: &std::path::Path, id: &str, live: bool) -> ContainerTarget {
        ContainerTarget {
            id: id.into(),
            cgroup_dir: root.join("cg/pod").join(id),
            live,
            upper_dir: root.join("layers").join(id),
        }
    }

    #[test]
    fn sampler_gives_the_first_rpc_a_rate_and_layers_are_cached() {
        let d = tempfile::tempdir().unwrap();
        let clock = Arc::new(StepClock::default());
        let m = StatsManager::with_clock(d.path().join("proc"), clock.clone());
        let t = target(d.path(), "c1", true);
        cgroup::tests::fake_cgroup(&t.cgroup_dir, 1_000_000, 5000, "max");
        std::fs::create_dir_all(&t.upper_dir).unwrap();
        std::fs::write(t.upper_dir.join("f"), vec![1u8; 64 * 1024]).unwrap();

        // Never sampled: no rate, no layer yet (never walked in the RPC).
        let u = m.container(&t);
        assert_eq!(u.cgroup.as_ref().unwrap().nano_cores, None);
        assert_eq!(u.layer, None);

        // The sampler reads 2 s later; the next RPC, 2 s after that, gets
        // the rate since the sampler's reading: 3 s of CPU in 2 s.
        clock.advance_s(2);
        cgroup::tests::fake_cgroup(&t.cgroup_dir, 3_000_000, 5000, "max");
        m.sample_all(std::slice::from_ref(&t), &[]);
        clock.advance_s(2);
        cgroup::tests::fake_cgroup(&t.cgroup_dir, 6_000_000, 5000, "max");
        let u = m.container(&t);
        let cg = u.cgroup.unwrap();
        assert_eq!(cg.nano_cores, Some(1_500_000_000));
        assert_eq!(cg.sample.cpu.unwrap().usage_usec, 6_000_000);
        assert_eq!(cg.timestamp_ns, clock.wall_ns());
        let layer = u.layer.expect("walked by the sampler");
        assert!(layer.usage.used_bytes >= 64 * 1024, "{layer:?}");
        assert_eq!(layer.usage.inodes_used, 2);

        // The layer grows only in the cache's next walk.
        std::fs::write(t.upper_dir.join("g"), vec![1u8; 128 * 1024]).unwrap();
        assert_eq!(m.container(&t).layer, Some(layer));
        m.sample_all(std::slice::from_ref(&t), &[]);
        assert!(m.container(&t).layer.unwrap().usage.used_bytes >= 192 * 1024);

        // A removed container is forgotten.
        m.sample_all(&[], &[]);
        assert_eq!(m.rates.len(), 0);
        assert!(m.layers.lock().is_empty());
    }

    #[test]
    fn read_all_keeps_the_order() {
        let items: Vec<u32> = (0..100).collect();
        assert_eq!(
            read_all(&items, |i| i * 2),
            items.iter().map(|i| i * 2).collect::<Vec<_>>()
        );
        assert_eq!(read_all(&items[..3], |i| *i), vec![0, 1, 2]);
        assert!(read_all(&[] as &[u32], |i| *i).is_empty());
    }

    #[test]
    fn stopped_containers_and_pods_are_absent_not_errors() {
        let d = tempfile::tempdir().unwrap();
        let m = StatsManager::with_clock(d.path().join("proc"), Arc::new(StepClock::default()));
        let t = target(d.path(), "gone", false);
        cgroup::tests::fake_cgroup(&t.cgroup_dir, 1, 1, "max");
        assert_eq!(
            m.container(&t).cgroup,
            None,
            "an exited container reports no cgroup"
        );
        let live_without_cgroup = target(d.path(), "never", true);
        assert_eq!(m.container(&live_without_cgroup).cgroup, None);
        let pod = PodTarget {
            id: "p".into(),
            cgroup_dir: d.path().join("cg/pod"),
            ready: false,
            netns_pin: None,
            pids: vec![],
        };
        assert_eq!(
            m.pod(&pod),
            PodUsage {
                cgroup: None,
                network: None
            }
        );
    }

    #[test]
    fn pod_cgroup_and_network() {
        let d = tempfile::tempdir().unwrap();
        let clock = Arc::new(StepClock::default());
        let proc_root = d.path().join("proc");
        let m = StatsManager::with_clock(&proc_root, clock.clone());
        let pin = d.path().join("ns-net");
        std::fs::write(&pin, "").unwrap();
        network::tests::fake_proc_pid(&proc_root, 42, &pin, 1000, 2000);
        let pod = PodTarget {
            id: "p".into(),
            cgroup_dir: d.path().join("cg/pod"),
            ready: true,
            netns_pin: Some(pin),
            pids: vec![7, 42],
        };
        cgroup::tests::fake_cgroup(&pod.cgroup_dir, 0, 9000, "20000");
        let u = m.pod(&pod);
        let cg = u.cgroup.unwrap();
        assert_eq!(cg.sample.pids, Some(3));
        assert_eq!(cg.sample.memory.unwrap().available_bytes(), Some(20000 - 7500));
        let net = u.network.unwrap();
        assert_eq!(net.interfaces.len(), 1);
        assert_eq!(
            (net.interfaces[0].rx_bytes, net.interfaces[0].tx_bytes),
            (1000, 2000)
        );
        // The pod rate is kept apart from its containers'.
        clock.advance_s(1);
        cgroup::tests::fake_cgroup(&pod.cgroup_dir, 500_000, 9000, "20000");
        assert_eq!(m.pod(&pod).cgroup.unwrap().nano_cores, Some(500_000_000));
    }
}
