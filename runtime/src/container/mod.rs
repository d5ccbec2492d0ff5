//! Containers: create (spec, writable layer, cgroup, shim), start, stop,
//! remove, and the state machine Created -> Running -> Exited.

pub mod apparmor;
pub mod devices;
pub mod groups_policy;
mod image_files;
mod intent;
mod millis;
pub mod mounts;
#[cfg(test)]
mod record_tests;
mod recover;
pub mod resize;
mod seccomp;
pub mod signal;
pub mod spec;
mod streaming;
pub mod user;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use berth_proto::cri;
use berth_proto::shim as shimpb;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::events::{Events, Kind};
use crate::image::{ImageRecord, ImageStore};
use crate::sandbox::{Rollback, Sandbox, SandboxManager};
use crate::shim_client::Shim;
use crate::store;

/// Where a container is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ContainerState {
    /// Set up, not started.
    Created,
    /// Its process runs.
    Running,
    /// Its process ended (or it never started and was stopped).
    Exited,
}

/// The persisted container record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerRecord {
    /// Container id.
    pub id: String,
    /// Owning sandbox.
    pub sandbox_id: String,
    /// CRI metadata name.
    pub name: String,
    /// CRI metadata attempt.
    pub attempt: u32,
    /// Image as the request named it.
    pub image: String,
    /// Resolved image id.
    pub image_ref: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    pub annotations: BTreeMap<String, String>,
    /// Absolute log path ("" = no log).
    pub log_path: String,
    /// State.
    pub state: ContainerState,
    /// Unix ns.
    pub created_at: i64,
    /// Unix ns (0 = never).
    pub started_at: i64,
    /// Unix ns (0 = not yet).
    pub finished_at: i64,
    /// Exit code when exited.
    pub exit_code: i32,
    /// CRI reason (`Completed`, `Error`, ...).
    pub reason: String,
    /// Human message.
    pub message: String,
    /// Pid in the host pid namespace while it runs.
    pub pid: u32,
    /// Cgroup path below the cgroup2 root.
    pub cgroup_path: String,
    /// Container-specific dir under root (writable layer).
    pub dir: PathBuf,
    /// Bundle dir under state.
    pub bundle: PathBuf,
    /// CRI mounts as requested (for ContainerStatus).
    pub mounts: Vec<MountRecord>,
    /// Signal StopContainer sends first.
    pub stop_signal: i32,
    /// CRI resources last applied (create or UpdateContainerResources).
    #[serde(default)]
    pub resources: Option<resize::Asked>,
    /// uid/gid/groups the kernel held for the first process right before
    /// its exec (ContainerStatus.user); None until started.
    #[serde(default)]
    pub process_user: Option<ProcessUser>,
    /// uid/gid/groups the spec asked for.
    pub uid: u32,
    /// Primary gid.
    pub gid: u32,
    /// Supplementary groups.
    pub additional_gids: Vec<u32>,
}

/// An identity read from the kernel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessUser {
    /// Real uid.
    pub uid: u32,
    /// Real gid.
    pub gid: u32,
    /// Supplementary groups.
    pub groups: Vec<u32>,
}

/// A CRI mount, as ContainerStatus reports it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MountRecord {
    /// Path inside.
    pub container_path: String,
    /// Path on the host.
    pub host_path: String,
    /// Read-only.
    pub readonly: bool,
    /// CRI propagation enum value.
    pub propagation: i32,
}

/// A live container.
pub struct Container {
    record: Mutex<ContainerRecord>,
    changed: watch::Sender<ContainerState>,
    /// Serialises resizes of this container (never held by status calls).
    resize: tokio::sync::Mutex<()>,
    /// Orders the writes of its record and ends them at RemoveContainer.
    record_file: store::RecordLock,
}

impl Container {
    /// A copy of the record.
    pub fn record(&self) -> ContainerRecord {
        self.record.lock().clone()
    }
}

