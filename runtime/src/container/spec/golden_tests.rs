//! Golden tests for the OCI spec CreateContainer hands the shim: each case
//! builds the whole spec (build_spec, then the node's AppArmor profile,
//! rlimits and devices, as `ContainerManager::create` adds them) and
//! compares it with `testdata/spec_<case>.json`.
//!
//! Regenerate after an intended change with
//! `BERTH_UPDATE_GOLDEN=1 cargo test -p berth-runtime spec_golden` and
//! review the diff: every changed line is a change to what containers get.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use berth_proto::cri;
use serde_json::{json, Value};

use super::{build_spec, set_apparmor_profile, set_rlimits, ImageUsers, SandboxContext};
use crate::config::Rlimit;
use crate::container::apparmor::AppArmor;
use crate::container::devices::{self, tests::cri_dev};
use crate::image::ImageConfig;
use crate::sandbox::PidMode;

/// One CreateContainer as far as the spec goes.
struct Case {
    cfg: cri::ContainerConfig,
    image: ImageConfig,
    users: ImageUsers,
    sandbox: SandboxContext,
    /// Loaded AppArmor profiles; None: AppArmor off on the node.
    apparmor_loaded: Option<&'static str>,
    rlimits: Vec<Rlimit>,
}

const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n";
const GROUP: &str = "root:x:0:\napp:x:1000:\nvideo:x:44:app\naudio:x:29:app,other\n";

fn base() -> Case {
    Case {
        cfg: cri::ContainerConfig {
            metadata: Some(cri::ContainerMetadata {
                name: "c".into(),
                attempt: 0,
            }),
            ..Default::default()
        },
        image: ImageConfig {
            entrypoint: vec!["/entry".into()],
            cmd: vec!["serve".into(), "--port=80".into()],
            env: vec!["PATH=/usr/bin:/bin".into(), "LANG=C.UTF-8".into()],
            ..Default::default()
        },
        users: ImageUsers {
            passwd: PASSWD.into(),
            group: GROUP.into(),
        },
        sandbox: pod_sandbox(),
        apparmor_loaded: None,
        rlimits: Vec::new(),
    }
}

/// A ready pod's facts: pinned namespaces, files, its /dev/shm.
fn pod_sandbox() -> SandboxContext {
    let sb = Path::new("/run/berth/sandboxes/s1");
    let ns_paths: BTreeMap<String, PathBuf> = ["net", "ipc", "uts"]
        .iter()
        .map(|k| (k.to_string(), sb.join("ns").join(k)))
        .collect();
    SandboxContext {
        ns_paths,
        cgroup_path: "/kubepods/pod1/c1".into(),
        hostname: "pod-1".into(),
        pod_files: Some(crate::net::files::PodFiles {
            hosts: sb.join("hosts"),
            resolv_conf: sb.join("resolv.conf"),
            hostname: sb.join("hostname"),
        }),
        pid_mode: PidMode::Container,
        shm: Some(crate::sandbox::shm::PodShm {
            source: sb.join("shm"),
            owned: true,
        }),
        userns: None,
    }
}

fn sc(case: &mut Case) -> &mut cri::LinuxContainerSecurityContext {
    case.cfg
        .linux
        .get_or_insert_with(Default::default)
        .security_context
        .get_or_insert_with(Default::default)
}

fn bind(path: &str, host: &str, p: cri::MountPropagation, ro: bool, rro: bool) -> cri::Mount {
    cri::Mount {
        container_path: path.into(),
        host_path: host.into(),
        readonly: ro,
        recursive_read_only: rro,
        propagation: p as i32,
        ..Default::default()
    }
}

fn kv(k: &str, v: &str) -> cri::KeyValue {
    cri::KeyValue {
        key: k.into(),
        value: v.as_bytes().to_vec(),
    }
}

fn seccomp(kind: cri::security_profile::ProfileType, localhost: &str) -> Option<cri::SecurityProfile> {
    Some(cri::SecurityProfile {
        profile_type: kind as i32,
        localhost_ref: localhost.into(),
    })
}

