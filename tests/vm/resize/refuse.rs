//! Memory decreases that cannot fit are refused before any cgroup file is
//! touched: no `memory.high` held over the workload, no reclaim (issue 24).
//! Asserted on `memory.events` counters and file values, never on durations;
//! the refusal latency is printed as a figure only (`hack/bench/resize.sh`
//! measures it properly).

use std::path::Path;
use std::time::{Duration, Instant};

use berth_proto::cri;
use berth_tests::*;

use super::{busybox, cg_dir, events, mem, read, start_and_wait, update, MIB};

/// ~48 MiB of shmem (unreclaimable without swap), and a loop that keeps
/// charging memory (every dd allocates and frees a 1 MiB buffer): a
/// `memory.high` below usage would count `high` events at once.
const HOLDER: &str = "head -c 50331648 /dev/zero > /dev/shm/hold; echo ready; \
     while :; do dd if=/dev/zero of=/dev/null bs=1M count=1 2>/dev/null; done";

/// The estimate counts shmem as unreclaimable only without swap.
fn assert_no_swap() {
    let swaps = std::fs::read_to_string("/proc/swaps").unwrap_or_default();
    assert!(
        swaps.lines().count() <= 1,
        "these tests need a VM without swap: {swaps}"
    );
}

fn summary(took: Vec<Duration>, high_delta: u64, runs: u64) -> String {
    format!(
        "runs={runs} refusal_median_ms={:.2} high_events_per_refusal={:.1}",
        median(took).as_secs_f64() * 1e3,
        high_delta as f64 / runs as f64
    )
}

#[tokio::test]
async fn resize_impossible_decrease_is_refused_at_once() {
    assert_no_swap();
    // berthd's default wait (5 s): a refusal must not spend it.
    let (b, mut c) = Berthd::start().await.expect("berthd");
    c.pull(&busybox()).await.unwrap();
    let pod = pod_config("refuse", &b.log_dir());
    let sb = c.run_pod(&pod).await.unwrap();
    let id = start_and_wait(&mut c, &b, &sb, &pod, "anonholder", HOLDER).await;
    let dir = cg_dir(&b, &sb, &id);
    update(&mut c, &id, mem(256 * MIB))
        .await
        .expect("a limit to decrease from");
    let cpu_before = read(&dir, "cpu.max");
    let (high, ooms) = (events(&dir, "high"), events(&dir, "oom_kill"));
    let runs = 10;
    let mut took = Vec::new();
    let mut errors = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        let r = update(
            &mut c,
            &id,
            cri::LinuxContainerResources {
                cpu_quota: 20_000,
                cpu_period: 100_000,
                ..mem(24 * MIB)
            },
        )
        .await;
        took.push(t.elapsed());
        errors.push(r.expect_err("a decrease below unreclaimable usage"));
        assert_eq!(read(&dir, "memory.max"), (256 * MIB).to_string());
        assert_eq!(read(&dir, "memory.high"), "max");
        assert_eq!(read(&dir, "cpu.max"), cpu_before, "cpu.max untouched");
    }
    let high_delta = events(&dir, "high") - high;
    println!(
        "BERTH-BENCH resize_container_refusal {}",
        summary(took, high_delta, runs)
    );
    for e in &errors {
        assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
        let m = e.message();
        assert!(
            m.contains(&(24 * MIB).to_string()) && m.contains("uses") && m.contains("cannot be reclaimed"),
            "usage, the unreclaimable part and the limit: {m}"
        );
    }
    assert_eq!(high_delta, 0, "memory.high throttled the workload");
    assert_eq!(events(&dir, "oom_kill"), ooms, "no OOM kill");
    assert_eq!(
        c.status(&id).await.unwrap().status.unwrap().state,
        cri::ContainerState::ContainerRunning as i32
    );
    // A decrease that fits is still applied.
    update(&mut c, &id, mem(128 * MIB)).await.expect("fits");
    assert_eq!(read(&dir, "memory.max"), (128 * MIB).to_string());
    assert_eq!(read(&dir, "memory.high"), "max");
    c.stop_and_remove_pod(&sb).await.unwrap();
}

#[tokio::test]
async fn resize_pod_impossible_decrease_is_refused_at_once() {
    assert_no_swap();
    let (b, mut c) = Berthd::start().await.expect("berthd");
    c.pull(&busybox()).await.unwrap();
    let pod = pod_config("podrefuse", &b.log_dir());
    let sb = c.run_pod(&pod).await.unwrap();
    let pod_dir =
        Path::new("/sys/fs/cgroup").join(format!("{}/{sb}", b.cgroup_parent).trim_start_matches('/'));
    let upd = |limit: i64| cri::UpdatePodSandboxResourcesRequest {
        pod_sandbox_id: sb.clone(),
        overhead: None,
        resources: Some(cri::LinuxContainerResources {
            memory_limit_in_bytes: limit,
            cpu_quota: 50_000,
            cpu_period: 100_000,
            cpu_shares: 1024,
            ..Default::default()
        }),
    };
    c.runtime
        .update_pod_sandbox_resources(upd(256 * MIB))
        .await
        .expect("a pod limit to decrease from");
    let id = start_and_wait(&mut c, &b, &sb, &pod, "podanon", HOLDER).await;
    let dir = cg_dir(&b, &sb, &id);
    let (pod_high, high, ooms) = (
        events(&pod_dir, "high"),
        events(&dir, "high"),
        events(&pod_dir, "oom_kill"),
    );
    let runs = 10;
    let mut took = Vec::new();
    let mut errors = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        let r = c.runtime.update_pod_sandbox_resources(upd(24 * MIB)).await;
        took.push(t.elapsed());
        errors.push(r.expect_err("a pod decrease below unreclaimable usage"));
        assert_eq!(read(&pod_dir, "memory.max"), (256 * MIB).to_string());
        assert_eq!(read(&pod_dir, "memory.high"), "max");
    }
    let pod_high_delta = events(&pod_dir, "high") - pod_high;
    println!(
        "BERTH-BENCH resize_pod_refusal {}",
        summary(took, pod_high_delta, runs)
    );
    for e in &errors {
        assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
        let m = e.message();
        assert!(
            m.contains(&(24 * MIB).to_string()) && m.contains("uses") && m.contains("cannot be reclaimed"),
            "{m}"
        );
    }
    assert_eq!(pod_high_delta, 0, "the pod's memory.high throttled it");
    assert_eq!(events(&dir, "high"), high, "the container was throttled");
    assert_eq!(events(&pod_dir, "oom_kill"), ooms, "no OOM kill");
    let info = c.pod_status(&sb).await.unwrap().1;
    assert_eq!(
        info["resources"]["memory_limit_in_bytes"],
        256 * MIB,
        "a refused pod resize is not recorded"
    );
    c.runtime
        .update_pod_sandbox_resources(upd(192 * MIB))
        .await
        .expect("a pod decrease that fits");
    assert_eq!(read(&pod_dir, "memory.max"), (192 * MIB).to_string());
    assert_eq!(read(&pod_dir, "memory.high"), "max");
    c.stop_and_remove_pod(&sb).await.unwrap();
}
