//! berthd configuration: an optional TOML file and its drop-ins,
//! overridden by flags (see [`layers`]).

pub mod cgroup_driver;
pub mod default_file;
pub mod defaults;
pub mod dump;
pub mod image_limits;
pub mod layers;
pub mod registry;
pub mod reload;
pub mod secret;
pub mod supplemental_groups;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use self::cgroup_driver::CgroupDriver;
use self::image_limits::Limits;
use self::registry::{Hosts, Timeouts};
use self::supplemental_groups::Enforcement;
use crate::error::{Error, Result};

/// Where berthd looks for its config file when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/berth/config.toml";

/// The cgroup parent for pods whose `cgroup_parent` is empty (cgroupfs driver).
pub const DEFAULT_CGROUP_PARENT: &str = "/berth";

/// Every setting berthd has, with node-standard defaults.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Persistent state: images, snapshots, container and sandbox records.
    pub root: PathBuf,
    /// Runtime state that must not survive a reboot: sockets, namespace pins.
    pub state: PathBuf,
    /// The CRI socket kubelet and crictl connect to.
    pub socket: PathBuf,
    /// `tracing` filter, e.g. `info` or `berth_runtime=debug`.
    pub log_level: String,
    /// Log format: `text` or `json`.
    pub log_format: String,
    /// The `berth-shim` binary; empty means "next to berthd, then $PATH".
    pub shim_path: PathBuf,
    /// Where cgroup v2 is mounted.
    pub cgroup_root: PathBuf,
    /// Pod cgroup parent used when a sandbox request leaves it empty.
    pub default_cgroup_parent: String,
    /// Node-wide supplementalGroupsPolicy: `off` (honour each container's
    /// request), `upgrade` (run Merge as Strict) or `reject` (refuse Merge).
    pub supplemental_groups_enforcement: Enforcement,
    /// How long a memory-limit decrease may wait for the kernel to reclaim
    /// before it is refused (milliseconds).
    pub memory_decrease_wait_ms: u64,
    /// How kubelet names pod cgroups: `cgroupfs` (paths) or `systemd` (slices).
    pub cgroup_driver: CgroupDriver,
    /// CNI network configuration directory.
    pub cni_conf_dir: PathBuf,
    /// CNI plugin directories, searched in order.
    pub cni_bin_dirs: Vec<PathBuf>,
    /// Resource limits every container process starts with (CRI carries
    /// none); empty means the limits berthd itself runs with.
    pub container_rlimits: Vec<Rlimit>,
    /// Per-registry settings: `[registry."<host>"]` with `mirrors`,
    /// `plain_http`, `ca_file`, `skip_verify`.
    pub registry: Hosts,
    /// `[image_limits]`: bounds on what one image pull may unpack.
    pub image_limits: Limits,
    /// `[registry_timeouts]`: connect, response-header and idle timeouts.
    pub registry_timeouts: Timeouts,
    /// Size of each pod's /dev/shm tmpfs (bytes).
    pub pod_shm_size_bytes: u64,
    /// `ip:port` of the observability listener (`/metrics`, `/healthz`,
    /// `/readyz`, `/statusz`, `/flagz`); empty: off. Plain HTTP, so keep it
    /// on loopback (e.g. `127.0.0.1:9349`) unless the network is trusted.
    pub http_address: String,
    /// Where the streaming server (exec, attach, port-forward URLs)
    /// listens; port 0 lets the kernel pick one.
    pub stream_address: std::net::SocketAddr,
    /// How long a streaming URL's token stays valid (milliseconds).
    pub stream_token_ttl_ms: u64,
    /// An exec, attach or port-forward connection with nothing moving
    /// either way this long is closed (kubelet's
    /// `streamingConnectionIdleTimeout`, 4 h by default).
    pub stream_idle_timeout_ms: u64,
    /// CDI spec directories; a later one's device replaces an earlier's.
    pub cdi_spec_dirs: Vec<PathBuf>,
    /// kubelet's root dir (`--root-dir`): the secret, configMap, projected
    /// and downwardAPI volumes, etc-hosts and termination-log files it
    /// fills under `pods/<uid>/` are idmapped for a user-namespaced pod.
    pub kubelet_root: PathBuf,
    /// The `criu` binary CheckpointContainer runs; empty: `criu` on `$PATH`
    /// (then /usr/sbin, /sbin). Without one, checkpoints are refused.
    pub criu_path: PathBuf,
}

