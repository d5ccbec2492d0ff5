//! In-place pod restart (Kubernetes v1.35, KEP-5532 RestartAllContainers):
//! kubelet's CRI sequence replayed against one sandbox. Everything of the
//! pod stays (sandbox, IP, netns, cgroup, volumes); every container attempt
//! is fresh. Runs inside the VM (`hack/vm`), with `--test-threads=1`.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use berth_proto::cri;
use berth_tests::*;

fn busybox() -> String {
    format!("{}/library/busybox:latest", registry())
}

/// The pod's three containers at `attempt`, with the emptyDir at /data.
/// The init container fails if its root fs is not fresh or if the previous
/// attempt's /dev/shm file is gone; the app fails on a stale root fs.
fn containers(attempt: u32, empty_dir: &Path) -> Vec<cri::ContainerConfig> {
    let vol = cri::Mount {
        container_path: "/data".into(),
        host_path: empty_dir.to_string_lossy().into_owned(),
        ..Default::default()
    };
    let shm_check = match attempt.checked_sub(1) {
        Some(prev) => {
            format!("[ \"$(cat /dev/shm/init-{prev})\" = init-{prev} ] || {{ echo lost-shm; exit 1; }}; ")
        }
        None => String::new(),
    };
    let init_script = format!(
        "if [ -e /rootfs-marker ]; then echo stale-rootfs; exit 1; fi; \
         echo attempt-{attempt} > /rootfs-marker; touch /data/init-{attempt}; \
         {shm_check}echo init-{attempt} > /dev/shm/init-{attempt}; echo fresh"
    );
    let app_script = format!(
        "if [ -e /rootfs-app ]; then echo stale-rootfs; exit 1; fi; \
         echo app-{attempt} > /rootfs-app; exec sleep 3600"
    );
    let mut out = Vec::new();
    for (name, argv) in [
        ("init", vec!["sh".to_string(), "-c".to_string(), init_script]),
        ("sidecar", vec!["sleep".to_string(), "3600".to_string()]),
        ("app", vec!["sh".to_string(), "-c".to_string(), app_script]),
    ] {
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let mut c = container_config(name, &busybox(), &argv);
        c.metadata.as_mut().unwrap().attempt = attempt;
        c.log_path = format!("{name}-{attempt}.log");
        c.mounts.push(vol.clone());
        out.push(c);
    }
    out
}

/// Start-up as kubelet runs it: init to completion, then sidecar, then app.
async fn start_pod(
    c: &mut CriClient,
    sb: &str,
    pod: &cri::PodSandboxConfig,
    attempt: u32,
    dir: &Path,
) -> Vec<String> {
    let mut ids = Vec::new();
    for (i, cfg) in containers(attempt, dir).into_iter().enumerate() {
        let id = c.create(sb, &cfg, pod).await.expect("create");
        c.start(&id).await.expect("start");
        if i == 0 {
            let s = c.wait_exited(&id, Duration::from_secs(30)).await.unwrap();
            assert_eq!(s.exit_code, 0, "init attempt {attempt}: {s:?}");
        }
        ids.push(id);
    }
    ids
}

