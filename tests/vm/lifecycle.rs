//! Container and pod lifecycle: a pod end to end through the CRI socket
//! like kubelet and crictl (pull, run pod, create, start, logs, status, stop,
//! remove) with proof that nothing is left, SIGTERM then SIGKILL on stop,
//! clear errors for bad input, ListContainers filters; and the guarantees
//! under races: a stop that reaches a PID 1 before it installed its handler,
//! concurrent creations of one name, and shims that outlive berthd's cgroup.
//!
//! Needs root, cgroup v2 and the loopback registry: runs inside the VM
//! (`hack/vm`). Run with `--test-threads=1`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth_proto::cri;
use berth_tests::node::{assert_nothing_left, status_info};
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
    // Cloned into it (CLONE_INTO_CGROUP), not moved by a cgroup.procs
    // write, which waits for an RCU grace period.
    assert!(
        b.log().contains("born_in_cgroup=true"),
        "the shim was not born in its cgroup:\n{}",
        b.log()
    );
    c.stop_and_remove_pod(&sb).await.unwrap();
}

/// The parent pid of `pid` (field 4 of /proc/<pid>/stat).
fn ppid(pid: u32) -> u32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    rest.split(' ').nth(1).unwrap().parse().unwrap()
}

/// How many `step` lines of CreateContainer's shim step `step` berthd's
/// debug log holds.
fn create_steps(log: &str, step: &str) -> usize {
    let name = format!("\"shim.{step}\"");
    log.lines()
        .filter(|l| l.contains("step finished") && l.contains("create_container") && l.contains(&name))
        .count()
}

/// Each container's init is forked by the pod's fork server, a child of
/// the shim, with no exec of its own (no `shim.exec` step); the forked
/// init is the shim's child, where the shim reaps it. With the server
/// gone, the next init is exec'd as before, and the pod still works and
/// leaves nothing.
#[tokio::test]
async fn life_inits_are_forked_by_the_pods_fork_server() {
    let (b, mut c) = Berthd::start().await.expect("berthd");
    c.pull(&busybox()).await.expect("pull");
    let mut pod = pod_config("zygote", &b.log_dir());
    // kubelet's default: a PID namespace per container.
    let own_pid = Some(cri::NamespaceOption {
        pid: cri::NamespaceMode::Container as i32,
        ..Default::default()
    });
    pod.linux.as_mut().unwrap().security_context = Some(cri::LinuxSandboxSecurityContext {
        namespace_options: own_pid.clone(),
        ..Default::default()
    });
    let sb = c.run_pod(&pod).await.expect("runp");
    let pod_cgroup = c.pod_status(&sb).await.unwrap().1["cgroupPath"]
        .as_str()
        .unwrap()
        .to_string();
    let shim: Vec<u32> = processes_matching(&format!("--id {sb}"))
        .into_iter()
        .filter(|(_, cmd)| cmd.contains("berth-shim serve"))
        .map(|(pid, _)| pid)
        .collect();
    assert_eq!(shim.len(), 1, "one shim: {shim:?}");
    let shim = shim[0];
    let servers: Vec<u32> = processes_matching("berth-shim zygote")
        .into_iter()
        .map(|(pid, _)| pid)
        .filter(|pid| ppid(*pid) == shim)
        .collect();
    assert_eq!(servers.len(), 1, "one fork server, the shim's child");
    let server = servers[0];

    let mut run = async |name: &str| -> (String, u32) {
        let mut cfg = container_config(name, &busybox(), &["sleep", "3600"]);
        cfg.linux.get_or_insert_with(Default::default).security_context =
            Some(cri::LinuxContainerSecurityContext {
                namespace_options: own_pid.clone(),
                ..Default::default()
            });
        let id = c.create(&sb, &cfg, &pod).await.expect("create");
        c.start(&id).await.expect("start");
        let pid = status_info(&c.status(&id).await.unwrap())["pid"]
            .as_u64()
            .unwrap() as u32;
        (id, pid)
    };
    let (first, first_pid) = run("first").await;
    assert_eq!(ppid(first_pid), shim, "the forked init is the shim's child");
    let log = b.log();
    assert_eq!(create_steps(&log, "read"), 1, "{log}");
    assert_eq!(create_steps(&log, "exec"), 0, "an init was exec'd:\n{log}");

    // The server gone, the exec'd path takes over.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(server as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    until("the fork server is gone", || {
        std::fs::read(format!("/proc/{server}/cmdline")).map_or(true, |c| c.is_empty())
    })
    .await;
    let (second, second_pid) = run("second").await;
    assert_eq!(ppid(second_pid), shim);
    assert_eq!(create_steps(&b.log(), "exec"), 1, "{}", b.log());
    for id in [&first, &second] {
        let (code, out) = c.exec(id, &["echo", "hi"]).await.unwrap();
        assert_eq!((code, out.as_str()), (0, "hi\n"));
    }
    c.stop_and_remove_pod(&sb).await.unwrap();
    assert_nothing_left(&b, &pod_cgroup);
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
            container_id: "no-such-container".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    // The VM has CRIU: an unknown container is NotFound naming it.
    assert_eq!(
        e.code(),
        tonic::Code::NotFound,
        "checkpoint of an unknown container: {e:?}"
    );
    assert!(e.message().contains("no-such-container"), "{}", e.message());

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
