//! Concurrent CRI calls, as kubelet makes them: many clients creating the
//! same names, StopContainer racing RemoveContainer, a resize racing the
//! container's exit, ListContainers all the while, and an exec racing the
//! exit of the process whose namespaces it would join. Every call ends in
//! success or a documented error, the state seen afterwards is consistent,
//! and teardown leaves nothing behind.
//!
//! Assertions are on order and state only, never on durations. Needs root,
//! cgroup v2 and the loopback registry: runs inside the VM (`hack/vm`). Run
//! with `--test-threads=1`.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_proto::cri;
use berth_tests::*;
use tonic::Code;

fn busybox() -> String {
    format!("{}/library/busybox:latest", registry())
}

/// Waits (bounded, so a missing event fails instead of hanging) until
/// `cond` holds.
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cond() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
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

/// ListContainers and ListPodSandbox in a loop until stopped: every call
/// must succeed and no listing may show two objects with one name (or one
/// id twice). Returns how many listings it checked.
struct Lister {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Result<usize, String>>,
}

impl Lister {
    fn start(c: &CriClient) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, mut c) = (stop.clone(), c.clone());
        let task = tokio::spawn(async move {
            let mut n = 0;
            while !flag.load(Ordering::SeqCst) {
                let pods = c
                    .runtime
                    .list_pod_sandbox(cri::ListPodSandboxRequest::default())
                    .await
                    .map_err(|e| format!("ListPodSandbox: {e:?}"))?
                    .into_inner()
                    .items;
                let names: Vec<_> = pods.iter().map(|p| format!("{:?}", p.metadata)).collect();
                unique("pod name", &names)?;
                unique("pod id", &pods.iter().map(|p| p.id.clone()).collect::<Vec<_>>())?;
                let ctrs = c
                    .runtime
                    .list_containers(cri::ListContainersRequest::default())
                    .await
                    .map_err(|e| format!("ListContainers: {e:?}"))?
                    .into_inner()
                    .containers;
                let names: Vec<_> = ctrs
                    .iter()
                    .map(|c| format!("{} {:?}", c.pod_sandbox_id, c.metadata))
                    .collect();
                unique("container name", &names)?;
                unique(
                    "container id",
                    &ctrs.iter().map(|c| c.id.clone()).collect::<Vec<_>>(),
                )?;
                n += 1;
                // Leave the (emulated) CPUs to the calls under test.
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Ok(n)
        });
        Lister { stop, task }
    }

    /// Stops the loop; panics with what it saw wrong.
    async fn finish(self) -> usize {
        self.stop.store(true, Ordering::SeqCst);
        let n = self
            .task
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("a listing went wrong: {e}"));
        assert!(n > 0, "the lister never completed a listing");
        n
    }
}

fn unique(what: &str, items: &[String]) -> Result<(), String> {
    let mut seen = HashSet::new();
    for i in items {
        if !seen.insert(i) {
            return Err(format!("{what} listed twice: {i}"));
        }
    }
    Ok(())
}

/// What a berthd instance has on the node right now: its shims, its
/// cgroups, its mounts (overlays, namespace pins), veths and IP leases.
#[derive(Debug, PartialEq, Eq)]
struct Footprint {
    shims: Vec<String>,
    cgroups: Vec<PathBuf>,
    mounts: Vec<String>,
    veths: usize,
    leases: Vec<PathBuf>,
}

