//! Hostile images and pods against the container side of Berth: the init
//! stage resolving paths inside the rootfs, mounts over kernel interfaces,
//! the shared PID namespace's PID 1, file modes under a permissive umask,
//! and images with many layers. Each test asserts that nothing of the node
//! changed or leaked, and that the error (or the container) is sane.
//!
//! Every test name starts with `hostile_` (one `BERTH_VM_FILTER` for all).
//! Runs inside the VM (`hack/vm`), with `--test-threads=1`.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use berth_proto::cri;
use berth_tests::*;

fn image(name: &str) -> String {
    format!("{}/library/{name}:latest", registry())
}

/// Creates, starts and waits for `cfg`; Ok(exit code, log lines) or the
/// error of whichever step refused it. The container is removed either way.
async fn try_run(
    c: &mut CriClient,
    b: &Berthd,
    sb: &str,
    pod: &cri::PodSandboxConfig,
    cfg: &cri::ContainerConfig,
) -> Result<(i32, Vec<String>), String> {
    let id = c
        .create(sb, cfg, pod)
        .await
        .map_err(|e| e.message().to_string())?;
    let started = c.start(&id).await;
    let result = match started {
        Err(e) => Err(e.message().to_string()),
        Ok(()) => {
            let st = c
                .wait_exited(&id, std::time::Duration::from_secs(30))
                .await
                .expect("exits");
            let name = &cfg.metadata.as_ref().unwrap().name;
            Ok((st.exit_code, log_lines(&b.log_dir().join(format!("{name}.log")))))
        }
    };
    c.remove(&id).await.expect("remove");
    result
}

/// An image whose `/dev` is a symlink to a node path: the init resolves it
/// inside the rootfs, so the devices land in the container and nothing is
/// created on the node, whether the node path exists or not.
#[tokio::test]
async fn hostile_dev_symlink_creates_nothing_on_the_node() {
    let node_dev = Path::new("/tmp/berth-hostile-dev");
    let _ = std::fs::remove_dir_all(node_dev);
    let _gone = Cleanup::new(move || {
        let _ = std::fs::remove_dir_all(node_dev);
    });
    let (b, mut c) = Berthd::start().await.expect("berthd");
    c.pull(&image("hostile-devlink")).await.expect("pull");
    let pod = pod_config("devlink", &b.log_dir());
    let sb = c.run_pod(&pod).await.expect("runp");
    let script = "echo x > /dev/null && test -c /dev/zero && echo ok";
    // The dangerous case first: a node dir the old init wrote into.
    for existing in [true, false] {
        if existing {
            std::fs::create_dir_all(node_dev).unwrap();
        } else {
            std::fs::remove_dir_all(node_dev).unwrap();
        }
        let cfg = container_config(
            &format!("devlink-{existing}"),
            &image("hostile-devlink"),
            &["sh", "-c", script],
        );
        let got = try_run(&mut c, &b, &sb, &pod, &cfg).await;
        if existing {
            let left: Vec<_> = std::fs::read_dir(node_dev)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert!(
                left.is_empty(),
                "the init wrote into the node's {node_dev:?}: {left:?}"
            );
        } else {
            assert!(!node_dev.exists(), "the init created {node_dev:?} on the node");
        }
        // Resolved inside the rootfs, /dev works through the image's link.
        assert_eq!(got, Ok((0, vec!["ok".to_string()])), "existing={existing}");
        assert!(
            mounts_containing("berth-hostile-dev")
                .iter()
                .all(|m| !m.contains(" /tmp/berth-hostile-dev ")),
            "a mount on the node's path"
        );
    }
    c.stop_and_remove_pod(&sb).await.unwrap();
}

