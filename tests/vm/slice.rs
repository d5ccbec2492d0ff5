//! The foundation's vertical slice, driven through the CRI socket like
//! kubelet and crictl: pull -> run pod -> create -> start -> logs -> status ->
//! stop -> remove -> stop pod -> remove pod, then proof that nothing is left.
//!
//! Needs root, cgroup v2 and the loopback registry: runs inside the VM
//! (`hack/vm`). Run with `--test-threads=1`.

use std::path::Path;
use std::time::{Duration, Instant};

use berth_proto::cri;
use berth_tests::*;

fn busybox() -> String {
    format!("{}/library/busybox:latest", registry())
}

fn status_info(resp: &cri::ContainerStatusResponse) -> serde_json::Value {
    serde_json::from_str(resp.info.get("info").expect("verbose info")).expect("json info")
}

/// Asserts no mount, cgroup, process or pin of this berthd instance remains.
fn assert_nothing_left(b: &Berthd, sandbox_cgroup: &str) {
    let base = b.dir.path().to_string_lossy().into_owned();
    let mounts = mounts_containing(&base);
    assert!(mounts.is_empty(), "leftover mounts: {mounts:#?}");
    let cg = Path::new("/sys/fs/cgroup").join(sandbox_cgroup.trim_start_matches('/'));
    assert!(!cg.exists(), "leftover pod cgroup {}", cg.display());
    // Shims are started as `berth-shim serve --id <id> --socket <state>/s/...`.
    let shims = processes_matching(&format!("--socket {base}/state/"));
    assert!(shims.is_empty(), "leftover shim processes: {shims:?}");
    for dir in ["state/sandboxes", "state/s", "state/containers"] {
        let left: Vec<_> = std::fs::read_dir(b.dir.path().join(dir))
            .map(|r| r.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "leftover {dir}: {left:?}");
    }
    let containers = b.dir.path().join("root/containers");
    let left: Vec<_> = std::fs::read_dir(&containers)
        .map(|r| r.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "leftover container dirs: {left:?}");
}

#[tokio::test]
async fn pod_runs_end_to_end_and_leaves_nothing_behind() {
    let (b, mut c) = Berthd::start().await.expect("berthd");
    let image_ref = c.pull(&busybox()).await.expect("pull");
    assert!(image_ref.starts_with("sha256:"), "{image_ref}");

    let pod = pod_config("slice", &b.log_dir());
    let sb = c.run_pod(&pod).await.expect("runp");
    let (st, info) = c.pod_status(&sb).await.expect("pod status");
    assert_eq!(st.state, cri::PodSandboxState::SandboxReady as i32);
    let pod_cgroup = info["cgroupPath"].as_str().unwrap().to_string();
    assert_eq!(pod_cgroup, format!("{}/{sb}", b.cgroup_parent));
    assert!(Path::new("/sys/fs/cgroup")
        .join(pod_cgroup.trim_start_matches('/'))
        .is_dir());
    let net_pin = info["namespaces"]["net"].as_str().unwrap().to_string();
    assert_eq!(
        mounts_containing(&net_pin).len(),
        1,
        "netns pinned by a bind mount"
    );

    let mut cfg = container_config(
        "hello",
        &busybox(),
        &["sh", "-c", "echo hello-from-berth; echo \"to stderr $(hostname)\" >&2; echo \"cwd=$(pwd) user=$(id -u) env=$GREETING\"; exit 3"],
    );
    cfg.envs = vec![cri::KeyValue {
        key: "GREETING".into(),
        value: "hi there".into(),
    }];
    cfg.working_dir = "/tmp".into();
    let cid = c.create(&sb, &cfg, &pod).await.expect("create");
    let s = c.status(&cid).await.unwrap().status.unwrap();
    assert_eq!(s.state, cri::ContainerState::ContainerCreated as i32);
    assert!(s.created_at > 0 && s.started_at == 0);
    c.start(&cid).await.expect("start");
    let s = c.wait_exited(&cid, Duration::from_secs(20)).await.expect("exit");
    assert_eq!(s.exit_code, 3);
    assert_eq!(s.reason, "Error");
    assert!(
        s.created_at <= s.started_at && s.started_at <= s.finished_at,
        "{s:?}"
    );
    assert_eq!(s.image_ref, image_ref);

    let log = std::fs::read_to_string(b.log_dir().join("hello.log")).expect("log file");
    let lines: Vec<_> = log
        .lines()
        .map(|l| parse_cri_log_line(l).expect("log line"))
        .collect();
    for (ts, _, tag, _) in &lines {
        assert!(
            ts.ends_with('Z') && ts.len() == 30 && ts.as_bytes()[10] == b'T',
            "timestamp {ts}"
        );
        assert_eq!(tag, "F");
    }
    let out: Vec<_> = lines
        .iter()
        .filter(|l| l.1 == "stdout")
        .map(|l| l.3.as_str())
        .collect();
    let err: Vec<_> = lines
        .iter()
        .filter(|l| l.1 == "stderr")
        .map(|l| l.3.as_str())
        .collect();
    assert_eq!(
        out,
        vec!["hello-from-berth", "cwd=/tmp user=0 env=hi there"],
        "log: {log}"
    );
    assert_eq!(err, vec!["to stderr slice"], "log: {log}");

    // Stop of an exited container is a no-op; remove frees it.
    c.stop(&cid, 10).await.expect("stop exited");
    c.remove(&cid).await.expect("remove");
    c.remove(&cid).await.expect("remove twice is fine");
    let e = c.status(&cid).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);

    c.stop_and_remove_pod(&sb).await.expect("stop+remove pod");
    c.stop_and_remove_pod(&sb).await.expect("idempotent");
    assert_nothing_left(&b, &pod_cgroup);
}

