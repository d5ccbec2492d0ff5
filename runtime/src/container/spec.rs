//! CRI container config + image config -> OCI runtime spec.
//!
//! Pure functions: everything they need (image config, the image's
//! passwd/group files, sandbox namespace paths) comes in as arguments, so the
//! whole conversion is unit-tested on the host.

use std::collections::BTreeMap;
use std::path::PathBuf;

use berth_proto::cri;
use serde_json::{json, Value};

use super::user::{self, Identity, UserRequest};
use crate::error::{Error, Result};
use crate::image::ImageConfig;

/// Docker's default capability set, which Kubernetes containers get unless
/// their security context says otherwise.
pub const DEFAULT_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Every capability of Linux 6.x, for `ALL` and privileged containers.
pub const ALL_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// Paths hidden from unprivileged containers (the Kubernetes defaults).
pub const DEFAULT_MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Paths read-only in unprivileged containers.
pub const DEFAULT_READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

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
}

/// Whether the container gets a PID namespace of its own, checking that its
/// mode fits the pod's (kubelet sends matching ones).
fn new_pid_namespace(cfg: &cri::ContainerConfig, pod: crate::sandbox::PidMode) -> Result<bool> {
    use crate::sandbox::PidMode;
    let mode = cfg
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.as_ref())
        .map(|n| n.pid)
        .unwrap_or(cri::NamespaceMode::Container as i32);
    match (cri::NamespaceMode::try_from(mode), pod) {
        (Ok(cri::NamespaceMode::Container), _) => Ok(true),
        (Ok(cri::NamespaceMode::Pod), PidMode::Pod) | (Ok(cri::NamespaceMode::Node), PidMode::Node) => {
            Ok(false)
        }
        (Ok(cri::NamespaceMode::Node), PidMode::Container) => Ok(false),
        (Ok(cri::NamespaceMode::Target), _) => Err(Error::InvalidArgument(
            "PID namespace mode TARGET (ephemeral containers) is not supported yet".into(),
        )),
        (m, pod) => Err(Error::InvalidArgument(format!(
            "container PID namespace mode {m:?} does not fit the pod's {pod:?} mode"
        ))),
    }
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

/// The capability set from the security context.
pub fn capabilities(sc: Option<&cri::LinuxContainerSecurityContext>) -> Result<Vec<String>> {
    let Some(sc) = sc else {
        return Ok(DEFAULT_CAPS.iter().map(|s| s.to_string()).collect());
    };
    if sc.privileged {
        return Ok(ALL_CAPS.iter().map(|s| s.to_string()).collect());
    }
    let norm = |c: &str| -> Result<String> {
        let up = c.to_ascii_uppercase();
        let full = if up.starts_with("CAP_") {
            up
        } else {
            format!("CAP_{up}")
        };
        if full == "CAP_ALL" || ALL_CAPS.contains(&full.as_str()) {
            Ok(full)
        } else {
            Err(Error::InvalidArgument(format!("unknown capability {c:?}")))
        }
    };
    let mut caps: Vec<String> = DEFAULT_CAPS.iter().map(|s| s.to_string()).collect();
    if let Some(c) = &sc.capabilities {
        let add: Vec<String> = c
            .add_capabilities
            .iter()
            .map(|c| norm(c))
            .collect::<Result<_>>()?;
        let drop: Vec<String> = c
            .drop_capabilities
            .iter()
            .map(|c| norm(c))
            .collect::<Result<_>>()?;
        // As containerd: ALL in add or drop resets the set first; then the
        // named additions, then the named drops.
        if add.iter().any(|c| c == "CAP_ALL") {
            caps = ALL_CAPS.iter().map(|s| s.to_string()).collect();
        }
        if drop.iter().any(|c| c == "CAP_ALL") {
            caps.clear();
        }
        for a in add.iter().filter(|c| *c != "CAP_ALL") {
            if !caps.contains(a) {
                caps.push(a.clone());
            }
        }
        caps.retain(|c| !drop.contains(c));
    }
    Ok(caps)
}

fn propagation_option(p: i32) -> &'static str {
    match cri::MountPropagation::try_from(p) {
        Ok(cri::MountPropagation::PropagationHostToContainer) => "rslave",
        Ok(cri::MountPropagation::PropagationBidirectional) => "rshared",
        _ => "rprivate",
    }
}

