//! In-place resize (Kubernetes v1.35): UpdateContainerResources applied live
//! to cgroup v2 and read back, and memory-limit decreases that never OOM-kill.
//!
//! Runs inside the VM (`hack/vm`), with `--test-threads=1`. Every test name
//! contains `resize`, so `BERTH_VM_FILTER=resize` runs them all.

#[path = "resize/limits.rs"]
mod limits;
#[path = "resize/race.rs"]
mod race;
#[path = "resize/refuse.rs"]
mod refuse;
#[path = "resize/swap.rs"]
mod swap;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use berth_proto::cri;
use berth_tests::*;

const MIB: i64 = 1 << 20;

fn busybox() -> String {
    format!("{}/library/busybox:latest", registry())
}

fn cg_dir(b: &Berthd, sb: &str, id: &str) -> PathBuf {
    Path::new("/sys/fs/cgroup").join(format!("{}/{sb}/{id}", b.cgroup_parent).trim_start_matches('/'))
}

fn read(dir: &Path, f: &str) -> String {
    std::fs::read_to_string(dir.join(f)).unwrap().trim().to_string()
}

fn events(dir: &Path, key: &str) -> u64 {
    read(dir, "memory.events")
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key} ")))
        .unwrap()
        .parse()
        .unwrap()
}

/// Every `memory.events` counter, as `low=.. high=.. max=.. oom=.. oom_kill=..`.
fn memory_events(dir: &Path) -> String {
    ["low", "high", "max", "oom", "oom_kill"]
        .map(|k| format!("{k}={}", events(dir, k)))
        .join(" ")
}

/// berthd's resize counters (Status verbose, `resize` key).
async fn resize_counters(c: &mut CriClient) -> serde_json::Value {
    let info = c
        .runtime
        .status(cri::StatusRequest { verbose: true })
        .await
        .unwrap()
        .into_inner()
        .info;
    serde_json::from_str(&info["resize"]).unwrap()
}

/// The container's pid, from verbose ContainerStatus.
async fn pid_of(c: &mut CriClient, id: &str) -> u32 {
    let s = c.status(id).await.unwrap();
    serde_json::from_str::<serde_json::Value>(&s.info["info"]).unwrap()["pid"]
        .as_u64()
        .unwrap() as u32
}

fn oom_score_adj(pid: u32) -> i64 {
    read(Path::new(&format!("/proc/{pid}")), "oom_score_adj")
        .parse()
        .unwrap()
}

async fn update(c: &mut CriClient, id: &str, r: cri::LinuxContainerResources) -> Result<(), tonic::Status> {
    c.runtime
        .update_container_resources(cri::UpdateContainerResourcesRequest {
            container_id: id.into(),
            linux: Some(r),
            ..Default::default()
        })
        .await
        .map(|_| ())
}

fn mem(limit: i64) -> cri::LinuxContainerResources {
    cri::LinuxContainerResources {
        memory_limit_in_bytes: limit,
        cpu_shares: 1024,
        ..Default::default()
    }
}

async fn status_resources(c: &mut CriClient, id: &str) -> cri::LinuxContainerResources {
    c.status(id)
        .await
        .unwrap()
        .status
        .unwrap()
        .resources
        .unwrap()
        .linux
        .unwrap()
}