/// Image VOLUMEs and CRI mounts may not cover /proc, /sys or /dev's system
/// mounts (runc CVE-2019-16884: a volume over /proc/self/attr makes the
/// AppArmor profile write land in an empty dir). What kubelet really sends
/// (/dev/termination-log, a memory emptyDir at /dev/shm) keeps working.
#[tokio::test]
async fn hostile_mounts_over_kernel_paths_are_refused() {
    let (b, mut c) = Berthd::start().await.expect("berthd");
    let pod = pod_config("sysmounts", &b.log_dir());
    let sb = c.run_pod(&pod).await.expect("runp");
    for (img, path) in [
        ("hostile-vol-attr", "/proc/self/attr"),
        ("hostile-vol-devpts", "/dev/pts"),
    ] {
        c.pull(&image(img)).await.expect("pull");
        let cfg = container_config(img, &image(img), &["true"]);
        let err = c.create(&sb, &cfg, &pod).await.expect_err(img);
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{img}: {err:?}");
        assert!(err.message().contains(path), "{img}: {}", err.message());
    }
    c.pull(&image("busybox")).await.expect("pull");
    let host = b.dir.path().join("vol");
    std::fs::create_dir_all(&host).unwrap();
    for path in [
        "/proc/sys",
        "/sys/kernel",
        "/dev",
        "/dev/pts",
        "/dev/mqueue",
        "/proc",
    ] {
        let mut cfg = container_config("cri-mount", &image("busybox"), &["true"]);
        cfg.mounts.push(cri::Mount {
            container_path: path.into(),
            host_path: host.to_string_lossy().into_owned(),
            ..Default::default()
        });
        let err = c.create(&sb, &cfg, &pod).await.expect_err(path);
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{path}: {err:?}");
        assert!(err.message().contains(path), "{path}: {}", err.message());
    }
    // kubelet's own: the termination log file and a memory volume at /dev/shm.
    let term = b.dir.path().join("termination-log");
    std::fs::write(&term, "").unwrap();
    let mut cfg = container_config(
        "kubelet-mounts",
        &image("busybox"),
        &[
            "sh",
            "-c",
            "echo bye > /dev/termination-log && touch /dev/shm/x && echo ok",
        ],
    );
    cfg.mounts.push(cri::Mount {
        container_path: "/dev/termination-log".into(),
        host_path: term.to_string_lossy().into_owned(),
        ..Default::default()
    });
    cfg.mounts.push(cri::Mount {
        container_path: "/dev/shm".into(),
        host_path: host.to_string_lossy().into_owned(),
        ..Default::default()
    });
    let got = try_run(&mut c, &b, &sb, &pod, &cfg).await;
    assert_eq!(got, Ok((0, vec!["ok".to_string()])));
    assert_eq!(std::fs::read_to_string(&term).unwrap(), "bye\n");
    assert!(host.join("x").exists());
    c.stop_and_remove_pod(&sb).await.unwrap();
}

