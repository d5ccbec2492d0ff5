//! CRI container config + image config -> OCI runtime spec.
//!
//! Pure functions: everything they need (image config, the image's
//! passwd/group files, sandbox namespace paths) comes in as arguments, so the
//! whole conversion is unit-tested on the host. The spec is built as
//! oci-spec's typed values from the start, so every part, including what
//! CreateContainer adds later (AppArmor, rlimits, devices), is checked by
//! the compiler; `golden_tests` pins the JSON the shim receives.

#[cfg(test)]
mod golden_tests;
mod mounts;
mod namespaces;
mod node;
mod security;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::PathBuf;

use berth_proto::cri;
use oci_spec::runtime::{Linux, Process, RootBuilder, Spec, User, UserBuilder};

use super::user::{self, Identity, UserRequest};
use crate::error::{Error, Result};
use crate::image::ImageConfig;

pub use node::{set_apparmor_profile, set_rlimits};
pub use security::{capabilities, ALL_CAPS, DEFAULT_CAPS, DEFAULT_MASKED_PATHS, DEFAULT_READONLY_PATHS};

/// The runtime-spec version the specs declare.
const OCI_VERSION: &str = "1.0.2";

/// Default PATH when neither the image nor the request sets one.
pub const DEFAULT_PATH_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The sandbox-side facts a container spec needs.
#[derive(Debug, Clone, Default)]
pub struct SandboxContext {
    /// Pinned namespace files by kind (`net`, `ipc`, `uts`).
    pub ns_paths: BTreeMap<String, PathBuf>,
    /// The container's cgroup path below the cgroup2 root.
    pub cgroup_path: String,
    /// Pod hostname (used when the container gets its own UTS namespace).
    pub hostname: String,
    /// The pod's /etc/hosts, /etc/resolv.conf and /etc/hostname.
    pub pod_files: Option<crate::net::files::PodFiles>,
    /// The pod's PID namespace mode.
    pub pid_mode: crate::sandbox::PidMode,
    /// The pod's /dev/shm; None: a tmpfs of the container's own.
    pub shm: Option<crate::sandbox::shm::PodShm>,
    /// The pod's own user namespace (pinned as `ns_paths["user"]`).
    pub userns: Option<crate::sandbox::userns::PodUserns>,
}

/// The image's user database, if it has one.
#[derive(Debug, Clone, Default)]
pub struct ImageUsers {
    /// /etc/passwd content.
    pub passwd: String,
    /// /etc/group content.
    pub group: String,
}

/// The command line per Kubernetes: `command` replaces ENTRYPOINT, `args`
/// replaces CMD, and CMD is dropped whenever `command` is given.
pub fn process_args(cfg: &cri::ContainerConfig, image: &ImageConfig) -> Result<Vec<String>> {
    let args = if !cfg.command.is_empty() {
        let mut v = cfg.command.clone();
        v.extend(cfg.args.iter().cloned());
        v
    } else if !cfg.args.is_empty() {
        let mut v = image.entrypoint.clone();
        v.extend(cfg.args.iter().cloned());
        v
    } else {
        let mut v = image.entrypoint.clone();
        v.extend(image.cmd.iter().cloned());
        v
    };
    if args.is_empty() || args[0].is_empty() {
        return Err(Error::InvalidArgument(
            "no command: neither the container config nor the image sets one".into(),
        ));
    }
    Ok(args)
}

