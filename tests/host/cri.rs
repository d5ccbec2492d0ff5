//! Host integration tests: berthd's start-up checks and the RPCs that need no
//! kernel features, over the real CRI socket; and CRI wire-format checks.
//! berthd is pointed at a fake cgroup tree (a temp dir), so these run on any
//! Linux host; they need root only because berthd refuses to run without it.

use std::process::Command;

use berth_proto::cri;
use berth_tests::{bin_dir, Berthd};
use prost::Message;

fn fake_cgroup_root(controllers: &str) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    berth_tests::fake_cgroup_tree(d.path(), controllers).unwrap();
    d
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

#[test]
fn berthd_says_exactly_what_the_host_lacks() {
    let cg = fake_cgroup_root("cpuset cpu io");
    std::fs::remove_file(cg.path().join("init.scope/cgroup.kill")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(bin_dir().join("berthd"))
        .args(["--cgroup-root", cg.path().to_str().unwrap()])
        .args(["--root", dir.path().join("root").to_str().unwrap()])
        .args(["--state", dir.path().join("state").to_str().unwrap()])
        .args(["--socket", dir.path().join("s.sock").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    if is_root() {
        // Every missing piece in one message: the controllers, and the
        // cgroup.kill this fake tree's cgroups do not have.
        assert!(err.contains("lacks controller(s) memory, pids"), "{err}");
        assert!(err.contains("no cgroup.kill"), "{err}");
    } else {
        assert!(err.contains("must run as root"), "{err}");
    }
    assert!(!dir.path().join("s.sock").exists(), "no socket on a failed start");
}

#[test]
fn berthd_rejects_bad_config_files() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, "sokcet = \"/x\"\n").unwrap();
    let out = Command::new(bin_dir().join("berthd"))
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("sokcet"));
    let out = Command::new(bin_dir().join("berthd"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
}

/// Registry settings are checked with the image manager's logic when the
/// config loads (a CA file must hold a certificate), and the error names
/// the file that set them.
#[test]
fn berthd_checks_registry_settings_when_it_loads_the_config() {
    // An empty CA file: the TOML is well-formed, only the image manager's
    // check can tell it holds no certificate.
    let dir = tempfile::tempdir().unwrap();
    let ca = tempfile::NamedTempFile::new_in(&dir).unwrap();
    let text = format!(
        "[registry.\"reg.lab\"]\nca_file = {:?}\n",
        ca.path().display().to_string()
    );
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, text).unwrap();
    let out = Command::new(bin_dir().join("berthd"))
        .arg("--config")
        .arg(&cfg)
        .args(["config", "dump"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("holds no certificate"), "{err}");
    assert!(err.contains(&format!("(set in {})", cfg.display())), "{err}");
}

/// The shipped binary's `config` commands: drop-ins override the main
/// file in name order and `dump` names the winner's file; a bad drop-in
/// stops berthd naming file and key; `default` is contrib/config.toml.
#[test]
fn berthd_config_commands_read_drop_ins() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    let dropins = dir.path().join("config.d");
    std::fs::create_dir(&dropins).unwrap();
    std::fs::write(
        &cfg,
        "log_level = \"warn\"\n[registry.\"reg.lab\"]\nusername = \"u\"\npassword = \"pw-secret\"\n",
    )
    .unwrap();
    std::fs::write(dropins.join("20-b.toml"), "log_level = \"debug\"\n").unwrap();
    std::fs::write(dropins.join("10-a.toml"), "log_level = \"error\"\n").unwrap();
    let berthd = |args: &[&str]| {
        Command::new(bin_dir().join("berthd"))
            .arg("--config")
            .arg(&cfg)
            .args(args)
            .output()
            .unwrap()
    };
    let out = berthd(&["config", "dump"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let dump = String::from_utf8(out.stdout).unwrap();
    let winner = format!(
        "log_level = \"debug\"  # {}\n",
        dropins.join("20-b.toml").display()
    );
    assert!(dump.contains(&winner), "{dump}");
    assert!(!dump.contains("pw-secret"), "{dump}");
    let out = berthd(&["config", "dump", "--socket", "/run/other.sock"]);
    let dump = String::from_utf8(out.stdout).unwrap();
    assert!(
        dump.contains("socket = \"/run/other.sock\"  # flag --socket\n"),
        "{dump}"
    );

    std::fs::write(dropins.join("30-bad.toml"), "[image_limits]\nmax_layers = -1\n").unwrap();
    let out = berthd(&[]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("30-bad.toml, line 2, key image_limits.max_layers"),
        "{err}"
    );

    let out = Command::new(bin_dir().join("berthd"))
        .args(["config", "default"])
        .output()
        .unwrap();
    let contrib = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../contrib/config.toml");
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        std::fs::read_to_string(contrib).unwrap()
    );
}

#[tokio::test]
async fn cri_basics_over_the_socket() {
    assert!(is_root(), "this test starts berthd, which needs root");
    let cg = fake_cgroup_root("cpuset cpu io memory hugetlb pids");
    let cni = tempfile::tempdir().unwrap();
    let extra = format!(
        "cgroup_root = \"{}\"\ncni_conf_dir = \"{}\"\n",
        cg.path().display(),
        cni.path().display()
    );
    let (_b, mut c) = Berthd::start_with(&extra).await.expect("berthd");

    let v = c
        .runtime
        .version(cri::VersionRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (
            v.version.as_str(),
            v.runtime_name.as_str(),
            v.runtime_api_version.as_str()
        ),
        ("0.1.0", "berth", "v1")
    );
    assert_eq!(v.runtime_version, env!("CARGO_PKG_VERSION"));

    let s = c
        .runtime
        .status(cri::StatusRequest { verbose: true })
        .await
        .unwrap()
        .into_inner();
    let conds = s.status.unwrap().conditions;
    let runtime = conds.iter().find(|c| c.r#type == "RuntimeReady").unwrap();
    assert!(runtime.status);
    let net = conds.iter().find(|c| c.r#type == "NetworkReady").unwrap();
    assert!(!net.status);
    assert_eq!(net.reason, "NetworkPluginNotReady");
    assert!(
        net.message.contains(cni.path().to_str().unwrap()),
        "{}",
        net.message
    );
    assert!(s.info.contains_key("config"));
    // An invalid config does not make the network ready; a valid one
    // written later is picked up without a restart.
    std::fs::write(cni.path().join("05-broken.conflist"), "{").unwrap();
    let s = c.runtime_status().await.unwrap();
    assert!(!s.status.unwrap().conditions.iter().all(|c| c.status));
    std::fs::write(
        cni.path().join("10-bridge.conflist"),
        r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"bridge"}]}"#,
    )
    .unwrap();
    let s = c.runtime_status().await.unwrap();
    assert!(s.status.unwrap().conditions.iter().all(|c| c.status));

    let rc = c
        .runtime
        .runtime_config(cri::RuntimeConfigRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        rc.linux.unwrap().cgroup_driver,
        cri::CgroupDriver::Cgroupfs as i32
    );

    // kubelet's pod CIDR: accepted when valid, refused clearly otherwise.
    let update = |cidr: &str| cri::UpdateRuntimeConfigRequest {
        runtime_config: Some(cri::RuntimeConfig {
            network_config: Some(cri::NetworkConfig {
                pod_cidr: cidr.into(),
            }),
        }),
    };
    c.runtime
        .update_runtime_config(update("10.244.1.0/24"))
        .await
        .unwrap();
    let e = c
        .runtime
        .update_runtime_config(update("10.244.1.0"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("10.244.1.0"), "{}", e.message());

    // A checkpoint of a container nobody created: NotFound naming it, or,
    // on a host without CRIU, FailedPrecondition saying so; never a success.
    let e = c
        .runtime
        .checkpoint_container(cri::CheckpointContainerRequest {
            container_id: "no-such-container".into(),
            location: "/tmp/berth-host-test-checkpoint.tar".into(),
            timeout: 0,
        })
        .await
        .unwrap_err();
    match e.code() {
        tonic::Code::NotFound => assert!(e.message().contains("no-such-container"), "{}", e.message()),
        tonic::Code::FailedPrecondition => assert!(e.message().contains("CRIU"), "{}", e.message()),
        other => panic!("unexpected {other:?}: {}", e.message()),
    }
    assert!(!std::path::Path::new("/tmp/berth-host-test-checkpoint.tar").exists());
    // Streaming requests are validated before any URL is handed out.
    let e = c.runtime.exec(cri::ExecRequest::default()).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    let e = c
        .runtime
        .exec(cri::ExecRequest {
            container_id: "nope".into(),
            cmd: vec!["true".into()],
            stdout: true,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
    let e = c
        .runtime
        .port_forward(cri::PortForwardRequest {
            pod_sandbox_id: "nope".into(),
            port: vec![80],
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
    // Resizing needs resources and a known container.
    let e = c
        .runtime
        .update_container_resources(cri::UpdateContainerResourcesRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    let e = c
        .runtime
        .update_container_resources(cri::UpdateContainerResourcesRequest {
            container_id: "nope".into(),
            linux: Some(cri::LinuxContainerResources::default()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");

    // Unknown objects.
    let e = c
        .runtime
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: "nope".into(),
            config: Some(berth_tests::container_config("x", "busybox", &["true"])),
            sandbox_config: None,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
    let e = c
        .runtime
        .create_container(cri::CreateContainerRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    // CRI: stopping or removing what does not exist succeeds (kubelet
    // retries teardown; critest "Idempotence StopContainer ... not found").
    c.stop("nope", 10)
        .await
        .expect("stopping an unknown container is OK");
    c.remove("nope")
        .await
        .expect("removing an unknown container is OK");
    c.stop_and_remove_pod("nope")
        .await
        .expect("stop/remove unknown pod is OK");
    let e = c.status("nope").await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    let e = c
        .runtime
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(berth_tests::pod_config("p", std::path::Path::new("/tmp"))),
            runtime_handler: "kata".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("kata"));

    let e = c
        .images
        .pull_image(cri::PullImageRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    let e = c.pull("NotAValid//Reference").await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    let imgs = c
        .images
        .list_images(cri::ListImagesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(imgs.images.is_empty());
    let st = c
        .images
        .image_status(cri::ImageStatusRequest {
            image: Some(cri::ImageSpec {
                image: "busybox".into(),
                ..Default::default()
            }),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(st.image.is_none(), "unknown image: empty status, not an error");
    let fs = c
        .images
        .image_fs_info(cri::ImageFsInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(fs.image_filesystems.len(), 1);
    assert_eq!(fs.container_filesystems.len(), 1);
}

/// Field numbers that kubelet relies on, checked on encoded bytes.
/// The RuntimeReady condition of berthd's Status.
async fn runtime_ready(c: &mut berth_tests::CriClient) -> cri::RuntimeCondition {
    let s = c.runtime_status().await.unwrap();
    s.status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.r#type == "RuntimeReady")
        .expect("a RuntimeReady condition")
}

#[tokio::test]
async fn runtime_ready_follows_the_shim_and_the_state_dir() {
    use std::os::unix::fs::PermissionsExt;
    assert!(is_root(), "this test starts berthd, which needs root");
    let cg = fake_cgroup_root("cpuset cpu io memory hugetlb pids");
    let cni = tempfile::tempdir().unwrap();
    let shim_dir = tempfile::tempdir().unwrap();
    let shim = shim_dir.path().join("berth-shim");
    let extra = format!(
        "cgroup_root = \"{}\"\ncni_conf_dir = \"{}\"\nshim_path = \"{}\"\n",
        cg.path().display(),
        cni.path().display(),
        shim.display()
    );
    let (b, mut c) = Berthd::start_with(&extra).await.expect("berthd");

    // No shim: no pod could start, so the runtime is not ready, and says why.
    let r = runtime_ready(&mut c).await;
    assert!(!r.status, "{r:?}");
    assert_eq!(r.reason, "ShimNotExecutable");
    assert!(r.message.contains(shim.to_str().unwrap()), "{r:?}");
    // A shim that cannot be executed is no better.
    std::fs::write(&shim, "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(&shim, std::fs::Permissions::from_mode(0o644)).unwrap();
    let r = runtime_ready(&mut c).await;
    assert!(!r.status && r.reason == "ShimNotExecutable", "{r:?}");
    std::fs::set_permissions(&shim, std::fs::Permissions::from_mode(0o755)).unwrap();
    let r = runtime_ready(&mut c).await;
    assert!(r.status, "{r:?}");
    assert!(r.reason.is_empty() && r.message.is_empty(), "{r:?}");

    // A state directory berthd can no longer write to (here: a file in its
    // place) makes it NotReady until it is back.
    let state = b.dir.path().join("state");
    let moved = b.dir.path().join("state.moved");
    std::fs::rename(&state, &moved).unwrap();
    std::fs::write(&state, "not a directory").unwrap();
    let r = runtime_ready(&mut c).await;
    assert!(!r.status, "{r:?}");
    assert_eq!(r.reason, "StateNotWritable");
    assert!(r.message.contains(state.to_str().unwrap()), "{r:?}");
    std::fs::remove_file(&state).unwrap();
    std::fs::rename(&moved, &state).unwrap();
    assert!(runtime_ready(&mut c).await.status);

    // A cgroup root that lost a required controller.
    std::fs::write(cg.path().join("cgroup.controllers"), "cpu pids").unwrap();
    let r = runtime_ready(&mut c).await;
    assert!(!r.status, "{r:?}");
    assert_eq!(r.reason, "CgroupRootUnusable");
    assert!(r.message.contains("memory"), "{r:?}");
}

#[test]
fn wire_format_matches_cri_api_v0_35() {
    // ContainerStatus.user = 18 (length-delimited): tag bytes 0x92 0x01.
    let st = cri::ContainerStatus {
        user: Some(cri::ContainerUser {
            linux: Some(cri::LinuxContainerUser {
                uid: 1000,
                gid: 3000,
                supplemental_groups: vec![3000, 4000],
            }),
        }),
        ..Default::default()
    };
    let b = st.encode_to_vec();
    assert_eq!(&b[..2], &[0x92, 0x01]);
    // LinuxContainerSecurityContext.supplemental_groups_policy = 17 (varint): 0x88 0x01.
    let sc = cri::LinuxContainerSecurityContext {
        supplemental_groups_policy: cri::SupplementalGroupsPolicy::Strict as i32,
        ..Default::default()
    };
    assert_eq!(sc.encode_to_vec(), vec![0x88, 0x01, 0x01]);
    // StatusResponse.features = 4, RuntimeFeatures.supplemental_groups_policy = 1.
    let sr = cri::StatusResponse {
        features: Some(cri::RuntimeFeatures {
            supplemental_groups_policy: true,
        }),
        ..Default::default()
    };
    assert_eq!(sr.encode_to_vec(), vec![0x22, 0x02, 0x08, 0x01]);
    // ContainerConfig.stop_signal = 18 (varint) with SIGTERM = 23.
    let cc = cri::ContainerConfig {
        stop_signal: cri::Signal::Sigterm as i32,
        ..Default::default()
    };
    assert_eq!(cc.encode_to_vec(), vec![0x90, 0x01, 23]);
    // KeyValue.value is bytes since v0.35.6 (non-UTF-8 must decode).
    let kv = cri::KeyValue::decode(&[0x0a, 0x01, b'K', 0x12, 0x01, 0xff][..]).unwrap();
    assert_eq!(kv.value, vec![0xff]);
    // UpdatePodSandboxResourcesRequest: pod_sandbox_id = 1.
    let u = cri::UpdatePodSandboxResourcesRequest {
        pod_sandbox_id: "a".into(),
        ..Default::default()
    };
    assert_eq!(u.encode_to_vec(), vec![0x0a, 0x01, b'a']);
}
