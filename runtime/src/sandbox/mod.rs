//! Pod sandboxes: the namespaces and cgroup a pod's containers share.
//!
//! A sandbox's network, IPC and UTS namespaces are created with its shim and
//! pinned by bind mounts under `<state>/sandboxes/<id>/ns/`, so they outlive
//! every container (and the shim itself) until RemovePodSandbox.

mod collect;
mod ids;
mod intent;
mod leases;
mod pin;
mod recover;
pub mod resize;
mod shim_cgroup;
pub mod shim_watch;
pub mod shm;
pub mod sysctl;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::cgroup::CgroupManager;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::events::{Events, Kind};
use crate::net::cni::{self, Attachment, Cni};
use crate::net::files::{self, Dns, PodFiles};
use crate::shim_client::{self, NewNamespaces, Shim};
use crate::store;

/// Ready or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SandboxState {
    /// Namespaces and shim up.
    Ready,
    /// Stopped (or its shim died).
    NotReady,
}

/// Whose PID namespace a pod's containers use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum PidMode {
    /// Each container its own (kubelet's default).
    #[default]
    Container,
    /// One per pod, shared by its containers, with a reaper as PID 1.
    Pod,
    /// The node's.
    Node,
}

/// What RunPodSandbox asks for, already validated by the handler.
#[derive(Debug, Clone, Default)]
pub struct SandboxRequest {
    /// Pod name.
    pub name: String,
    /// Pod UID.
    pub uid: String,
    /// Pod namespace.
    pub namespace: String,
    /// Attempt number.
    pub attempt: u32,
    /// Hostname for the pod's UTS namespace.
    pub hostname: String,
    /// Directory kubelet wants container logs in.
    pub log_directory: String,
    /// CRI `cgroup_parent` (the pod cgroup); empty: the configured default.
    pub cgroup_parent: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    pub annotations: BTreeMap<String, String>,
    /// Runtime handler name.
    pub runtime_handler: String,
    /// Share the host's network namespace.
    pub host_network: bool,
    /// Share the host's IPC namespace.
    pub host_ipc: bool,
    /// PID namespace mode.
    pub pid_mode: PidMode,
    /// Pod resources + overhead for the pod cgroup (empty: leave as is).
    pub pod_limits: crate::cgroup::resources::Limits,
    /// kubelet's DNS config; None: the node's resolv.conf.
    pub dns: Option<Dns>,
    /// Port mappings for the CNI `portMappings` capability.
    pub port_mappings: Vec<PortMapping>,
    /// Pod sysctls (namespaced only).
    pub sysctls: BTreeMap<String, String>,
}

/// One CRI port mapping.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PortMapping {
    /// `tcp`, `udp` or `sctp`.
    pub protocol: String,
    /// Port in the pod.
    pub container_port: i32,
    /// Port on the node.
    pub host_port: i32,
    /// Node address to bind; empty: all.
    pub host_ip: String,
}

/// The pod's CNI attachment, kept so DEL gets the same inputs as ADD (also
/// after a berthd restart).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NetworkRecord {
    /// The config file used.
    pub conf_file: PathBuf,
    /// The final ADD result (DEL's prevResult).
    pub result: serde_json::Value,
    /// Runtime config passed by capability.
    pub capabilities: BTreeMap<String, serde_json::Value>,
    /// Pod IPs, primary first.
    pub ips: Vec<String>,
    /// DEL has succeeded.
    pub torn_down: bool,
}

/// The persisted description of a sandbox.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SandboxRecord {
    /// Sandbox id.
    pub id: String,
    /// Pod name.
    pub name: String,
    /// Pod UID.
    pub uid: String,
    /// Pod namespace.
    pub namespace: String,
    /// Attempt.
    pub attempt: u32,
    /// Hostname.
    pub hostname: String,
    /// Log directory.
    pub log_directory: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    pub annotations: BTreeMap<String, String>,
    /// Runtime handler.
    pub runtime_handler: String,
    /// Unix ns.
    pub created_at: i64,
    /// Ready / NotReady.
    pub state: SandboxState,
    /// Pod cgroup path below the cgroup2 root.
    pub cgroup_path: String,
    /// Cgroup directories berthd created for this pod (removed with it).
    pub cgroup_created: Vec<PathBuf>,
    /// Shim pid.
    pub shim_pid: u32,
    /// Shim socket.
    pub shim_socket: PathBuf,
    /// Pinned namespace files, by kind (`net`, `ipc`, `uts`); absent = host's.
    pub ns_paths: BTreeMap<String, PathBuf>,
    /// PID namespace mode.
    #[serde(default)]
    pub pid_mode: PidMode,
    /// Pod resources from the last UpdatePodSandboxResources.
    #[serde(default)]
    pub resources: Option<crate::cgroup::asked::Asked>,
    /// Pod overhead from the last UpdatePodSandboxResources.
    #[serde(default)]
    pub overhead: Option<crate::cgroup::asked::Asked>,
    /// The CNI attachment; None for host-network pods.
    #[serde(default)]
    pub network: Option<NetworkRecord>,
    /// The pod's /etc/hosts, resolv.conf, hostname.
    #[serde(default)]
    pub files: Option<PodFiles>,
    /// The pod's /dev/shm; None for sandboxes of a berthd that had none
    /// (their containers keep a tmpfs each).
    #[serde(default)]
    pub shm: Option<shm::PodShm>,
}