/// Image env, overridden key by key by the CRI env, in first-seen order.
/// CRI env values are bytes (cri-api v0.35.6+); the OCI spec is JSON, so a
/// value that is not UTF-8 is refused rather than silently altered.
pub fn merge_env(image_env: &[String], cri_env: &[cri::KeyValue]) -> Result<Vec<String>> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut set = |k: &str, v: &str| match out.iter_mut().find(|(ek, _)| ek == k) {
        Some(e) => e.1 = v.to_string(),
        None => out.push((k.to_string(), v.to_string())),
    };
    for e in image_env {
        let (k, v) = e.split_once('=').unwrap_or((e.as_str(), ""));
        set(k, v);
    }
    for kv in cri_env {
        let value = std::str::from_utf8(&kv.value)
            .map_err(|_| Error::InvalidArgument(format!("env {:?}: value is not valid UTF-8", kv.key)))?;
        if kv.key.is_empty() || kv.key.contains('=') || kv.key.contains('\0') || value.contains('\0') {
            return Err(Error::InvalidArgument(format!(
                "env {:?}: bad name or NUL in value",
                kv.key
            )));
        }
        set(&kv.key, value);
    }
    if !out.iter().any(|(k, _)| k == "PATH") {
        let (k, v) = DEFAULT_PATH_ENV.split_once('=').expect("constant has =");
        out.insert(0, (k.to_string(), v.to_string()));
    }
    Ok(out.into_iter().map(|(k, v)| format!("{k}={v}")).collect())
}

/// Builds the spec; the [`Identity`] is what `process.user` holds.
pub fn build_spec(
    cfg: &cri::ContainerConfig,
    image: &ImageConfig,
    users: &ImageUsers,
    sandbox: &SandboxContext,
) -> Result<(Spec, Identity)> {
    let args = process_args(cfg, image)?;
    let env = merge_env(&image.env, &cfg.envs)?;
    let sc = cfg.linux.as_ref().and_then(|l| l.security_context.as_ref());
    let privileged = sc.is_some_and(|s| s.privileged);
    let id = identity(sc, image, users)?;
    let caps = security::capabilities(sc)?;
    let ambient = security::ambient(sc, &caps)?;
    let cwd = working_dir(cfg, image)?;
    let mounts = mounts::container_mounts(cfg, sandbox, privileged)?;
    let namespaces = namespaces::namespaces(cfg, sandbox)?;
    let (masked, readonly) = security::hidden_paths(sc, privileged);
    let oom_score_adj = cfg
        .linux
        .as_ref()
        .and_then(|l| l.resources.as_ref())
        .map(|r| r.oom_score_adj)
        .filter(|v| *v != 0)
        .map(|v| {
            // The same words as the cgroup step's range check, which would
            // refuse it later anyway.
            i32::try_from(v)
                .map_err(|_| Error::InvalidArgument(format!("oom_score_adj {v} is outside -1000..=1000")))
        })
        .transpose()?;

    let mut process = empty_process();
    process.set_terminal(Some(cfg.tty));
    process.set_user(process_user(&id)?);
    process.set_args(Some(args));
    process.set_env(Some(env));
    process.set_cwd(cwd.into());
    process.set_capabilities(Some(security::linux_capabilities(&caps, &ambient)?));
    process.set_no_new_privileges(Some(sc.is_some_and(|s| s.no_new_privs)));
    process.set_oom_score_adj(oom_score_adj);

    let mut linux = empty_linux();
    linux.set_namespaces(Some(namespaces));
    linux.set_cgroups_path(Some(PathBuf::from(&sandbox.cgroup_path)));
    linux.set_masked_paths(Some(masked));
    linux.set_readonly_paths(Some(readonly));
    linux.set_rootfs_propagation(mounts::rootfs_propagation(cfg));
    linux.set_seccomp(super::seccomp::profile(sc, &caps)?);

    let root = RootBuilder::default()
        .path("rootfs")
        .readonly(sc.is_some_and(|s| s.readonly_rootfs))
        .build()
        .map_err(|e| Error::Internal(format!("root: {e}")))?;
    // The container gets its own UTS namespace (and so the pod's name)
    // only when the sandbox pinned none.
    let hostname = (!sandbox.ns_paths.contains_key("uts") && !sandbox.hostname.is_empty())
        .then(|| sandbox.hostname.clone());

    let mut spec = Spec::default();
    spec.set_version(OCI_VERSION.into());
    spec.set_root(Some(root));
    spec.set_mounts(Some(mounts));
    spec.set_process(Some(process));
    spec.set_hostname(hostname);
    spec.set_domainname(None);
    spec.set_hooks(None);
    spec.set_annotations(None);
    spec.set_linux(Some(linux));
    spec.set_solaris(None);
    spec.set_windows(None);
    spec.set_vm(None);
    spec.set_zos(None);
    spec.set_uid_mappings(None);
    spec.set_gid_mappings(None);
    Ok((spec, id))
}