/// In a shared-PID pod, PID 1 is Berth's reaper. A container with
/// CAP_SYS_PTRACE must not reach the node through `/proc/1/root` or
/// `/proc/1/cwd`, and neither may `workingDir: /proc/1/cwd`.
#[tokio::test]
async fn hostile_shared_pid_pod_reaches_nothing_of_the_node() {
    let marker = format!("/tmp/berth-node-marker-{}", std::process::id());
    std::fs::write(&marker, "node-secret\n").unwrap();
    let (b, mut c) = Berthd::start().await.expect("berthd");
    c.pull(&image("busybox")).await.expect("pull");
    let mut pod = pod_config("sharedpid", &b.log_dir());
    let pid_ns = || cri::NamespaceOption {
        pid: cri::NamespaceMode::Pod as i32,
        ..Default::default()
    };
    pod.linux.as_mut().unwrap().security_context = Some(cri::LinuxSandboxSecurityContext {
        namespace_options: Some(pid_ns()),
        ..Default::default()
    });
    let sb = c.run_pod(&pod).await.expect("runp");
    // CAP_SYS_PTRACE, and AppArmor unconfined: its ptrace rules must not
    // be what stops the reads (nodes without AppArmor, Unconfined pods).
    let sc = || cri::LinuxContainerSecurityContext {
        namespace_options: Some(pid_ns()),
        capabilities: Some(cri::Capability {
            add_capabilities: vec!["SYS_PTRACE".into()],
            ..Default::default()
        }),
        apparmor: Some(cri::SecurityProfile {
            profile_type: cri::security_profile::ProfileType::Unconfined as i32,
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut cfg = container_config(
        "cwd",
        &image("busybox"),
        &["sh", "-c", &format!("cat .{marker}; echo done")],
    );
    cfg.working_dir = "/proc/1/cwd".into();
    cfg.linux.as_mut().unwrap().security_context = Some(sc());
    match try_run(&mut c, &b, &sb, &pod, &cfg).await {
        Ok((_, out)) => assert!(!out.iter().any(|l| l.contains("node-secret")), "{out:?}"),
        Err(e) => assert!(e.contains("/proc/1/cwd"), "unclear error: {e}"),
    }

    let script = format!(
        "cat /proc/1/root{marker}; cat /proc/1/cwd{marker}; ls /proc/1/root/ | wc -l; \
         grep -E '^(CapEff|CapPrm|CapBnd|Uid)' /proc/1/status"
    );
    let mut cfg = container_config("ptracer", &image("busybox"), &["sh", "-c", &script]);
    cfg.linux.as_mut().unwrap().security_context = Some(sc());
    let (_, out) = try_run(&mut c, &b, &sb, &pod, &cfg).await.expect("runs");
    assert!(!out.iter().any(|l| l.contains("node-secret")), "{out:?}");
    // PID 1 holds nothing: no capabilities and an empty root.
    assert!(
        out.contains(&"0".to_string()),
        "/proc/1/root is not empty: {out:?}"
    );
    for set in ["CapEff", "CapPrm", "CapBnd"] {
        let v = out
            .iter()
            .find_map(|l| l.strip_prefix(&format!("{set}:")))
            .unwrap_or("?");
        assert_eq!(v.trim(), "0000000000000000", "{set} of PID 1: {out:?}");
    }

    c.stop_and_remove_pod(&sb).await.unwrap();
    let _ = std::fs::remove_file(&marker);
}

/// Secrets travel in the spec's env: under umask 000 the spec, the state
/// and container dirs and the container log still get Berth's own modes.
#[tokio::test]
async fn hostile_umask_leaves_nothing_readable() {
    // SAFETY: umask(2) only changes this process's mask; tests run one at a time.
    let old = unsafe { libc::umask(0) };
    let started = Berthd::start().await;
    // SAFETY: as above.
    unsafe { libc::umask(old) };
    let (b, mut c) = started.expect("berthd");
    c.pull(&image("busybox")).await.expect("pull");
    let pod = pod_config("modes", &b.log_dir());
    let sb = c.run_pod(&pod).await.expect("runp");
    let mut cfg = container_config("modes", &image("busybox"), &["sh", "-c", "echo hi; stat -c %a /"]);
    cfg.envs.push(cri::KeyValue {
        key: "PASSWORD".into(),
        value: "hunter2".into(),
    });
    let id = c.create(&sb, &cfg, &pod).await.expect("create");
    c.start(&id).await.expect("start");
    c.wait_exited(&id, std::time::Duration::from_secs(30))
        .await
        .unwrap();
    let mode = |p: &Path| {
        std::fs::metadata(p)
            .unwrap_or_else(|e| panic!("{p:?}: {e}"))
            .permissions()
            .mode()
            & 0o7777
    };
    let root = b.dir.path().join("root");
    let state = b.dir.path().join("state");
    for (p, want) in [
        (root.clone(), 0o700),
        (state.clone(), 0o700),
        (state.join("containers").join(&id), 0o700),
        (state.join("containers").join(&id).join("config.json"), 0o600),
        (root.join("containers").join(&id), 0o700),
        (b.log_dir().join("modes.log"), 0o640),
    ] {
        assert_eq!(mode(&p), want, "{p:?} is {:o}", mode(&p));
    }
    // The container's / (the upper dir's root) is not world-writable.
    assert_eq!(log_lines(&b.log_dir().join("modes.log")), vec!["hi", "755"]);
    assert_eq!(mode(&b.socket) & 0o007, 0, "socket {:o}", mode(&b.socket));
    c.remove(&id).await.unwrap();
    c.stop_and_remove_pod(&sb).await.unwrap();
}

/// Docker allows 127 layers; the overlay mount must take them all.
#[tokio::test]
async fn hostile_127_layers_run() {
    let (b, mut c) = Berthd::start().await.expect("berthd");
    c.pull(&image("layers-127")).await.expect("pull");
    let pod = pod_config("layers", &b.log_dir());
    let sb = c.run_pod(&pod).await.expect("runp");
    let cfg = container_config(
        "layers",
        &image("layers-127"),
        &["sh", "-c", "cat /layers/0 /layers/126; ls /layers | wc -l"],
    );
    let got = try_run(&mut c, &b, &sb, &pod, &cfg).await;
    assert_eq!(got, Ok((0, vec!["0".into(), "126".into(), "127".into()])));
    c.stop_and_remove_pod(&sb).await.unwrap();
}

/// CVE-2019-5736 defence in depth: the stages berth-shim runs inside a
/// container's namespaces (the parked init, the shared PID namespace's
/// PID 1) run it from a read-only mount, so `/proc/<pid>/exe` reopened for
/// writing can never overwrite berth-shim on the node.
#[tokio::test]
async fn hostile_container_stages_run_a_read_only_berth_shim() {
    let (b, mut c) = Berthd::start().await.expect("berthd");
    c.pull(&image("busybox")).await.expect("pull");
    let mut pod = pod_config("roexe", &b.log_dir());
    let pid_ns = || cri::NamespaceOption {
        pid: cri::NamespaceMode::Pod as i32,
        ..Default::default()
    };
    pod.linux.as_mut().unwrap().security_context = Some(cri::LinuxSandboxSecurityContext {
        namespace_options: Some(pid_ns()),
        ..Default::default()
    });
    let sb = c.run_pod(&pod).await.expect("runp");
    let mut cfg = container_config("parked", &image("busybox"), &["echo", "ran"]);
    cfg.linux.as_mut().unwrap().security_context = Some(cri::LinuxContainerSecurityContext {
        namespace_options: Some(pid_ns()),
        ..Default::default()
    });
    // Created, not started: its init is parked inside the container.
    let id = c.create(&sb, &cfg, &pod).await.expect("create");
    for stage in ["init", "pod-init"] {
        let procs = processes_matching(&format!("berth-shim {stage} "));
        assert!(!procs.is_empty(), "no berth-shim {stage} running");
        for (pid, _) in procs {
            let exe = format!("/proc/{pid}/exe");
            let st = nix::sys::statvfs::statvfs(exe.as_str()).expect("statvfs");
            assert!(
                st.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY),
                "berth-shim {stage} (pid {pid}) runs {:?} from a writable mount",
                std::fs::read_link(&exe)
            );
        }
    }
    // And the stages still work from there.
    c.start(&id).await.expect("start");
    c.wait_exited(&id, std::time::Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(log_lines(&b.log_dir().join("parked.log")), vec!["ran"]);
    c.remove(&id).await.unwrap();
    c.stop_and_remove_pod(&sb).await.unwrap();
}