impl SandboxRecord {
    /// The CNI attachment inputs of this pod.
    fn attachment(&self, capabilities: BTreeMap<String, serde_json::Value>) -> Attachment {
        Attachment {
            container_id: self.id.clone(),
            netns: self.ns_paths.get("net").cloned().unwrap_or_default(),
            ifname: "eth0".into(),
            pod_name: self.name.clone(),
            pod_namespace: self.namespace.clone(),
            pod_uid: self.uid.clone(),
            capabilities,
        }
    }
}

/// A live sandbox.
pub struct Sandbox {
    record: Mutex<SandboxRecord>,
    shim: Mutex<Option<Shim>>,
    /// Serialises pod-level resizes (never held by status calls).
    resize: tokio::sync::Mutex<()>,
    /// Orders the writes of its record and ends them at RemovePodSandbox.
    record_file: store::RecordLock,
}

impl Sandbox {
    fn new(record: SandboxRecord, shim: Option<Shim>) -> Self {
        Sandbox {
            record: Mutex::new(record),
            shim: Mutex::new(shim),
            resize: tokio::sync::Mutex::new(()),
            record_file: store::RecordLock::default(),
        }
    }

    /// A copy of the record.
    pub fn record(&self) -> SandboxRecord {
        self.record.lock().clone()
    }

    /// The shim client, if the shim is up.
    pub fn shim(&self) -> Option<Shim> {
        self.shim.lock().clone()
    }

    /// Ready, and the shim process still exists.
    pub fn is_ready(&self) -> bool {
        let r = self.record.lock();
        r.state == SandboxState::Ready && recover::shim_alive(r.shim_pid, &r.shim_socket)
    }
}

/// Undo steps for a multi-step operation; runs them in reverse unless disarmed.
#[must_use]
pub struct Rollback(Vec<Box<dyn FnOnce() + Send>>);

impl Rollback {
    /// Nothing to undo yet.
    pub fn new() -> Self {
        Rollback(Vec::new())
    }
    /// Registers the undo of a step that just succeeded.
    pub fn push(&mut self, f: impl FnOnce() + Send + 'static) {
        self.0.push(Box::new(f));
    }
    /// Success: keep everything.
    pub fn disarm(mut self) {
        self.0.clear();
    }
}

impl Default for Rollback {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Rollback {
    fn drop(&mut self) {
        while let Some(f) = self.0.pop() {
            f();
        }
    }
}

/// Owns every sandbox.
pub struct SandboxManager {
    cfg: Config,
    cgroups: CgroupManager,
    cni: Arc<Cni>,
    shm_host: Arc<dyn shm::ShmHost>,
    /// Pod CIDR from UpdateRuntimeConfig, for the CNI `ipRanges` capability.
    pod_cidr: Mutex<String>,
    sandboxes: Mutex<HashMap<String, Arc<Sandbox>>>,
    /// Pod names whose RunPodSandbox is under way.
    names: store::names::Reservations,
    /// Where lifecycle events go (GetContainerEvents).
    events: Arc<Events>,
}

impl SandboxManager {
    /// A manager using `cfg`'s directories, `cni` for pod networks and
    /// `shm_host` to mount each pod's /dev/shm.
    pub fn new(cfg: Config, cgroups: CgroupManager, cni: Cni, shm_host: Arc<dyn shm::ShmHost>) -> Self {
        let pod_cidr = load_pod_cidr(&pod_cidr_path(&cfg));
        SandboxManager {
            cfg,
            cgroups,
            cni: Arc::new(cni),
            shm_host,
            pod_cidr: Mutex::new(pod_cidr),
            sandboxes: Mutex::new(HashMap::new()),
            names: Default::default(),
            events: Arc::new(Events::default()),
        }
    }