/// Owns every container.
pub struct ContainerManager {
    cfg: Config,
    images: Arc<ImageStore>,
    sandboxes: Arc<SandboxManager>,
    containers: Mutex<HashMap<String, Arc<Container>>>,
    /// Container names whose CreateContainer is under way.
    names: store::names::Reservations,
    /// Each image's user database (read once: images are immutable), so
    /// re-creating a pod's containers (in-place restart) reads no image files.
    users_cache: Mutex<HashMap<String, Arc<spec::ImageUsers>>>,
    /// The node's AppArmor (profile checks, the default profile).
    apparmor: apparmor::AppArmor,
    /// The node's device nodes (CRI devices, privileged containers).
    host_devices: Arc<dyn devices::HostDevices>,
    /// Where lifecycle events go (GetContainerEvents).
    events: Arc<Events>,
}

impl ContainerManager {
    /// A manager over the given stores.
    pub fn new(cfg: Config, images: Arc<ImageStore>, sandboxes: Arc<SandboxManager>) -> Self {
        ContainerManager {
            cfg,
            images,
            sandboxes,
            containers: Mutex::new(HashMap::new()),
            names: Default::default(),
            users_cache: Mutex::new(HashMap::new()),
            apparmor: apparmor::AppArmor::default(),
            host_devices: Arc::new(devices::RealHostDevices),
            events: Arc::new(Events::default()),
        }
    }

    /// Reports lifecycle changes to `events` (the node's one events manager).
    pub fn with_events(mut self, events: Arc<Events>) -> Self {
        self.events = events;
        self
    }

    fn record_path(&self, id: &str) -> PathBuf {
        self.cfg.root.join("containers").join(format!("{id}.json"))
    }

    /// Looks a container up by id or unique prefix.
    pub fn get(&self, id: &str) -> Result<Arc<Container>> {
        store::lookup(&self.containers.lock(), id, "container")
    }

    /// Every container.
    pub fn list(&self) -> Vec<Arc<Container>> {
        self.containers.lock().values().cloned().collect()
    }

    /// Containers of one sandbox.
    pub fn in_sandbox(&self, sandbox_id: &str) -> Vec<Arc<Container>> {
        self.list()
            .into_iter()
            .filter(|c| c.record.lock().sandbox_id == sandbox_id)
            .collect()
    }

    fn shim_of(sb: &Sandbox) -> Result<Shim> {
        sb.shim()
            .ok_or_else(|| Error::FailedPrecondition(format!("pod sandbox {} is not ready", sb.record().id)))
    }

    /// Writes the container's current record; a no-op once it was removed.
    fn persist(&self, c: &Container) -> Result<()> {
        let id = c.record.lock().id.clone();
        c.record_file.write(&self.record_path(&id), || c.record())
    }

