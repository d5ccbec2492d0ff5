//! Unit tests of the spec builder.

use super::*;
use serde_json::{json, Value};

/// The spec as the shim receives it, for JSON-shaped assertions.
fn built(r: Result<(Spec, Identity)>) -> Result<(Value, Identity)> {
    r.map(|(spec, id)| (serde_json::to_value(&spec).unwrap(), id))
}

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
        built(build_spec(
            &c,
            &image(),
            &ImageUsers::default(),
            &SandboxContext::default(),
        ))
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
        userns: None,
    };
    let (spec, id) = built(build_spec(&c, &image(), &ImageUsers::default(), &sb)).unwrap();
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
    let (spec, _) = built(build_spec(
        &c,
        &image(),
        &ImageUsers::default(),
        &SandboxContext::default(),
    ))
    .unwrap();
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
    let (spec, _) = built(build_spec(
        &c,
        &image(),
        &ImageUsers::default(),
        &SandboxContext::default(),
    ))
    .unwrap();
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