    /// Reports lifecycle changes to `events` (the node's one events manager).
    pub fn with_events(mut self, events: Arc<Events>) -> Self {
        self.events = events;
        self
    }

    /// Records kubelet's pod CIDR (UpdateRuntimeConfig) for later pods.
    pub fn set_pod_cidr(&self, cidr: &str) -> Result<()> {
        if !cidr.is_empty() {
            let (ip, len) = cidr
                .split_once('/')
                .ok_or_else(|| Error::InvalidArgument(format!("pod CIDR {cidr:?} is not ip/prefix")))?;
            let ok = ip.parse::<std::net::IpAddr>().is_ok() && len.parse::<u8>().is_ok_and(|l| l <= 128);
            if !ok {
                return Err(Error::InvalidArgument(format!(
                    "pod CIDR {cidr:?} is not ip/prefix"
                )));
            }
        }
        let mut current = self.pod_cidr.lock();
        if *current != cidr {
            // Kept on disk: kubelet sends it once, and pods created after a
            // berthd restart must still get their `ipRanges`.
            let rec = PodCidrRecord {
                cidr: cidr.to_string(),
            };
            store::write_record(&pod_cidr_path(&self.cfg), &rec)?;
            *current = rec.cidr;
        }
        Ok(())
    }

    /// Runtime config a pod's CNI plugins may ask for by capability.
    fn capabilities(&self, req: &SandboxRequest) -> BTreeMap<String, serde_json::Value> {
        let mut caps = BTreeMap::new();
        if !req.port_mappings.is_empty() {
            let pm: Vec<_> = req
                .port_mappings
                .iter()
                .filter(|p| p.host_port > 0)
                .map(|p| {
                    let mut m = serde_json::json!({
                        "hostPort": p.host_port, "containerPort": p.container_port, "protocol": p.protocol,
                    });
                    if !p.host_ip.is_empty() {
                        m["hostIP"] = serde_json::json!(p.host_ip);
                    }
                    m
                })
                .collect();
            if !pm.is_empty() {
                caps.insert("portMappings".to_string(), serde_json::Value::Array(pm));
            }
        }
        let bw = |key: &str| req.annotations.get(key).and_then(|v| parse_bandwidth(v));
        let (ingress, egress) = (
            bw("kubernetes.io/ingress-bandwidth"),
            bw("kubernetes.io/egress-bandwidth"),
        );
        if ingress.is_some() || egress.is_some() {
            let mut b = serde_json::Map::new();
            if let Some(r) = ingress {
                b.insert("ingressRate".into(), r.into());
                b.insert("ingressBurst".into(), MAX_BURST_BITS.into());
            }
            if let Some(r) = egress {
                b.insert("egressRate".into(), r.into());
                b.insert("egressBurst".into(), MAX_BURST_BITS.into());
            }
            caps.insert("bandwidth".to_string(), serde_json::Value::Object(b));
        }
        let cidr = self.pod_cidr.lock().clone();
        if !cidr.is_empty() {
            caps.insert("ipRanges".to_string(), serde_json::json!([[{"subnet": cidr}]]));
        }
        caps
    }

    /// Whether a CNI config is present (NetworkReady).
    pub fn network_config(&self) -> Result<Option<cni::NetConfList>> {
        cni::load_conf_dir(&self.cfg.cni_conf_dir)
    }

    /// CNI CHECK of a ready pod's attachment (plugins of CNI ≥ 0.4.0).
    /// None when there is nothing to check (host network, torn down).
    pub async fn check_network(&self, sb: &Sandbox) -> Option<Result<()>> {
        let rec = sb.record();
        let net = rec.network.clone().filter(|n| !n.torn_down)?;
        let list = match cni::parse_conf_file(&net.conf_file) {
            Ok(l) => l,
            Err(e) => return Some(Err(e)),
        };
        let a = rec.attachment(net.capabilities.clone());
        let cni = self.cni.clone();
        Some(
            tokio::task::spawn_blocking(move || cni.check(&list, &a, &net.result))
                .await
                .unwrap_or_else(|e| Err(Error::Internal(format!("CNI CHECK task: {e}")))),
        )
    }

