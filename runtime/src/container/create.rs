//! CreateContainer: the OCI spec, the container's dirs, its cgroup, the
//! bundle and the shim's create, then the record. Each step writes the
//! create intent before its side effect and pushes its undo, so a failure
//! leaves nothing behind.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use berth_proto::cri;
use berth_proto::shim as shimpb;
use parking_lot::Mutex;
use tokio::sync::watch;

use super::image_volume;
use super::user::Identity;
use super::{
    devices, groups_policy, image_files, intent, mounts, resize, shim_error, signal, spec, volume_owner,
};
use super::{Container, ContainerManager, ContainerRecord, ContainerState, MountRecord};
use crate::cgroup::systemd::holder::Holder;
use crate::checkpoint::{restore, unpack};
use crate::error::{Error, Result};
use crate::events::Kind;
use crate::image::ImageRecord;
use crate::rollback::Rollback;
use crate::sandbox::{Sandbox, SandboxRecord};
use crate::store;

impl ContainerManager {
    /// CreateContainer.
    pub async fn create(&self, sandbox_id: &str, cfg: &cri::ContainerConfig) -> Result<String> {
        let mut steps = crate::metrics::steps::Steps::begin("create_container", "validate");
        // An archive as the image: a restore. Its image and process replace
        // the request's (checked before anything is made).
        let image_name = cfg.image.as_ref().map(|i| i.image.as_str()).unwrap_or_default();
        let restore = restore::archive_of(image_name)
            .map(|a| restore::plan(&a, &self.images))
            .transpose()?;
        let restored;
        let cfg = match &restore {
            Some(plan) => {
                restored = plan.config(cfg);
                &restored
            }
            None => cfg,
        };
        let upgraded = groups_policy::enforce(cfg, self.cfg.supplemental_groups_enforcement)?;
        let cfg = upgraded.as_ref().unwrap_or(cfg);
        let c = self.check_create(sandbox_id, cfg)?;
        if restore.is_some() && c.sbr.userns.is_some() {
            return Err(Error::FailedPrecondition(format!(
                "pod sandbox {} has a user namespace: berth does not restore a checkpoint into one yet",
                c.sbr.id
            )));
        }
        // Held until the container is in the map (or everything is undone):
        // a concurrent CreateContainer of the same name gets AlreadyExists.
        let _name = self.reserve_container_name(&c.sbr, c.meta)?;

        let id = store::new_id();
        let cgroup_path =
            crate::cgroup::driver::container_path(self.cfg.cgroup_driver, &c.sbr.cgroup_path, &id);
        steps.next("spec");
        let built = self.build_oci(&id, cfg, &c, &cgroup_path, &mut steps)?;
        let mut nc = NewContainer {
            dir: self.cfg.root.join("containers").join(&id),
            bundle: self.cfg.state.join("containers").join(&id),
            id,
            cgroup_path,
            // CRI's stop_signal wins, then the image's STOPSIGNAL, then SIGTERM.
            stop_signal: signal::from_cri(cfg.stop_signal)
                .or_else(|| signal::parse(&c.image.config.stop_signal))
                .unwrap_or(libc::SIGTERM),
            log_path: log_path_of(cfg, &c.sbr),
            restore: None,
        };

        steps.next("dirs");
        let mut undo = Rollback::new();
        self.make_container_dirs(&mut undo, &nc, &c.sbr, &built.volumes)?;
        // Inside the container's dir: the undo (and, after a crash, the
        // intent) removes it with the dir.
        let restore_images = match restore.clone() {
            Some(plan) => {
                steps.next("restore_unpack");
                let dir = nc.dir.clone();
                // CRIU recreates what its images say as root: they must
                // give nothing this container's spec would not.
                let oci = built.oci.clone();
                let images = crate::blocking::run("restore: unpack the archive", move || {
                    let images = plan.unpack_into(&dir, &unpack::Limits::default())?;
                    crate::checkpoint::images::check(&images, &oci)?;
                    Ok::<_, Error>(images)
                })
                .await??;
                Some(images)
            }
            None => None,
        };
        self.mount_image_volumes(&mut undo, &nc.dir, &built.image_volumes)?;
        // Mounted only now: checked like the host paths (an overlay cannot
        // be idmapped on Linux 6.1), before the cgroup and the shim.
        let image_binds: Vec<cri::Mount> = image_volume::host_binds(&built.image_volumes)
            .into_iter()
            .map(|m| volume_owner::set(m, c.sbr.userns.as_ref()))
            .collect();
        let user_pin = c.sbr.ns_paths.get("user").map(|p| p.as_path());
        super::idmap_mounts::check(&image_binds, c.sbr.userns.as_ref(), user_pin)?;
        steps.next("cgroup");
        let scope_holder = self
            .make_container_cgroup(&mut undo, &nc, cfg, &c.sbr, &built.devices)
            .await?;
        steps.next("bundle");
        let spec_json = write_bundle_spec(&nc.bundle, &built.oci)?;
        steps.next("shim_create");
        nc.restore = match &restore_images {
            Some(images) => Some(ShimRestore {
                images: images.clone(),
                criu: crate::checkpoint::criu::require(&self.cfg.criu_path)?,
                stdio: restore::stdio_names(&nc.dir)?,
            }),
            None => None,
        };
        let pid = self
            .create_in_shim(&mut undo, &nc, cfg, &c, spec_json, scope_holder)
            .await?;
        steps.next("record");
        let mut record = new_record(cfg, &c, nc, built.identity, pid);
        record.image_volumes = image_volume::records(&built.image_volumes);
        if let Some(plan) = &restore {
            record.image = plan.image_name.clone();
            record.restore_from = restore_images;
        }
        self.commit_container(undo, record, &c.meta.name)
    }