/// Every case by name. `dir` holds files a case needs (seccomp profiles).
#[allow(deprecated)] // seccomp_profile_path: the legacy field still arrives
fn cases(dir: &Path) -> Vec<(&'static str, Case)> {
    use cri::security_profile::ProfileType;
    use cri::MountPropagation::*;
    let mut out = Vec::new();

    out.push(("plain", base()));

    let mut c = base();
    c.sandbox = SandboxContext::default();
    c.image.env.clear();
    out.push(("no_sandbox_facts", c));

    let mut c = base();
    c.cfg.command = vec!["/bin/sh".into(), "-c".into()];
    c.cfg.args = vec!["echo hi".into()];
    c.cfg.working_dir = "/work".into();
    c.cfg.tty = true;
    c.cfg.stdin = true;
    c.cfg.envs = vec![kv("LANG", "en_US.UTF-8"), kv("SECRET", "s3cr=t"), kv("EMPTY", "")];
    c.image.working_dir = "/srv".into();
    c.image.user = "app".into();
    out.push(("command_env_workdir_image_user", c));

    let mut c = base();
    c.cfg.args = vec!["--debug".into()];
    c.image.working_dir = "/srv".into();
    out.push(("args_replace_cmd", c));

    let mut c = base();
    sc(&mut c).privileged = true;
    sc(&mut c).seccomp = seccomp(ProfileType::RuntimeDefault, "");
    c.cfg.devices = vec![cri_dev("/dev/loop0", "/dev/xd", "r")];
    out.push(("privileged", c));

    let mut c = base();
    let s = sc(&mut c);
    s.readonly_rootfs = true;
    s.no_new_privs = true;
    out.push(("readonly_rootfs", c));

    let mut c = base();
    let s = sc(&mut c);
    s.masked_paths = vec!["/proc/kcore".into(), "/proc/secret".into()];
    s.readonly_paths = vec!["/proc/sys".into()];
    out.push(("masked_readonly_paths", c));

    let mut c = base();
    c.cfg.devices = vec![
        cri_dev("/dev/loop0", "/dev/xd", "rw"),
        cri_dev("/dev/dri", "/dev/dri", "rwm"),
        cri_dev("/dev/null", "/dev/mynull", "r"),
    ];
    out.push(("devices", c));

    let mut c = base();
    c.rlimits = vec![
        Rlimit {
            kind: "RLIMIT_NOFILE".into(),
            soft: 4096,
            hard: 8192,
        },
        Rlimit {
            kind: "RLIMIT_NPROC".into(),
            soft: 100,
            hard: 100,
        },
    ];
    out.push(("rlimits", c));

    let mut c = base();
    c.apparmor_loaded = Some("berth-test (enforce)\nother (complain)\n");
    sc(&mut c).apparmor = Some(cri::SecurityProfile {
        profile_type: ProfileType::Localhost as i32,
        localhost_ref: "berth-test".into(),
    });
    out.push(("apparmor_localhost", c));

    let mut c = base();
    c.apparmor_loaded = Some("berth-default (enforce)\n");
    sc(&mut c).apparmor = Some(cri::SecurityProfile {
        profile_type: ProfileType::RuntimeDefault as i32,
        localhost_ref: String::new(),
    });
    out.push(("apparmor_runtime_default", c));

    let mut c = base();
    sc(&mut c).seccomp = seccomp(ProfileType::RuntimeDefault, "");
    out.push(("seccomp_runtime_default", c));

    let mut c = base();
    let s = sc(&mut c);
    s.seccomp = seccomp(ProfileType::RuntimeDefault, "");
    s.capabilities = Some(cri::Capability {
        add_capabilities: vec!["SYS_ADMIN".into(), "sys_nice".into()],
        ..Default::default()
    });
    out.push(("seccomp_runtime_default_sys_admin", c));

    let mut c = base();
    sc(&mut c).seccomp_profile_path = "runtime/default".into();
    out.push(("seccomp_legacy_path", c));

    let mut c = base();
    sc(&mut c).seccomp = seccomp(ProfileType::Unconfined, "");
    out.push(("seccomp_unconfined", c));

    let profile = dir.join("profile.json");
    std::fs::write(
        &profile,
        r#"{"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 38,
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_AARCH64"],
            "flags": ["SECCOMP_FILTER_FLAG_LOG"],
            "syscalls": [
              {"names": ["read", "write", "exit_group"], "action": "SCMP_ACT_ALLOW"},
              {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
               "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]},
              {"names": ["kill"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}
            ]}"#,
    )
    .unwrap();
    let mut c = base();
    sc(&mut c).seccomp = seccomp(ProfileType::Localhost, profile.to_str().unwrap());
    out.push(("seccomp_localhost", c));

    let mut c = base();
    c.cfg.mounts = vec![
        bind("/data", "/var/lib/data", PropagationPrivate, true, true),
        bind("/cache", "/var/cache/x", PropagationHostToContainer, false, false),
        bind(
            "/etc/hosts",
            "/var/lib/kubelet/pods/p/etc-hosts",
            PropagationPrivate,
            false,
            false,
        ),
        bind("/logs", "/var/log/pods/p", PropagationPrivate, true, false),
    ];
    out.push(("host_path_mounts", c));

    let mut c = base();
    c.cfg.mounts = vec![
        bind("/shared", "/mnt/shared", PropagationBidirectional, false, false),
        bind("/ro", "/mnt/ro", PropagationHostToContainer, true, false),
    ];
    sc(&mut c).privileged = true;
    out.push(("bidirectional_mount", c));

    let mut c = base();
    c.sandbox.pid_mode = PidMode::Pod;
    sc(&mut c).namespace_options = Some(cri::NamespaceOption {
        pid: cri::NamespaceMode::Pod as i32,
        ..Default::default()
    });
    out.push(("shared_pid", c));

    let mut c = base();
    c.sandbox.pid_mode = PidMode::Node;
    c.sandbox.ns_paths.remove("uts");
    sc(&mut c).namespace_options = Some(cri::NamespaceOption {
        pid: cri::NamespaceMode::Node as i32,
        ..Default::default()
    });
    out.push(("host_pid_own_uts", c));

    let mut c = base();
    c.cfg.linux.get_or_insert_with(Default::default).resources = Some(cri::LinuxContainerResources {
        cpu_shares: 512,
        cpu_quota: 50_000,
        cpu_period: 100_000,
        memory_limit_in_bytes: 64 << 20,
        oom_score_adj: 999,
        ..Default::default()
    });
    out.push(("resources", c));

    let mut c = base();
    let s = sc(&mut c);
    s.run_as_user = Some(cri::Int64Value { value: 1000 });
    s.run_as_group = Some(cri::Int64Value { value: 3000 });
    s.supplemental_groups = vec![4000, 44];
    out.push(("groups_merge", c));

    let mut c = base();
    let s = sc(&mut c);
    s.run_as_user = Some(cri::Int64Value { value: 1000 });
    s.supplemental_groups = vec![4000];
    s.supplemental_groups_policy = cri::SupplementalGroupsPolicy::Strict as i32;
    out.push(("groups_strict", c));

    let mut c = base();
    sc(&mut c).run_as_username = "app".into();
    out.push(("run_as_username", c));

    let mut c = base();
    sc(&mut c).capabilities = Some(cri::Capability {
        add_capabilities: vec!["NET_ADMIN".into(), "CAP_SYS_PTRACE".into()],
        drop_capabilities: vec!["CHOWN".into(), "MKNOD".into()],
        add_ambient_capabilities: vec!["net_admin".into()],
    });
    out.push(("capabilities_add_drop_ambient", c));

    let mut c = base();
    sc(&mut c).capabilities = Some(cri::Capability {
        add_capabilities: vec!["NET_BIND_SERVICE".into()],
        drop_capabilities: vec!["ALL".into()],
        ..Default::default()
    });
    out.push(("capabilities_drop_all", c));

    out
}

/// Builds the spec the way CreateContainer does.
fn full_spec(case: &Case, dir: &Path) -> Value {
    let aa = match case.apparmor_loaded {
        Some(loaded) => {
            std::fs::write(dir.join("enabled"), "Y\n").unwrap();
            std::fs::write(dir.join("profiles"), loaded).unwrap();
            AppArmor::at(
                dir.join("enabled"),
                dir.join("profiles"),
                "/nonexistent/apparmor_parser",
            )
        }
        None => AppArmor::at(dir.join("absent"), dir.join("absent"), "/nonexistent"),
    };
    let (mut oci, _id) = build_spec(&case.cfg, &case.image, &case.users, &case.sandbox).unwrap();
    let sc = case.cfg.linux.as_ref().and_then(|l| l.security_context.as_ref());
    set_apparmor_profile(&mut oci, aa.profile_for(sc).unwrap());
    set_rlimits(&mut oci, &case.rlimits).unwrap();
    let privileged = sc.is_some_and(|s| s.privileged);
    let devs = devices::resolve(&case.cfg.devices, privileged, &devices::tests::node()).unwrap();
    devices::add_to_spec(&mut oci, &devs).unwrap();
    // What CreateContainer writes for the shim.
    serde_json::from_slice(&serde_json::to_vec(&oci).unwrap()).unwrap()
}

/// Capability lists are sets (the shim reads them into one): compared
/// sorted, so only their members matter. The runtime/default seccomp
/// profile names the node's architectures: a placeholder, so the files
/// hold on any node.
fn normalize(mut spec: Value) -> Value {
    if let Some(arches) = spec.pointer_mut("/linux/seccomp/architectures") {
        if *arches == json!(crate::container::seccomp::node_architectures()) {
            *arches = json!("<node architectures>");
        }
    }
    if let Some(caps) = spec
        .get_mut("process")
        .and_then(|p| p.get_mut("capabilities"))
        .and_then(Value::as_object_mut)
    {
        for list in caps.values_mut() {
            if let Some(a) = list.as_array_mut() {
                a.sort_by_key(|v| v.to_string());
            }
        }
    }
    spec
}

#[test]
fn spec_golden_files_match() {
    let testdata = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/container/testdata");
    let update = std::env::var_os("BERTH_UPDATE_GOLDEN").is_some();
    let tmp = tempfile::tempdir().unwrap();
    let mut failed = Vec::new();
    for (name, case) in cases(tmp.path()) {
        let dir = tmp.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let got = full_spec(&case, &dir);
        let file = testdata.join(format!("spec_{name}.json"));
        if update {
            let text = serde_json::to_string_pretty(&normalize(got)).unwrap() + "\n";
            std::fs::write(&file, text).unwrap();
            continue;
        }
        let want: Value = serde_json::from_slice(
            &std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display())),
        )
        .unwrap();
        if normalize(got.clone()) != normalize(want) {
            eprintln!("--- {name}: got\n{}", serde_json::to_string_pretty(&got).unwrap());
            failed.push(name);
        }
    }
    assert!(
        failed.is_empty(),
        "specs differ from their golden files: {failed:?}"
    );
}
