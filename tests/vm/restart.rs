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
fn containers(attempt: u32, empty_dir: &Path) -> Vec<cri::ContainerConfig> {
    let vol = cri::Mount {
        container_path: "/data".into(),
        host_path: empty_dir.to_string_lossy().into_owned(),
        ..Default::default()
    };
    let init_script = format!(
        "if [ -e /rootfs-marker ]; then echo stale-rootfs; exit 1; fi; \
         echo attempt-{attempt} > /rootfs-marker; touch /data/init-{attempt}; echo fresh"
    );
    let mut out = Vec::new();
    for (name, argv) in [
        ("init", vec!["sh".to_string(), "-c".to_string(), init_script]),
        ("sidecar", vec!["sleep".to_string(), "3600".to_string()]),
        (
            "app",
            vec![
                "sh".to_string(),
                "-c".to_string(),
                "echo app > /rootfs-app; sleep 3600".to_string(),
            ],
        ),
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

fn shim_rss_kib(shim_pid: u64) -> u64 {
    std::fs::read_to_string(format!("/proc/{shim_pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .unwrap()
        .trim()
        .trim_end_matches(" kB")
        .trim()
        .parse()
        .unwrap()
}

fn count_mounts() -> usize {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .count()
}

/// User-space processes (kernel threads, whose cmdline is empty, come and go).
fn count_processes() -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter(|e| std::fs::read(e.path().join("cmdline")).is_ok_and(|c| !c.is_empty()))
        .count()
}

fn count_cgroups(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
        .count()
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
    let shim_pid = c.pod_status(&sb).await.unwrap().1["pid"].as_u64().unwrap();
    let pod_cg =
        Path::new("/sys/fs/cgroup").join(format!("{}/{sb}", b.cgroup_parent).trim_start_matches('/'));

    let mut ids = start_pod(&mut c, &sb, &pod, 0, &empty_dir).await;
    for attempt in 1..=3u32 {
        stop_all(&c, &sb, &ids).await;
        // Zero containers is a normal state: Ready, same IP.
        let (state, ip_now, ino_now) = pod_state(&mut c, &sb).await;
        assert_eq!(
            (state, ip_now.as_str(), ino_now),
            (cri::PodSandboxState::SandboxReady as i32, ip.as_str(), netns_ino)
        );
        ids = start_pod(&mut c, &sb, &pod, attempt, &empty_dir).await;
        let statuses: Vec<cri::ContainerStatus> = {
            let mut v = Vec::new();
            for id in &ids {
                v.push(c.status(id).await.unwrap().status.unwrap());
            }
            v
        };
        for s in &statuses {
            assert_eq!(s.metadata.as_ref().unwrap().attempt, attempt);
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
            "no root-fs file survives an attempt: {init_log}"
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

    // 100 more cycles: timings, and nothing may grow.
    // Warm-up (allocator and runtime buffers settle), then measure.
    for attempt in 4..24u32 {
        stop_all(&c, &sb, &ids).await;
        ids = start_pod(&mut c, &sb, &pod, attempt, &empty_dir).await;
    }
    let before = (
        count_mounts(),
        count_processes(),
        count_cgroups(&pod_cg),
        shim_rss_kib(shim_pid),
    );
    let mut cycle = Vec::new();
    for attempt in 24..124u32 {
        let t = Instant::now();
        stop_all(&c, &sb, &ids).await;
        ids = start_pod(&mut c, &sb, &pod, attempt, &empty_dir).await;
        cycle.push(t.elapsed());
    }
    let after = (
        count_mounts(),
        count_processes(),
        count_cgroups(&pod_cg),
        shim_rss_kib(shim_pid),
    );
    let mut sorted = cycle.clone();
    sorted.sort();
    let p99 = sorted[(sorted.len() * 99).div_ceil(100) - 1];
    println!(
        "BERTH-BENCH in_place_restart cycles=100 median_ms={:.1} p99_ms={:.1} mounts={}->{} processes={}->{} pod_cgroups={}->{} shim_rss_kib={}->{}",
        median(cycle).as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        before.0, after.0, before.1, after.1, before.2, after.2, before.3, after.3
    );
    assert_eq!(
        (after.0, after.1, after.2),
        (before.0, before.1, before.2),
        "mounts, processes, cgroups"
    );
    assert!(
        after.3 < before.3 + 2048,
        "shim RSS grew {} -> {} KiB",
        before.3,
        after.3
    );
    let (_, ip_now, ino_now) = pod_state(&mut c, &sb).await;
    assert_eq!((ip_now, ino_now), (ip, netns_ino));
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
    c.stop_and_remove_pod(&sb).await.unwrap();
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