/// Starts a container and waits until `ready` appears in its log.
async fn start_and_wait(
    c: &mut CriClient,
    b: &Berthd,
    sb: &str,
    pod: &cri::PodSandboxConfig,
    name: &str,
    script: &str,
) -> String {
    let mut cfg = container_config(name, &busybox(), &["sh", "-c", script]);
    cfg.linux.as_mut().unwrap().resources = Some(mem(512 * MIB));
    let id = c.create(sb, &cfg, pod).await.unwrap();
    c.start(&id).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !std::fs::read_to_string(b.log_dir().join(format!("{name}.log")))
        .unwrap_or_default()
        .contains("ready")
    {
        assert!(Instant::now() < deadline, "{name} never got ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    id
}

#[tokio::test]
async fn cpu_resize_is_live_and_read_back() {
    let (b, mut c) = Berthd::start().await.expect("berthd");
    c.pull(&busybox()).await.unwrap();
    let pod = pod_config("cpu", &b.log_dir());
    let sb = c.run_pod(&pod).await.unwrap();
    let id = start_and_wait(&mut c, &b, &sb, &pod, "spin", "echo ready; while :; do :; done").await;
    let dir = cg_dir(&b, &sb, &id);
    for (shares, weight) in [(2, "1"), (512, "59"), (1024, "100"), (262_144, "10000")] {
        update(
            &mut c,
            &id,
            cri::LinuxContainerResources {
                cpu_shares: shares,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        assert_eq!(read(&dir, "cpu.weight"), weight, "shares {shares}");
        assert_eq!(status_resources(&mut c, &id).await.cpu_shares, shares);
    }
    let throttled = || -> u64 {
        read(&dir, "cpu.stat")
            .lines()
            .find_map(|l| l.strip_prefix("nr_throttled "))
            .unwrap()
            .parse()
            .unwrap()
    };
    let before = throttled();
    let mut lat = Vec::new();
    for i in 0..20 {
        let quota = if i % 2 == 0 { 10_000 } else { 20_000 };
        let t = Instant::now();
        update(
            &mut c,
            &id,
            cri::LinuxContainerResources {
                cpu_quota: quota,
                cpu_period: 100_000,
                cpu_shares: 1024,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        lat.push(t.elapsed());
        assert_eq!(read(&dir, "cpu.max"), format!("{quota} 100000"));
    }
    // The busy loop is throttled after the live decrease.
    let deadline = Instant::now() + Duration::from_secs(60);
    while throttled() == before {
        assert!(
            Instant::now() < deadline,
            "the busy loop was never throttled after the live decrease"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = status_resources(&mut c, &id).await;
    assert_eq!((r.cpu_quota, r.cpu_period), (20_000, 100_000));
    println!(
        "BERTH-BENCH runs=20 cpu_resize_median_ms={:.2}",
        median(lat).as_secs_f64() * 1e3
    );
    // Back to unlimited.
    update(
        &mut c,
        &id,
        cri::LinuxContainerResources {
            cpu_shares: 1024,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(read(&dir, "cpu.max"), "max 100000");
    limits::oom_score_cpuset_and_swap(&mut c, &dir, &id).await;
    // A created, not yet started container takes the new values and keeps them at start.
    let waiting = c
        .create(
            &sb,
            &container_config("later", &busybox(), &["sleep", "3600"]),
            &pod,
        )
        .await
        .unwrap();
    update(
        &mut c,
        &waiting,
        cri::LinuxContainerResources {
            cpu_quota: 30_000,
            cpu_shares: 512,
            oom_score_adj: 300,
            ..mem(200 * MIB)
        },
    )
    .await
    .unwrap();
    c.start(&waiting).await.unwrap();
    let wdir = cg_dir(&b, &sb, &waiting);
    assert_eq!(read(&wdir, "cpu.max"), "30000 100000");
    assert_eq!(read(&wdir, "memory.max"), (200 * MIB).to_string());
    let wpid = pid_of(&mut c, &waiting).await;
    assert_eq!(
        oom_score_adj(wpid),
        300,
        "the update made while created holds at start"
    );
    assert_eq!(status_resources(&mut c, &waiting).await.oom_score_adj, 300);
    // berthd restarts: the values are still reported.
    let mut b = b;
    b.kill_hard();
    drop(c);
    let mut c = b.spawn().await.unwrap();
    let r = status_resources(&mut c, &waiting).await;
    assert_eq!(
        (
            r.cpu_quota,
            r.cpu_shares,
            r.memory_limit_in_bytes,
            r.oom_score_adj
        ),
        (30_000, 512, 200 * MIB, 300)
    );
    c.stop_and_remove_pod(&sb).await.unwrap();
}

#[tokio::test]
async fn resize_memory_decrease_never_oom_kills() {
    let (b, mut c) = Berthd::start_with("memory_decrease_wait_ms = 1000\n")
        .await
        .expect("berthd");
    c.pull(&busybox()).await.unwrap();
    let pod = pod_config("mem", &b.log_dir());
    let sb = c.run_pod(&pod).await.unwrap();
    // ~64 MiB of shmem: unreclaimable without swap, like anonymous memory.
    let id = start_and_wait(
        &mut c,
        &b,
        &sb,
        &pod,
        "holder",
        "head -c 67108864 /dev/zero > /dev/shm/hold; echo ready; while :; do cat /dev/shm/hold > /dev/null; sleep 1; done",
    )
    .await;
    let dir = cg_dir(&b, &sb, &id);
    let pid = pid_of(&mut c, &id).await;
    let ooms = events(&dir, "oom_kill");
    let events_before = memory_events(&dir);
    update(&mut c, &id, mem(768 * MIB)).await.expect("raise");
    assert_eq!(read(&dir, "memory.max"), (768 * MIB).to_string());
    // kubelet may resend the same values: OK again, same state.
    let before = status_resources(&mut c, &id).await;
    update(&mut c, &id, mem(768 * MIB))
        .await
        .expect("idempotent resend");
    assert_eq!(read(&dir, "memory.max"), (768 * MIB).to_string());
    assert_eq!(
        status_resources(&mut c, &id).await,
        before,
        "a resend changes nothing"
    );
    let mut accepted = Vec::new();
    for i in 0..10 {
        let limit = if i % 2 == 0 { 256 * MIB } else { 300 * MIB };
        let t = Instant::now();
        update(&mut c, &id, mem(limit)).await.expect("decrease that fits");
        accepted.push(t.elapsed());
        assert_eq!(read(&dir, "memory.max"), limit.to_string());
        assert_eq!(status_resources(&mut c, &id).await.memory_limit_in_bytes, limit);
    }
    let mut refused = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let e = update(&mut c, &id, mem(32 * MIB)).await.unwrap_err();
        refused.push(t.elapsed());
        assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
        assert!(
            e.message().contains(&(32 * MIB).to_string()) && e.message().contains("uses"),
            "{}",
            e.message()
        );
        assert_eq!(
            read(&dir, "memory.max"),
            (300 * MIB).to_string(),
            "memory.max restored"
        );
        assert_eq!(read(&dir, "memory.high"), "max", "memory.high restored");
    }
    let events_after = memory_events(&dir);
    assert_eq!(events(&dir, "oom_kill"), ooms, "no OOM kill");
    assert!(Path::new(&format!("/proc/{pid}")).exists(), "still running");
    let s = c.status(&id).await.unwrap().status.unwrap();
    assert_eq!(s.state, cri::ContainerState::ContainerRunning as i32);
    println!(
        "BERTH-BENCH memory_decrease_accepted_median_ms={:.2} (10 runs) memory_decrease_refused_median_ms={:.2} (5 runs) oom_kill_before={ooms} oom_kill_after={}",
        median(accepted).as_secs_f64() * 1e3,
        median(refused).as_secs_f64() * 1e3,
        events(&dir, "oom_kill"),
    );
    println!("BERTH-BENCH memory_events_before_decreases {events_before}");
    println!("BERTH-BENCH memory_events_after_decreases {events_after}");
    // The metric and the log line: 12 applied (raise, resend, 10 decreases),
    // 5 refused.
    let n = resize_counters(&mut c).await;
    assert_eq!(
        (n["applied"].as_u64(), n["refused"].as_u64()),
        (Some(12), Some(5)),
        "{n}"
    );
    let log = b.log();
    assert_eq!(log.matches("container resources updated").count(), 12, "{log}");
    assert_eq!(log.matches("container resize refused").count(), 5, "{log}");
    assert!(log.contains(&format!("memory limit decrease to {} bytes refused", 32 * MIB)));

    race::concurrent_resizes_are_serialised(&mut c, &dir, &id).await;

    // Invalid input changes nothing.
    let cpu_before = read(&dir, "cpu.max");
    let mem_before = read(&dir, "memory.max");
    for bad in [
        cri::LinuxContainerResources {
            memory_limit_in_bytes: -1,
            ..Default::default()
        },
        cri::LinuxContainerResources {
            unified: [("cgroup.procs".to_string(), "1".to_string())].into(),
            ..Default::default()
        },
        cri::LinuxContainerResources {
            unified: [("memory.nonexistent".to_string(), "1".to_string())].into(),
            ..Default::default()
        },
        // Write-only: there would be nothing to restore on failure.
        cri::LinuxContainerResources {
            unified: [("memory.reclaim".to_string(), "1".to_string())].into(),
            ..Default::default()
        },
    ] {
        let e = update(&mut c, &id, bad.clone()).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{bad:?}: {e:?}");
    }
    assert_eq!(read(&dir, "memory.max"), mem_before);
    assert_eq!(read(&dir, "cpu.max"), cpu_before);
    let e = update(&mut c, "no-such-container", mem(64 * MIB))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    c.stop_and_remove_pod(&sb).await.unwrap();
}

#[tokio::test]
async fn resize_page_cache_is_reclaimed_to_fit_a_decrease() {
    // A real block filesystem (ext2 on the VM's RAM disk, which is not
    // charged to any cgroup), so the container's file reads leave
    // reclaimable page cache in its cgroup.
    let (b, mut c) = Berthd::start().await.expect("berthd");
    let mnt = b.dir.path().join("disk");
    std::fs::create_dir_all(&mnt).unwrap();
    let sh = |cmd: String| {
        let st = Command::new("sh").arg("-c").arg(&cmd).status().unwrap();
        assert!(st.success(), "{cmd}");
    };
    sh(format!(
        "mke2fs -F /dev/ram0 >/dev/null 2>&1 && mount /dev/ram0 {}",
        mnt.display()
    ));
    let _unmount = Unmount(mnt.clone());
    c.pull(&busybox()).await.unwrap();
    let pod = pod_config("cache", &b.log_dir());
    let sb = c.run_pod(&pod).await.unwrap();
    let mut cfg = container_config(
        "reader",
        &busybox(),
        &["sh", "-c", "head -c 100663296 /dev/zero > /data/big; sync; cat /data/big > /dev/null; echo ready; sleep 3600"],
    );
    cfg.linux.as_mut().unwrap().resources = Some(mem(512 * MIB));
    cfg.mounts.push(cri::Mount {
        container_path: "/data".into(),
        host_path: mnt.to_string_lossy().into_owned(),
        ..Default::default()
    });
    let id = c.create(&sb, &cfg, &pod).await.unwrap();
    c.start(&id).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !std::fs::read_to_string(b.log_dir().join("reader.log"))
        .unwrap_or_default()
        .contains("ready")
    {
        assert!(Instant::now() < deadline, "reader never got ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let dir = cg_dir(&b, &sb, &id);
    let used: i64 = read(&dir, "memory.current").parse().unwrap();
    assert!(used > 64 * MIB, "page cache charged to the container: {used}");
    let (ooms, high) = (events(&dir, "oom_kill"), events(&dir, "high"));
    update(&mut c, &id, mem(32 * MIB))
        .await
        .expect("reclaimable cache makes room");
    // Reclaim ran without memory.high; it was held only for the switch,
    // when usage already fitted: no allocation was throttled.
    assert_eq!(events(&dir, "high"), high, "high events during the decrease");
    assert_eq!(read(&dir, "memory.high"), "max");
    assert_eq!(read(&dir, "memory.max"), (32 * MIB).to_string());
    let after: i64 = read(&dir, "memory.current").parse().unwrap();
    println!(
        "BERTH-BENCH page_cache_decrease used_before={used} used_after={after} limit={}",
        32 * MIB
    );
    assert!(after <= 32 * MIB);
    assert_eq!(events(&dir, "oom_kill"), ooms, "no OOM kill");
    assert_eq!(
        c.status(&id).await.unwrap().status.unwrap().state,
        cri::ContainerState::ContainerRunning as i32
    );
    c.stop_and_remove_pod(&sb).await.unwrap();
}

#[tokio::test]
async fn pod_level_resize_and_containers_within_it() {
    let (b, mut c) = Berthd::start_with("memory_decrease_wait_ms = 500\n")
        .await
        .expect("berthd");
    c.pull(&busybox()).await.unwrap();
    let pod = pod_config("podres", &b.log_dir());
    let sb = c.run_pod(&pod).await.unwrap();
    let pod_dir =
        Path::new("/sys/fs/cgroup").join(format!("{}/{sb}", b.cgroup_parent).trim_start_matches('/'));
    let upd = |mem_limit: i64, quota: i64| cri::UpdatePodSandboxResourcesRequest {
        pod_sandbox_id: sb.clone(),
        overhead: Some(cri::LinuxContainerResources {
            memory_limit_in_bytes: 16 * MIB,
            ..Default::default()
        }),
        resources: Some(cri::LinuxContainerResources {
            memory_limit_in_bytes: mem_limit,
            cpu_quota: quota,
            cpu_period: 100_000,
            cpu_shares: 1024,
            ..Default::default()
        }),
    };
    c.runtime
        .update_pod_sandbox_resources(upd(256 * MIB, 50_000))
        .await
        .unwrap();
    assert_eq!(read(&pod_dir, "memory.max"), (272 * MIB).to_string());
    assert_eq!(read(&pod_dir, "cpu.max"), "50000 100000");
    let info = c.pod_status(&sb).await.unwrap().1;
    assert_eq!(info["resources"]["memory_limit_in_bytes"], 256 * MIB);
    let id = start_and_wait(&mut c, &b, &sb, &pod, "inpod", "echo ready; sleep 3600").await;
    // A container limit above the pod's is refused up front, nothing changed.
    let e = update(&mut c, &id, mem(400 * MIB)).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    assert!(e.message().contains("pod"), "{}", e.message());
    let e = update(
        &mut c,
        &id,
        cri::LinuxContainerResources {
            cpu_quota: 80_000,
            cpu_period: 100_000,
            ..mem(128 * MIB)
        },
    )
    .await
    .unwrap_err();
    assert!(e.message().contains("cpu"), "{}", e.message());
    update(&mut c, &id, mem(128 * MIB)).await.expect("fits the pod");
    // Shrink the pod after its containers, as kubelet does.
    c.runtime
        .update_pod_sandbox_resources(upd(192 * MIB, 30_000))
        .await
        .unwrap();
    assert_eq!(read(&pod_dir, "memory.max"), (208 * MIB).to_string());
    assert_eq!(read(&pod_dir, "cpu.max"), "30000 100000");
    // A pod decrease below what its containers hold (48 MiB of shmem) is
    // refused with the same rule, and every pod value is restored.
    let holder = start_and_wait(
        &mut c,
        &b,
        &sb,
        &pod,
        "podholder",
        "head -c 50331648 /dev/zero > /dev/shm/podhold; echo ready; sleep 3600",
    )
    .await;
    let e = c
        .runtime
        .update_pod_sandbox_resources(upd(16 * MIB, 20_000))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
    assert_eq!(read(&pod_dir, "memory.max"), (208 * MIB).to_string());
    assert_eq!(read(&pod_dir, "memory.high"), "max");
    assert_eq!(read(&pod_dir, "cpu.max"), "30000 100000");
    let info = c.pod_status(&sb).await.unwrap().1;
    assert_eq!(
        info["resources"]["memory_limit_in_bytes"],
        192 * MIB,
        "a refused pod resize is not recorded"
    );
    assert_eq!(events(&pod_dir, "oom_kill"), 0);
    assert_eq!(
        c.status(&holder).await.unwrap().status.unwrap().state,
        cri::ContainerState::ContainerRunning as i32
    );
    // Counted and logged: 1 container resize applied, 2 refused as not
    // fitting the pod; 2 pod resizes applied, 1 refused.
    let n = resize_counters(&mut c).await;
    assert_eq!(
        (
            n["applied"].as_u64(),
            n["refused"].as_u64(),
            n["podApplied"].as_u64(),
            n["podRefused"].as_u64()
        ),
        (Some(1), Some(2), Some(2), Some(1)),
        "{n}"
    );
    let log = b.log();
    assert_eq!(log.matches("container resize refused").count(), 2, "{log}");
    assert!(log.contains("exceeds the pod's current memory limit"), "{log}");
    assert!(log.contains("exceeds the pod's current cpu.max"), "{log}");
    assert_eq!(log.matches("pod resources updated").count(), 2, "{log}");
    assert_eq!(log.matches("pod resize refused").count(), 1, "{log}");
    c.stop_and_remove_pod(&sb).await.unwrap();
}