    /// CNI DEL for a pod whose network is still attached; marks it torn down.
    async fn teardown_network(&self, sb: &Sandbox) -> Result<()> {
        let rec = sb.record();
        let Some(net) = rec.network.clone().filter(|n| !n.torn_down) else {
            return Ok(());
        };
        let list = cni::parse_conf_file(&net.conf_file).or_else(|e| {
            // The file may have been replaced since ADD: DEL with the current config.
            tracing::warn!(error = %e, "CNI config used at ADD is gone; using the current one");
            self.network_config()?
                .ok_or_else(|| Error::Network("no CNI config to tear the pod network down with".into()))
        })?;
        let a = rec.attachment(net.capabilities.clone());
        let cni = self.cni.clone();
        let result = net.result.clone();
        tokio::task::spawn_blocking(move || cni.del(&list, &a, Some(&result)))
            .await
            .map_err(|e| Error::Internal(format!("CNI DEL task: {e}")))??;
        crate::crash::point("stop_sandbox.cni_del");
        let rec = {
            let mut r = sb.record.lock();
            if let Some(n) = r.network.as_mut() {
                n.torn_down = true;
            }
            r.clone()
        };
        self.persist(sb)?;
        tracing::info!(sandbox = %rec.id, "pod network torn down");
        Ok(())
    }

    fn record_path(&self, id: &str) -> PathBuf {
        self.cfg.root.join("sandboxes").join(format!("{id}.json"))
    }

    /// Writes the sandbox's current record; a no-op once it was removed
    /// (a concurrent StopPodSandbox cannot bring it back).
    fn persist(&self, sb: &Sandbox) -> Result<()> {
        let id = sb.record.lock().id.clone();
        sb.record_file.write(&self.record_path(&id), || sb.record())
    }

    fn state_dir(&self, id: &str) -> PathBuf {
        self.cfg.state.join("sandboxes").join(id)
    }

    /// Looks a sandbox up by full id or unique prefix.
    pub fn get(&self, id: &str) -> Result<Arc<Sandbox>> {
        store::lookup(&self.sandboxes.lock(), id, "pod sandbox")
    }

    /// Every sandbox.
    pub fn list(&self) -> Vec<Arc<Sandbox>> {
        self.sandboxes.lock().values().cloned().collect()
    }