    /// The pod (ready), the metadata and the image (present) the request names.
    fn check_create<'a>(&self, sandbox_id: &str, cfg: &'a cri::ContainerConfig) -> Result<Checked<'a>> {
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
        Ok(Checked {
            sb,
            sbr,
            meta,
            image_name,
            image,
        })
    }

    /// Reserves the container's name and attempt in its pod; AlreadyExists
    /// when a container has it or a CreateContainer for it is under way.
    fn reserve_container_name(
        &self,
        sbr: &SandboxRecord,
        meta: &cri::ContainerMetadata,
    ) -> Result<store::names::Reservation<'_>> {
        self.names.reserve(
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
        )
    }

    /// The OCI spec, checked before any step (a missing or bad device, a
    /// bad mount or profile leaves nothing).
    fn build_oci(
        &self,
        id: &str,
        cfg: &cri::ContainerConfig,
        c: &Checked<'_>,
        cgroup_path: &str,
        steps: &mut crate::metrics::steps::Steps,
    ) -> Result<Built> {
        let (sbr, image, meta) = (&c.sbr, &c.image, c.meta);
        let users = self.image_users(image);
        // The spec sees host paths resolved and the image's VOLUMEs added;
        // the record (ContainerStatus) keeps the mounts as kubelet asked.
        let host_mounts: Vec<cri::Mount> = cfg
            .mounts
            .iter()
            .filter(|m| !image_volume::is_image(m))
            .cloned()
            .collect();
        // Before resolve, which creates missing host paths.
        for m in &cfg.mounts {
            volume_owner::check_requested(m, sbr.userns.as_ref())?;
        }
        let cri_mounts = volume_owner::assign(
            mounts::resolve(&host_mounts, &mounts::RealHost)?,
            sbr.userns.as_ref(),
            &volume_owner::KubeletPodDir::new(&self.cfg.kubelet_root, &sbr.uid),
        );
        let user_pin = sbr.ns_paths.get("user").map(|p| p.as_path());
        super::idmap_mounts::check(&cri_mounts, sbr.userns.as_ref(), user_pin)?;
        let image_volumes = image_volume::plan(
            &cfg.mounts,
            &self.images,
            &self.cfg.root.join("containers").join(id),
        )?;
        // Berth's own binds (image volumes, image VOLUME dirs) are owned
        // like the rootfs: idmapped for a user-namespaced pod.
        let cri_mounts =
            image_volume::spec_mounts(&cfg.mounts, cri_mounts, &image_volumes, sbr.userns.as_ref());
        let volumes: Vec<cri::Mount> = mounts::image_volumes(
            &image.config.volumes,
            &cfg.mounts,
            &self.cfg.root.join("containers").join(id).join("volumes"),
        )?
        .into_iter()
        .map(|m| volume_owner::set(m, sbr.userns.as_ref()))
        .collect();
        steps.next("spec_build");
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
                cgroup_path: cgroup_path.to_string(),
                hostname: sbr.hostname.clone(),
                pod_files: sbr.files.clone(),
                pid_mode: sbr.pid_mode,
                shm: sbr.shm.clone(),
                userns: sbr.userns,
            },
        )?;
        image_volume::harden(&mut oci, &image_volumes);
        steps.next("spec_lsm");
        let sc = cfg.linux.as_ref().and_then(|l| l.security_context.as_ref());
        spec::set_apparmor_profile(&mut oci, self.apparmor.profile_for(sc)?);
        spec::set_rlimits(&mut oci, &self.cfg.container_rlimits)?;
        groups_policy::note_implicit_groups(&meta.name, &image.id, &identity.implicit_gids);
        let privileged = cfg
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .is_some_and(|s| s.privileged);
        steps.next("spec_devices");
        // Checked before any step, so a missing or bad device leaves nothing.
        let mut devices = devices::resolve(&cfg.devices, privileged, self.host_devices.as_ref())?;
        let cdi_names: Vec<String> = cfg.cdi_devices.iter().map(|d| d.name.clone()).collect();
        let cdi_names = crate::cdi::annotations::requested(&cdi_names, &cfg.annotations)?;
        let cdi_edits = self.cdi.resolve(&cdi_names)?;
        crate::cdi::apply::apply(
            &cdi_edits,
            &mut oci,
            &mut devices,
            self.host_devices.as_ref(),
            &mounts::RealHost,
        )?;
        devices::add_to_spec(&mut oci, &devices)?;
        Ok(Built {
            oci,
            identity,
            devices,
            volumes,
            image_volumes,
        })
    }

    /// The intent, then the container's dirs, bundle dir and volume dirs.
    fn make_container_dirs(
        &self,
        undo: &mut Rollback,
        nc: &NewContainer,
        sbr: &SandboxRecord,
        volumes: &[cri::Mount],
    ) -> Result<()> {
        let (id, dir, bundle) = (&nc.id, &nc.dir, &nc.bundle);
        self.write_intent(&intent::CreateIntent {
            id: id.clone(),
            sandbox_id: sbr.id.clone(),
            cgroup_path: nc.cgroup_path.clone(),
            dir: dir.clone(),
            bundle: bundle.clone(),
        })?;
        {
            let p = self.intent_path(id);
            undo.push(move || {
                let _ = store::remove_record(&p);
            });
        }
        crate::crash::point("create_container.intent");
        // Explicit modes, whatever the umask: the container's dirs and its
        // spec (Secrets in env) are root's; the upper dir is the
        // container's `/` and the volumes its empty dirs (root's, 0755).
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
        crate::sandbox::userns_pod::own_upper(&dir.join("upper"), sbr.userns.as_ref())?;
        {
            let (a, b) = (dir.clone(), bundle.clone());
            undo.push(move || {
                let _ = std::fs::remove_dir_all(a);
                let _ = std::fs::remove_dir_all(b);
            });
        }
        crate::crash::point("create_container.dirs");
        Ok(())
    }

    /// The container cgroup (a systemd scope or a directory) with its
    /// device filter and resources. Under systemd, the returned holder keeps
    /// the scope open until the init stage has joined it.
    async fn make_container_cgroup(
        &self,
        undo: &mut Rollback,
        nc: &NewContainer,
        cfg: &cri::ContainerConfig,
        sbr: &SandboxRecord,
        devices: &devices::ContainerDevices,
    ) -> Result<Option<Holder>> {
        let (id, cgroup_path) = (&nc.id, &nc.cgroup_path);
        let cgroups = self.sandboxes.cgroups().clone();
        let resources = cfg.linux.as_ref().and_then(|l| l.resources.as_ref());
        // systemd driver: a scope unit, held open by a placeholder process
        // until the init stage has joined it (after shim.create below).
        let (created, scope_holder) = match cgroups.systemd() {
            Some(sd) => {
                let desired = resources.map(crate::cgroup::resize::desired).transpose()?;
                let holder = sd
                    .start_container_scope(id, &sbr.cgroup_path, &desired.unwrap_or_default())
                    .await?;
                let sd = sd.clone();
                let unit = crate::cgroup::systemd::container_scope(id);
                undo.push(move || {
                    tokio::spawn(async move {
                        let _ = sd.stop(&unit).await;
                    });
                });
                (Vec::new(), Some(holder))
            }
            None => (cgroups.ensure(cgroup_path)?, None),
        };
        {
            let cg = cgroups.clone();
            let leaf = cgroups.dir(cgroup_path);
            undo.push(move || {
                let _ = cg.remove_created(&created, &leaf);
            });
        }
        // Before the init stage joins the cgroup, so no process of the
        // container ever runs unfiltered. Removing the cgroup (the undo
        // above) detaches the filter. Privileged containers get none.
        if let Some(rules) = &devices.rules {
            cgroups.install_device_filter(cgroup_path, rules)?;
        }
        // Resources apply from the start (the init stage joins this cgroup
        // before anything runs in it).
        if let Some(r) = resources {
            let desired = crate::cgroup::resize::desired(r)?;
            crate::cgroup::resize::apply(
                &crate::cgroup::resize::CgroupDir(cgroups.dir(cgroup_path)),
                &desired,
                self.cfg.memory_decrease_wait(),
            )?;
        }
        crate::crash::point("create_container.cgroup");
        Ok(scope_holder)
    }

    /// The shim's create (rootfs mounted, init parked before exec) of the
    /// spec `spec_json`. Returns the init's pid.
    async fn create_in_shim(
        &self,
        undo: &mut Rollback,
        nc: &NewContainer,
        cfg: &cri::ContainerConfig,
        c: &Checked<'_>,
        spec_json: Vec<u8>,
        scope_holder: Option<Holder>,
    ) -> Result<u32> {
        let restore = nc.restore.as_ref();
        let (id, dir, bundle, image) = (&nc.id, &nc.dir, &nc.bundle, &c.image);
        let lower: Vec<String> = self
            .images
            .lower_dirs(image)
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
        let mut shim = Self::shim_of(&c.sb)?;
        let sent = berth_sys::clock::mono_ns();
        let req = shimpb::CreateRequest {
            id: id.clone(),
            bundle: bundle.to_string_lossy().into_owned(),
            spec_json,
            rootfs: vec![overlay],
            log_path: nc.log_path.clone(),
            stdin: cfg.stdin,
            stdin_once: cfg.stdin_once,
            terminal: cfg.tty,
            restore_images_dir: restore
                .map(|r| r.images.to_string_lossy().into_owned())
                .unwrap_or_default(),
            criu_path: restore
                .map(|r| r.criu.to_string_lossy().into_owned())
                .unwrap_or_default(),
            restore_stdio: restore.map(|r| r.stdio.clone()).unwrap_or_default(),
        };
        let resp = shim.create_fast(req).await.map_err(shim_error)?;
        let back = berth_sys::clock::mono_ns();
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
        let resp = resp.into_inner();
        crate::metrics::steps::observe_shim_call(
            "create_container",
            &resp.steps,
            (sent, back),
            (resp.received_ns, resp.replied_ns),
        );
        Ok(resp.pid)
    }

    /// Writes the record (the container exists from here on), drops the
    /// intent and publishes the container.
    fn commit_container(&self, undo: Rollback, record: ContainerRecord, name: &str) -> Result<String> {
        let (id, sandbox_id) = (record.id.clone(), record.sandbox_id.clone());
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
        self.events.container(Kind::Created, &id, &sandbox_id);
        tracing::info!(container = %id, sandbox = %sandbox_id, name = %name, "container created");
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
}

