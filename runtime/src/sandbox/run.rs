//! RunPodSandbox: state dir, /dev/shm, pod cgroup, shim, namespace pins,
//! sysctls, CNI ADD, pod files, record, in that order, except that CNI ADD
//! runs while the shim starts (its namespaces exist from its exec, before
//! it serves; `sandbox/overlap.rs`). Each step writes the
//! run intent before its side effect (start-up recovery undoes what a killed
//! berthd left) and pushes its undo, so a failure leaves nothing behind.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{ids, intent, pin, shim_cgroup, shim_watch, shm, sysctl};
use super::{NetworkRecord, PidMode, Sandbox, SandboxManager, SandboxRecord, SandboxRequest, SandboxState};
use crate::error::{Error, Result};
use crate::events::Kind;
use crate::net::cni::{self, Attachment};
use crate::net::files::{self, PodFiles};
use crate::rollback::Rollback;
use crate::shim_client::{self, NewNamespaces, Shim, SpawnedShim, StartingShim};
use crate::store;

/// A RunPodSandbox under way: its id, the undo of every step done so far,
/// and the intent record naming what those steps made.
struct Progress {
    id: String,
    undo: Rollback,
    intent: intent::RunIntent,
    state_dir: PathBuf,
    /// The pod's own user namespace and the namespaces it owns (mode POD).
    userns: Option<berth_sys::idmap::PodNamespaces>,
}

/// The pod cgroup a run made or joined.
struct PodCgroup {
    path: String,
    /// The directories berthd created (removed with the pod).
    created: Vec<PathBuf>,
}

impl SandboxManager {
    /// Creates namespaces, cgroup and shim; nothing is left behind on failure.
    pub async fn run(&self, req: SandboxRequest) -> Result<String> {
        let mut steps = crate::metrics::steps::Steps::begin("run_pod_sandbox", "validate");
        let id = ids::new_id(&self.id_key()?)?;
        // Held until the sandbox is in the map (or everything is undone):
        // a concurrent RunPodSandbox of the same pod gets AlreadyExists.
        let _name = self.reserve_pod_name(&req)?;
        validate_sysctls(&req)?;
        let mut p = Progress {
            state_dir: self.state_dir(&id),
            id,
            undo: Rollback::new(),
            intent: intent::RunIntent::default(),
            userns: None,
        };
        p.intent.id = p.id.clone();
        steps.next("state_dir");
        let pod_shm = self.make_state_dir(&mut p, &req)?;
        steps.next("userns");
        let userns = super::userns_pod::create_and_pin(&p.state_dir, req.userns.as_ref(), &mut p.undo)?;
        let user_pin = userns.map(|(ns, at)| {
            p.userns = Some(ns);
            at
        });
        steps.next("cgroup");
        let cgroup = self.make_pod_cgroup(&mut p, &req).await?;
        steps.next("shim_spawn");
        let socket = self.cfg.shim_socket(&p.id);
        let (spawned, starting) = self.start_shim(&mut p, &req, &cgroup.path, &socket).await?;
        steps.next("ns_pins");
        let mut ns_paths = pin_namespaces(&mut p, &spawned, &req)?;
        ns_paths.extend(user_pin.map(|at| ("user".to_string(), at)));
        p.userns = None;
        crate::crash::point("run_sandbox.pins");
        sysctl::apply(&req.sysctls, &ns_paths)?;
        steps.next("cni_add_and_shim_ready");
        let (shim, network) = super::overlap::network_while_shim_starts(starting, async {
            match req.host_network {
                true => Ok(None),
                false => self.attach_network(&mut p, &req, &ns_paths).await.map(Some),
            }
        })
        .await?;
        steps.next("pod_files");
        let ips = network.as_ref().map(|n| n.ips.clone()).unwrap_or_default();
        let pod_files = write_pod_files(&p.state_dir, &req, &ips)?;
        super::userns_pod::own_pod_files(&pod_files, &pod_shm, req.userns.as_ref())?;
        steps.next("record");
        let record = SandboxRecord {
            id: p.id.clone(),
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
            cgroup_path: cgroup.path,
            cgroup_created: cgroup.created,
            shim_pid: spawned.pid,
            shim_socket: socket,
            ns_paths,
            pid_mode: req.pid_mode,
            resources: None,
            overhead: None,
            network,
            files: Some(pod_files),
            shm: Some(pod_shm),
            userns: req.userns,
        };
        self.commit_sandbox(p, record, shim).await
    }