/// The uid, gid and groups the container runs as, from the security
/// context and the image's user database.
fn identity(
    sc: Option<&cri::LinuxContainerSecurityContext>,
    image: &ImageConfig,
    users: &ImageUsers,
) -> Result<Identity> {
    let strict =
        sc.is_some_and(|s| s.supplemental_groups_policy == cri::SupplementalGroupsPolicy::Strict as i32);
    user::resolve(
        &UserRequest {
            run_as_user: sc.and_then(|s| s.run_as_user.as_ref()).map(|v| v.value),
            run_as_username: sc.map(|s| s.run_as_username.as_str()).unwrap_or(""),
            run_as_group: sc.and_then(|s| s.run_as_group.as_ref()).map(|v| v.value),
            supplemental_groups: sc.map(|s| s.supplemental_groups.as_slice()).unwrap_or(&[]),
            strict_groups: strict,
            image_user: &image.user,
        },
        &user::parse_passwd(&users.passwd),
        &user::parse_group(&users.group),
    )
}

/// `process.user`: always with `additionalGids`, empty or not.
fn process_user(id: &Identity) -> Result<User> {
    UserBuilder::default()
        .uid(id.uid)
        .gid(id.gid)
        .additional_gids(id.additional_gids.clone())
        .build()
        .map_err(|e| Error::Internal(format!("process user: {e}")))
}

/// The request's working dir, else the image's, else `/`; absolute.
fn working_dir(cfg: &cri::ContainerConfig, image: &ImageConfig) -> Result<String> {
    let cwd = if !cfg.working_dir.is_empty() {
        cfg.working_dir.clone()
    } else if !image.working_dir.is_empty() {
        image.working_dir.clone()
    } else {
        "/".to_string()
    };
    if !cwd.starts_with('/') {
        return Err(Error::InvalidArgument(format!(
            "working_dir {cwd:?} must be absolute"
        )));
    }
    Ok(cwd)
}

/// A `Process` with nothing set. oci-spec's `Default` (and so its
/// builder) is a sample shell with rlimits and capabilities of its own,
/// none of which a container may get by accident.
fn empty_process() -> Process {
    let mut p = Process::default();
    p.set_terminal(None);
    p.set_console_size(None);
    p.set_user(User::default());
    p.set_args(None);
    p.set_command_line(None);
    p.set_env(None);
    p.set_cwd(PathBuf::from("/"));
    p.set_capabilities(None);
    p.set_rlimits(None);
    p.set_no_new_privileges(None);
    p.set_apparmor_profile(None);
    p.set_oom_score_adj(None);
    p.set_selinux_label(None);
    p.set_io_priority(None);
    p.set_scheduler(None);
    p.set_exec_cpu_affinity(None);
    p
}

/// A `Linux` with nothing set (oci-spec's `Default` carries sample
/// namespaces, masked paths and resources).
pub(crate) fn empty_linux() -> Linux {
    let mut l = Linux::default();
    l.set_net_devices(None);
    l.set_uid_mappings(None);
    l.set_gid_mappings(None);
    l.set_sysctl(None);
    l.set_resources(None);
    l.set_cgroups_path(None);
    l.set_namespaces(None);
    l.set_devices(None);
    l.set_seccomp(None);
    l.set_rootfs_propagation(None);
    l.set_masked_paths(None);
    l.set_readonly_paths(None);
    l.set_mount_label(None);
    l.set_intel_rdt(None);
    l.set_memory_policy(None);
    l.set_personality(None);
    l.set_time_offsets(None);
    l
}
