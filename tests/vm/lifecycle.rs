//! Lifecycle guarantees under races: a stop that reaches a PID 1 before it
//! installed its handler, concurrent creations of one name, and shims that
//! outlive berthd's cgroup.
//!
//! Needs root, cgroup v2 and the loopback registry: runs inside the VM
//! (`hack/vm`). Run with `--test-threads=1`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth_proto::cri;
use berth_tests::*;

fn busybox() -> String {
    format!("{}/library/busybox:latest", registry())
}

/// `cfg` with the host dir `host` mounted at `/data`.
fn with_data(mut cfg: cri::ContainerConfig, host: &Path) -> cri::ContainerConfig {
    cfg.mounts.push(cri::Mount {
        container_path: "/data".into(),
        host_path: host.to_string_lossy().into_owned(),
        ..Default::default()
    });
    cfg
}

/// Waits (bounded, so a missing event fails instead of hanging) until
/// `cond` holds.
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cond() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn shim_log(b: &Berthd, sb: &str) -> PathBuf {
    b.dir.path().join("state/sandboxes").join(sb).join("shim.log")
}

#[tokio::test]
async fn life_a_stop_sent_before_pid_1_traps_it_is_delivered_once_it_does() {
    let (b, mut c) = Berthd::start().await.expect("berthd");
    c.pull(&busybox()).await.expect("pull");
    let data = tempfile::tempdir().unwrap();
    let pod = pod_config("late-trap", &b.log_dir());
    let sb = c.run_pod(&pod).await.expect("runp");
    // PID 1 of its own PID namespace, with no TERM handler until /data/go
    // exists: the kernel drops a TERM sent before then.
    let script = "while [ ! -e /data/go ]; do sleep 0.05; done; trap 'exit 0' TERM; \
                  while :; do sleep 0.1; done";
    let cfg = with_data(
        container_config("late-trap", &busybox(), &["sh", "-c", script]),
        data.path(),
    );
    let id = c.create(&sb, &cfg, &pod).await.expect("create");
    c.start(&id).await.expect("start");
    let mut c2 = c.clone();
    let stop_id = id.clone();
    let stop = tokio::spawn(async move { c2.stop(&stop_id, 120).await });
    // The shim saw the signal dropped (no handler yet) ...
    let log = shim_log(&b, &sb);
    until("the shim reports the dropped stop signal", || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("PID namespace init with no handler")
    })
    .await;
    // ... and only now does the trap go in.
    std::fs::write(data.path().join("go"), "").unwrap();
    stop.await.unwrap().expect("stop");
    let s = c.status(&id).await.unwrap().status.unwrap();
    assert_eq!(
        (s.state, s.exit_code),
        (cri::ContainerState::ContainerExited as i32, 0),
        "the trap's exit, not SIGKILL's 137 after the grace period"
    );
    c.stop_and_remove_pod(&sb).await.unwrap();
}

#[tokio::test]
async fn life_a_pid_1_with_its_handler_gets_exactly_one_stop_signal() {
    let (b, mut c) = Berthd::start().await.expect("berthd");
    c.pull(&busybox()).await.expect("pull");
    let data = tempfile::tempdir().unwrap();
    let pod = pod_config("counting-trap", &b.log_dir());
    let sb = c.run_pod(&pod).await.expect("runp");
    // Counts every TERM and keeps running: only the final SIGKILL ends it.
    let script = "trap 'echo term >> /data/count' TERM; touch /data/ready; while :; do sleep 0.1; done";
    let cfg = with_data(
        container_config("counting-trap", &busybox(), &["sh", "-c", script]),
        data.path(),
    );
    let id = c.create(&sb, &cfg, &pod).await.expect("create");
    c.start(&id).await.expect("start");
    let ready = data.path().join("ready");
    until("the trap is installed", || ready.exists()).await;
    c.stop(&id, 3).await.expect("stop");
    let s = c.status(&id).await.unwrap().status.unwrap();
    assert_eq!(s.exit_code, 137, "ignored TERM, then SIGKILL");
    let count = std::fs::read_to_string(data.path().join("count")).unwrap_or_default();
    assert_eq!(count.lines().count(), 1, "TERMs caught: {count:?}");
    assert!(
        !std::fs::read_to_string(shim_log(&b, &sb))
            .unwrap()
            .contains("PID namespace init with no handler"),
        "a process that had the handler is never watched"
    );
    c.stop_and_remove_pod(&sb).await.unwrap();
}