    /// Creates namespaces, cgroup and shim; nothing is left behind on failure.
    pub async fn run(&self, req: SandboxRequest) -> Result<String> {
        let id = ids::new_id(&ids::key(&self.cfg.root)?)?;
        // Held until the sandbox is in the map (or everything is undone):
        // a concurrent RunPodSandbox of the same pod gets AlreadyExists.
        let _name = self.names.reserve(
            format!("{}\0{}\0{}\0{}", req.namespace, req.name, req.uid, req.attempt),
            &format!(
                "pod sandbox {}/{} (uid {}, attempt {})",
                req.namespace, req.name, req.uid, req.attempt
            ),
            || {
                let m = self.sandboxes.lock();
                m.values().find_map(|s| {
                    let r = s.record();
                    (r.name == req.name
                        && r.namespace == req.namespace
                        && r.uid == req.uid
                        && r.attempt == req.attempt)
                        .then_some(r.id)
                })
            },
        )?;
        {
            let owned: BTreeMap<String, PathBuf> = [
                ("net", !req.host_network),
                ("ipc", !req.host_ipc),
                ("uts", !req.host_network),
            ]
            .into_iter()
            .filter(|(_, own)| *own)
            .map(|(k, _)| (k.to_string(), PathBuf::new()))
            .collect();
            sysctl::validate(&req.sysctls, &owned)?;
        }
        let mut undo = Rollback::new();
        let mut intent = intent::RunIntent {
            id: id.clone(),
            ..Default::default()
        };
        self.write_intent(&intent)?;
        {
            let p = self.intent_path(&id);
            undo.push(move || {
                let _ = store::remove_record(&p);
            });
        }
        crate::crash::point("run_sandbox.intent");
        let state_dir = self.state_dir(&id);
        crate::store::modes::create_dir(&state_dir.join("ns"), crate::store::modes::PRIVATE_DIR)
            .map_err(|e| Error::io("create sandbox state dir", e))?;
        {
            let d = state_dir.clone();
            undo.push(move || {
                let _ = std::fs::remove_dir_all(d);
            });
        }
        let pod_shm = shm::setup(
            &*self.shm_host,
            &state_dir,
            req.host_ipc,
            self.cfg.pod_shm_size_bytes,
        )?;
        {
            let (host, s) = (self.shm_host.clone(), pod_shm.clone());
            undo.push(move || {
                if let Err(e) = shm::teardown(&*host, &s) {
                    tracing::warn!(error = %e, "unmounting the pod's /dev/shm during rollback failed");
                }
            });
        }

        let cgroup_path = crate::cgroup::driver::pod_path(
            self.cfg.cgroup_driver,
            &req.cgroup_parent,
            &id,
            &self.cfg.default_cgroup_parent,
        )?;
        intent.cgroup_path = Some(cgroup_path.clone());
        self.write_intent(&intent)?;
        let created = match self.cgroups.systemd() {
            // A slice kubelet did not make (crictl) is a transient slice;
            // its limits are properties, which systemd re-applies.
            Some(sd) => {
                let slice = crate::cgroup::systemd::slice_of(&cgroup_path);
                let limits = crate::cgroup::systemd::properties::from_pod_limits(&req.pod_limits);
                match sd.start_slice(slice, limits).await? {
                    true => vec![self.cgroups.dir(&cgroup_path)],
                    false => Vec::new(),
                }
            }
            None => self.cgroups.ensure(&cgroup_path)?,
        };
        intent.cgroup_created = created.clone();
        self.write_intent(&intent)?;
        crate::crash::point("run_sandbox.cgroup");
        match self.cgroups.systemd() {
            Some(sd) if !created.is_empty() => {
                let (sd, slice) = (
                    sd.clone(),
                    crate::cgroup::systemd::slice_of(&cgroup_path).to_string(),
                );
                undo.push(move || {
                    tokio::spawn(async move {
                        let _ = sd.stop(&slice).await;
                    });
                });
            }
            Some(_) => {}
            None => {
                let cg = self.cgroups.clone();
                let created = created.clone();
                let leaf = self.cgroups.dir(&cgroup_path);
                undo.push(move || {
                    let _ = cg.remove_created(&created, &leaf);
                });
            }
        }
        if !req.pod_limits.is_empty() && (self.cgroups.systemd().is_none() || created.is_empty()) {
            req.pod_limits.apply(&self.cgroups.dir(&cgroup_path))?;
        }

        let socket = self.cfg.shim_socket(&id);
        if let Some(dir) = socket.parent() {
            crate::store::modes::create_dir(dir, crate::store::modes::PRIVATE_DIR)
                .map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
        }
        {
            let s = socket.clone();
            undo.push(move || {
                let _ = std::fs::remove_file(s);
            });
        }
        let ns = NewNamespaces {
            net: !req.host_network,
            ipc: !req.host_ipc,
            uts: !req.host_network,
            pid: req.pid_mode == PidMode::Pod,
        };
        let hostname = (!req.hostname.is_empty()).then_some(req.hostname.as_str());
        let (shim_cgroup, shim_holder) = match self.cgroups.systemd() {
            Some(sd) => {
                let (procs, holder) =
                    shim_cgroup::open_scope_procs(sd, &self.cgroups, &cgroup_path, &id).await?;
                let (sd, unit) = (sd.clone(), crate::cgroup::systemd::shim_scope(&id));
                undo.push(move || {
                    tokio::spawn(async move {
                        let _ = sd.stop(&unit).await;
                    });
                });
                (procs, Some(holder))
            }
            None => (shim_cgroup::open_procs(&self.cgroups)?, None),
        };
        intent.shim_socket = Some(socket.clone());
        self.write_intent(&intent)?;
        let (spawned, mut shim) = shim_client::spawn(
            &self.cfg.resolve_shim(),
            &self.cfg.cgroup_root,
            &id,
            &socket,
            &state_dir.join("shim.log"),
            ns,
            hostname,
            &shim_cgroup,
        )
        .await?;
        // The shim moved itself into its scope before exec.
        drop(shim_holder);
        shim_watch::SHIMS_STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        intent.shim_pid = Some(spawned.pid);
        self.write_intent(&intent)?;
        crate::crash::point("run_sandbox.shim");
        {
            let pid = spawned.pid;
            undo.push(move || {
                // SAFETY: kill(2) of the shim we started.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            });
        }

        let mut ns_paths = BTreeMap::new();
        for (kind, wanted) in [("net", ns.net), ("ipc", ns.ipc), ("uts", ns.uts)] {
            if !wanted {
                continue;
            }
            let pin_path = state_dir.join("ns").join(kind);
            let file = shim_client::open_ns(spawned.pid, std::os::fd::AsFd::as_fd(&spawned.pidfd), kind)?;
            pin::pin_file(&file, &pin_path)?;
            let p = pin_path.clone();
            undo.push(move || {
                let _ = pin::unpin(&p);
            });
            ns_paths.insert(kind.to_string(), pin_path);
        }

        crate::crash::point("run_sandbox.pins");
        sysctl::apply(&req.sysctls, &ns_paths)?;

        let network = if req.host_network {
            None
        } else {
            let list = self.network_config()?.ok_or_else(|| {
                Error::FailedPrecondition(format!(
                    "no CNI network config in {} (NetworkReady is false)",
                    self.cfg.cni_conf_dir.display()
                ))
            })?;
            let capabilities = self.capabilities(&req);
            let a = Attachment {
                container_id: id.clone(),
                netns: ns_paths.get("net").cloned().unwrap_or_default(),
                ifname: "eth0".into(),
                pod_name: req.name.clone(),
                pod_namespace: req.namespace.clone(),
                pod_uid: req.uid.clone(),
                capabilities: capabilities.clone(),
            };
            intent.network = Some(intent::NetIntent {
                conf_file: list.source.clone(),
                netns: a.netns.clone(),
                ifname: a.ifname.clone(),
                pod_name: a.pod_name.clone(),
                pod_namespace: a.pod_namespace.clone(),
                pod_uid: a.pod_uid.clone(),
                capabilities: a.capabilities.clone(),
            });
            self.write_intent(&intent)?;
            let t = std::time::Instant::now();
            let cni = self.cni.clone();
            let (l, att) = (list.clone(), a.clone());
            let result = tokio::task::spawn_blocking(move || cni.add(&l, &att))
                .await
                .map_err(|e| Error::Internal(format!("CNI ADD task: {e}")))??;
            {
                let (cni, l, res) = (self.cni.clone(), list.clone(), result.clone());
                undo.push(move || {
                    if let Err(e) = cni.del(&l, &a, Some(&res)) {
                        tracing::warn!(error = %e, "CNI DEL during rollback failed");
                    }
                });
            }
            crate::crash::point("run_sandbox.cni_add");
            let ips = cni::result_ips(&result);
            tracing::info!(sandbox = %id, network = %list.name, ips = ?ips, elapsed_ms = t.elapsed().as_millis() as u64, "pod network attached");
            Some(NetworkRecord {
                conf_file: list.source.clone(),
                result,
                capabilities,
                ips,
                torn_down: false,
            })
        };
        let ips = network.as_ref().map(|n| n.ips.clone()).unwrap_or_default();
        let hostname = if req.hostname.is_empty() {
            nix::unistd::gethostname()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_default()
        } else {
            req.hostname.clone()
        };
        let pod_files = files::write(
            &state_dir.join("etc"),
            &hostname,
            &ips,
            req.dns.as_ref(),
            req.host_network,
            Path::new("/etc"),
        )?;

        let record = SandboxRecord {
            id: id.clone(),
            name: req.name,
            uid: req.uid,
            namespace: req.namespace,
            attempt: req.attempt,
            hostname: req.hostname,
            log_directory: req.log_directory,
            labels: req.labels,
            annotations: req.annotations,
            runtime_handler: req.runtime_handler,
            created_at: store::now_ns(),
            state: SandboxState::Ready,
            cgroup_path,
            cgroup_created: created,
            shim_pid: spawned.pid,
            shim_socket: socket,
            ns_paths,
            pid_mode: req.pid_mode,
            resources: None,
            overhead: None,
            network,
            files: Some(pod_files),
            shm: Some(pod_shm),
        };
        store::write_record(&self.record_path(&id), &record)?;
        crate::crash::point("run_sandbox.record");
        // The record names everything now; a leftover intent is dropped at start-up.
        if let Err(e) = store::remove_record(&self.intent_path(&id)) {
            tracing::warn!(sandbox = %id, error = %e, "removing the sandbox intent failed");
        }
        // Make sure the shim is still healthy after pinning.
        shim.info(berth_proto::shim::InfoRequest {})
            .await
            .map_err(|e| Error::Shim(e.message().to_string()))?;
        let sb = Arc::new(Sandbox::new(record, Some(shim)));
        self.sandboxes.lock().insert(id.clone(), sb.clone());
        undo.disarm();
        shim_watch::watch(sb, self.events.clone());
        // The CRI reports a sandbox's birth as a container's: created, then
        // started (ready).
        self.events.sandbox(Kind::Created, &id);
        self.events.sandbox(Kind::Started, &id);
        tracing::info!(sandbox = %id, "pod sandbox ready");
        Ok(id)
    }

    /// Stops the shim and marks the sandbox NotReady. The caller stops the
    /// containers first. Namespaces stay pinned until remove. Idempotent.
    pub async fn stop(&self, sb: &Sandbox) -> Result<()> {
        let shim = sb.shim.lock().take();
        if let Some(mut shim) = shim {
            let _ = shim
                .shutdown(berth_proto::shim::ShutdownRequest { force: true })
                .await;
        }
        let (rec, was_ready) = {
            let mut r = sb.record.lock();
            let was_ready = r.state == SandboxState::Ready;
            r.state = SandboxState::NotReady;
            (r.clone(), was_ready)
        };
        // Also when no client was held (a shim berthd could not reconnect to
        // after a restart): the wait checks the shim's identity, never a
        // bare pid that may since belong to another process.
        wait_gone(rec.shim_pid, &rec.shim_socket).await;
        crate::crash::point("stop_sandbox.shim");
        self.persist(sb)?;
        if was_ready {
            self.events.sandbox(Kind::Stopped, &rec.id);
        }
        // After the containers are gone; a failure is returned so kubelet
        // retries StopPodSandbox, and remove cannot skip it.
        self.teardown_network(sb).await
    }

    /// Removes a stopped sandbox: namespace pins, cgroup, state. Idempotent.
    pub async fn remove(&self, sb: &Sandbox) -> Result<()> {
        self.stop(sb).await?;
        let rec = sb.record();
        for p in rec.ns_paths.values() {
            pin::unpin(p)?;
        }
        crate::crash::point("remove_sandbox.pins");
        // Before the state dir goes: removing files under a live mount point
        // would empty the tmpfs and then fail with EBUSY.
        if let Some(s) = &rec.shm {
            shm::teardown(&*self.shm_host, s)?;
        }
        // The pod's containers are removed by now: a container cgroup still
        // here is one no record names (a CreateContainer berthd did not
        // finish). Also under a pod cgroup kubelet made, which kubelet
        // could otherwise never remove.
        let leaf = self.cgroups.dir(&rec.cgroup_path);
        let driver = self.cfg.cgroup_driver;
        self.cgroups.remove_children_where(&leaf, |n| {
            crate::cgroup::driver::container_id_of(driver, n).is_some()
        })?;
        match self.cgroups.systemd() {
            Some(sd) => {
                sd.stop(&crate::cgroup::systemd::shim_scope(&rec.id)).await?;
                if !rec.cgroup_created.is_empty() {
                    sd.stop(crate::cgroup::systemd::slice_of(&rec.cgroup_path))
                        .await?;
                }
            }
            None => self.cgroups.remove_created(&rec.cgroup_created, &leaf)?,
        }
        crate::crash::point("remove_sandbox.cgroup");
        if let Err(e) = std::fs::remove_file(&rec.shim_socket) {
            if e.kind() != std::io::ErrorKind::NotFound {
                return Err(Error::io(format!("remove {}", rec.shim_socket.display()), e));
            }
        }
        let dir = self.state_dir(&rec.id);
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                return Err(Error::io(format!("remove {}", dir.display()), e));
            }
        }
        crate::crash::point("remove_sandbox.state");
        sb.record_file.remove(&self.record_path(&rec.id))?;
        // Read while the sandbox is still known: kubelet drops a DELETED
        // event that has no sandbox status.
        let last = self.events.snapshot(&rec.id);
        self.sandboxes.lock().remove(&rec.id);
        self.events.sandbox_with(Kind::Deleted, &rec.id, last);
        tracing::info!(sandbox = %rec.id, "pod sandbox removed");
        Ok(())
    }