/// A validated CreateContainer: the pod it goes in and the image it runs.
struct Checked<'a> {
    sb: Arc<Sandbox>,
    sbr: SandboxRecord,
    meta: &'a cri::ContainerMetadata,
    image_name: &'a str,
    image: ImageRecord,
}

/// The OCI spec and what CreateContainer keeps from building it.
struct Built {
    oci: oci_spec::runtime::Spec,
    identity: Identity,
    devices: devices::ContainerDevices,
    /// The image's VOLUMEs as CRI mounts (their dirs are made per container).
    volumes: Vec<cri::Mount>,
    /// Image volumes (KEP-4639), mounted after the container's dir exists.
    image_volumes: Vec<image_volume::Planned>,
}

/// Where a new container's pieces go.
struct NewContainer {
    id: String,
    cgroup_path: String,
    /// `<root>/containers/<id>`: upper and work dirs, volumes.
    dir: PathBuf,
    /// `<state>/containers/<id>`: the OCI bundle.
    bundle: PathBuf,
    stop_signal: i32,
    log_path: String,
    /// A restore's CRIU images and stdio names, for the shim.
    restore: Option<ShimRestore>,
}

/// The container's log file: kubelet's pod log directory joined with the
/// container's log path; empty when either is.
/// Writes the spec into the bundle as an OCI bundle holds it (verbose
/// ContainerStatus shows exactly what the container was created with) and
/// returns it, encoded, for the shim.
fn write_bundle_spec(bundle: &std::path::Path, oci: &oci_spec::runtime::Spec) -> Result<Vec<u8>> {
    let spec_json = serde_json::to_vec(oci).map_err(|e| Error::Internal(e.to_string()))?;
    let spec_file = bundle.join("config.json");
    store::modes::write_file(&spec_file, &spec_json, store::modes::PRIVATE_FILE)
        .map_err(|e| Error::io(format!("write {}", spec_file.display()), e))?;
    crate::crash::point("create_container.config");
    Ok(spec_json)
}