/// kubelet's teardown: concurrent StopContainer(timeout 0), RemoveContainer
/// for all, until ListContainers shows none for the pod.
async fn stop_all(c: &CriClient, sb: &str, ids: &[String]) {
    let mut tasks = tokio::task::JoinSet::new();
    for id in ids {
        let (mut rt, id) = (c.runtime.clone(), id.clone());
        tasks.spawn(async move {
            rt.stop_container(cri::StopContainerRequest {
                container_id: id.clone(),
                timeout: 0,
            })
            .await
            .unwrap();
            rt.remove_container(cri::RemoveContainerRequest { container_id: id })
                .await
                .unwrap();
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    let left = c
        .runtime
        .clone()
        .list_containers(cri::ListContainersRequest {
            filter: Some(cri::ContainerFilter {
                pod_sandbox_id: sb.into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(left.containers.is_empty(), "{left:?}");
}

async fn pod_state(c: &mut CriClient, sb: &str) -> (i32, String, u64) {
    let (status, info) = c.pod_status(sb).await.unwrap();
    let netns = info["namespaces"]["net"].as_str().unwrap().to_string();
    (
        status.state,
        status.network.unwrap().ip,
        std::fs::metadata(netns).unwrap().ino(),
    )
}

/// Entries of a state directory (records, writable layers, bundles).
fn count_entries(dir: &Path, suffix: &str) -> usize {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(suffix))
                .count()
        })
        .unwrap_or(0)
}

/// What must not grow over 100 cycles.
#[derive(Debug, Clone, Copy)]
struct Usage {
    mounts: usize,
    processes: usize,
    pod_cgroups: usize,
    shim_rss_kib: u64,
    shim_fds: usize,
    berthd_rss_kib: u64,
    berthd_fds: usize,
    /// `<root>/containers/*.json`.
    container_records: usize,
    /// `<root>/containers/<id>/` (writable layers) + `<state>/containers/<id>/` (bundles).
    container_dirs: usize,
}

fn usage(b: &Berthd, shim_pid: u32, pod_cg: &Path) -> Usage {
    let (root, state) = (
        b.dir.path().join("root/containers"),
        b.dir.path().join("state/containers"),
    );
    let dirs = |d: &Path| {
        std::fs::read_dir(d)
            .map(|r| r.flatten().filter(|e| e.path().is_dir()).count())
            .unwrap_or(0)
    };
    Usage {
        mounts: count_mounts(b),
        processes: count_processes(b, pod_cg),
        pod_cgroups: count_cgroups(pod_cg),
        shim_rss_kib: rss_kib(shim_pid),
        shim_fds: fd_count(shim_pid),
        berthd_rss_kib: rss_kib(b.pid()),
        berthd_fds: fd_count(b.pid()),
        container_records: count_entries(&root, ".json"),
        container_dirs: dirs(&root) + dirs(&state),
    }
}

/// Mounts of this berthd (rootfs overlays, netns and shm pins, bind
/// sources: all under its private dir), not the VM's: other suites'
/// leftovers or the kernel's own must not move the count.
fn count_mounts(b: &Berthd) -> usize {
    mounts_containing(&b.dir.path().to_string_lossy()).len()
}

/// Processes this test made: those in the pod's cgroup tree and this
/// berthd's shims (kernel threads and other suites' processes come and go).
fn count_processes(b: &Berthd, pod_cg: &Path) -> usize {
    let pod = format!(
        "0::/{}",
        pod_cg.strip_prefix("/sys/fs/cgroup").unwrap_or(pod_cg).display()
    );
    let shims = format!("--socket {}/state/", b.dir.path().display());
    let mut pids: std::collections::BTreeSet<u32> = processes_matching(&shims)
        .into_iter()
        .map(|(pid, _)| pid)
        .collect();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cg = std::fs::read_to_string(e.path().join("cgroup")).unwrap_or_default();
        if cg.lines().any(|l| l == pod || l.starts_with(&format!("{pod}/"))) {
            pids.insert(pid);
        }
    }
    pids.len()
}

fn count_cgroups(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
        .count()
}

/// The pod as its containers see it: hostname, /etc/hosts, /etc/resolv.conf.
async fn identity(c: &mut CriClient, id: &str) -> String {
    let (code, out) = c
        .exec(id, &["sh", "-c", "hostname; cat /etc/hosts /etc/resolv.conf"])
        .await
        .unwrap();
    assert_eq!(code, 0, "{out}");
    out
}

/// A file the container's main process writes right after it starts.
async fn read_when_written(c: &mut CriClient, id: &str, path: &str) -> String {
    let script =
        format!("i=0; while [ ! -e {path} ] && [ $i -lt 500 ]; do sleep 0.01; i=$((i+1)); done; cat {path}");
    let (code, out) = c.exec(id, &["sh", "-c", &script]).await.unwrap();
    assert_eq!(code, 0, "{path}: {out}");
    out.trim().to_string()
}

/// Exactly one sandbox, ours, Ready, with an IP.
async fn assert_one_ready_sandbox(c: &mut CriClient, sb: &str, ip: &str) {
    let list = c
        .runtime
        .list_pod_sandbox(cri::ListPodSandboxRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .items;
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(
        (list[0].id.as_str(), list[0].state),
        (sb, cri::PodSandboxState::SandboxReady as i32)
    );
    let (_, ip_now, _) = pod_state(c, sb).await;
    assert!(!ip_now.is_empty());
    assert_eq!(ip_now, ip);
}

/// StopContainer(timeout 0) of one container, then of three at once, in
/// `rounds` rounds: medians of (one, three in parallel).
async fn stop_timings(
    c: &mut CriClient,
    sb: &str,
    pod: &cri::PodSandboxConfig,
    rounds: usize,
) -> (Duration, Duration) {
    let (mut one, mut three) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let mut ids = Vec::new();
        for i in 0..4 {
            let cfg = container_config(&format!("stopper-{round}-{i}"), &busybox(), &["sleep", "3600"]);
            let id = c.create(sb, &cfg, pod).await.unwrap();
            c.start(&id).await.unwrap();
            ids.push(id);
        }
        let t = Instant::now();
        c.stop(&ids[0], 0).await.unwrap();
        one.push(t.elapsed());
        let t = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for id in &ids[1..] {
            let (mut c2, id) = (c.clone(), id.clone());
            tasks.spawn(async move { c2.stop(&id, 0).await });
        }
        while let Some(r) = tasks.join_next().await {
            r.unwrap().unwrap();
        }
        three.push(t.elapsed());
        for id in &ids {
            c.remove(id).await.unwrap();
        }
    }
    (median(one), median(three))
}

/// Three containers that ignore SIGTERM, stopped at once with a 3 s grace
/// period. Each one's TERM trap appends its name to a shared file, and
/// says "saw all three" once all three names are there: with concurrent
/// stops every container sees that before its SIGKILL; serialised stops
/// kill the first one before the second is even signalled. An order
/// proof, not a duration. Returns the wall time for the benchmark line.
async fn parallel_grace_stops(
    c: &mut CriClient,
    b: &Berthd,
    sb: &str,
    pod: &cri::PodSandboxConfig,
) -> Duration {
    let shared = b.dir.path().join("term-barrier");
    std::fs::create_dir_all(&shared).unwrap();
    let mut ids = Vec::new();
    for i in 0..3 {
        let name = format!("stubborn-{i}");
        let script = format!(
            "trap 'echo {name} >> /barrier/got-term; \
               until [ $(wc -l < /barrier/got-term) -ge 3 ]; do sleep 0.05; done; \
               echo saw all three' TERM; \
             echo ready; while true; do sleep 0.05; done"
        );
        let mut cfg = container_config(&name, &busybox(), &["sh", "-c", &script]);
        cfg.mounts.push(cri::Mount {
            container_path: "/barrier".into(),
            host_path: shared.to_string_lossy().into_owned(),
            ..Default::default()
        });
        let id = c.create(sb, &cfg, pod).await.unwrap();
        c.start(&id).await.unwrap();
        let log = b.log_dir().join(format!("{name}.log"));
        let deadline = Instant::now() + Duration::from_secs(60);
        while !std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("ready")
        {
            assert!(Instant::now() < deadline, "{name} never got ready");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        ids.push(id);
    }
    let t = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for id in &ids {
        let (mut c2, id) = (c.clone(), id.clone());
        tasks.spawn(async move { c2.stop(&id, 3).await });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap().unwrap();
    }
    let took = t.elapsed();
    for (i, id) in ids.iter().enumerate() {
        let s = c.status(id).await.unwrap().status.unwrap();
        assert_eq!(s.exit_code, 137, "SIGTERM was ignored, SIGKILL ended it: {s:?}");
        let log = std::fs::read_to_string(b.log_dir().join(format!("stubborn-{i}.log"))).unwrap_or_default();
        assert!(
            log.contains("saw all three"),
            "stubborn-{i} was killed before all three had their SIGTERM: stops are serialised\n{log}"
        );
        c.remove(id).await.unwrap();
    }
    took
}

#[tokio::test]
async fn in_place_restart_keeps_the_pod_and_renews_containers() {
    let (b, mut c) = Berthd::start().await.expect("berthd");
    c.pull(&busybox()).await.unwrap();
    let empty_dir = b.dir.path().join("emptydir");
    std::fs::create_dir_all(&empty_dir).unwrap();
    let pod = pod_config("restartable", &b.log_dir());
    let sb = c.run_pod(&pod).await.unwrap();
    let (_, ip, netns_ino) = pod_state(&mut c, &sb).await;
    assert!(!ip.is_empty());
    let shim_pid = c.pod_status(&sb).await.unwrap().1["pid"].as_u64().unwrap() as u32;
    let pod_cg =
        Path::new("/sys/fs/cgroup").join(format!("{}/{sb}", b.cgroup_parent).trim_start_matches('/'));
    let pod_cg_ino = std::fs::metadata(&pod_cg).unwrap().ino();

    let mut ids = Vec::new();
    let mut pod_identity = String::new();
    for attempt in 0..=3u32 {
        if attempt > 0 {
            stop_all(&c, &sb, &ids).await;
            // Zero containers is a normal state: Ready, same IP.
            let (state, ip_now, ino_now) = pod_state(&mut c, &sb).await;
            assert_eq!(
                (state, ip_now.as_str(), ino_now),
                (cri::PodSandboxState::SandboxReady as i32, ip.as_str(), netns_ino)
            );
            assert_one_ready_sandbox(&mut c, &sb, &ip).await;
        }
        ids = start_pod(&mut c, &sb, &pod, attempt, &empty_dir).await;
        let mut statuses = Vec::new();
        for id in &ids {
            statuses.push(c.status(id).await.unwrap().status.unwrap());
        }
        for s in &statuses {
            assert_eq!(s.metadata.as_ref().unwrap().attempt, attempt, "{s:?}");
        }
        assert!(
            statuses[0].finished_at <= statuses[1].started_at,
            "init finished before the sidecar started"
        );
        assert!(
            statuses[1].started_at <= statuses[2].started_at,
            "sidecar before app"
        );
        let init_log = std::fs::read_to_string(b.log_dir().join(format!("init-{attempt}.log"))).unwrap();
        assert!(
            init_log.contains("fresh"),
            "no root-fs file survives an attempt, /dev/shm does: {init_log}"
        );
        let (sidecar, app) = (ids[1].clone(), ids[2].clone());
        // The app's own root-fs file is this attempt's (it exits 1 on a stale one).
        assert_eq!(
            read_when_written(&mut c, &app, "/rootfs-app").await,
            format!("app-{attempt}")
        );
        let app_status = c.status(&app).await.unwrap().status.unwrap();
        assert_eq!(
            app_status.state,
            cri::ContainerState::ContainerRunning as i32,
            "{app_status:?}"
        );
        // The init's /dev/shm file reaches its siblings, and the files of all
        // earlier attempts are still there.
        for id in [&sidecar, &app] {
            let (code, out) = c.exec(id, &["sh", "-c", "ls /dev/shm"]).await.unwrap();
            assert_eq!(code, 0);
            let want: Vec<String> = (0..=attempt).map(|a| format!("init-{a}")).collect();
            let mut got: Vec<String> = out.split_whitespace().map(str::to_string).collect();
            got.sort();
            assert_eq!(got, want, "/dev/shm of container {id}");
        }
        let now = identity(&mut c, &app).await;
        if attempt == 0 {
            assert!(now.starts_with("restartable\n"), "{now}");
            pod_identity = now;
        } else {
            assert_eq!(now, pod_identity, "hostname, hosts and resolv.conf unchanged");
        }
        assert_eq!(
            std::fs::metadata(&pod_cg).unwrap().ino(),
            pod_cg_ino,
            "same pod cgroup"
        );
    }
    let mut files: Vec<String> = std::fs::read_dir(&empty_dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(
        files,
        ["init-0", "init-1", "init-2", "init-3"],
        "the emptyDir keeps every attempt's file"
    );
    let (state, ip_now, ino_now) = pod_state(&mut c, &sb).await;
    assert_eq!(
        (state, ip_now, ino_now),
        (cri::PodSandboxState::SandboxReady as i32, ip.clone(), netns_ino)
    );

    // kubelet sends the stops of all containers at once: they must overlap.
    let (one, three) = stop_timings(&mut c, &sb, &pod, 5).await;
    let grace3 = parallel_grace_stops(&mut c, &b, &sb, &pod).await;
    println!(
        "BERTH-BENCH stop_concurrency rounds=5 one_stop_median_ms={:.1} three_parallel_stops_median_ms={:.1} \
         three_parallel_3s_grace_stops_ms={:.1}",
        one.as_secs_f64() * 1e3,
        three.as_secs_f64() * 1e3,
        grace3.as_secs_f64() * 1e3
    );
    // The figures are for the benchmark line only: parallel_grace_stops
    // proves the stops overlap by order (each container saw all three
    // SIGTERMs before its SIGKILL), not by how long they took.

    // 100 more cycles: timings, and nothing may grow.
    // Warm-up (allocator and runtime buffers settle), then measure.
    for attempt in 4..24u32 {
        stop_all(&c, &sb, &ids).await;
        ids = start_pod(&mut c, &sb, &pod, attempt, &empty_dir).await;
    }
    let before = usage(&b, shim_pid, &pod_cg);
    // The scoped counts see the pod: a count of nothing proves nothing.
    assert!(before.mounts > 0 && before.processes > 0, "{before:?}");
    let mut cycle = Vec::new();
    for attempt in 24..124u32 {
        let t = Instant::now();
        stop_all(&c, &sb, &ids).await;
        ids = start_pod(&mut c, &sb, &pod, attempt, &empty_dir).await;
        cycle.push(t.elapsed());
    }
    let after = usage(&b, shim_pid, &pod_cg);
    let mut sorted = cycle.clone();
    sorted.sort();
    let p99 = sorted[(sorted.len() * 99).div_ceil(100) - 1];
    println!(
        "BERTH-BENCH in_place_restart cycles=100 median_ms={:.1} p99_ms={:.1} mounts={}->{} processes={}->{} pod_cgroups={}->{} \
         shim_rss_kib={}->{} shim_fds={}->{} berthd_rss_kib={}->{} berthd_fds={}->{} container_records={}->{} container_dirs={}->{}",
        median(cycle).as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        before.mounts, after.mounts, before.processes, after.processes, before.pod_cgroups, after.pod_cgroups,
        before.shim_rss_kib, after.shim_rss_kib, before.shim_fds, after.shim_fds,
        before.berthd_rss_kib, after.berthd_rss_kib, before.berthd_fds, after.berthd_fds,
        before.container_records, after.container_records, before.container_dirs, after.container_dirs,
    );
    assert_eq!(
        (after.mounts, after.processes, after.pod_cgroups, after.shim_fds),
        (
            before.mounts,
            before.processes,
            before.pod_cgroups,
            before.shim_fds
        ),
        "mounts, processes, cgroups, shim fds"
    );
    assert_eq!(
        (after.container_records, after.container_dirs),
        (before.container_records, before.container_dirs),
        "container records and directories in the state dirs"
    );
    // berthd's fds include connections that come and go with the tokio/h2
    // pools; a per-cycle leak would show as +100, so a few are not a leak.
    assert!(
        after.berthd_fds <= before.berthd_fds + 4,
        "berthd fds grew {} -> {}",
        before.berthd_fds,
        after.berthd_fds
    );
    assert!(
        after.shim_rss_kib < before.shim_rss_kib + 2048,
        "shim RSS grew {} -> {} KiB",
        before.shim_rss_kib,
        after.shim_rss_kib
    );
    assert!(
        after.berthd_rss_kib < before.berthd_rss_kib + 4096,
        "berthd RSS grew {} -> {} KiB",
        before.berthd_rss_kib,
        after.berthd_rss_kib
    );
    let (_, ip_now, ino_now) = pod_state(&mut c, &sb).await;
    assert_eq!((ip_now, ino_now), (ip.clone(), netns_ino));
    assert_one_ready_sandbox(&mut c, &sb, &ip).await;
    assert_eq!(
        std::fs::metadata(&pod_cg).unwrap().ino(),
        pod_cg_ino,
        "same pod cgroup"
    );
    // Log files of old attempts are kubelet's to delete; ours are separate per attempt.
    let logs: HashMap<String, u64> = std::fs::read_dir(b.log_dir())
        .unwrap()
        .flatten()
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                e.metadata().unwrap().len(),
            )
        })
        .collect();
    assert!(logs.contains_key("init-123.log"));
    let shm_dir = b.dir.path().join(format!("state/sandboxes/{sb}/shm"));
    assert!(shm_dir.join("init-123").exists());
    c.stop_and_remove_pod(&sb).await.unwrap();
    assert!(
        mounts_containing(&shm_dir.to_string_lossy()).is_empty(),
        "the pod's /dev/shm is unmounted with the pod"
    );
}

/// A berthd restart in the middle of the cycle (no containers) leaves the
/// sandbox Ready with its IP; the cycle completes on the new berthd.
#[tokio::test]
async fn berthd_restart_mid_cycle_keeps_an_empty_sandbox_ready() {
    let (mut b, mut c) = Berthd::start().await.expect("berthd");
    c.pull(&busybox()).await.unwrap();
    let empty_dir = b.dir.path().join("emptydir");
    std::fs::create_dir_all(&empty_dir).unwrap();
    let pod = pod_config("midcycle", &b.log_dir());
    let sb = c.run_pod(&pod).await.unwrap();
    let (_, ip, ino) = pod_state(&mut c, &sb).await;
    let ids = start_pod(&mut c, &sb, &pod, 0, &empty_dir).await;
    stop_all(&c, &sb, &ids).await;
    b.kill_hard();
    drop(c);
    let mut c = b.spawn().await.unwrap();
    let (state, ip_now, ino_now) = pod_state(&mut c, &sb).await;
    assert_eq!(
        (state, ip_now.as_str(), ino_now),
        (cri::PodSandboxState::SandboxReady as i32, ip.as_str(), ino)
    );
    let ids = start_pod(&mut c, &sb, &pod, 1, &empty_dir).await;
    assert_eq!(ids.len(), 3);
    c.stop_and_remove_pod(&sb).await.unwrap();
}