    /// The cgroup manager (containers create their cgroups below the pod's).
    pub fn cgroups(&self) -> &CgroupManager {
        &self.cgroups
    }
}

/// kubelet's pod CIDR as kept on disk.
#[derive(Debug, Serialize, Deserialize)]
struct PodCidrRecord {
    cidr: String,
}

fn pod_cidr_path(cfg: &Config) -> PathBuf {
    cfg.root.join("pod-cidr.json")
}

/// The pod CIDR a previous berthd recorded; empty when none (or unreadable,
/// which is logged: kubelet sends it again on its next sync).
fn load_pod_cidr(path: &Path) -> String {
    match store::read_record::<PodCidrRecord>(path) {
        Ok(r) => r.cidr,
        Err(_) if !path.exists() => String::new(),
        Err(e) => {
            tracing::error!(record = %path.display(), error = %e, "pod CIDR record unreadable; ignored");
            String::new()
        }
    }
}

/// Waits (bounded) until the pod's shim has gone, then kills it if it has
/// not. The shim is recognised by its socket path on its command line
/// ([`recover::shim_alive`]): a pid reused by another process since (a second
/// StopPodSandbox, kubelet retrying a NotReady pod) is never waited for or
/// killed.
async fn wait_gone(pid: u32, socket: &Path) {
    for _ in 0..500 {
        if !recover::shim_alive(pid, socket) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    if recover::shim_alive(pid, socket) {
        tracing::warn!(pid, "shim still present 1s after shutdown; killing it");
        // SAFETY: kill(2); the pid was just seen to be this pod's shim.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn rollback_runs_in_reverse_unless_disarmed() {
        let log = Arc::new(Mutex::new(Vec::new()));
        {
            let mut r = Rollback::new();
            for i in 0..3 {
                let l = log.clone();
                r.push(move || l.lock().push(i));
            }
        }
        assert_eq!(*log.lock(), vec![2, 1, 0]);
        let n = Arc::new(AtomicUsize::new(0));
        let mut r = Rollback::new();
        let n2 = n.clone();
        r.push(move || {
            n2.fetch_add(1, Ordering::SeqCst);
        });
        r.disarm();
        assert_eq!(n.load(Ordering::SeqCst), 0);
    }
}

/// The burst (bits) sent with a bandwidth limit: kubelet's annotations
/// carry only a rate, and the CNI bandwidth plugin refuses a burst whose
/// bytes do not fit in 32 bits, so this is the largest it accepts (as
/// other CRI runtimes send).
const MAX_BURST_BITS: u64 = u32::MAX as u64;

/// A Kubernetes bandwidth quantity (`10M`, `1Gi`, `500k`) in bits per second.
fn parse_bandwidth(q: &str) -> Option<i64> {
    let q = q.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(q.len());
    let (num, suffix) = q.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult: f64 = match suffix {
        "" => 1.0,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    let v = n * mult;
    (v >= 1.0 && v < i64::MAX as f64).then_some(v as i64)
}

#[cfg(test)]
mod net_tests {
    use super::*;

    #[test]
    fn runtime_config_for_cni_capabilities() {
        let root = tempfile::tempdir().unwrap();
        let cfg = Config {
            root: root.path().to_path_buf(),
            ..Config::default()
        };
        let new_manager = || {
            SandboxManager::new(
                cfg.clone(),
                CgroupManager::new("/nonexistent"),
                Cni::new(vec![], Box::new(crate::net::cni::RealExec)),
                Arc::new(shm::fake::FakeShmHost::default()),
            )
        };
        let m = new_manager();
        let mut req = SandboxRequest {
            port_mappings: vec![
                PortMapping {
                    protocol: "udp".into(),
                    container_port: 53,
                    host_port: 5353,
                    host_ip: "127.0.0.1".into(),
                },
                // No host port: nothing to map.
                PortMapping {
                    protocol: "tcp".into(),
                    container_port: 80,
                    host_port: 0,
                    host_ip: String::new(),
                },
            ],
            ..Default::default()
        };
        req.annotations
            .insert("kubernetes.io/ingress-bandwidth".into(), "10M".into());
        let caps = m.capabilities(&req);
        assert_eq!(
            caps["portMappings"],
            serde_json::json!([{"hostPort": 5353, "containerPort": 53, "protocol": "udp", "hostIP": "127.0.0.1"}])
        );
        assert_eq!(caps["bandwidth"]["ingressRate"], 10_000_000);
        assert!(caps["bandwidth"].get("egressRate").is_none());
        // The bandwidth plugin refuses a burst of 4 GB or more ("burst
        // cannot be more than 4GB": burst / 8 >= u32::MAX); kubelet sets no
        // burst, so the runtime picks the largest one the plugin takes.
        let burst = caps["bandwidth"]["ingressBurst"].as_u64().unwrap();
        assert!(
            burst > 0 && burst / 8 < u64::from(u32::MAX),
            "ingressBurst {burst}"
        );
        assert!(!caps.contains_key("ipRanges"));
        m.set_pod_cidr("10.244.0.0/24").unwrap();
        assert_eq!(
            m.capabilities(&SandboxRequest::default())["ipRanges"],
            serde_json::json!([[{"subnet": "10.244.0.0/24"}]])
        );
        assert!(m.set_pod_cidr("10.244.0.0/999").is_err());
        // A berthd started later still knows it.
        assert_eq!(
            new_manager().capabilities(&SandboxRequest::default())["ipRanges"],
            serde_json::json!([[{"subnet": "10.244.0.0/24"}]])
        );
    }

    #[test]
    fn bandwidth_quantities() {
        assert_eq!(parse_bandwidth("10M"), Some(10_000_000));
        assert_eq!(parse_bandwidth("1Mi"), Some(1_048_576));
        assert_eq!(parse_bandwidth("1.5k"), Some(1500));
        assert_eq!(parse_bandwidth("fast"), None);
        assert_eq!(parse_bandwidth("10X"), None);
    }
}