fn log_path_of(cfg: &cri::ContainerConfig, sbr: &SandboxRecord) -> String {
    if cfg.log_path.is_empty() || sbr.log_directory.is_empty() {
        String::new()
    } else {
        Path::new(&sbr.log_directory)
            .join(&cfg.log_path)
            .to_string_lossy()
            .into_owned()
    }
}

/// The record of a container just created in its shim (state Created).
fn new_record(
    cfg: &cri::ContainerConfig,
    c: &Checked<'_>,
    nc: NewContainer,
    identity: Identity,
    pid: u32,
) -> ContainerRecord {
    ContainerRecord {
        id: nc.id,
        sandbox_id: c.sbr.id.clone(),
        name: c.meta.name.clone(),
        attempt: c.meta.attempt,
        image: c.image_name.to_string(),
        image_ref: c.image.id.clone(),
        labels: cfg.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        annotations: cfg
            .annotations
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        log_path: nc.log_path,
        state: ContainerState::Created,
        created_at: store::now_ns(),
        started_at: 0,
        finished_at: 0,
        exit_code: 0,
        reason: String::new(),
        message: String::new(),
        pid,
        cgroup_path: nc.cgroup_path,
        dir: nc.dir,
        bundle: nc.bundle,
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
        stop_signal: nc.stop_signal,
        resources: cfg
            .linux
            .as_ref()
            .and_then(|l| l.resources.as_ref())
            .map(resize::Asked::from),
        process_user: None,
        uid: identity.uid,
        gid: identity.gid,
        additional_gids: identity.additional_gids,
        // CreateContainer fills them in from what it mounted.
        image_volumes: Vec::new(),
        restore_from: None,
    }
}

/// What the shim needs to restore a container at Start.
struct ShimRestore {
    /// CRIU's images (the unpacked archive's `checkpoint/`).
    images: std::path::PathBuf,
    /// The node's criu.
    criu: std::path::PathBuf,
    /// The dump's names of stdin, stdout and stderr.
    stdio: Vec<String>,
}