/// One `setrlimit(2)` limit, as the OCI runtime spec writes it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Rlimit {
    /// `RLIMIT_NOFILE`, `RLIMIT_NPROC`, ...
    #[serde(rename = "type")]
    pub kind: String,
    /// Soft limit.
    pub soft: u64,
    /// Hard limit (>= soft).
    pub hard: u64,
}

/// The limits setrlimit(2) knows on Linux.
const RLIMIT_NAMES: &[&str] = &[
    "RLIMIT_AS",
    "RLIMIT_CORE",
    "RLIMIT_CPU",
    "RLIMIT_DATA",
    "RLIMIT_FSIZE",
    "RLIMIT_LOCKS",
    "RLIMIT_MEMLOCK",
    "RLIMIT_MSGQUEUE",
    "RLIMIT_NICE",
    "RLIMIT_NOFILE",
    "RLIMIT_NPROC",
    "RLIMIT_RSS",
    "RLIMIT_RTPRIO",
    "RLIMIT_RTTIME",
    "RLIMIT_SIGPENDING",
    "RLIMIT_STACK",
];

impl Default for Config {
    fn default() -> Self {
        Config {
            root: "/var/lib/berth".into(),
            state: "/run/berth".into(),
            socket: "/run/berth/berth.sock".into(),
            log_level: "info".into(),
            log_format: "text".into(),
            shim_path: PathBuf::new(),
            cgroup_root: "/sys/fs/cgroup".into(),
            default_cgroup_parent: DEFAULT_CGROUP_PARENT.into(),
            cgroup_driver: Default::default(),
            memory_decrease_wait_ms: defaults::DEFAULT_RECLAIM_WAIT.as_millis() as u64,
            supplemental_groups_enforcement: Default::default(),
            cni_conf_dir: "/etc/cni/net.d".into(),
            cni_bin_dirs: vec!["/opt/cni/bin".into(), "/usr/lib/cni".into()],
            container_rlimits: Vec::new(),
            registry: Default::default(),
            image_limits: Default::default(),
            registry_timeouts: Default::default(),
            pod_shm_size_bytes: defaults::DEFAULT_SHM_SIZE_BYTES,
            http_address: String::new(),
            stream_address: std::net::SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, 0)),
            stream_token_ttl_ms: defaults::DEFAULT_STREAM_TOKEN_TTL.as_millis() as u64,
            stream_idle_timeout_ms: berth_spdy::session::DEFAULT_IDLE_TIMEOUT.as_millis() as u64,
            cdi_spec_dirs: vec!["/etc/cdi".into(), "/var/run/cdi".into()],
            kubelet_root: "/var/lib/kubelet".into(),
            criu_path: PathBuf::new(),
        }
    }
}