fn footprint(b: &Berthd) -> Footprint {
    let dir = b.dir.path().to_string_lossy().into_owned();
    let shims = processes_matching(&dir)
        .into_iter()
        .filter(|(_, cmd)| cmd.contains("berth-shim"))
        .map(|(_, cmd)| cmd)
        .collect();
    let mut cgroups = Vec::new();
    let top = PathBuf::from("/sys/fs/cgroup").join(b.cgroup_parent.trim_start_matches('/'));
    let mut stack = vec![top];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                cgroups.push(e.path());
                stack.push(e.path());
            }
        }
    }
    let veths = std::process::Command::new("ip")
        .args(["-o", "link", "show", "type", "veth"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).lines().count())
        .unwrap_or(0);
    let leases = walk_files(&b.dir.path().join("ipam"))
        .into_iter()
        .filter(|p| {
            let name = p.file_name().unwrap_or_default().to_string_lossy();
            !name.starts_with("last_reserved_ip") && name != "lock"
        })
        .collect();
    Footprint {
        shims,
        cgroups,
        mounts: mounts_containing(&dir),
        veths,
        leases,
    }
}

fn walk_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        match e.file_type() {
            Ok(t) if t.is_dir() => out.extend(walk_files(&e.path())),
            Ok(_) => out.push(e.path()),
            Err(_) => {}
        }
    }
    out
}

/// Nothing of `b`'s pods is left on the node (`veths` is the count before
/// the test made any pod).
fn assert_nothing_left(b: &Berthd, veths: usize) {
    let f = footprint(b);
    assert_eq!(
        f,
        Footprint {
            shims: vec![],
            cgroups: vec![],
            mounts: vec![],
            veths,
            leases: vec![],
        },
        "left behind after teardown"
    );
}