#[tokio::test]
async fn stop_sends_sigterm_then_sigkill() {
    let (b, mut c) = Berthd::start().await.expect("berthd");
    c.pull(&busybox()).await.expect("pull");
    let pod = pod_config("stopper", &b.log_dir());
    let sb = c.run_pod(&pod).await.expect("runp");

    let polite = container_config(
        "polite",
        &busybox(),
        &[
            "sh",
            "-c",
            "trap 'echo got-term; exit 0' TERM; echo ready; while true; do sleep 0.05; done",
        ],
    );
    let stubborn = container_config(
        "stubborn",
        &busybox(),
        &[
            "sh",
            "-c",
            // Keeps running after SIGTERM, saying so, until SIGKILL.
            "trap 'echo term-ignored; while true; do sleep 0.05; echo still-here; done' TERM; \
             echo ready; while true; do sleep 0.05; done",
        ],
    );
    let p = c.create(&sb, &polite, &pod).await.unwrap();
    let s = c.create(&sb, &stubborn, &pod).await.unwrap();
    c.start(&p).await.unwrap();
    c.start(&s).await.unwrap();
    // Wait until both print "ready", so their traps are installed.
    let deadline = Instant::now() + Duration::from_secs(20);
    for name in ["polite", "stubborn"] {
        loop {
            let log = std::fs::read_to_string(b.log_dir().join(format!("{name}.log"))).unwrap_or_default();
            if log.contains("ready") {
                break;
            }
            assert!(Instant::now() < deadline, "{name} never got ready");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let s_info = status_info(&c.status(&s).await.unwrap());
    let s_pid = s_info["pid"].as_u64().unwrap();
    assert!(Path::new(&format!("/proc/{s_pid}")).exists());

    // Exit 0 from its TERM trap: SIGTERM ended it, not SIGKILL after the
    // 30 s grace period (that would be 137).
    c.stop(&p, 30).await.expect("stop polite");
    let ps = c.status(&p).await.unwrap().status.unwrap();
    assert_eq!((ps.exit_code, ps.reason.as_str()), (0, "Completed"));
    assert!(std::fs::read_to_string(b.log_dir().join("polite.log"))
        .unwrap()
        .contains("got-term"));

    c.stop(&s, 1).await.expect("stop stubborn");
    let ss = c.status(&s).await.unwrap().status.unwrap();
    assert_eq!(ss.exit_code, 137, "killed by SIGKILL");
    // In that order: SIGTERM first, the process living on through the
    // grace period, then SIGKILL.
    let log = std::fs::read_to_string(b.log_dir().join("stubborn.log")).unwrap();
    let after_term = log
        .split_once("term-ignored")
        .map(|(_, rest)| rest)
        .unwrap_or_default();
    assert!(
        after_term.contains("still-here"),
        "SIGTERM, then life during the grace period, then SIGKILL:\n{log}"
    );
    assert!(!Path::new(&format!("/proc/{s_pid}")).exists(), "process gone");

    let info = c.pod_status(&sb).await.unwrap().1;
    let pod_cgroup = info["cgroupPath"].as_str().unwrap().to_string();
    // Removing the pod removes its containers too.
    c.stop_and_remove_pod(&sb).await.unwrap();
    let left = c
        .runtime
        .list_containers(cri::ListContainersRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(left.containers.is_empty(), "{left:?}");
    assert_nothing_left(&b, &pod_cgroup);
}

#[tokio::test]
async fn bad_input_gets_clear_errors_and_leaks_nothing() {
    let (b, mut c) = Berthd::start().await.expect("berthd");
    c.pull(&busybox()).await.expect("pull");
    let pod = pod_config("bad", &b.log_dir());
    let sb = c.run_pod(&pod).await.expect("runp");
    let cg_root =
        Path::new("/sys/fs/cgroup").join(format!("{}/{sb}", b.cgroup_parent).trim_start_matches('/'));

    let ok = container_config("x", &busybox(), &["true"]);
    let e = c.create(&"f".repeat(64), &ok, &pod).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
    assert!(e.message().contains("sandbox"), "{}", e.message());

    let unknown = container_config("x", "127.0.0.1:5000/library/nope:missing", &["true"]);
    let e = c.create(&sb, &unknown, &pod).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
    assert!(e.message().contains("image"), "{}", e.message());

    let empty = container_config("x", &busybox(), &[""]);
    let e = c.create(&sb, &empty, &pod).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");

    let mut no_meta = ok.clone();
    no_meta.metadata = None;
    let e = c.create(&sb, &no_meta, &pod).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");

    // An exec failure surfaces at StartContainer, with the reason recorded.
    let missing_bin = container_config("nobin", &busybox(), &["/no/such/binary"]);
    let id = c.create(&sb, &missing_bin, &pod).await.expect("create is fine");
    let e = c.start(&id).await.unwrap_err();
    assert!(e.message().contains("/no/such/binary"), "{}", e.message());
    let s = c.status(&id).await.unwrap().status.unwrap();
    assert_eq!(s.state, cri::ContainerState::ContainerExited as i32);
    assert_eq!(s.reason, "StartError");
    c.remove(&id).await.unwrap();

    let e = c.pull("127.0.0.1:5000/library/nope:missing").await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
    let e = c
        .runtime
        .exec_sync(cri::ExecSyncRequest {
            container_id: "x".into(),
            cmd: vec!["true".into()],
            timeout: 1,
        })
        .await
        .unwrap_err();
    assert_eq!(
        e.code(),
        tonic::Code::NotFound,
        "ExecSync in an unknown container: {e:?}"
    );
    let e = c
        .runtime
        .attach(cri::AttachRequest {
            container_id: "x".into(),
            stdout: true,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        e.code(),
        tonic::Code::NotFound,
        "Attach to an unknown container: {e:?}"
    );
    let e = c
        .runtime
        .container_stats(cri::ContainerStatsRequest {
            container_id: "x".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        e.code(),
        tonic::Code::NotFound,
        "stats of an unknown container: {e:?}"
    );
    let e = c
        .runtime
        .checkpoint_container(cri::CheckpointContainerRequest {
            container_id: "x".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unimplemented);
    assert!(e.message().contains("CheckpointContainer"), "{}", e.message());

    let children: Vec<_> = std::fs::read_dir(&cg_root)
        .unwrap()
        .flatten()
        .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
        .map(|e| e.path())
        .collect();
    assert!(children.is_empty(), "container cgroups leaked: {children:?}");
    let left = c
        .runtime
        .list_containers(cri::ListContainersRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(left.containers.is_empty(), "{left:?}");
    c.stop_and_remove_pod(&sb).await.unwrap();
    assert_nothing_left(&b, &format!("{}/{sb}", b.cgroup_parent));
}

/// kill -9 of berthd with 5 containers running: they keep running and
/// logging; a restarted berthd lists all of them as running, reports the real
/// exit code of one that exited while it was down, and can stop and remove
/// everything (CNI DEL included) as if it had never gone.
#[tokio::test]
async fn containers_survive_a_berthd_restart() {
    let (mut b, mut c) = Berthd::start().await.expect("berthd");
    c.pull(&busybox()).await.expect("pull");
    let pod = pod_config("survivor", &b.log_dir());
    let sb = c.run_pod(&pod).await.expect("runp");
    let pod_ip = c.pod_status(&sb).await.unwrap().0.network.unwrap().ip;
    let mut running = Vec::new();
    for i in 0..5 {
        let cfg = container_config(
            &format!("sleeper{i}"),
            &busybox(),
            &["sh", "-c", "while true; do echo tick; sleep 0.2; done"],
        );
        let id = c.create(&sb, &cfg, &pod).await.unwrap();
        c.start(&id).await.unwrap();
        let pid = status_info(&c.status(&id).await.unwrap())["pid"]
            .as_u64()
            .unwrap();
        running.push((id, pid));
    }
    // Exits with 7 once berthd is gone.
    let flag = b.dir.path().join("berthd-is-down");
    let quitter_cfg = {
        let mut cfg = container_config(
            "quitter",
            &busybox(),
            &[
                "sh",
                "-c",
                "while [ ! -e /flag/berthd-is-down ]; do sleep 0.05; done; exit 7",
            ],
        );
        cfg.mounts.push(cri::Mount {
            container_path: "/flag".into(),
            host_path: b.dir.path().to_string_lossy().into_owned(),
            ..Default::default()
        });
        cfg
    };
    let quitter = c.create(&sb, &quitter_cfg, &pod).await.unwrap();
    c.start(&quitter).await.unwrap();
    let created_only = c
        .create(
            &sb,
            &container_config("later", &busybox(), &["echo", "started-after-restart"]),
            &pod,
        )
        .await
        .unwrap();

    let base = b.dir.path().to_string_lossy().into_owned();
    let shims = processes_matching(&format!("--socket {base}/state/"));
    assert_eq!(shims.len(), 1, "one shim per pod: {shims:?}");
    b.kill_hard();
    drop(c);
    std::fs::write(&flag, "").unwrap();
    let log_path = b.log_dir().join("sleeper0.log");
    let before = std::fs::read_to_string(&log_path).unwrap().lines().count();
    // Waits for the condition (a new line) with a generous deadline, not a
    // fixed sleep.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let after = std::fs::read_to_string(&log_path).unwrap().lines().count();
        if after > before {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "output keeps flowing without berthd ({before} -> {after})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (_, pid) in &running {
        assert!(
            Path::new(&format!("/proc/{pid}")).exists(),
            "container died with berthd"
        );
    }
    assert!(
        Path::new(&format!("/proc/{}", shims[0].0)).exists(),
        "the shim outlives berthd"
    );

    let mut c = b.spawn().await.expect("berthd restarts");
    let list = c
        .runtime
        .list_containers(cri::ListContainersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .containers;
    assert_eq!(list.len(), 7, "{list:?}");
    for (id, pid) in &running {
        let s = c.status(id).await.unwrap();
        assert_eq!(
            s.status.as_ref().unwrap().state,
            cri::ContainerState::ContainerRunning as i32
        );
        assert_eq!(status_info(&s)["pid"].as_u64(), Some(*pid));
        // The identity read from the kernel at start survives the restart.
        let user = s
            .status
            .as_ref()
            .unwrap()
            .user
            .as_ref()
            .and_then(|u| u.linux.clone());
        assert_eq!(
            user.map(|u| (u.uid, u.gid, u.supplemental_groups)),
            Some((0, 0, vec![0]))
        );
    }
    let q = c.wait_exited(&quitter, Duration::from_secs(10)).await.unwrap();
    assert_eq!(
        (q.exit_code, q.reason.as_str()),
        (7, "Error"),
        "real exit status kept by the shim"
    );
    let pst = c.pod_status(&sb).await.unwrap().0;
    assert_eq!(pst.state, cri::PodSandboxState::SandboxReady as i32);
    assert_eq!(pst.network.unwrap().ip, pod_ip);
    // A container created before the restart still starts.
    c.start(&created_only).await.expect("start after restart");
    let s = c
        .wait_exited(&created_only, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(s.exit_code, 0);
    assert!(std::fs::read_to_string(b.log_dir().join("later.log"))
        .unwrap()
        .contains("started-after-restart"));
    // Stopping works through the reconnected shim.
    c.stop(&running[0].0, 1).await.unwrap();
    assert_eq!(
        c.status(&running[0].0).await.unwrap().status.unwrap().exit_code,
        137
    );

    c.stop_and_remove_pod(&sb)
        .await
        .expect("stop+remove after restart");
    assert_nothing_left(&b, &format!("{}/{sb}", b.cgroup_parent));
}

/// kubelet passes `cgroup_parent` like `/kubepods/besteffort/pod<uid>` whose
/// parents may not exist yet: berthd creates the path with the controllers
/// enabled at every level, and removing one pod never disturbs another pod
/// under the same parent.
#[tokio::test]
async fn kubelet_style_cgroup_parent_is_created_and_shared_safely() {
    let (b, mut c) = Berthd::start().await.expect("berthd");
    c.pull(&busybox()).await.expect("pull");
    let top = format!("{}-kubepods", b.cgroup_parent);
    let cgroot = Path::new("/sys/fs/cgroup");
    let mut pods = Vec::new();
    for name in ["qa", "qb"] {
        let mut pod = pod_config(name, &b.log_dir());
        let parent = format!("{top}/besteffort/pod-{name}");
        pod.linux.as_mut().unwrap().cgroup_parent = parent.clone();
        let sb = c.run_pod(&pod).await.expect("runp");
        let cfg = container_config("app", &busybox(), &["sleep", "3600"]);
        let id = c.create(&sb, &cfg, &pod).await.expect("create");
        c.start(&id).await.expect("start");
        let pid = status_info(&c.status(&id).await.unwrap())["pid"]
            .as_u64()
            .unwrap();
        let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
        assert_eq!(cg.trim(), format!("0::{parent}/{id}"), "container cgroup");
        pods.push((sb, pid, parent));
    }
    for level in [top.clone(), format!("{top}/besteffort")] {
        let dir = cgroot.join(level.trim_start_matches('/'));
        let ctl = std::fs::read_to_string(dir.join("cgroup.subtree_control")).unwrap();
        for want in ["cpu", "memory", "pids"] {
            assert!(
                ctl.split_whitespace().any(|c| c == want),
                "{} lacks {want}: {ctl}",
                dir.display()
            );
        }
    }
    let (sa, _, pa) = &pods[0];
    let (sb_b, pid_b, pb) = &pods[1];
    c.stop_and_remove_pod(sa).await.unwrap();
    assert!(
        !cgroot.join(pa.trim_start_matches('/')).exists(),
        "pod qa's cgroup removed"
    );
    assert!(
        Path::new(&format!("/proc/{pid_b}")).exists(),
        "pod qb's container survives qa's removal"
    );
    assert!(cgroot.join(pb.trim_start_matches('/')).is_dir());
    c.stop_and_remove_pod(sb_b).await.unwrap();
    assert!(
        !cgroot.join(top.trim_start_matches('/')).exists(),
        "parents berthd created are gone with the last pod"
    );
    assert_nothing_left(&b, pb);
}

/// With `cgroup_driver = "systemd"`, kubelet's slice names become the paths
/// systemd would use; pod resources plus overhead limit the pod cgroup.
#[tokio::test]
async fn systemd_slices_and_pod_resources() {
    // The systemd driver talks to systemd over D-Bus (tested in the systemd
    // VM, hack/vm-systemd); this VM has no systemd, so berthd must refuse
    // to start and say why rather than write systemd's tree behind its back.
    let err = Berthd::start_with("cgroup_driver = \"systemd\"\n")
        .await
        .err()
        .expect("berthd started with the systemd driver and no systemd");
    assert!(
        format!("{err:#}").contains("systemd cannot be reached"),
        "unexpected error: {err:#}"
    );
}

/// A container the kernel OOM-kills reports exit 137 and reason OOMKilled
/// (from its cgroup's memory.events), unlike one killed by StopContainer.
#[tokio::test]
async fn oom_killed_containers_say_so() {
    let (b, mut c) = Berthd::start().await.expect("berthd");
    c.pull(&busybox()).await.expect("pull");
    let pod = pod_config("oom", &b.log_dir());
    let sb = c.run_pod(&pod).await.unwrap();
    let mut cfg = container_config(
        "hog",
        &busybox(),
        &["dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"],
    );
    cfg.linux.as_mut().unwrap().resources = Some(cri::LinuxContainerResources {
        memory_limit_in_bytes: 16 << 20,
        ..Default::default()
    });
    let id = c.create(&sb, &cfg, &pod).await.unwrap();
    c.start(&id).await.unwrap();
    let s = c.wait_exited(&id, Duration::from_secs(30)).await.unwrap();
    assert_eq!((s.exit_code, s.reason.as_str()), (137, "OOMKilled"), "{s:?}");
    c.stop_and_remove_pod(&sb).await.unwrap();
}

/// ListContainers filters by id prefix, pod, state and labels.
#[tokio::test]
async fn list_containers_filters() {
    let (b, mut c) = Berthd::start().await.expect("berthd");
    c.pull(&busybox()).await.expect("pull");
    let pod_a = pod_config("lca", &b.log_dir());
    let a = c.run_pod(&pod_a).await.unwrap();
    let pod_b = pod_config("lcb", &b.log_dir());
    let bb = c.run_pod(&pod_b).await.unwrap();
    let mk = |name: &str, tier: &str| {
        let mut cfg = container_config(name, &busybox(), &["sleep", "300"]);
        cfg.labels.insert("tier".into(), tier.into());
        cfg
    };
    let running = c.create(&a, &mk("r", "web"), &pod_a).await.unwrap();
    c.start(&running).await.unwrap();
    let created = c.create(&a, &mk("c", "db"), &pod_a).await.unwrap();
    let other = c.create(&bb, &mk("o", "web"), &pod_b).await.unwrap();
    let list = |f: cri::ContainerFilter| {
        let mut rt = c.runtime.clone();
        async move {
            let mut v: Vec<String> = rt
                .list_containers(cri::ListContainersRequest { filter: Some(f) })
                .await
                .unwrap()
                .into_inner()
                .containers
                .into_iter()
                .map(|c| c.id)
                .collect();
            v.sort();
            v
        }
    };
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    assert_eq!(
        list(cri::ContainerFilter {
            id: running[..10].into(),
            ..Default::default()
        })
        .await,
        vec![running.clone()]
    );
    assert_eq!(
        list(cri::ContainerFilter {
            pod_sandbox_id: a.clone(),
            ..Default::default()
        })
        .await,
        sorted(vec![running.clone(), created.clone()])
    );
    assert_eq!(
        list(cri::ContainerFilter {
            state: Some(cri::ContainerStateValue {
                state: cri::ContainerState::ContainerCreated as i32
            }),
            ..Default::default()
        })
        .await,
        sorted(vec![created.clone(), other.clone()])
    );
    assert_eq!(
        list(cri::ContainerFilter {
            label_selector: [("tier".to_string(), "web".to_string())].into(),
            ..Default::default()
        })
        .await,
        sorted(vec![running.clone(), other.clone()])
    );
    for sb in [&a, &bb] {
        c.stop_and_remove_pod(sb).await.unwrap();
    }
}

/// kubelet's log rotation: rename the file, ReopenContainerLog, and the
/// output continues in a new file with no line lost or split.
#[tokio::test]
async fn log_rotation_loses_no_line() {
    let (b, mut c) = Berthd::start().await.expect("berthd");
    c.pull(&busybox()).await.expect("pull");
    let pod = pod_config("rotate", &b.log_dir());
    let sb = c.run_pod(&pod).await.unwrap();
    // Counts until told to stop, so every file is rotated while the
    // container writes, whatever the machine's speed.
    let cfg = container_config(
        "counter",
        &busybox(),
        &[
            "sh",
            "-c",
            "i=0; while [ ! -e /stop ]; do echo line-$i; i=$((i+1)); usleep 5000; done",
        ],
    );
    let id = c.create(&sb, &cfg, &pod).await.unwrap();
    c.start(&id).await.unwrap();
    let path = b.log_dir().join("counter.log");
    // Until the current file holds a new record (a generous deadline).
    let wait_for_output = |path: std::path::PathBuf| async move {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !std::fs::read_to_string(&path).is_ok_and(|t| t.contains('\n')) {
            assert!(Instant::now() < deadline, "no output in {}", path.display());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let mut rotated = Vec::new();
    for n in 0..3 {
        wait_for_output(path.clone()).await;
        let old = b.log_dir().join(format!("counter.log.{n}"));
        std::fs::rename(&path, &old).unwrap();
        c.runtime
            .reopen_container_log(cri::ReopenContainerLogRequest {
                container_id: id.clone(),
            })
            .await
            .expect("reopen");
        rotated.push(old);
    }
    wait_for_output(path.clone()).await;
    let (code, _) = c.exec(&id, &["touch", "/stop"]).await.unwrap();
    assert_eq!(code, 0);
    let s = c.wait_exited(&id, Duration::from_secs(60)).await.unwrap();
    assert_eq!(s.exit_code, 0);
    rotated.push(path);
    let mut lines = Vec::new();
    for f in &rotated {
        for l in std::fs::read_to_string(f).unwrap().lines() {
            let (_, _, tag, content) = parse_cri_log_line(l).expect("whole CRI record");
            assert_eq!(tag, "F");
            lines.push(content);
        }
    }
    assert!(lines.len() >= 4, "a record in each of the 4 files: {lines:?}");
    let want: Vec<String> = (0..lines.len()).map(|i| format!("line-{i}")).collect();
    assert_eq!(
        lines,
        want,
        "every line once, in order, across {} files",
        rotated.len()
    );
    assert!(
        rotated.iter().all(|f| std::fs::metadata(f).unwrap().len() > 0),
        "each file got output"
    );
    // Not running any more: a clear error.
    let e = c
        .runtime
        .reopen_container_log(cri::ReopenContainerLogRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    c.stop_and_remove_pod(&sb).await.unwrap();
}

/// Seccomp: RuntimeDefault denies what Docker's default denies (EPERM),
/// Unconfined installs nothing, a Localhost profile is read from the node;
/// ExecSync runs under the container's filter too.
#[tokio::test]
async fn seccomp_profiles_apply() {
    let (b, mut c) = Berthd::start().await.expect("berthd");
    c.pull(&busybox()).await.expect("pull");
    let pod = pod_config("seccomp", &b.log_dir());
    let sb = c.run_pod(&pod).await.unwrap();
    let local = b.dir.path().join("no-mkdir.json");
    std::fs::write(
        &local,
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO","errnoRet":13}]}"#,
    )
    .unwrap();
    let script = "grep '^Seccomp:' /proc/self/status; \
                  mkdir /tmp/d && echo mkdir-ok || echo mkdir-denied; \
                  unshare -U true && echo unshare-ok || echo unshare-denied; \
                  sleep 300";
    let cases = [
        (
            "rd",
            cri::SecurityProfile {
                profile_type: 0,
                localhost_ref: String::new(),
            },
            ["Seccomp:\t2", "mkdir-ok", "unshare-denied"],
        ),
        (
            "unconfined",
            cri::SecurityProfile {
                profile_type: 1,
                localhost_ref: String::new(),
            },
            ["Seccomp:\t0", "mkdir-ok", "unshare-ok"],
        ),
        (
            "local",
            cri::SecurityProfile {
                profile_type: 2,
                localhost_ref: local.to_string_lossy().into_owned(),
            },
            ["Seccomp:\t2", "mkdir-denied", "unshare-ok"],
        ),
    ];
    for (name, profile, want) in cases {
        let mut cfg = container_config(name, &busybox(), &["sh", "-c", script]);
        // A user namespace needs no capability: only the filter can refuse it.
        cfg.linux.as_mut().unwrap().security_context = Some(cri::LinuxContainerSecurityContext {
            seccomp: Some(profile),
            ..Default::default()
        });
        let id = c.create(&sb, &cfg, &pod).await.unwrap();
        c.start(&id).await.unwrap();
        let log_path = b.log_dir().join(format!("{name}.log"));
        let deadline = Instant::now() + Duration::from_secs(20);
        let out = loop {
            let out: Vec<String> = std::fs::read_to_string(&log_path)
                .unwrap_or_default()
                .lines()
                .filter_map(parse_cri_log_line)
                .filter(|l| l.1 == "stdout")
                .map(|l| l.3)
                .collect();
            if out.len() >= 3 {
                break out;
            }
            assert!(Instant::now() < deadline, "{name}: {out:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(out[..3], want, "{name}");
        let exec = c
            .runtime
            .exec_sync(cri::ExecSyncRequest {
                container_id: id.clone(),
                cmd: vec!["grep".into(), "^Seccomp:".into(), "/proc/self/status".into()],
                timeout: 10,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            String::from_utf8_lossy(&exec.stdout).trim(),
            want[0],
            "{name}: ExecSync under the same filter"
        );
        c.stop(&id, 0).await.unwrap();
    }
    // A missing Localhost profile is a clear error, nothing created.
    let mut cfg = container_config("missing", &busybox(), &["true"]);
    cfg.linux.as_mut().unwrap().security_context = Some(cri::LinuxContainerSecurityContext {
        seccomp: Some(cri::SecurityProfile {
            profile_type: 2,
            localhost_ref: "/nonexistent/profile.json".into(),
        }),
        ..Default::default()
    });
    let e = c.create(&sb, &cfg, &pod).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(
        e.message().contains("/nonexistent/profile.json"),
        "{}",
        e.message()
    );
    c.stop_and_remove_pod(&sb).await.unwrap();
}

/// berthd with no config file and no flags on a node laid out as usual
/// (the VM has /etc/cni/net.d, /opt/cni/bin): the documented defaults
/// (socket /run/berth/berth.sock, root /var/lib/berth, pods under /berth)
/// run a pod end to end and leave nothing behind.
#[tokio::test]
async fn berthd_runs_with_no_config_and_no_flags() {
    use std::process::{Command, Stdio};
    let socket = std::path::Path::new("/run/berth/berth.sock");
    assert!(!socket.exists(), "nothing else uses the defaults");
    let mut berthd = OnNodeDefaults(Some(
        Command::new(bin_dir().join("berthd"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("berthd"),
    ));
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut c = loop {
        if let Ok(mut c) = CriClient::connect(socket).await {
            if c.runtime.version(cri::VersionRequest::default()).await.is_ok() {
                break c;
            }
        }
        assert!(
            Instant::now() < deadline,
            "berthd did not come up on its default socket"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let st = c
        .runtime
        .status(cri::StatusRequest::default())
        .await
        .unwrap()
        .into_inner();
    let ready: Vec<_> = st
        .status
        .unwrap()
        .conditions
        .iter()
        .map(|c| (c.r#type.clone(), c.status))
        .collect();
    assert!(ready.contains(&("NetworkReady".to_string(), true)), "{ready:?}");
    assert!(ready.contains(&("RuntimeReady".to_string(), true)), "{ready:?}");
    c.pull(&format!("{}/library/busybox:latest", registry()))
        .await
        .expect("pull");
    let logs = tempfile::tempdir().unwrap();
    let pod = pod_config("defaults", logs.path());
    let sb = c.run_pod(&pod).await.expect("runp");
    assert!(
        std::path::Path::new(&format!("/sys/fs/cgroup/berth/{sb}")).exists(),
        "default parent /berth"
    );
    let cfg = container_config(
        "hello",
        &format!("{}/library/busybox:latest", registry()),
        &["echo", "hi"],
    );
    let id = c.create(&sb, &cfg, &pod).await.unwrap();
    c.start(&id).await.unwrap();
    assert_eq!(
        c.wait_exited(&id, Duration::from_secs(20))
            .await
            .unwrap()
            .exit_code,
        0
    );
    let log = std::fs::read_to_string(logs.path().join("hello.log")).unwrap();
    assert!(log.ends_with(" stdout F hi\n"), "{log}");
    assert!(std::path::Path::new("/var/lib/berth/images").exists());
    c.remove(&id).await.unwrap();
    c.stop_and_remove_pod(&sb).await.unwrap();
    assert!(!std::path::Path::new(&format!("/sys/fs/cgroup/berth/{sb}")).exists());
    assert!(mounts_containing(&sb).is_empty());
    let mut child = berthd.0.take().unwrap();
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success(), "berthd exits cleanly on SIGTERM");
    assert!(!socket.exists(), "and removes its socket");
}

/// berthd on the node's default paths (/run/berth, /var/lib/berth, pods
/// under /berth): whatever the test ends with, berthd is stopped and what
/// it made there is gone, so a later test (or a berthd on the defaults)
/// starts on a clean node.
struct OnNodeDefaults(Option<std::process::Child>);

impl Drop for OnNodeDefaults {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Shims outlive berthd by design: end those of the default state dir.
        for (pid, _) in processes_matching("--socket /run/berth/") {
            // SAFETY: kill(2) on a shim of this test's berthd.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
        let pods = Path::new("/sys/fs/cgroup/berth");
        for pod in std::fs::read_dir(pods).into_iter().flatten().flatten() {
            let _ = std::fs::write(pod.path().join("cgroup.kill"), "1");
        }
        remove_cgroup_tree(pods);
        let mut mounts: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
            .filter(|m| m.starts_with("/run/berth/") || m.starts_with("/var/lib/berth/"))
            .collect();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mounts {
            let _ = nix::mount::umount2(m.as_str(), nix::mount::MntFlags::MNT_DETACH);
        }
        let _ = std::fs::remove_dir_all("/var/lib/berth");
        let _ = std::fs::remove_dir_all("/run/berth");
    }
}

/// rmdir's a cgroup and its children, deepest first (cgroupfs refuses to
/// remove a directory with children or processes).
fn remove_cgroup_tree(dir: &Path) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.path().is_dir() {
            remove_cgroup_tree(&e.path());
        }
    }
    for _ in 0..50 {
        if !dir.exists() || std::fs::remove_dir(dir).is_ok() {
            return;
        }
        // Killed processes leave the cgroup asynchronously.
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every CRI call is logged at debug with its duration (the test berthd
/// runs at log_level debug).
#[tokio::test]
async fn every_cri_call_is_logged_with_its_duration() {
    let (b, mut c) = Berthd::start().await.expect("berthd");
    c.runtime.version(cri::VersionRequest::default()).await.unwrap();
    let _ = c
        .runtime
        .container_status(cri::ContainerStatusRequest {
            container_id: "nope".into(),
            verbose: false,
        })
        .await;
    let log = b.log();
    let line = log
        .lines()
        .find(|l| l.contains("rpc=Version") && l.contains("CRI call"))
        .unwrap_or_else(|| panic!("no Version call line in {log}"));
    assert!(line.contains("elapsed_us="), "{line}");
    let failed = log
        .lines()
        .find(|l| l.contains("rpc=ContainerStatus") && l.contains("CRI call failed"))
        .unwrap_or_else(|| panic!("no ContainerStatus line in {log}"));
    assert!(
        failed.contains("elapsed_us=") && failed.contains("grpc_code=5"),
        "{failed}"
    );
    assert!(
        failed.contains(r#"container "nope" not found"#),
        "readable message: {failed}"
    );
}

// ---- Mounts: propagation, read-only, symlinked host paths, the
// termination-message file and image VOLUMEs, seen from inside.

/// Runs a host command, panicking with its output if it fails.
fn host_cmd(argv: &[&str]) {
    let out = std::process::Command::new(argv[0])
        .args(&argv[1..])
        .output()
        .unwrap_or_else(|e| panic!("{argv:?}: {e}"));
    assert!(
        out.status.success(),
        "{argv:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `sh -c script` in a running container: (exit code, stdout, stderr).
async fn exec_sh(c: &mut CriClient, id: &str, script: &str) -> (i32, String, String) {
    let r = c
        .runtime
        .exec_sync(cri::ExecSyncRequest {
            container_id: id.into(),
            cmd: vec!["sh".into(), "-c".into(), script.into()],
            timeout: 20,
        })
        .await
        .expect("exec")
        .into_inner();
    (
        r.exit_code,
        String::from_utf8_lossy(&r.stdout).into_owned(),
        String::from_utf8_lossy(&r.stderr).into_owned(),
    )
}

/// The mountinfo line whose mount point (field 5) is `mount_point`.
fn mountinfo_line<'a>(mountinfo: &'a str, mount_point: &str) -> Option<&'a str> {
    mountinfo
        .lines()
        .rfind(|l| l.split(' ').nth(4) == Some(mount_point))
}

/// The optional fields of a mountinfo line (`shared:N`, `master:N`, ...).
fn optional_fields(line: &str) -> Vec<String> {
    line.split(' ')
        .skip(6)
        .take_while(|f| *f != "-")
        .map(str::to_string)
        .collect()
}

fn bind(container_path: &str, host_path: &Path, propagation: cri::MountPropagation) -> cri::Mount {
    cri::Mount {
        container_path: container_path.into(),
        host_path: host_path.to_string_lossy().into_owned(),
        propagation: propagation as i32,
        ..Default::default()
    }
}

#[tokio::test]
async fn mounts_propagation_private_rslave_rshared() {
    use cri::MountPropagation::*;
    let (b, mut c) = Berthd::start().await.expect("berthd");
    c.pull(&busybox()).await.expect("pull");
    let host = tempfile::Builder::new()
        .prefix("berth-prop-")
        .tempdir_in("/tmp")
        .unwrap();
    let vol = host.path().join("vol");
    std::fs::create_dir(&vol).unwrap();
    let vol_s = vol.to_string_lossy().into_owned();
    host_cmd(&["mount", "-t", "tmpfs", "-o", "size=1m", "berth-prop", &vol_s]);
    // Detaches the volume and the submounts below it if the test fails.
    let _unmount = Unmount(vol.clone());
    host_cmd(&["mount", "--make-shared", &vol_s]);
    std::fs::create_dir(vol.join("late")).unwrap();
    std::fs::create_dir(vol.join("fromctr")).unwrap();

    let pod = pod_config("prop", &b.log_dir());
    let sb = c.run_pod(&pod).await.expect("runp");
    let mut ids = Vec::new();
    for (name, prop) in [
        ("private", PropagationPrivate),
        ("rslave", PropagationHostToContainer),
        ("rshared", PropagationBidirectional),
    ] {
        let mut cfg = container_config(name, &busybox(), &["sleep", "3600"]);
        cfg.mounts = vec![bind("/vol", &vol, prop)];
        if prop == PropagationBidirectional {
            // Mounting inside needs CAP_SYS_ADMIN.
            cfg.linux.as_mut().unwrap().security_context = Some(cri::LinuxContainerSecurityContext {
                privileged: true,
                ..Default::default()
            });
        }
        let id = c.create(&sb, &cfg, &pod).await.expect("create");
        c.start(&id).await.expect("start");
        ids.push((name, id));
    }

    // The host mounts something under the volume after the containers started.
    let late = vol.join("late").to_string_lossy().into_owned();
    host_cmd(&["mount", "-t", "tmpfs", "-o", "size=1m", "berth-late", &late]);
    for (name, id) in &ids {
        let (rc, info, err) = exec_sh(&mut c, id, "cat /proc/self/mountinfo").await;
        assert_eq!(rc, 0, "{name}: {err}");
        let line = mountinfo_line(&info, "/vol").unwrap_or_else(|| panic!("{name}: no /vol in\n{info}"));
        let opt = optional_fields(line);
        let shared = opt.iter().any(|f| f.starts_with("shared:"));
        let slave = opt.iter().any(|f| f.starts_with("master:"));
        let sees_late = mountinfo_line(&info, "/vol/late").is_some();
        match *name {
            "private" => assert!(!shared && !slave && !sees_late, "{name}: {line}\n{info}"),
            "rslave" => assert!(slave && !shared && sees_late, "{name}: {line}\n{info}"),
            _ => assert!(shared && sees_late, "{name}: {line}\n{info}"),
        }
    }

    // The privileged rshared container mounts inside: the host sees it, and
    // sees it go when the container unmounts it.
    let rshared = &ids[2].1;
    let fromctr = vol.join("fromctr").to_string_lossy().into_owned();
    let (rc, _, err) = exec_sh(&mut c, rshared, "mount -t tmpfs berth-fromctr /vol/fromctr").await;
    assert_eq!(rc, 0, "mount inside: {err}");
    let on_host = mounts_containing(&fromctr);
    assert_eq!(on_host.len(), 1, "container mount reaches the host: {on_host:?}");
    assert!(on_host[0].contains("berth-fromctr"), "{on_host:?}");
    // The rshared container's own rootfs, /proc, /dev never reach the host.
    let leaked = mounts_containing(&format!("{}/state/containers/", b.dir.path().display()));
    assert!(
        leaked.is_empty(),
        "container mounts leaked to the host: {leaked:#?}"
    );
    let (rc, _, err) = exec_sh(&mut c, rshared, "umount /vol/fromctr").await;
    assert_eq!(rc, 0, "umount inside: {err}");
    assert!(
        mounts_containing(&fromctr).is_empty(),
        "unmount reaches the host too"
    );

    for (_, id) in &ids {
        c.stop(id, 0).await.unwrap();
        c.remove(id).await.unwrap();
    }
    c.stop_and_remove_pod(&sb).await.unwrap();
    // The host's mounts are untouched by the containers going away.
    assert_eq!(mounts_containing(&late).len(), 1, "the host's own submount stays");
    host_cmd(&["umount", &late]);
    host_cmd(&["umount", &vol_s]);
    assert!(mounts_containing(&vol_s).is_empty());
}

#[tokio::test]
async fn mounts_readonly_recursive_readonly_and_invalid_combinations() {
    use cri::MountPropagation::*;
    let (b, mut c) = Berthd::start().await.expect("berthd");
    c.pull(&busybox()).await.expect("pull");
    let st = c
        .runtime
        .status(cri::StatusRequest { verbose: false })
        .await
        .unwrap()
        .into_inner();
    assert!(
        st.runtime_handlers[0]
            .features
            .as_ref()
            .unwrap()
            .recursive_read_only_mounts,
        "kernel >= 5.12: rro advertised"
    );

    let host = tempfile::Builder::new()
        .prefix("berth-ro-")
        .tempdir_in("/tmp")
        .unwrap();
    let src = host.path().join("src");
    let sub = src.join("sub");
    std::fs::create_dir_all(&sub).unwrap();
    let sub_s = sub.to_string_lossy().into_owned();
    host_cmd(&["mount", "-t", "tmpfs", "-o", "size=1m", "berth-sub", &sub_s]);
    let _unmount_sub = Unmount(sub.clone());

    let pod = pod_config("ro", &b.log_dir());
    let sb = c.run_pod(&pod).await.expect("runp");
    for (name, rro) in [("ro", false), ("rro", true)] {
        let mut cfg = container_config(name, &busybox(), &["sleep", "3600"]);
        let mut m = bind("/vol", &src, PropagationPrivate);
        m.readonly = true;
        m.recursive_read_only = rro;
        cfg.mounts = vec![m];
        let id = c.create(&sb, &cfg, &pod).await.expect("create");
        c.start(&id).await.expect("start");
        let (rc, _, err) = exec_sh(&mut c, &id, "touch /vol/top").await;
        assert_ne!(rc, 0, "{name}: the volume is read-only");
        assert!(err.contains("Read-only file system"), "{name}: EROFS, got {err}");
        let (rc, _, err) = exec_sh(&mut c, &id, &format!("touch /vol/sub/{name}")).await;
        let (_, info, _) = exec_sh(&mut c, &id, "cat /proc/self/mountinfo").await;
        let sub_line = mountinfo_line(&info, "/vol/sub").expect("submount inside");
        let sub_opts = sub_line.split(' ').nth(5).unwrap();
        if rro {
            assert_ne!(rc, 0, "rro: the submount is read-only too");
            assert!(err.contains("Read-only file system"), "rro: EROFS, got {err}");
            assert!(sub_opts.split(',').any(|o| o == "ro"), "{sub_line}");
        } else {
            assert_eq!(rc, 0, "plain ro leaves the submount writable: {err}");
            assert!(sub.join(name).exists(), "the write landed on the host");
            assert!(sub_opts.split(',').any(|o| o == "rw"), "{sub_line}");
        }
        let top_opts = mountinfo_line(&info, "/vol")
            .unwrap()
            .split(' ')
            .nth(5)
            .unwrap()
            .to_string();
        assert!(top_opts.split(',').any(|o| o == "ro"), "{top_opts}");
        c.stop(&id, 0).await.unwrap();
        c.remove(&id).await.unwrap();
    }

    // Combinations CRI rules out, and host mounts that cannot propagate.
    let private = host.path().join("private");
    let slave = host.path().join("slave");
    std::fs::create_dir_all(&private).unwrap();
    std::fs::create_dir_all(&slave).unwrap();
    let (private_s, slave_s) = (
        private.to_string_lossy().into_owned(),
        slave.to_string_lossy().into_owned(),
    );
    host_cmd(&[
        "mount",
        "-t",
        "tmpfs",
        "-o",
        "size=1m",
        "berth-private",
        &private_s,
    ]);
    host_cmd(&["mount", "--make-private", &private_s]);
    let _unmount_private = Unmount(private.clone());
    host_cmd(&["mount", "--bind", &sub_s, &slave_s]);
    let _unmount_slave = Unmount(slave.clone());
    host_cmd(&["mount", "--make-slave", &slave_s]);
    let rro = |readonly: bool, p: cri::MountPropagation| {
        let mut m = bind("/vol", &src, p);
        m.readonly = readonly;
        m.recursive_read_only = true;
        m
    };
    for (what, m) in [
        ("rro without readonly", rro(false, PropagationPrivate)),
        ("rro with HostToContainer", rro(true, PropagationHostToContainer)),
        ("rro with Bidirectional", rro(true, PropagationBidirectional)),
        (
            "HostToContainer on a private mount",
            bind("/vol", &private, PropagationHostToContainer),
        ),
        (
            "Bidirectional on a private mount",
            bind("/vol", &private, PropagationBidirectional),
        ),
        (
            "Bidirectional on a slave mount",
            bind("/vol", &slave, PropagationBidirectional),
        ),
    ] {
        let mut cfg = container_config("bad", &busybox(), &["true"]);
        cfg.mounts = vec![m];
        let e = c.create(&sb, &cfg, &pod).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{what}: {e:?}");
    }
    // A slave mount is fine for HostToContainer.
    let mut cfg = container_config("slave-ok", &busybox(), &["true"]);
    cfg.mounts = vec![bind("/vol", &slave, PropagationHostToContainer)];
    let id = c
        .create(&sb, &cfg, &pod)
        .await
        .expect("HostToContainer on a slave mount");
    c.remove(&id).await.unwrap();
    c.stop_and_remove_pod(&sb).await.unwrap();
}

#[tokio::test]
async fn mounts_symlinked_host_path_termination_log_and_image_volumes() {
    let (b, mut c) = Berthd::start().await.expect("berthd");
    let image = format!("{}/library/busybox-volumes:latest", registry());
    c.pull(&image).await.expect("pull");
    let host = tempfile::Builder::new()
        .prefix("berth-vols-")
        .tempdir_in("/tmp")
        .unwrap();
    let target = host.path().join("target");
    std::fs::create_dir(&target).unwrap();
    std::fs::write(target.join("hello"), "from-target\n").unwrap();
    let link = host.path().join("link");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    // kubelet creates the termination-message file and mounts it.
    let termlog = host.path().join("termination-log");
    std::fs::write(&termlog, "").unwrap();
    let cache = host.path().join("cache");
    std::fs::create_dir(&cache).unwrap();
    std::fs::write(cache.join("from-host"), "").unwrap();

    let pod = pod_config("vols", &b.log_dir());
    let sb = c.run_pod(&pod).await.expect("runp");
    let (_, info) = c.pod_status(&sb).await.unwrap();
    let pod_cgroup = info["cgroupPath"].as_str().unwrap().to_string();
    let mut cfg = container_config(
        "vols",
        &image,
        &[
            "sh",
            "-c",
            "set -e; cat /lnk/hello; grep ' /lnk ' /proc/self/mountinfo; \
             echo written-by-container >/dev/termination-log; \
             test -d /data; test -z \"$(ls -A /data)\"; touch /data/new; \
             test -d /var/cache/app; test -z \"$(ls -A /var/cache/app)\"; echo volumes-ok",
        ],
    );
    cfg.mounts = vec![
        bind("/lnk", &link, cri::MountPropagation::PropagationPrivate),
        bind(
            "/dev/termination-log",
            &termlog,
            cri::MountPropagation::PropagationPrivate,
        ),
    ];
    let id = c.create(&sb, &cfg, &pod).await.expect("create");
    c.start(&id).await.expect("start");
    let s = c.wait_exited(&id, Duration::from_secs(20)).await.unwrap();
    let log = std::fs::read_to_string(b.log_dir().join("vols.log")).unwrap();
    assert_eq!(s.exit_code, 0, "log: {log}");
    assert!(log.contains("from-target"), "the link's target is mounted: {log}");
    // mountinfo's root field names the directory really bound: the target.
    let lnk_line = log
        .lines()
        .find(|l| l.contains(" /lnk "))
        .expect("mountinfo line");
    assert!(lnk_line.contains("/target /lnk "), "{lnk_line}");
    assert!(log.contains("volumes-ok"), "{log}");
    assert_eq!(
        std::fs::read_to_string(&termlog).unwrap(),
        "written-by-container\n"
    );
    // ContainerStatus keeps the mounts as kubelet asked.
    let st = c.status(&id).await.unwrap().status.unwrap();
    assert!(
        st.mounts.iter().any(|m| m.host_path == link.to_string_lossy()),
        "{:?}",
        st.mounts
    );
    c.remove(&id).await.unwrap();

    // A CRI mount over an image VOLUME wins; the other VOLUME stays a
    // writable empty dir even on a read-only rootfs.
    let mut cfg = container_config(
        "covered",
        &image,
        &[
            "sh",
            "-c",
            "set -e; test -e /var/cache/app/from-host; touch /data/ok; \
             if touch /rootfs-write 2>/dev/null; then exit 9; fi; echo covered-ok",
        ],
    );
    cfg.mounts = vec![bind(
        "/var/cache/app",
        &cache,
        cri::MountPropagation::PropagationPrivate,
    )];
    cfg.linux.as_mut().unwrap().security_context = Some(cri::LinuxContainerSecurityContext {
        readonly_rootfs: true,
        ..Default::default()
    });
    let id = c.create(&sb, &cfg, &pod).await.expect("create covered");
    c.start(&id).await.expect("start covered");
    let s = c.wait_exited(&id, Duration::from_secs(20)).await.unwrap();
    let log = std::fs::read_to_string(b.log_dir().join("covered.log")).unwrap();
    assert_eq!(s.exit_code, 0, "log: {log}");
    assert!(log.contains("covered-ok"), "{log}");
    c.remove(&id).await.unwrap();
    c.stop_and_remove_pod(&sb).await.unwrap();
    assert_nothing_left(&b, &pod_cgroup);
}

/// Like [`exec_sh`], stdout and stderr joined; runs through ExecSync
/// (which joins the container's cgroup, so the same device filter applies).
async fn exec_sh_joined(c: &mut CriClient, id: &str, script: &str) -> (i32, String) {
    let r = c
        .runtime
        .exec_sync(cri::ExecSyncRequest {
            container_id: id.into(),
            cmd: vec!["sh".into(), "-c".into(), script.into()],
            timeout: 20,
        })
        .await
        .expect("exec")
        .into_inner();
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&r.stdout),
        String::from_utf8_lossy(&r.stderr)
    );
    (r.exit_code, out)
}

/// A running `sleep` container with `devices` and, optionally, privileged.
async fn device_container(
    c: &mut CriClient,
    sb: &str,
    pod: &cri::PodSandboxConfig,
    name: &str,
    devices: Vec<cri::Device>,
    privileged: bool,
) -> String {
    let mut cfg = container_config(name, &busybox(), &["sleep", "300"]);
    cfg.devices = devices;
    cfg.linux.as_mut().unwrap().security_context = Some(cri::LinuxContainerSecurityContext {
        privileged,
        ..Default::default()
    });
    let id = c.create(sb, &cfg, pod).await.expect("create");
    c.start(&id).await.expect("start");
    id
}

/// The audit's hole: a default container is root with CAP_MKNOD. It may
/// still mknod any node (images carry device files), but opening one that
/// is not a standard pseudo-device is refused by the cgroup device filter,
/// in the container's own process and in ExecSync.
#[tokio::test]
async fn devices_default_filter_refuses_host_disks() {
    let (b, mut c) = Berthd::start().await.expect("berthd");
    c.pull(&busybox()).await.expect("pull");
    let pod = pod_config("devfilter", &b.log_dir());
    let sb = c.run_pod(&pod).await.unwrap();
    // ram0 (b 1:0) is the VM's RAM disk: a block device that really exists,
    // so a refusal cannot be ENXIO in disguise.
    let script = "grep CapEff /proc/self/status; \
                  mknod /tmp/sda b 8 0 && echo mknod-sda-ok; \
                  echo \"sda: $(head -c1 /tmp/sda 2>&1 >/dev/null)\"; \
                  mknod /tmp/ram b 1 0 && echo \"ram: $(head -c1 /tmp/ram 2>&1 >/dev/null)\"; \
                  echo \"zero: $(head -c4 /dev/zero | wc -c | tr -d ' ')\"; \
                  echo \"urandom: $(head -c4 /dev/urandom | wc -c | tr -d ' ')\"; \
                  echo x >/dev/null && echo null-ok; \
                  echo done; sleep 300";
    let cfg = container_config("filtered", &busybox(), &["sh", "-c", script]);
    let id = c.create(&sb, &cfg, &pod).await.unwrap();
    c.start(&id).await.unwrap();
    let log_path = b.log_dir().join("filtered.log");
    let deadline = Instant::now() + Duration::from_secs(20);
    let out = loop {
        let out: Vec<String> = std::fs::read_to_string(&log_path)
            .unwrap_or_default()
            .lines()
            .filter_map(parse_cri_log_line)
            .map(|l| l.3)
            .collect();
        if out.iter().any(|l| l == "done") {
            break out.join("\n");
        }
        assert!(Instant::now() < deadline, "{out:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // CAP_MKNOD is bit 27: the container really holds it.
    let capeff = out.lines().find(|l| l.starts_with("CapEff:")).expect("CapEff");
    let caps = u64::from_str_radix(capeff.split_whitespace().nth(1).unwrap(), 16).unwrap();
    assert!(caps & (1 << 27) != 0, "CAP_MKNOD expected: {out}");
    assert!(out.contains("mknod-sda-ok"), "{out}");
    assert!(
        out.contains("sda: head: /tmp/sda: Operation not permitted"),
        "{out}"
    );
    assert!(
        out.contains("ram: head: /tmp/ram: Operation not permitted"),
        "{out}"
    );
    assert!(out.contains("zero: 4") && out.contains("urandom: 4"), "{out}");
    assert!(out.contains("null-ok"), "{out}");
    let (code, out) = exec_sh_joined(&mut c, &id, "head -c1 /tmp/ram >/dev/null").await;
    assert_ne!(code, 0, "ExecSync is filtered too: {out}");
    assert!(out.contains("Operation not permitted"), "{out}");
    // A host block device is not even in an unprivileged container's /dev.
    let (_, out) = exec_sh_joined(&mut c, &id, "test -e /dev/ram0 && echo present || echo absent").await;
    assert_eq!(out.trim(), "absent");
    c.stop(&id, 0).await.unwrap();
    c.stop_and_remove_pod(&sb).await.unwrap();
}

/// Sets up a loop device over a 1 MiB file starting with `berth-disk`;
/// detached again on drop.
struct LoopDevice {
    dev: String,
    file: std::path::PathBuf,
}

impl LoopDevice {
    fn new(dir: &Path) -> LoopDevice {
        let file = dir.join("disk.img");
        let mut data = b"berth-disk".to_vec();
        data.resize(1 << 20, 0);
        std::fs::write(&file, data).unwrap();
        let free = std::process::Command::new("losetup").arg("-f").output().unwrap();
        let dev = String::from_utf8_lossy(&free.stdout).trim().to_string();
        assert!(dev.starts_with("/dev/loop"), "losetup -f: {free:?}");
        let st = std::process::Command::new("losetup")
            .arg(&dev)
            .arg(&file)
            .status()
            .unwrap();
        assert!(st.success(), "losetup {dev}");
        LoopDevice { dev, file }
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = std::process::Command::new("losetup")
            .arg("-d")
            .arg(&self.dev)
            .status();
        let _ = std::fs::remove_file(&self.file);
    }
}

/// CRI devices: the node appears at container_path and the filter grants
/// exactly the CRI permissions ("r": reads work, writes are refused, also
/// through a node of the same numbers made with mknod).
#[tokio::test]
async fn devices_cri_devices_get_their_permissions() {
    let (b, mut c) = Berthd::start().await.expect("berthd");
    c.pull(&busybox()).await.expect("pull");
    let disk = LoopDevice::new(b.dir.path());
    let pod = pod_config("cridev", &b.log_dir());
    let sb = c.run_pod(&pod).await.unwrap();
    let dev = |inside: &str, perms: &str| cri::Device {
        host_path: disk.dev.clone(),
        container_path: inside.into(),
        permissions: perms.into(),
    };

    let ro = device_container(&mut c, &sb, &pod, "ro", vec![dev("/dev/xdisk", "r")], false).await;
    let (code, out) = exec_sh_joined(&mut c, &ro, "ls -l /dev/xdisk; head -c10 /dev/xdisk; echo").await;
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with('b'), "a block node: {out}");
    assert!(out.contains("berth-disk"), "{out}");
    let (code, out) = exec_sh_joined(&mut c, &ro, "printf W >/dev/xdisk").await;
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("Operation not permitted"), "{out}");
    let minor: u32 = disk.dev.trim_start_matches("/dev/loop").parse().unwrap();
    let (code, out) = exec_sh_joined(
        &mut c,
        &ro,
        &format!("mknod /tmp/again b 7 {minor} && printf W >/tmp/again"),
    )
    .await;
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("Operation not permitted"), "{out}");
    c.stop(&ro, 0).await.unwrap();

    let rw = device_container(&mut c, &sb, &pod, "rw", vec![dev("/dev/wdisk", "rw")], false).await;
    let (code, out) = exec_sh_joined(&mut c, &rw, "printf WRITTEN >/dev/wdisk && head -c10 /dev/wdisk").await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(out, "WRITTENisk");
    let mut head = [0u8; 7];
    use std::io::Read;
    std::fs::File::open(&disk.dev)
        .unwrap()
        .read_exact(&mut head)
        .unwrap();
    assert_eq!(&head, b"WRITTEN", "the write reached the host device");
    c.stop(&rw, 0).await.unwrap();
    c.stop_and_remove_pod(&sb).await.unwrap();
}

/// Privileged: the host's device nodes are in /dev and no filter applies.
#[tokio::test]
async fn devices_privileged_container_gets_host_devices() {
    let (b, mut c) = Berthd::start().await.expect("berthd");
    c.pull(&busybox()).await.expect("pull");
    let pod = pod_config("privdev", &b.log_dir());
    let sb = c.run_pod(&pod).await.unwrap();
    assert!(Path::new("/dev/ram0").exists(), "the VM's RAM disk");
    let id = device_container(&mut c, &sb, &pod, "priv", vec![], true).await;
    let (code, out) = exec_sh_joined(
        &mut c,
        &id,
        "ls -l /dev/ram0 /dev/loop0 && head -c512 /dev/ram0 | wc -c && \
         mknod /tmp/ram b 1 0 && head -c512 /tmp/ram | wc -c && \
         readlink /dev/ptmx && test -c /dev/null && echo ok",
    )
    .await;
    assert_eq!(code, 0, "{out}");
    let lines: Vec<&str> = out.lines().map(str::trim).collect();
    assert!(
        lines[0].starts_with('b') && lines[0].ends_with("/dev/loop0"),
        "{out}"
    );
    assert!(
        lines[1].starts_with('b') && lines[1].ends_with("/dev/ram0"),
        "{out}"
    );
    assert_eq!(lines[2..].to_vec(), ["512", "512", "pts/ptmx", "ok"], "{out}");
    c.stop(&id, 0).await.unwrap();
    c.stop_and_remove_pod(&sb).await.unwrap();
}

/// A CRI device that is missing or is not a device node: InvalidArgument,
/// and nothing (cgroup, directories, records) left behind.
#[tokio::test]
async fn devices_bad_host_path_is_invalid_and_leaks_nothing() {
    let (b, mut c) = Berthd::start().await.expect("berthd");
    c.pull(&busybox()).await.expect("pull");
    let pod = pod_config("baddev", &b.log_dir());
    let sb = c.run_pod(&pod).await.unwrap();
    for host_path in ["/dev/berth-no-such-device", "/etc/hostname"] {
        let mut cfg = container_config("bad", &busybox(), &["true"]);
        cfg.devices = vec![cri::Device {
            host_path: host_path.into(),
            container_path: "/dev/x".into(),
            permissions: "rw".into(),
        }];
        let e = c.create(&sb, &cfg, &pod).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
        assert!(e.message().contains(host_path), "{}", e.message());
    }
    let cg_root =
        Path::new("/sys/fs/cgroup").join(format!("{}/{sb}", b.cgroup_parent).trim_start_matches('/'));
    let children: Vec<_> = std::fs::read_dir(&cg_root)
        .unwrap()
        .flatten()
        .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
        .map(|e| e.path())
        .collect();
    assert!(children.is_empty(), "container cgroups leaked: {children:?}");
    for dir in ["root/containers", "state/containers"] {
        let left: Vec<_> = std::fs::read_dir(b.dir.path().join(dir))
            .map(|r| r.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "leftover {dir}: {left:?}");
    }
    c.stop_and_remove_pod(&sb).await.unwrap();
    assert_nothing_left(&b, &format!("{}/{sb}", b.cgroup_parent));
}