    /// Reserves the pod's name and attempt; AlreadyExists when another
    /// sandbox has it or a RunPodSandbox for it is under way.
    fn reserve_pod_name(&self, req: &SandboxRequest) -> Result<store::names::Reservation<'_>> {
        self.names.reserve(
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
        )
    }

    /// The intent, the state dir and the pod's /dev/shm.
    fn make_state_dir(&self, p: &mut Progress, req: &SandboxRequest) -> Result<shm::PodShm> {
        self.write_intent(&p.intent)?;
        {
            let path = self.intent_path(&p.id);
            p.undo.push(move || {
                let _ = store::remove_record(&path);
            });
        }
        crate::crash::point("run_sandbox.intent");
        let state_dir = p.state_dir.clone();
        crate::store::modes::create_dir(&state_dir.join("ns"), crate::store::modes::PRIVATE_DIR)
            .map_err(|e| Error::io("create sandbox state dir", e))?;
        {
            let d = state_dir.clone();
            p.undo.push(move || {
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
            p.undo.push(move || {
                if let Err(e) = shm::teardown(&*host, &s) {
                    tracing::warn!(error = %e, "unmounting the pod's /dev/shm during rollback failed");
                }
            });
        }
        Ok(pod_shm)
    }

    /// The pod cgroup (a systemd slice or a directory), with the pod's limits.
    async fn make_pod_cgroup(&self, p: &mut Progress, req: &SandboxRequest) -> Result<PodCgroup> {
        let cgroup_path = crate::cgroup::driver::pod_path(
            self.cfg.cgroup_driver,
            &req.cgroup_parent,
            &p.id,
            &self.cfg.default_cgroup_parent,
        )?;
        p.intent.cgroup_path = Some(cgroup_path.clone());
        self.write_intent(&p.intent)?;
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
        p.intent.cgroup_created = created.clone();
        self.write_intent(&p.intent)?;
        crate::crash::point("run_sandbox.cgroup");
        match self.cgroups.systemd() {
            Some(sd) if !created.is_empty() => {
                let (sd, slice) = (
                    sd.clone(),
                    crate::cgroup::systemd::slice_of(&cgroup_path).to_string(),
                );
                p.undo.push(move || {
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
                p.undo.push(move || {
                    let _ = cg.remove_created(&created, &leaf);
                });
            }
        }
        if !req.pod_limits.is_empty() && (self.cgroups.systemd().is_none() || created.is_empty()) {
            req.pod_limits.apply(&self.cgroups.dir(&cgroup_path))?;
        }
        Ok(PodCgroup {
            path: cgroup_path,
            created,
        })
    }

    /// The pod's shim, in its own cgroup, creating the pod's namespaces.
    async fn start_shim(
        &self,
        p: &mut Progress,
        req: &SandboxRequest,
        cgroup_path: &str,
        socket: &Path,
    ) -> Result<(SpawnedShim, StartingShim)> {
        let id = p.id.clone();
        if let Some(dir) = socket.parent() {
            crate::store::modes::create_dir(dir, crate::store::modes::PRIVATE_DIR)
                .map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
        }
        {
            let s = socket.to_path_buf();
            p.undo.push(move || {
                let _ = std::fs::remove_file(s);
            });
        }
        let hostname = (!req.hostname.is_empty()).then_some(req.hostname.as_str());
        let (shim_cgroup, shim_holder) = match self.cgroups.systemd() {
            Some(sd) => {
                let (procs, holder) = shim_cgroup::open_scope(sd, &self.cgroups, cgroup_path, &id).await?;
                let (sd, unit) = (sd.clone(), crate::cgroup::systemd::shim_scope(&id));
                p.undo.push(move || {
                    tokio::spawn(async move {
                        let _ = sd.stop(&unit).await;
                    });
                });
                (procs, Some(holder))
            }
            None => (shim_cgroup::open(&self.cgroups)?, None),
        };
        p.intent.shim_socket = Some(socket.to_path_buf());
        self.write_intent(&p.intent)?;
        let (spawned, starting) = shim_client::start(
            &self.cfg.resolve_shim(),
            &self.cfg.cgroup_root,
            &id,
            socket,
            &p.state_dir.join("shim.log"),
            NewNamespaces {
                join: p.userns.as_ref().map(super::userns_pod::join_fds),
                ..new_namespaces(req)
            },
            hostname,
            &shim_cgroup.dir,
            &shim_cgroup.procs,
        )
        .await?;
        // The shim is in its scope (born there) by now.
        drop(shim_holder);
        crate::metrics::counters::SHIMS_STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        p.intent.shim_pid = Some(spawned.pid);
        self.write_intent(&p.intent)?;
        crate::crash::point("run_sandbox.shim");
        {
            let pid = spawned.pid;
            p.undo.push(move || {
                // The shim we started.
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            });
        }
        Ok((spawned, starting))
    }

    /// CNI ADD into the pinned network namespace.
    async fn attach_network(
        &self,
        p: &mut Progress,
        req: &SandboxRequest,
        ns_paths: &BTreeMap<String, PathBuf>,
    ) -> Result<NetworkRecord> {
        let id = p.id.clone();
        let list = self.network_config()?.ok_or_else(|| {
            Error::FailedPrecondition(format!(
                "no CNI network config in {} (NetworkReady is false)",
                self.cfg.cni_conf_dir.display()
            ))
        })?;
        let capabilities = self.cni_runtime_config(req);
        let a = Attachment {
            container_id: id.clone(),
            netns: ns_paths.get("net").cloned().unwrap_or_default(),
            ifname: "eth0".into(),
            pod_name: req.name.clone(),
            pod_namespace: req.namespace.clone(),
            pod_uid: req.uid.clone(),
            capabilities: capabilities.clone(),
        };
        p.intent.network = Some(intent::NetIntent {
            conf_file: list.source.clone(),
            netns: a.netns.clone(),
            ifname: a.ifname.clone(),
            pod_name: a.pod_name.clone(),
            pod_namespace: a.pod_namespace.clone(),
            pod_uid: a.pod_uid.clone(),
            capabilities: a.capabilities.clone(),
        });
        self.write_intent(&p.intent)?;
        let t = std::time::Instant::now();
        let cni = self.cni.clone();
        let (l, att) = (list.clone(), a.clone());
        let result = crate::blocking::run("CNI ADD task", move || cni.add(&l, &att)).await??;
        {
            let (cni, l, res) = (self.cni.clone(), list.clone(), result.clone());
            p.undo.push(move || {
                if let Err(e) = cni.del(&l, &a, Some(&res)) {
                    tracing::warn!(error = %e, "CNI DEL during rollback failed");
                }
            });
        }
        crate::crash::point("run_sandbox.cni_add");
        let ips = cni::result_ips(&result);
        tracing::info!(sandbox = %id, network = %list.name, ips = ?ips, elapsed_ms = t.elapsed().as_millis() as u64, "pod network attached");
        Ok(NetworkRecord {
            conf_file: list.source.clone(),
            result,
            capabilities,
            ips,
            torn_down: false,
        })
    }

    /// Writes the record (the sandbox exists from here on), drops the intent
    /// and publishes the sandbox. The shim answered Info after the pins were
    /// made (`StartingShim::serving`), so it is not asked again here.
    async fn commit_sandbox(&self, p: Progress, record: SandboxRecord, shim: Shim) -> Result<String> {
        let id = p.id;
        store::write_record(&self.record_path(&id), &record)?;
        crate::crash::point("run_sandbox.record");
        // The record names everything now; a leftover intent is dropped at start-up.
        if let Err(e) = store::remove_record(&self.intent_path(&id)) {
            tracing::warn!(sandbox = %id, error = %e, "removing the sandbox intent failed");
        }
        let sb = Arc::new(Sandbox::new(record, Some(shim)));
        self.sandboxes.lock().insert(id.clone(), sb.clone());
        p.undo.disarm();
        shim_watch::watch(sb, self.events.clone());
        // The CRI reports a sandbox's birth as a container's: created, then
        // started (ready).
        self.events.sandbox(Kind::Created, &id);
        self.events.sandbox(Kind::Started, &id);
        tracing::info!(sandbox = %id, "pod sandbox ready");
        Ok(id)
    }
}

/// The namespaces the shim creates for the pod (the rest are the node's).
fn new_namespaces(req: &SandboxRequest) -> NewNamespaces {
    NewNamespaces {
        net: !req.host_network,
        ipc: !req.host_ipc,
        uts: !req.host_network,
        pid: req.pid_mode == PidMode::Pod,
        join: None,
    }
}

/// Refuses sysctls of namespaces the pod does not own (before anything is made).
fn validate_sysctls(req: &SandboxRequest) -> Result<()> {
    let owned: BTreeMap<String, PathBuf> = [
        ("net", !req.host_network),
        ("ipc", !req.host_ipc),
        ("uts", !req.host_network),
    ]
    .into_iter()
    .filter(|(_, own)| *own)
    .map(|(k, _)| (k.to_string(), PathBuf::new()))
    .collect();
    sysctl::validate(&req.sysctls, &owned)
}

/// Pins the shim's new net/ipc/uts namespaces under `<state dir>/ns/`.
fn pin_namespaces(
    p: &mut Progress,
    spawned: &SpawnedShim,
    req: &SandboxRequest,
) -> Result<BTreeMap<String, PathBuf>> {
    let ns = new_namespaces(req);
    let mut ns_paths = BTreeMap::new();
    for (kind, wanted) in [("net", ns.net), ("ipc", ns.ipc), ("uts", ns.uts)] {
        if !wanted {
            continue;
        }
        let pin_path = p.state_dir.join("ns").join(kind);
        let file = shim_client::open_ns(spawned.pid, std::os::fd::AsFd::as_fd(&spawned.pidfd), kind)?;
        pin::pin_file(&file, &pin_path)?;
        let pp = pin_path.clone();
        p.undo.push(move || {
            let _ = pin::unpin(&pp);
        });
        ns_paths.insert(kind.to_string(), pin_path);
    }
    Ok(ns_paths)
}

/// The pod's /etc/hosts, resolv.conf and hostname files.
fn write_pod_files(state_dir: &Path, req: &SandboxRequest, ips: &[String]) -> Result<PodFiles> {
    let hostname = if req.hostname.is_empty() {
        nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default()
    } else {
        req.hostname.clone()
    };
    files::write(
        &state_dir.join("etc"),
        &hostname,
        ips,
        req.dns.as_ref(),
        req.host_network,
        Path::new("/etc"),
    )
}