async fn list_all(c: &mut CriClient) -> (Vec<cri::PodSandbox>, Vec<cri::Container>) {
    let pods = c
        .runtime
        .list_pod_sandbox(cri::ListPodSandboxRequest::default())
        .await
        .unwrap()
        .into_inner()
        .items;
    let ctrs = c
        .runtime
        .list_containers(cri::ListContainersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .containers;
    (pods, ctrs)
}

/// Tears every pod down the way kubelet does and checks nothing is left.
async fn teardown(b: &Berthd, c: &mut CriClient, veths: usize) {
    let (pods, _) = list_all(c).await;
    for p in pods {
        c.stop_and_remove_pod(&p.id).await.expect("teardown");
    }
    let (pods, ctrs) = list_all(c).await;
    assert!(pods.is_empty() && ctrs.is_empty(), "{pods:?} {ctrs:?}");
    assert_nothing_left(b, veths);
}

#[tokio::test]
async fn race_sixteen_clients_per_name_make_one_pod_and_one_container_each() {
    let (b, mut c) = Berthd::start().await.expect("berthd");
    c.pull(&busybox()).await.expect("pull");
    let veths = footprint(&b).veths;
    let lister = Lister::start(&c);
    let names = ["alpha", "beta", "gamma"];

    // 16 clients for each of three pod names, all at once.
    let mut tasks = tokio::task::JoinSet::new();
    for name in names {
        let pod = pod_config(name, &b.log_dir());
        for _ in 0..16 {
            let (mut c, pod) = (c.clone(), pod.clone());
            tasks.spawn(async move { (name, c.run_pod(&pod).await) });
        }
    }
    let mut pods: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (name, r) in tasks.join_all().await {
        match r {
            Ok(id) => pods.entry(name).or_default().push(id),
            Err(e) => assert_eq!(e.code(), Code::AlreadyExists, "RunPodSandbox {name}: {e:?}"),
        }
    }
    for name in names {
        assert_eq!(
            pods.get(name).map(Vec::len),
            Some(1),
            "pods made for {name}: {pods:?}"
        );
    }
    let (listed, _) = list_all(&mut c).await;
    assert_eq!(listed.len(), names.len(), "{listed:?}");

    // In each pod, 16 clients for each of two container names.
    let mut tasks = tokio::task::JoinSet::new();
    for name in names {
        let sb = pods[name][0].clone();
        let pod = pod_config(name, &b.log_dir());
        for ctr in ["one", "two"] {
            let cfg = container_config(ctr, &busybox(), &["sleep", "3600"]);
            for _ in 0..16 {
                let (mut c, cfg, pod, sb) = (c.clone(), cfg.clone(), pod.clone(), sb.clone());
                tasks.spawn(async move { (sb.clone(), ctr, c.create(&sb, &cfg, &pod).await) });
            }
        }
    }
    let mut made: BTreeMap<(String, &str), Vec<String>> = BTreeMap::new();
    for (sb, ctr, r) in tasks.join_all().await {
        match r {
            Ok(id) => made.entry((sb, ctr)).or_default().push(id),
            Err(e) => assert_eq!(e.code(), Code::AlreadyExists, "CreateContainer {ctr}: {e:?}"),
        }
    }
    assert_eq!(made.len(), names.len() * 2, "{made:?}");
    assert!(made.values().all(|ids| ids.len() == 1), "{made:?}");
    let (_, listed) = list_all(&mut c).await;
    assert_eq!(listed.len(), names.len() * 2, "{listed:?}");
    for ids in made.values() {
        c.start(&ids[0]).await.expect("start the one that was made");
    }

    let listings = lister.finish().await;
    eprintln!("listings checked during the races: {listings}");
    teardown(&b, &mut c, veths).await;
}

/// A container whose PID 1 ends on TERM (trap installed before it says so).
fn trapping(name: &str, data: &Path) -> cri::ContainerConfig {
    let script = format!("trap 'exit 0' TERM; touch /data/{name}; while :; do sleep 0.1; done");
    with_data(container_config(name, &busybox(), &["sh", "-c", &script]), data)
}

#[tokio::test]
async fn race_stop_and_remove_of_one_container_leave_it_gone() {
    let (b, mut c) = Berthd::start().await.expect("berthd");
    c.pull(&busybox()).await.expect("pull");
    let veths = footprint(&b).veths;
    let data = tempfile::tempdir().unwrap();
    let pod = pod_config("stop-remove", &b.log_dir());
    let sb = c.run_pod(&pod).await.expect("runp");
    let lister = Lister::start(&c);

    // Running ones (stop with a grace period and without, remove) and
    // created ones never started (stop, remove).
    let mut ids = Vec::new();
    for i in 0..6 {
        let name = format!("victim{i}");
        let id = c
            .create(&sb, &trapping(&name, data.path()), &pod)
            .await
            .expect("create");
        if i % 3 != 2 {
            c.start(&id).await.expect("start");
            let ready = data.path().join(&name);
            until("the trap is installed", || ready.exists()).await;
        }
        ids.push(id);
    }
    let mut tasks = tokio::task::JoinSet::new();
    for id in &ids {
        for call in ["stop10", "remove", "stop0", "remove"] {
            let (mut c, id) = (c.clone(), id.clone());
            tasks.spawn(async move {
                let r = match call {
                    "stop10" => c.stop(&id, 10).await,
                    "stop0" => c.stop(&id, 0).await,
                    _ => c.remove(&id).await,
                };
                (call, id, r)
            });
        }
    }
    for (call, id, r) in tasks.join_all().await {
        // Stop and Remove of a container that is (by now) gone succeed, as
        // the CRI says: nothing but OK is documented here.
        assert!(r.is_ok(), "{call} {id}: {r:?}");
    }
    for id in &ids {
        let e = c.status(id).await.expect_err("removed");
        assert_eq!(e.code(), Code::NotFound, "{id}: {e:?}");
    }
    let (_, listed) = list_all(&mut c).await;
    assert!(listed.is_empty(), "{listed:?}");
    // The containers' cgroups went with them, the pod's stays.
    let (_, info) = c.pod_status(&sb).await.expect("pod status");
    let pod_cg = info["cgroupPath"].as_str().unwrap_or_default();
    assert!(!pod_cg.trim_matches('/').is_empty(), "{info}");
    let pod_cg = PathBuf::from("/sys/fs/cgroup").join(pod_cg.trim_start_matches('/'));
    let children: Vec<_> = std::fs::read_dir(&pod_cg)
        .unwrap_or_else(|e| panic!("{}: {e}", pod_cg.display()))
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect();
    assert!(children.is_empty(), "container cgroups left: {children:?}");

    lister.finish().await;
    teardown(&b, &mut c, veths).await;
}

#[tokio::test]
async fn race_resize_racing_the_exit_keeps_the_exit() {
    let (mut b, mut c) = Berthd::start().await.expect("berthd");
    c.pull(&busybox()).await.expect("pull");
    let veths = footprint(&b).veths;
    let data = tempfile::tempdir().unwrap();
    let pod = pod_config("resize-exit", &b.log_dir());
    let sb = c.run_pod(&pod).await.expect("runp");
    let lister = Lister::start(&c);
    let mut ids = Vec::new();
    for round in 0..4 {
        let name = format!("short{round}");
        // Exits 7 as soon as /data/go-<name> appears.
        let script =
            format!("touch /data/{name}; while [ ! -e /data/go-{name} ]; do usleep 2000; done; exit 7");
        let cfg = with_data(
            container_config(&name, &busybox(), &["sh", "-c", &script]),
            data.path(),
        );
        let id = c.create(&sb, &cfg, &pod).await.expect("create");
        c.start(&id).await.expect("start");
        let ready = data.path().join(&name);
        until("the container runs", || ready.exists()).await;

        // Two resizers, alternating values, until the container has exited.
        let done = Arc::new(AtomicBool::new(false));
        let mut resizers = tokio::task::JoinSet::new();
        for k in 0..2u64 {
            let (mut c, id, done) = (c.clone(), id.clone(), done.clone());
            resizers.spawn(async move {
                let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
                let mut n = 0u64;
                while !done.load(Ordering::SeqCst) {
                    n += 1;
                    let r = c
                        .runtime
                        .update_container_resources(cri::UpdateContainerResourcesRequest {
                            container_id: id.clone(),
                            linux: Some(cri::LinuxContainerResources {
                                cpu_shares: 2 + ((n + k) % 2) as i64 * 100,
                                memory_limit_in_bytes: (256 + ((n + k) % 2) as i64 * 64) << 20,
                                ..Default::default()
                            }),
                            ..Default::default()
                        })
                        .await;
                    let key = match r {
                        Ok(_) => "ok".to_string(),
                        // Documented: the container has exited.
                        Err(e) if e.code() == Code::FailedPrecondition => "exited".to_string(),
                        Err(e) => format!("{:?}: {}", e.code(), e.message()),
                    };
                    *outcomes.entry(key).or_default() += 1;
                }
                outcomes
            });
        }
        std::fs::write(data.path().join(format!("go-{name}")), "").unwrap();
        let s = c
            .wait_exited(&id, Duration::from_secs(60))
            .await
            .expect("exit reported");
        done.store(true, Ordering::SeqCst);
        for outcomes in resizers.join_all().await {
            assert!(
                outcomes.keys().all(|k| k == "ok" || k == "exited"),
                "undocumented UpdateContainerResources outcomes: {outcomes:?}"
            );
        }
        assert_eq!(
            (s.state, s.exit_code),
            (cri::ContainerState::ContainerExited as i32, 7)
        );
        // A resize after the exit is refused, and the exit stays.
        let e = c
            .runtime
            .update_container_resources(cri::UpdateContainerResourcesRequest {
                container_id: id.clone(),
                linux: Some(cri::LinuxContainerResources {
                    cpu_shares: 512,
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .expect_err("resize of an exited container");
        assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
        ids.push(id);
    }
    lister.finish().await;

    // What was persisted agrees: after a crash and restart every container
    // is still exited with its own code.
    b.kill_hard();
    let mut c = b.spawn().await.expect("restart");
    for id in &ids {
        let s = c.status(id).await.expect("status").status.unwrap();
        assert_eq!(
            (s.state, s.exit_code),
            (cri::ContainerState::ContainerExited as i32, 7),
            "{id} after restart"
        );
    }
    teardown(&b, &mut c, veths).await;
}

/// Makes the next process the kernel creates in our PID namespace get
/// `pid` (ns_last_pid), and starts it: a `sleep` on the node, in a UTS
/// namespace of its own whose hostname is "impostor". Returns the child if
/// it got the pid (another process may have taken it first).
fn impostor_at(pid: u32) -> Option<std::process::Child> {
    use std::os::unix::process::CommandExt;
    std::fs::write("/proc/sys/kernel/ns_last_pid", format!("{}", pid - 1)).ok()?;
    let mut cmd = std::process::Command::new("sleep");
    cmd.arg("600");
    // SAFETY: unshare and sethostname are async-signal-safe syscalls on
    // static memory.
    unsafe {
        cmd.pre_exec(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWUTS)?;
            if libc::sethostname(c"impostor".as_ptr(), 8) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().ok()?;
    if child.id() == pid {
        return Some(child);
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

#[tokio::test]
async fn race_exec_after_the_main_process_exited_never_enters_another_process() {
    let (b, mut c) = Berthd::start().await.expect("berthd");
    c.pull(&busybox()).await.expect("pull");
    let veths = footprint(&b).veths;
    let data = tempfile::tempdir().unwrap();
    let mut pod = pod_config("stale-pid", &b.log_dir());
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
    // shell and holds its output open, so the exit is reported only after
    // a bounded drain: the window in which the shell's pid is free again.
    let script = "sleep 4949 & touch /data/ready; while [ ! -e /data/go ]; do usleep 2000; done; exit 0";
    let mut cfg = with_data(
        container_config("stale-pid", &busybox(), &["sh", "-c", script]),
        data.path(),
    );
    cfg.linux.get_or_insert_with(Default::default).security_context =
        Some(cri::LinuxContainerSecurityContext {
            namespace_options: pod_pid,
            ..Default::default()
        });
    let id = c.create(&sb, &cfg, &pod).await.expect("create");
    c.start(&id).await.expect("start");
    let ready = data.path().join("ready");
    until("the container runs", || ready.exists()).await;
    let (code, host) = c.exec(&id, &["hostname"]).await.expect("exec while running");
    assert_eq!((code, host.trim()), (0, "stale-pid"));
    let info = c.status(&id).await.expect("status").info;
    let v: serde_json::Value = serde_json::from_str(&info["info"]).expect("info json");
    let pid = v["pid"].as_u64().expect("pid in info") as u32;
    assert!(Path::new(&format!("/proc/{pid}")).exists());

    // The shell exits and is reaped; its pid goes to a process in
    // namespaces of its own (when the kernel gives it to us).
    std::fs::write(data.path().join("go"), "").unwrap();
    until("the main process is reaped", || {
        !Path::new(&format!("/proc/{pid}")).exists()
    })
    .await;
    let mut impostor = impostor_at(pid);
    eprintln!("impostor at the reused pid {pid}: {}", impostor.is_some());
    let r = c.exec(&id, &["hostname"]).await;
    if let Some(p) = impostor.as_mut() {
        let _ = p.kill();
        let _ = p.wait();
    }
    match r {
        Err(e) => assert!(
            matches!(e.code(), Code::FailedPrecondition | Code::NotFound),
            "exec into an exited container: {e:?}"
        ),
        Ok((code, out)) => {
            panic!("exec ran after the container's process exited: code {code}, output {out:?}")
        }
    }
    let s = c
        .wait_exited(&id, Duration::from_secs(60))
        .await
        .expect("exit reported");
    assert_eq!(s.exit_code, 0);
    assert!(
        !processes_matching("sleep 4949").is_empty(),
        "the background child still runs"
    );
    teardown(&b, &mut c, veths).await;
    assert!(
        processes_matching("sleep 4949").is_empty(),
        "and went with the pod"
    );
}