impl Config {
    /// Parses one config text alone (berthd itself reads files and
    /// drop-ins through [`layers::Sources`]).
    #[cfg(test)]
    pub fn from_toml(text: &str) -> Result<Self> {
        let cfg: Config = toml::from_str(text).map_err(|e| Error::InvalidArgument(format!("config: {e}")))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks values that TOML types alone cannot. Checks that need a
    /// manager's logic (a registry's CA file parses, its credentials decode)
    /// are run by the loader ([`layers::Sources::check`]), since config
    /// imports nothing of the managers.
    pub fn validate(&self) -> Result<()> {
        for (name, p) in [
            ("root", &self.root),
            ("state", &self.state),
            ("socket", &self.socket),
            ("kubelet_root", &self.kubelet_root),
        ] {
            if !p.is_absolute() {
                return Err(Error::InvalidArgument(format!(
                    "config {name} must be an absolute path, got {}",
                    p.display()
                )));
            }
        }
        // sun_path holds 107 bytes plus NUL; shim sockets live under state.
        let longest = self.shim_socket(&"f".repeat(64));
        if longest.as_os_str().len() > 107 || self.socket.as_os_str().len() > 107 {
            return Err(Error::InvalidArgument(format!(
                "config state {} (or socket) is too long: unix socket paths such as {} must fit in 107 bytes",
                self.state.display(),
                longest.display()
            )));
        }
        if !self.default_cgroup_parent.starts_with('/') {
            return Err(Error::InvalidArgument(format!(
                "config default_cgroup_parent must start with '/', got {:?}",
                self.default_cgroup_parent
            )));
        }
        // tmpfs reads size=0 as "no limit": a pod could fill the node's RAM.
        if self.pod_shm_size_bytes == 0 {
            return Err(Error::InvalidArgument(
                "config pod_shm_size_bytes must be greater than 0".into(),
            ));
        }
        self.image_limits.validate()?;
        self.registry_timeouts.validate()?;
        let mut seen = std::collections::HashSet::new();
        for r in &self.container_rlimits {
            if !RLIMIT_NAMES.contains(&r.kind.as_str()) {
                return Err(Error::InvalidArgument(format!(
                    "config container_rlimits: unknown type {:?} (one of {})",
                    r.kind,
                    RLIMIT_NAMES.join(", ")
                )));
            }
            if r.soft > r.hard || !seen.insert(r.kind.as_str()) {
                return Err(Error::InvalidArgument(format!(
                    "config container_rlimits: {} needs soft <= hard and may appear once",
                    r.kind
                )));
            }
        }
        if !self.http_address.is_empty() && self.http_address.parse::<std::net::SocketAddr>().is_err() {
            return Err(Error::InvalidArgument(format!(
                "config http_address must be ip:port (e.g. 127.0.0.1:9349) or empty, got {:?}",
                self.http_address
            )));
        }
        // The URLs handed to clients name this address, so it must be one
        // they can dial.
        if self.stream_address.ip().is_unspecified() {
            return Err(Error::InvalidArgument(format!(
                "config stream_address {} is unspecified: give the address clients reach (e.g. the node's IP)",
                self.stream_address
            )));
        }
        if self.stream_token_ttl_ms == 0 {
            return Err(Error::InvalidArgument(
                "config stream_token_ttl_ms must be greater than 0".into(),
            ));
        }
        // 0 would mean "never", which leaves a silent peer's session (and
        // its exec) open forever.
        if self.stream_idle_timeout_ms == 0 {
            return Err(Error::InvalidArgument(
                "config stream_idle_timeout_ms must be greater than 0".into(),
            ));
        }
        if !matches!(self.log_format.as_str(), "text" | "json") {
            return Err(Error::InvalidArgument(format!(
                "config log_format must be \"text\" or \"json\", got {:?}",
                self.log_format
            )));
        }
        Ok(())
    }

    /// The unix socket of a sandbox's shim: short (`<state>/s/<16 hex>.sock`)
    /// because sun_path is 108 bytes and sandbox IDs alone are 64; 64 random
    /// bits keep names unique among a node's pods.
    pub fn shim_socket(&self, sandbox_id: &str) -> PathBuf {
        let short = &sandbox_id[..sandbox_id.len().min(16)];
        self.state.join("s").join(format!("{short}.sock"))
    }

    /// [`Config::memory_decrease_wait_ms`] as a duration.
    pub fn memory_decrease_wait(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.memory_decrease_wait_ms)
    }