/// The container's `/dev/shm`: the pod's, bound in (so the pod's containers
/// share it and it survives each of them), with the same nosuid, nodev and
/// noexec as the tmpfs; a tmpfs of its own only for a sandbox that has none.
fn dev_shm(pod: Option<&crate::sandbox::shm::PodShm>) -> Value {
    match pod {
        Some(s) => json!({"destination": "/dev/shm", "type": "bind", "source": s.source,
            "options": ["rbind", "rprivate", "nosuid", "noexec", "nodev", "rw"]}),
        None => json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
            "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
    }
}

/// Builds the spec (as JSON, checked against the oci-spec types).
pub fn build_spec(
    cfg: &cri::ContainerConfig,
    image: &ImageConfig,
    users: &ImageUsers,
    sandbox: &SandboxContext,
) -> Result<(Value, Identity)> {
    let args = process_args(cfg, image)?;
    let env = merge_env(&image.env, &cfg.envs)?;
    let sc = cfg.linux.as_ref().and_then(|l| l.security_context.as_ref());
    let privileged = sc.is_some_and(|s| s.privileged);
    let strict =
        sc.is_some_and(|s| s.supplemental_groups_policy == cri::SupplementalGroupsPolicy::Strict as i32);
    let id = user::resolve(
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
    )?;
    let caps = capabilities(sc)?;
    let ambient: Vec<String> = sc
        .and_then(|s| s.capabilities.as_ref())
        .map(|c| {
            c.add_ambient_capabilities
                .iter()
                .map(|a| {
                    let up = a.to_ascii_uppercase();
                    if up.starts_with("CAP_") {
                        up
                    } else {
                        format!("CAP_{up}")
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    // The kernel raises an ambient capability only if it is permitted and
    // inheritable: say so here rather than fail at StartContainer.
    if let Some(missing) = ambient.iter().find(|a| !caps.contains(a)) {
        return Err(Error::InvalidArgument(format!(
            "ambient capability {missing} is not in the container's capability set"
        )));
    }
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

    let sys_opts: Vec<&str> = if privileged {
        vec!["nosuid", "noexec", "nodev", "rw"]
    } else {
        vec!["nosuid", "noexec", "nodev", "ro"]
    };
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]}),
        dev_shm(sandbox.shm.as_ref()),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": sys_opts}),
        json!({"destination": "/sys/fs/cgroup", "type": "cgroup2", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", if privileged {"rw"} else {"ro"}]}),
    ];
    // Every container of the pod sees the same name-service files; a CRI
    // mount of the same path (kubelet's own /etc/hosts) replaces ours below.
    if let Some(f) = &sandbox.pod_files {
        let ro = if cfg
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .is_some_and(|s| s.readonly_rootfs)
        {
            "ro"
        } else {
            "rw"
        };
        for (dest, src) in [
            ("/etc/hosts", &f.hosts),
            ("/etc/resolv.conf", &f.resolv_conf),
            ("/etc/hostname", &f.hostname),
        ] {
            mounts.push(json!({"destination": dest, "type": "bind", "source": src, "options": ["rbind", "rprivate", ro]}));
        }
    }
    for m in &cfg.mounts {
        super::mounts::validate(m)?;
        let mut opts = vec!["rbind", propagation_option(m.propagation)];
        opts.push(if m.readonly { "ro" } else { "rw" });
        // OCI runtime-spec 1.1 "rro": read-only all the way down (mount_setattr).
        if m.recursive_read_only {
            opts.push("rro");
        }
        mounts.retain(|x| x["destination"] != m.container_path.as_str());
        mounts.push(
            json!({"destination": m.container_path, "type": "bind", "source": m.host_path, "options": opts}),
        );
    }

    let mut namespaces = vec![json!({"type": "mount"}), json!({"type": "cgroup"})];
    // No "pid" entry: the container is cloned into the shim's children's PID
    // namespace, which is the pod's (POD) or the node's (NODE).
    if new_pid_namespace(cfg, sandbox.pid_mode)? {
        namespaces.insert(0, json!({"type": "pid"}));
    }
    for (kind, oci) in [("net", "network"), ("ipc", "ipc"), ("uts", "uts")] {
        if let Some(p) = sandbox.ns_paths.get(kind) {
            namespaces.push(json!({"type": oci, "path": p}));
        }
    }

    let (masked, readonly): (Vec<String>, Vec<String>) = if privileged {
        (vec![], vec![])
    } else {
        let m = sc
            .map(|s| s.masked_paths.clone())
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| DEFAULT_MASKED_PATHS.iter().map(|s| s.to_string()).collect());
        let r = sc
            .map(|s| s.readonly_paths.clone())
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| DEFAULT_READONLY_PATHS.iter().map(|s| s.to_string()).collect());
        (m, r)
    };
    let oom_score_adj = cfg
        .linux
        .as_ref()
        .and_then(|l| l.resources.as_ref())
        .map(|r| r.oom_score_adj)
        .filter(|v| *v != 0);

    let mut process = json!({
        "terminal": cfg.tty,
        "user": {"uid": id.uid, "gid": id.gid, "additionalGids": id.additional_gids},
        "args": args,
        "env": env,
        "cwd": cwd,
        "capabilities": {
            "bounding": caps, "effective": caps, "permitted": caps,
            "inheritable": ambient, "ambient": ambient,
        },
        "noNewPrivileges": sc.is_some_and(|s| s.no_new_privs),
    });
    if let Some(adj) = oom_score_adj {
        process["oomScoreAdj"] = json!(adj);
    }
    let mut spec = json!({
        "ociVersion": "1.0.2",
        "process": process,
        "root": {"path": "rootfs", "readonly": sc.is_some_and(|s| s.readonly_rootfs)},
        "mounts": mounts,
        "linux": {
            "namespaces": namespaces,
            "cgroupsPath": sandbox.cgroup_path,
            "maskedPaths": masked,
            "readonlyPaths": readonly,
        },
    });
    if !sandbox.ns_paths.contains_key("uts") && !sandbox.hostname.is_empty() {
        spec["hostname"] = json!(sandbox.hostname);
    }
    // A Bidirectional mount must stay in its host peer group, so the
    // container's root may not be made rslave (containerd sets the same).
    if cfg
        .mounts
        .iter()
        .any(|m| m.propagation == cri::MountPropagation::PropagationBidirectional as i32)
    {
        spec["linux"]["rootfsPropagation"] = json!("rshared");
    }
    if let Some(profile) = super::seccomp::profile(sc, &caps)? {
        spec["linux"]["seccomp"] = profile;
    }
    // Type-check against the runtime-spec model before anyone relies on it.
    serde_json::from_value::<oci_spec::runtime::Spec>(spec.clone())
        .map_err(|e| Error::Internal(format!("generated OCI spec does not parse: {e}")))?;
    Ok((spec, id))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> cri::ContainerConfig {
        cri::ContainerConfig {
            metadata: Some(cri::ContainerMetadata {
                name: "c".into(),
                attempt: 0,
            }),
            ..Default::default()
        }
    }

    fn image() -> ImageConfig {
        ImageConfig {
            entrypoint: vec!["/entry".into()],
            cmd: vec!["a".into(), "b".into()],
            env: vec!["PATH=/bin".into(), "A=1".into()],
            ..Default::default()
        }
    }

    #[test]
    fn pid_namespace_modes_fit_the_pod() {
        use crate::sandbox::PidMode;
        let with = |mode: cri::NamespaceMode| {
            let mut c = cfg();
            c.linux = Some(cri::LinuxContainerConfig {
                security_context: Some(cri::LinuxContainerSecurityContext {
                    namespace_options: Some(cri::NamespaceOption {
                        pid: mode as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            });
            c
        };
        assert!(new_pid_namespace(&cfg(), PidMode::Container).unwrap());
        assert!(!new_pid_namespace(&with(cri::NamespaceMode::Pod), PidMode::Pod).unwrap());
        assert!(!new_pid_namespace(&with(cri::NamespaceMode::Node), PidMode::Node).unwrap());
        let e = new_pid_namespace(&with(cri::NamespaceMode::Pod), PidMode::Container).unwrap_err();
        assert!(e.to_string().contains("does not fit"), "{e}");
        assert!(new_pid_namespace(&with(cri::NamespaceMode::Node), PidMode::Pod).is_err());
        assert!(new_pid_namespace(&with(cri::NamespaceMode::Target), PidMode::Container).is_err());
    }

    #[test]
    fn command_and_args_follow_kubernetes_rules() {
        let img = image();
        assert_eq!(process_args(&cfg(), &img).unwrap(), vec!["/entry", "a", "b"]);
        let mut c = cfg();
        c.args = vec!["x".into()];
        assert_eq!(process_args(&c, &img).unwrap(), vec!["/entry", "x"]);
        c.command = vec!["/cmd".into()];
        assert_eq!(process_args(&c, &img).unwrap(), vec!["/cmd", "x"]);
        c.args.clear();
        assert_eq!(process_args(&c, &img).unwrap(), vec!["/cmd"]);
        let err = process_args(&cfg(), &ImageConfig::default()).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)));
    }

    #[test]
    fn env_merges_with_cri_winning() {
        let kv = |k: &str, v: &[u8]| cri::KeyValue {
            key: k.into(),
            value: v.to_vec(),
        };
        let env = merge_env(
            &["PATH=/bin".into(), "A=1".into()],
            &[kv("A", b"2"), kv("B", b"3")],
        )
        .unwrap();
        assert_eq!(env, vec!["PATH=/bin", "A=2", "B=3"]);
        assert_eq!(merge_env(&[], &[]).unwrap()[0], DEFAULT_PATH_ENV);
        assert!(merge_env(&[], &[kv("BAD", b"\xff")]).is_err());
        assert!(merge_env(&[], &[kv("A=B", b"1")]).is_err());
    }

    #[test]
    fn capability_add_drop_and_all() {
        let sc = |add: &[&str], drop: &[&str]| cri::LinuxContainerSecurityContext {
            capabilities: Some(cri::Capability {
                add_capabilities: add.iter().map(|s| s.to_string()).collect(),
                drop_capabilities: drop.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let c = capabilities(Some(&sc(&["SYS_ADMIN"], &["CHOWN"]))).unwrap();
        assert!(c.contains(&"CAP_SYS_ADMIN".to_string()) && !c.contains(&"CAP_CHOWN".to_string()));
        let c = capabilities(Some(&sc(&["NET_ADMIN"], &["ALL"]))).unwrap();
        assert_eq!(c, vec!["CAP_NET_ADMIN"]);
        let c = capabilities(Some(&sc(&["ALL"], &["KILL"]))).unwrap();
        assert_eq!(c.len(), ALL_CAPS.len() - 1);
        assert!(capabilities(Some(&sc(&["BOGUS"], &[]))).is_err());
        assert_eq!(capabilities(None).unwrap().len(), DEFAULT_CAPS.len());
    }

    #[test]
    fn ambient_capabilities_are_inheritable_and_must_be_held() {
        let with_ambient = |add: &[&str], ambient: &[&str]| {
            let mut c = cfg();
            c.command = vec!["true".into()];
            c.linux = Some(cri::LinuxContainerConfig {
                security_context: Some(cri::LinuxContainerSecurityContext {
                    capabilities: Some(cri::Capability {
                        add_capabilities: add.iter().map(|s| s.to_string()).collect(),
                        add_ambient_capabilities: ambient.iter().map(|s| s.to_string()).collect(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            });
            build_spec(&c, &image(), &ImageUsers::default(), &SandboxContext::default())
        };
        let (spec, _) = with_ambient(&["NET_ADMIN"], &["net_admin"]).unwrap();
        let caps = &spec["process"]["capabilities"];
        assert_eq!(caps["ambient"], json!(["CAP_NET_ADMIN"]));
        assert_eq!(caps["inheritable"], json!(["CAP_NET_ADMIN"]));
        let err = with_ambient(&[], &["SYS_ADMIN"]).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
    }

    #[test]
    fn builds_a_valid_spec_with_sandbox_namespaces() {
        let mut c = cfg();
        c.command = vec!["sh".into(), "-c".into(), "echo hi".into()];
        c.mounts = vec![cri::Mount {
            container_path: "/data".into(),
            host_path: "/tmp".into(),
            readonly: true,
            propagation: cri::MountPropagation::PropagationHostToContainer as i32,
            ..Default::default()
        }];
        let mut ns = BTreeMap::new();
        ns.insert("net".to_string(), PathBuf::from("/run/berth/sandboxes/x/ns/net"));
        let sb = SandboxContext {
            ns_paths: ns,
            cgroup_path: "/berth/x/c".into(),
            hostname: "pod".into(),
            pid_mode: crate::sandbox::PidMode::Container,
            pod_files: Some(crate::net::files::PodFiles {
                hosts: "/run/berth/sandboxes/x/hosts".into(),
                resolv_conf: "/run/berth/sandboxes/x/resolv.conf".into(),
                hostname: "/run/berth/sandboxes/x/hostname".into(),
            }),
            shm: Some(crate::sandbox::shm::PodShm {
                source: "/run/berth/sandboxes/x/shm".into(),
                owned: true,
            }),
        };
        let (spec, id) = build_spec(&c, &image(), &ImageUsers::default(), &sb).unwrap();
        let mounts = spec["mounts"].as_array().unwrap();
        let src = |dest: &str| {
            mounts
                .iter()
                .find(|m| m["destination"] == dest)
                .map(|m| m["source"].clone())
        };
        assert_eq!(
            src("/etc/resolv.conf"),
            Some(json!("/run/berth/sandboxes/x/resolv.conf"))
        );
        assert_eq!(
            src("/etc/hostname"),
            Some(json!("/run/berth/sandboxes/x/hostname"))
        );
        let shm = mounts.iter().find(|m| m["destination"] == "/dev/shm").unwrap();
        assert_eq!(
            (&shm["type"], &shm["source"]),
            (&json!("bind"), &json!("/run/berth/sandboxes/x/shm")),
            "the pod's /dev/shm, not a tmpfs per container"
        );
        assert_eq!(
            mounts.iter().filter(|m| m["destination"] == "/dev/shm").count(),
            1
        );
        assert_eq!(id.uid, 0);
        assert_eq!(spec["process"]["args"], json!(["sh", "-c", "echo hi"]));
        assert_eq!(spec["linux"]["cgroupsPath"], "/berth/x/c");
        let nss = spec["linux"]["namespaces"].as_array().unwrap();
        assert!(nss.contains(&json!({"type": "network", "path": "/run/berth/sandboxes/x/ns/net"})));
        assert!(nss.contains(&json!({"type": "pid"})));
        // No sandbox UTS namespace: the container gets its own, with the pod hostname.
        assert_eq!(spec["hostname"], "pod");
        let data = spec["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["destination"] == "/data")
            .unwrap();
        assert_eq!(data["options"], json!(["rbind", "rslave", "ro"]));
    }

    #[test]
    fn rejects_bad_mounts_and_relative_workdir() {
        let mut c = cfg();
        c.command = vec!["sh".into()];
        c.working_dir = "rel".into();
        assert!(build_spec(&c, &image(), &ImageUsers::default(), &SandboxContext::default()).is_err());
        c.working_dir.clear();
        c.mounts = vec![cri::Mount {
            container_path: "data".into(),
            host_path: "/x".into(),
            ..Default::default()
        }];
        assert!(build_spec(&c, &image(), &ImageUsers::default(), &SandboxContext::default()).is_err());
        c.mounts = vec![cri::Mount {
            container_path: "/d".into(),
            host_path: "/x".into(),
            recursive_read_only: true,
            ..Default::default()
        }];
        assert!(build_spec(&c, &image(), &ImageUsers::default(), &SandboxContext::default()).is_err());
    }

    #[test]
    fn bidirectional_makes_root_rshared_and_rro_is_an_option() {
        let mut c = cfg();
        c.command = vec!["sh".into()];
        let bind = |path: &str, p: cri::MountPropagation, rro: bool| cri::Mount {
            container_path: path.into(),
            host_path: "/h".into(),
            readonly: rro,
            recursive_read_only: rro,
            propagation: p as i32,
            ..Default::default()
        };
        c.mounts = vec![bind("/ro", cri::MountPropagation::PropagationPrivate, true)];
        let (spec, _) = build_spec(&c, &image(), &ImageUsers::default(), &SandboxContext::default()).unwrap();
        assert!(spec["linux"].get("rootfsPropagation").is_none());
        let opts = |spec: &Value, dest: &str| {
            spec["mounts"]
                .as_array()
                .unwrap()
                .iter()
                .find(|m| m["destination"] == dest)
                .unwrap()["options"]
                .clone()
        };
        assert_eq!(opts(&spec, "/ro"), json!(["rbind", "rprivate", "ro", "rro"]));
        c.mounts.push(bind(
            "/both",
            cri::MountPropagation::PropagationBidirectional,
            false,
        ));
        let (spec, _) = build_spec(&c, &image(), &ImageUsers::default(), &SandboxContext::default()).unwrap();
        assert_eq!(spec["linux"]["rootfsPropagation"], "rshared");
        assert_eq!(opts(&spec, "/both"), json!(["rbind", "rshared", "rw"]));
        c.mounts = vec![bind(
            "/x",
            cri::MountPropagation::PropagationHostToContainer,
            true,
        )];
        let e = build_spec(&c, &image(), &ImageUsers::default(), &SandboxContext::default()).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
    }
}