    /// CreateContainer.
    pub async fn create(&self, sandbox_id: &str, cfg: &cri::ContainerConfig) -> Result<String> {
        let mut steps = crate::metrics::steps::Steps::begin("create_container", "validate");
        let upgraded = groups_policy::enforce(cfg, self.cfg.supplemental_groups_enforcement)?;
        let cfg = upgraded.as_ref().unwrap_or(cfg);
        let sb = self.sandboxes.get(sandbox_id)?;
        let sbr = sb.record();
        if !sb.is_ready() {
            return Err(Error::FailedPrecondition(format!(
                "pod sandbox {} is not ready",
                sbr.id
            )));
        }
        let meta = cfg
            .metadata
            .as_ref()
            .ok_or_else(|| Error::InvalidArgument("container config has no metadata".into()))?;
        if meta.name.is_empty() {
            return Err(Error::InvalidArgument("container metadata.name is empty".into()));
        }
        let image_name = cfg.image.as_ref().map(|i| i.image.as_str()).unwrap_or_default();
        if image_name.is_empty() {
            return Err(Error::InvalidArgument("container config has no image".into()));
        }
        let image = self
            .images
            .resolve(image_name)
            .ok_or_else(|| Error::NotFound(format!("image {image_name:?}")))?;
        // Held until the container is in the map (or everything is undone):
        // a concurrent CreateContainer of the same name gets AlreadyExists.
        let _name = self.names.reserve(
            format!("{}\0{}\0{}", sbr.id, meta.name, meta.attempt),
            &format!(
                "container {:?} attempt {} in pod sandbox {}",
                meta.name, meta.attempt, sbr.id
            ),
            || {
                self.in_sandbox(&sbr.id).into_iter().find_map(|c| {
                    let r = c.record();
                    (r.name == meta.name && r.attempt == meta.attempt).then_some(r.id)
                })
            },
        )?;

        steps.next("spec");
        let id = store::new_id();
        let cgroup_path =
            crate::cgroup::driver::container_path(self.cfg.cgroup_driver, &sbr.cgroup_path, &id);
        let users = self.image_users(&image);
        // The spec sees host paths resolved and the image's VOLUMEs added;
        // the record (ContainerStatus) keeps the mounts as kubelet asked.
        let cri_mounts = mounts::resolve(&cfg.mounts, &mounts::RealHost)?;
        let volumes = mounts::image_volumes(
            &image.config.volumes,
            &cfg.mounts,
            &self.cfg.root.join("containers").join(&id).join("volumes"),
        )?;
        let spec_cfg = cri::ContainerConfig {
            mounts: volumes.iter().cloned().chain(cri_mounts).collect(),
            ..cfg.clone()
        };
        let (mut oci, identity) = spec::build_spec(
            &spec_cfg,
            &image.config,
            &users,
            &spec::SandboxContext {
                ns_paths: sbr.ns_paths.clone(),
                cgroup_path: cgroup_path.clone(),
                hostname: sbr.hostname.clone(),
                pod_files: sbr.files.clone(),
                pid_mode: sbr.pid_mode,
                shm: sbr.shm.clone(),
            },
        )?;
        let sc = cfg.linux.as_ref().and_then(|l| l.security_context.as_ref());
        spec::set_apparmor_profile(&mut oci, self.apparmor.profile_for(sc)?);
        spec::set_rlimits(&mut oci, &self.cfg.container_rlimits)?;
        groups_policy::note_implicit_groups(&meta.name, &image.id, &identity.implicit_gids);
        let privileged = cfg
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .is_some_and(|s| s.privileged);
        // Checked before any step, so a missing or bad device leaves nothing.
        let devices = devices::resolve(&cfg.devices, privileged, self.host_devices.as_ref())?;
        devices::add_to_spec(&mut oci, &devices)?;
        // CRI's stop_signal wins, then the image's STOPSIGNAL, then SIGTERM.
        let stop_signal = signal::from_cri(cfg.stop_signal)
            .or_else(|| signal::parse(&image.config.stop_signal))
            .unwrap_or(libc::SIGTERM);
        let log_path = if cfg.log_path.is_empty() || sbr.log_directory.is_empty() {
            String::new()
        } else {
            Path::new(&sbr.log_directory)
                .join(&cfg.log_path)
                .to_string_lossy()
                .into_owned()
        };

        steps.next("intent");
        let mut undo = Rollback::new();
        let dir = self.cfg.root.join("containers").join(&id);
        let bundle = self.cfg.state.join("containers").join(&id);
        self.write_intent(&intent::CreateIntent {
            id: id.clone(),
            sandbox_id: sbr.id.clone(),
            cgroup_path: cgroup_path.clone(),
            dir: dir.clone(),
            bundle: bundle.clone(),
        })?;
        {
            let p = self.intent_path(&id);
            undo.push(move || {
                let _ = store::remove_record(&p);
            });
        }
        crate::crash::point("create_container.intent");
        // Explicit modes, whatever the umask: the container's dirs and its
        // spec (Secrets in env) are root's; the upper dir is the
        // container's `/` and the volumes its empty dirs (root's, 0755).
        steps.next("dirs");
        let volume_dirs = volumes.iter().map(|v| (PathBuf::from(&v.host_path), 0o755));
        for (d, mode) in [
            (dir.clone(), store::modes::PRIVATE_DIR),
            (dir.join("upper"), 0o755),
            (dir.join("work"), store::modes::PRIVATE_DIR),
            (bundle.clone(), store::modes::PRIVATE_DIR),
        ]
        .into_iter()
        .chain(volume_dirs)
        {
            store::modes::create_dir(&d, mode)
                .map_err(|e| Error::io(format!("create {}", d.display()), e))?;
        }
        {
            let (a, b) = (dir.clone(), bundle.clone());
            undo.push(move || {
                let _ = std::fs::remove_dir_all(a);
                let _ = std::fs::remove_dir_all(b);
            });
        }
        crate::crash::point("create_container.dirs");
        steps.next("cgroup");
        let cgroups = self.sandboxes.cgroups().clone();
        let resources = cfg.linux.as_ref().and_then(|l| l.resources.as_ref());
        // systemd driver: a scope unit, held open by a placeholder process
        // until the init stage has joined it (after shim.create below).
        let (created, scope_holder) = match cgroups.systemd() {
            Some(sd) => {
                let desired = resources.map(crate::cgroup::resize::desired).transpose()?;
                let holder = sd
                    .start_container_scope(&id, &sbr.cgroup_path, &desired.unwrap_or_default())
                    .await?;
                let sd = sd.clone();
                let unit = crate::cgroup::systemd::container_scope(&id);
                undo.push(move || {
                    tokio::spawn(async move {
                        let _ = sd.stop(&unit).await;
                    });
                });
                (Vec::new(), Some(holder))
            }
            None => (cgroups.ensure(&cgroup_path)?, None),
        };
        {
            let cg = cgroups.clone();
            let leaf = cgroups.dir(&cgroup_path);
            undo.push(move || {
                let _ = cg.remove_created(&created, &leaf);
            });
        }
        // Before the init stage joins the cgroup, so no process of the
        // container ever runs unfiltered. Removing the cgroup (the undo
        // above) detaches the filter. Privileged containers get none.
        steps.next("device_filter");
        if let Some(rules) = &devices.rules {
            cgroups.install_device_filter(&cgroup_path, rules)?;
        }
        // Resources apply from the start (the init stage joins this cgroup
        // before anything runs in it).
        if let Some(r) = resources {
            let desired = crate::cgroup::resize::desired(r)?;
            crate::cgroup::resize::apply(
                &crate::cgroup::resize::Dir(cgroups.dir(&cgroup_path)),
                &desired,
                self.cfg.memory_decrease_wait(),
            )?;
        }
        crate::crash::point("create_container.cgroup");
        steps.next("config_json");
        let lower: Vec<String> = self
            .images
            .lower_dirs(&image)
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        if lower.is_empty() {
            return Err(Error::FailedPrecondition(format!(
                "image {} has no layers",
                image.id
            )));
        }
        let overlay = shimpb::RootfsMount {
            r#type: "overlay".into(),
            source: "overlay".into(),
            options: vec![format!(
                "lowerdir={},upperdir={},workdir={}",
                lower.join(":"),
                dir.join("upper").display(),
                dir.join("work").display()
            )],
        };
        // The bundle holds the spec as an OCI bundle would: verbose
        // ContainerStatus shows exactly what the container was created with.
        let spec_json = serde_json::to_vec(&oci).map_err(|e| Error::Internal(e.to_string()))?;
        let spec_file = bundle.join("config.json");
        store::modes::write_file(&spec_file, &spec_json, store::modes::PRIVATE_FILE)
            .map_err(|e| Error::io(format!("write {}", spec_file.display()), e))?;
        crate::crash::point("create_container.config");
        steps.next("shim_create");
        let mut shim = Self::shim_of(&sb)?;
        let resp = shim
            .create(shimpb::CreateRequest {
                id: id.clone(),
                bundle: bundle.to_string_lossy().into_owned(),
                spec_json,
                rootfs: vec![overlay],
                log_path: log_path.clone(),
                stdin: cfg.stdin,
                stdin_once: cfg.stdin_once,
                terminal: cfg.tty,
            })
            .await
            .map_err(shim_error)?;
        // The container's process is in its scope now.
        drop(scope_holder);
        {
            let mut s = shim.clone();
            let id = id.clone();
            undo.push(move || {
                tokio::spawn(async move {
                    let _ = s.delete(shimpb::DeleteRequest { id }).await;
                });
            });
        }
        crate::crash::point("create_container.shim");
        steps.next("record");
        let record = ContainerRecord {
            id: id.clone(),
            sandbox_id: sbr.id.clone(),
            name: meta.name.clone(),
            attempt: meta.attempt,
            image: image_name.to_string(),
            image_ref: image.id.clone(),
            labels: cfg.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            annotations: cfg
                .annotations
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            log_path,
            state: ContainerState::Created,
            created_at: store::now_ns(),
            started_at: 0,
            finished_at: 0,
            exit_code: 0,
            reason: String::new(),
            message: String::new(),
            pid: resp.into_inner().pid,
            cgroup_path,
            dir,
            bundle,
            mounts: cfg
                .mounts
                .iter()
                .map(|m| MountRecord {
                    container_path: m.container_path.clone(),
                    host_path: m.host_path.clone(),
                    readonly: m.readonly,
                    propagation: m.propagation,
                })
                .collect(),
            stop_signal,
            resources: cfg
                .linux
                .as_ref()
                .and_then(|l| l.resources.as_ref())
                .map(resize::Asked::from),
            process_user: None,
            uid: identity.uid,
            gid: identity.gid,
            additional_gids: identity.additional_gids,
        };
        store::write_record(&self.record_path(&id), &record)?;
        crate::crash::point("create_container.record");
        // The record names everything now; a leftover intent is dropped at start-up.
        if let Err(e) = store::remove_record(&self.intent_path(&id)) {
            tracing::warn!(container = %id, error = %e, "removing the container intent failed");
        }
        let (changed, _) = watch::channel(ContainerState::Created);
        self.containers.lock().insert(
            id.clone(),
            Arc::new(Container {
                record: Mutex::new(record),
                changed,
                resize: Default::default(),
                record_file: Default::default(),
            }),
        );
        undo.disarm();
        self.events.container(Kind::Created, &id, &sbr.id);
        tracing::info!(container = %id, sandbox = %sbr.id, name = %meta.name, "container created");
        Ok(id)
    }

