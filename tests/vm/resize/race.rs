//! Resizes racing an allocating workload, and resizes racing each other.

use std::path::Path;
use std::time::{Duration, Instant};

use berth_proto::cri;
use berth_tests::*;

use super::{busybox, cg_dir, events, mem, memory_events, read, start_and_wait, update, MIB};

/// Highest and lowest `memory.current` seen over `span`, sampled every 2 ms,
/// and the cgroup's lifetime `memory.peak` where the kernel has it.
async fn usage_range(dir: &Path, span: Duration) -> (i64, i64) {
    let (mut lo, mut hi) = (i64::MAX, 0);
    let end = Instant::now() + span;
    while Instant::now() < end {
        let u: i64 = read(dir, "memory.current").parse().unwrap();
        (lo, hi) = (lo.min(u), hi.max(u));
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    if let Ok(p) = std::fs::read_to_string(dir.join("memory.peak")) {
        hi = hi.max(p.trim().parse().unwrap());
    }
    (lo, hi)
}

#[tokio::test]
async fn resize_while_allocating_never_oom_kills() {
    let (b, mut c) = Berthd::start_with("memory_decrease_wait_ms = 300\n")
        .await
        .expect("berthd");
    c.pull(&busybox()).await.unwrap();
    let pod = pod_config("race", &b.log_dir());
    let sb = c.run_pod(&pod).await.unwrap();
    // 64 MiB of shmem (unreclaimable without swap) held for good, plus dd
    // allocating and filling a 16 MiB anonymous buffer (page faults: the
    // kind of charge that OOM-kills), exiting, and again: usage swings
    // between ~64 and ~82 MiB, close to the 96 MiB limit it starts under.
    let id = start_and_wait(
        &mut c,
        &b,
        &sb,
        &pod,
        "grower",
        "head -c 67108864 /dev/zero > /dev/shm/hold; echo ready; \
         while :; do dd if=/dev/zero of=/dev/null bs=16M count=1 2>/dev/null; done",
    )
    .await;
    let dir = cg_dir(&b, &sb, &id);
    let old_limit = 96 * MIB;
    update(&mut c, &id, mem(old_limit))
        .await
        .expect("to the old limit");
    let (low, peak) = usage_range(&dir, Duration::from_secs(2)).await;
    // Two decreases per round, both while dd allocates: one to just above
    // the workload's peak (usage sits within a few MiB of the new limit at
    // the switch: it fits, and must be applied without an OOM kill), one
    // below what it holds at all times (reclaim cannot help: it must be
    // refused — a plain memory.max write would OOM-kill here).
    let near = (peak / MIB + 8) * MIB;
    let below = 48 * MIB;
    assert!(
        near + 2 * MIB < old_limit,
        "the workload peaks at {peak}, too close to {old_limit}"
    );
    assert!(below < low, "the workload always holds more than {below}: {low}");
    let ooms = (events(&dir, "oom"), events(&dir, "oom_kill"));
    let events_before = memory_events(&dir);
    let pid = {
        let s = c.status(&id).await.unwrap();
        serde_json::from_str::<serde_json::Value>(&s.info["info"]).unwrap()["pid"]
            .as_u64()
            .unwrap()
    };
    let (mut near_ok, mut near_no, mut below_ok, mut below_no) = (0, 0, 0, 0);
    let mut usage_at_switch = Vec::new();
    for _ in 0..50 {
        for (target, ok, no) in [
            (near, &mut near_ok, &mut near_no),
            (below, &mut below_ok, &mut below_no),
        ] {
            // Each decrease starts from the old limit.
            update(&mut c, &id, mem(old_limit)).await.expect("raise back");
            let used: i64 = read(&dir, "memory.current").parse().unwrap();
            match update(&mut c, &id, mem(target)).await {
                Ok(()) => {
                    *ok += 1;
                    assert_eq!(read(&dir, "memory.max"), target.to_string());
                    if target == near {
                        usage_at_switch.push(used);
                    }
                }
                Err(e) => {
                    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
                    *no += 1;
                    assert_eq!(read(&dir, "memory.max"), old_limit.to_string(), "restored");
                    assert_eq!(read(&dir, "memory.high"), "max", "restored");
                }
            }
        }
    }
    let events_after = memory_events(&dir);
    usage_at_switch.sort();
    let usage_median = usage_at_switch
        .get(usage_at_switch.len() / 2)
        .copied()
        .unwrap_or(0);
    println!(
        "BERTH-BENCH resize_race rounds=50 old_limit={old_limit} workload_low={low} workload_peak={peak} \
         near_limit={near} near_applied={near_ok} near_refused={near_no} below_limit={below} \
         below_applied={below_ok} below_refused={below_no} usage_at_applied_switch_median={usage_median} \
         oom_kill_delta={}",
        events(&dir, "oom_kill") - ooms.1
    );
    println!("BERTH-BENCH resize_race_memory_events_before {events_before}");
    println!("BERTH-BENCH resize_race_memory_events_after {events_after}");
    assert_eq!(below_ok, 0, "a decrease below unreclaimable usage was applied");
    // `near` is 8 MiB above the workload's peak: it fits with the 2 MiB
    // headroom every time, so the estimate and the reclaim loop may never
    // refuse it (issue 24).
    assert_eq!(
        (below_no, near_ok),
        (50, 50),
        "every decrease below the held memory refused, every one that fits applied"
    );
    assert_eq!(
        (events(&dir, "oom"), events(&dir, "oom_kill")),
        ooms,
        "no OOM (nor OOM kill) in 100 racing decreases"
    );
    assert!(
        Path::new(&format!("/proc/{pid}")).exists(),
        "the workload never died"
    );
    let s = c.status(&id).await.unwrap().status.unwrap();
    assert_eq!(s.state, cri::ContainerState::ContainerRunning as i32);
    // Control: the same workload under a naive write of memory.max below
    // what it holds is OOM-killed, so the checks above can fail.
    std::fs::write(dir.join("memory.max"), (24 * MIB).to_string()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while events(&dir, "oom_kill") == ooms.1 {
        assert!(
            Instant::now() < deadline,
            "control: the naive limit never OOM-killed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    c.stop_and_remove_pod(&sb).await.unwrap();
}

/// Two resizes of one container at once are serialised: the final state is
/// one whole request, never a mix, and a refused one's undo never rolls
/// back the other. `id` holds ~64 MiB it cannot give back (the memory test).
pub async fn concurrent_resizes_are_serialised(c: &mut CriClient, dir: &Path, id: &str) {
    let req = |limit: i64, quota: i64| cri::LinuxContainerResources {
        cpu_quota: quota,
        cpu_period: 100_000,
        ..mem(limit)
    };
    let state = || (read(dir, "memory.max"), read(dir, "cpu.max"));
    let want = |limit: i64, quota: i64| (limit.to_string(), format!("{quota} 100000"));
    // Both fit: whichever runs last wins, whole.
    for _ in 0..5 {
        let (a, b) = (req(300 * MIB, 10_000), req(256 * MIB, 20_000));
        let (mut ca, mut cb) = (c.clone(), c.clone());
        let (ra, rb) = tokio::join!(update(&mut ca, id, a), update(&mut cb, id, b));
        ra.unwrap();
        rb.unwrap();
        let s = state();
        assert!(
            s == want(300 * MIB, 10_000) || s == want(256 * MIB, 20_000),
            "a mix of two requests: {s:?}"
        );
    }
    // A refused decrease and a resize sent at the same time, in either
    // order: the refused one restores what it changed before the other
    // runs, so the second's values hold, whole, in the end.
    let (mut ca, mut cb) = (c.clone(), c.clone());
    let (refused, second) = tokio::join!(
        update(&mut ca, id, req(32 * MIB, 10_000)),
        update(&mut cb, id, req(280 * MIB, 30_000))
    );
    assert_eq!(refused.unwrap_err().code(), tonic::Code::FailedPrecondition);
    second.expect("the second resize");
    assert_eq!(
        state(),
        want(280 * MIB, 30_000),
        "the refused resize's undo kept the second's values"
    );
    assert_eq!(read(dir, "memory.high"), "max");
}