#[tokio::test]
async fn life_concurrent_creations_of_one_name_make_one_object() {
    let (b, mut c) = Berthd::start().await.expect("berthd");
    c.pull(&busybox()).await.expect("pull");
    let pod = pod_config("same-name", &b.log_dir());
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let (mut c, pod) = (c.clone(), pod.clone());
        tasks.spawn(async move { c.run_pod(&pod).await });
    }
    let results = tasks.join_all().await;
    let pods: Vec<&String> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(pods.len(), 1, "{results:?}");
    for r in &results {
        if let Err(e) = r {
            assert_eq!(e.code(), tonic::Code::AlreadyExists, "{e:?}");
        }
    }
    let sb = pods[0].clone();
    let listed = c
        .runtime
        .list_pod_sandbox(cri::ListPodSandboxRequest::default())
        .await
        .unwrap()
        .into_inner()
        .items;
    assert_eq!(listed.len(), 1, "{listed:?}");

    let cfg = container_config("twin", &busybox(), &["sleep", "300"]);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let (mut c, cfg, pod, sb) = (c.clone(), cfg.clone(), pod.clone(), sb.clone());
        tasks.spawn(async move { c.create(&sb, &cfg, &pod).await });
    }
    let results = tasks.join_all().await;
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1, "{results:?}");
    for r in &results {
        if let Err(e) = r {
            assert_eq!(e.code(), tonic::Code::AlreadyExists, "{e:?}");
        }
    }
    let listed = c
        .runtime
        .list_containers(cri::ListContainersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .containers;
    assert_eq!(listed.len(), 1, "{listed:?}");
    c.stop_and_remove_pod(&sb).await.unwrap();
}

#[tokio::test]
async fn life_shims_live_outside_berthds_cgroup() {
    let (b, mut c) = Berthd::start().await.expect("berthd");
    let pod = pod_config("shim-cgroup", &b.log_dir());
    let sb = c.run_pod(&pod).await.expect("runp");
    let shims: Vec<u32> = processes_matching(&format!("--id {sb}"))
        .into_iter()
        .filter(|(_, cmd)| cmd.contains("berth-shim"))
        .map(|(pid, _)| pid)
        .collect();
    assert_eq!(shims.len(), 1, "one shim for the pod: {shims:?}");
    let cgroup_of = |pid: u32| std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let (shim, berthd) = (cgroup_of(shims[0]), cgroup_of(b.pid()));
    assert_ne!(
        shim, berthd,
        "a service manager stopping berthd's cgroup would kill the pod"
    );
    assert!(shim.trim_end().ends_with("/berth-shims"), "{shim}");
    c.stop_and_remove_pod(&sb).await.unwrap();
}

#[tokio::test]
async fn life_an_exit_is_reported_while_a_background_child_holds_the_output() {
    let (b, mut c) = Berthd::start().await.expect("berthd");
    c.pull(&busybox()).await.expect("pull");
    let mut pod = pod_config("held-pipe", &b.log_dir());
    let pod_pid = Some(cri::NamespaceOption {
        pid: cri::NamespaceMode::Pod as i32,
        ..Default::default()
    });
    pod.linux.as_mut().unwrap().security_context = Some(cri::LinuxSandboxSecurityContext {
        namespace_options: pod_pid.clone(),
        ..Default::default()
    });
    let sb = c.run_pod(&pod).await.expect("runp");
    // In the pod's shared PID namespace the background sleep outlives the
    // shell, holding its stdout and stderr open.
    let mut cfg = container_config(
        "held-pipe",
        &busybox(),
        &["sh", "-c", "sleep 4747 & echo bye; exit 3"],
    );
    cfg.linux.get_or_insert_with(Default::default).security_context =
        Some(cri::LinuxContainerSecurityContext {
            namespace_options: pod_pid,
            ..Default::default()
        });
    let id = c.create(&sb, &cfg, &pod).await.expect("create");
    c.start(&id).await.expect("start");
    let s = c
        .wait_exited(&id, Duration::from_secs(30))
        .await
        .expect("the exit is reported");
    assert_eq!(s.exit_code, 3);
    assert_eq!(
        log_lines(&b.log_dir().join("held-pipe.log")),
        vec!["bye".to_string()]
    );
    assert!(
        !processes_matching("sleep 4747").is_empty(),
        "the holder still runs"
    );
    // The holder keeps the container's namespaces alive, but the container
    // is over: exec is refused, never run through whatever has the pid.
    match c.exec(&id, &["hostname"]).await {
        Err(e) => assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}"),
        Ok(r) => panic!("exec ran in an exited container: {r:?}"),
    }
    c.stop_and_remove_pod(&sb).await.unwrap();
    assert!(
        processes_matching("sleep 4747").is_empty(),
        "and goes with the pod"
    );
}