    /// The image's /etc/passwd and /etc/group, cached by image id.
    fn image_users(&self, image: &ImageRecord) -> Arc<spec::ImageUsers> {
        if let Some(u) = self.users_cache.lock().get(&image.id) {
            return u.clone();
        }
        let u = Arc::new(spec::ImageUsers {
            passwd: self.image_text(image, "/etc/passwd"),
            group: self.image_text(image, "/etc/group"),
        });
        self.users_cache.lock().insert(image.id.clone(), u.clone());
        u
    }

    /// A text file of the image as the container will see it, resolved
    /// inside the image (never following links out of it).
    fn image_text(&self, image: &ImageRecord, path: &str) -> String {
        image_files::read(&self.images.lower_dirs(image), path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// StartContainer.
    pub async fn start(self: &Arc<Self>, id: &str) -> Result<()> {
        let mut steps = crate::metrics::steps::Steps::begin("start_container", "validate");
        let c = self.get(id)?;
        let rec = c.record();
        if rec.state != ContainerState::Created {
            return Err(Error::FailedPrecondition(format!(
                "container {} is {:?}, only a created container can start",
                rec.id, rec.state
            )));
        }
        let sb = self.sandboxes.get(&rec.sandbox_id)?;
        let mut shim = Self::shim_of(&sb)?;
        steps.next("shim_start");
        let started = shim.start(shimpb::StartRequest { id: rec.id.clone() }).await;
        crate::crash::point("start_container.shim");
        let started = match started {
            Ok(r) => r.into_inner(),
            Err(e) => {
                // The process will never run: record why, as kubelet expects.
                {
                    let mut r = c.record.lock();
                    r.state = ContainerState::Exited;
                    r.exit_code = 128;
                    r.finished_at = store::now_ns();
                    r.reason = "StartError".into();
                    r.message = e.message().to_string();
                }
                self.events.container(Kind::Stopped, &rec.id, &rec.sandbox_id);
                c.changed.send_replace(ContainerState::Exited);
                self.persist(&c)?;
                return Err(shim_error(e));
            }
        };
        steps.next("record");
        {
            let mut r = c.record.lock();
            r.state = ContainerState::Running;
            r.started_at = started.started_at;
            r.pid = started.pid;
            r.process_user = started.identity.map(|i| ProcessUser {
                uid: i.uid,
                gid: i.gid,
                groups: i.groups,
            });
        }
        c.changed.send_replace(ContainerState::Running);
        // Before the exit watch exists, so STOPPED can never precede STARTED.
        self.events.container(Kind::Started, &rec.id, &rec.sandbox_id);
        {
            // Under the resize lock: an update that saw Created has
            // recorded its values by now, a later one sees Running.
            let _serial = c.resize.lock().await;
            self.apply_pending_oom_score_adj(&c.record());
        }
        self.persist(&c)?;
        self.watch_exit(c, shim);
        tracing::info!(container = %rec.id, "container started");
        Ok(())
    }

    /// Follows a running container until the shim reports its exit.
    fn watch_exit(self: &Arc<Self>, c: Arc<Container>, mut shim: Shim) {
        let mgr = self.clone();
        tokio::spawn(async move {
            let id = c.record().id;
            let (code, at, msg) = match shim.wait(shimpb::WaitRequest { id: id.clone() }).await {
                Ok(r) => {
                    let r = r.into_inner();
                    (r.exit_code, r.exited_at, String::new())
                }
                Err(e) => (
                    255,
                    store::now_ns(),
                    format!("lost contact with the shim: {}", e.message()),
                ),
            };
            // The kernel's count, not a guess from exit code 137: a SIGKILL
            // from StopContainer is not an OOM kill.
            let cgroup = mgr.sandboxes.cgroups().dir(&c.record().cgroup_path);
            let oom_killed = code != 0 && oom_kills(&cgroup) > 0;
            {
                let mut r = c.record.lock();
                r.state = ContainerState::Exited;
                r.exit_code = code;
                r.finished_at = at;
                r.reason = match (code, oom_killed) {
                    (0, _) => "Completed".into(),
                    (_, true) => "OOMKilled".into(),
                    _ => "Error".into(),
                };
                r.message = msg;
            }
            // Before StopContainer is woken: its caller's RemoveContainer
            // (DELETED) must come after this STOPPED.
            mgr.events.container(Kind::Stopped, &id, &c.record().sandbox_id);
            c.changed.send_replace(ContainerState::Exited);
            if let Err(e) = mgr.persist(&c) {
                tracing::warn!(container = %id, error = %e, "persist exit");
            }
            tracing::info!(container = %id, code, "container exited");
        });
    }

    /// ReopenContainerLog: after kubelet renamed the log file away, output
    /// continues in a new file at the same path, without losing a line.
    pub async fn reopen_log(&self, id: &str) -> Result<()> {
        let c = self.get(id)?;
        let rec = c.record();
        if rec.state != ContainerState::Running {
            return Err(Error::FailedPrecondition(format!(
                "container {} is {:?}; only a running container's log can be reopened",
                rec.id, rec.state
            )));
        }
        let sb = self.sandboxes.get(&rec.sandbox_id)?;
        let mut shim = Self::shim_of(&sb)?;
        shim.reopen_log(shimpb::ReopenLogRequest { id: rec.id.clone() })
            .await
            .map_err(shim_error)?;
        Ok(())
    }

    /// Log records the shim dropped for this container because they could
    /// not be written (disk full); None when its shim cannot be asked.
    pub async fn log_dropped_records(&self, rec: &ContainerRecord) -> Option<u64> {
        let mut shim = self.sandboxes.get(&rec.sandbox_id).ok()?.shim()?;
        let st = shim
            .state(shimpb::StateRequest { id: rec.id.clone() })
            .await
            .ok()?;
        Some(st.into_inner().log_dropped_records)
    }

    /// ExecSync: runs `cmd` in the running container through its shim. A
    /// timeout kills the command and is reported as DeadlineExceeded.
    pub async fn exec_sync(
        &self,
        id: &str,
        cmd: Vec<String>,
        timeout: Option<Duration>,
    ) -> Result<shimpb::ExecResponse> {
        let c = self.get(id)?;
        let rec = c.record();
        if rec.state != ContainerState::Running {
            return Err(Error::FailedPrecondition(format!(
                "container {} is {:?}; ExecSync needs a running container",
                rec.id, rec.state
            )));
        }
        let sb = self.sandboxes.get(&rec.sandbox_id)?;
        let mut shim = Self::shim_of(&sb)?;
        let t = std::time::Instant::now();
        let out = shim
            .exec(shimpb::ExecRequest {
                id: rec.id.clone(),
                args: cmd,
                timeout_ms: timeout.map_or(0, millis::exec_timeout_ms),
            })
            .await
            .map_err(shim_error)?
            .into_inner();
        tracing::debug!(container = %rec.id, code = out.exit_code, elapsed_ms = t.elapsed().as_millis() as u64, "exec done");
        if out.timed_out {
            return Err(Error::Timeout(format!(
                "command in container {} timed out after {:?} and was killed",
                rec.id,
                timeout.unwrap_or_default()
            )));
        }
        Ok(out)
    }

    /// StopContainer: stop signal, up to `timeout`, then SIGKILL. Idempotent;
    /// an unknown id is OK (the CRI: kubelet retries teardown of what may
    /// already be gone).
    pub async fn stop(&self, id: &str, timeout: Duration) -> Result<()> {
        let c = match self.get(id) {
            Ok(c) => c,
            Err(Error::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        let rec = c.record();
        match rec.state {
            ContainerState::Exited => return Ok(()),
            ContainerState::Created => {
                // Never started: release the parked init; it counts as exited.
                if let Ok(sb) = self.sandboxes.get(&rec.sandbox_id) {
                    if let Some(mut shim) = sb.shim() {
                        let _ = shim.delete(shimpb::DeleteRequest { id: rec.id.clone() }).await;
                    }
                }
                {
                    let mut r = c.record.lock();
                    if r.state == ContainerState::Created {
                        r.state = ContainerState::Exited;
                        r.finished_at = store::now_ns();
                        r.exit_code = 0;
                        r.reason = "Completed".into();
                    }
                }
                self.events.container(Kind::Stopped, &rec.id, &rec.sandbox_id);
                c.changed.send_replace(ContainerState::Exited);
                return self.persist(&c);
            }
            ContainerState::Running => {}
        }
        let sb = self.sandboxes.get(&rec.sandbox_id)?;
        let mut shim = Self::shim_of(&sb)?;
        let mut rx = c.changed.subscribe();
        if !timeout.is_zero() {
            unless_removed(
                shim.kill(shimpb::KillRequest {
                    id: rec.id.clone(),
                    signal: rec.stop_signal as u32,
                    all: false,
                    // A stop that arrives before the process installed its
                    // handler must not be lost (critest stops busybox `top`
                    // milliseconds after starting it).
                    redeliver_ms: millis::redeliver_ms(timeout),
                })
                .await,
            )?;
            crate::crash::point("stop_container.signal");
            if tokio::time::timeout(timeout, rx.wait_for(|s| *s == ContainerState::Exited))
                .await
                .is_ok()
            {
                return Ok(());
            }
        }
        unless_removed(
            shim.kill(shimpb::KillRequest {
                id: rec.id.clone(),
                signal: libc::SIGKILL as u32,
                all: true,
                redeliver_ms: 0,
            })
            .await,
        )?;
        tokio::time::timeout(
            Duration::from_secs(30),
            rx.wait_for(|s| *s == ContainerState::Exited),
        )
        .await
        .map_err(|_| Error::Timeout(format!("container {} did not exit after SIGKILL", rec.id)))?
        .map_err(|_| Error::Internal("container state channel closed".into()))?;
        Ok(())
    }

    /// RemoveContainer: kills it if needed, then frees everything. Unknown id is OK.
    pub async fn remove(&self, id: &str) -> Result<()> {
        let c = match self.get(id) {
            Ok(c) => c,
            Err(Error::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        let rec = c.record();
        if rec.state == ContainerState::Running {
            self.stop(&rec.id, Duration::ZERO).await?;
        }
        if let Ok(sb) = self.sandboxes.get(&rec.sandbox_id) {
            if let Some(mut shim) = sb.shim() {
                match shim.delete(shimpb::DeleteRequest { id: rec.id.clone() }).await {
                    Ok(_) => {}
                    Err(s) if s.code() == tonic::Code::NotFound => {}
                    Err(s) => return Err(shim_error(s)),
                }
            }
        }
        crate::crash::point("remove_container.shim");
        let cg = self.sandboxes.cgroups();
        if let Some(sd) = cg.systemd() {
            sd.stop(&crate::cgroup::systemd::container_scope(&rec.id)).await?;
        }
        cg.remove(&cg.dir(&rec.cgroup_path))?;
        crate::crash::point("remove_container.cgroup");
        for d in [&rec.bundle, &rec.dir] {
            if let Err(e) = std::fs::remove_dir_all(d) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    return Err(Error::io(format!("remove {}", d.display()), e));
                }
            }
        }
        crate::crash::point("remove_container.dirs");
        c.record_file.remove(&self.record_path(&rec.id))?;
        self.containers.lock().remove(&rec.id);
        self.events.container(Kind::Deleted, &rec.id, &rec.sandbox_id);
        tracing::info!(container = %rec.id, "container removed");
        Ok(())
    }
}

/// `oom_kill` from a cgroup's memory.events (0 when unreadable).
fn oom_kills(cgroup: &Path) -> u64 {
    std::fs::read_to_string(cgroup.join("memory.events"))
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("oom_kill ").map(|v| v.trim().parse().unwrap_or(0)))
        })
        .unwrap_or(0)
}

/// A kill the shim answers NotFound for: a concurrent RemoveContainer took
/// the container out of the shim, which killed it first. Not an error for
/// StopContainer (the CRI's stop of a gone container succeeds), which still
/// waits for the exit to be recorded.
fn unless_removed(
    r: std::result::Result<tonic::Response<shimpb::KillResponse>, tonic::Status>,
) -> Result<()> {
    match r {
        Ok(_) => Ok(()),
        Err(s) if s.code() == tonic::Code::NotFound => Ok(()),
        Err(s) => Err(shim_error(s)),
    }
}

/// Maps a shim status to our error, keeping client-facing codes meaningful.
fn shim_error(s: tonic::Status) -> Error {
    match s.code() {
        tonic::Code::NotFound => Error::NotFound(s.message().to_string()),
        tonic::Code::InvalidArgument => Error::InvalidArgument(s.message().to_string()),
        tonic::Code::FailedPrecondition => Error::FailedPrecondition(s.message().to_string()),
        _ => Error::Shim(s.message().to_string()),
    }
}