    /// The shim binary to spawn.
    pub fn resolve_shim(&self) -> PathBuf {
        if !self.shim_path.as_os_str().is_empty() {
            return self.shim_path.clone();
        }
        if let Ok(exe) = std::env::current_exe() {
            let beside = exe.with_file_name("berth-shim");
            if beside.exists() {
                return beside;
            }
        }
        PathBuf::from("berth-shim")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shim_sockets_fit_in_sun_path() {
        let d = Config::default();
        assert_eq!(
            d.shim_socket(&"ab".repeat(32)),
            PathBuf::from("/run/berth/s/abababababababab.sock")
        );
        d.validate().unwrap();
        let long = Config {
            state: PathBuf::from(format!("/{}", "x".repeat(90))),
            ..Config::default()
        };
        let e = long.validate().unwrap_err().to_string();
        assert!(e.contains("too long"), "{e}");
    }

    #[test]
    fn empty_file_is_all_defaults() {
        assert_eq!(Config::from_toml("").unwrap(), Config::default());
        let d = Config::default();
        assert_eq!(d.socket, PathBuf::from("/run/berth/berth.sock"));
        assert_eq!(d.root, PathBuf::from("/var/lib/berth"));
    }

    #[test]
    fn overrides_and_rejects_unknown_keys() {
        let c = Config::from_toml("root = \"/data/berth\"\nlog_level = \"debug\"\n").unwrap();
        assert_eq!(c.root, PathBuf::from("/data/berth"));
        assert_eq!(c.log_level, "debug");
        assert_eq!(c.state, PathBuf::from("/run/berth"));
        let err = Config::from_toml("rooot = \"/x\"").unwrap_err().to_string();
        assert!(err.contains("rooot"), "{err}");
    }

    #[test]
    fn rejects_bad_values() {
        assert!(Config::from_toml("root = \"relative\"").is_err());
        assert!(Config::from_toml("default_cgroup_parent = \"kubepods\"").is_err());
        assert!(Config::from_toml("log_format = \"xml\"").is_err());
        assert!(Config::from_toml("stream_idle_timeout_ms = 0").is_err());
        assert_eq!(Config::default().stream_idle_timeout_ms, 4 * 3600 * 1000);
        assert_eq!(
            Config::from_toml("stream_idle_timeout_ms = 600000")
                .unwrap()
                .stream_idle_timeout_ms,
            600_000
        );
        let rl = |t: &str, soft: u64, hard: u64| {
            format!("[[container_rlimits]]\ntype = \"{t}\"\nsoft = {soft}\nhard = {hard}\n")
        };
        let ok = Config::from_toml(&rl("RLIMIT_NOFILE", 4096, 8192)).unwrap();
        assert_eq!(
            ok.container_rlimits,
            vec![Rlimit {
                kind: "RLIMIT_NOFILE".into(),
                soft: 4096,
                hard: 8192
            }]
        );
        assert!(Config::from_toml(&rl("RLIMIT_FILES", 1, 1)).is_err());
        assert!(Config::from_toml(&rl("RLIMIT_NOFILE", 9, 1)).is_err());
        let twice = rl("RLIMIT_NOFILE", 1, 1) + &rl("RLIMIT_NOFILE", 2, 2);
        assert!(Config::from_toml(&twice).is_err());
        assert!(Config::from_toml("pod_shm_size_bytes = 0").is_err());
        assert!(Config::from_toml("http_address = \"localhost\"").is_err());
        assert_eq!(
            Config::from_toml("http_address = \"127.0.0.1:9349\"")
                .unwrap()
                .http_address,
            "127.0.0.1:9349"
        );
        assert_eq!(Config::default().http_address, "", "off unless configured");
        assert!(Config::from_toml("stream_address = \"0.0.0.0:10010\"").is_err());
        assert!(Config::from_toml("stream_address = \"localhost\"").is_err());
        assert_eq!(
            Config::from_toml("stream_address = \"10.0.0.5:10010\"")
                .unwrap()
                .stream_address,
            "10.0.0.5:10010".parse().unwrap()
        );
        assert_eq!(Config::default().stream_address.to_string(), "127.0.0.1:0");
        assert_eq!(
            Config::from_toml("pod_shm_size_bytes = 134217728")
                .unwrap()
                .pod_shm_size_bytes,
            128 << 20
        );
    }
}
