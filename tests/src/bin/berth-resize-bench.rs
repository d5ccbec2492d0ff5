//! berth-resize-bench: what a memory decrease costs, through a running
//! berthd with its defaults (`hack/bench/resize.sh` runs it in the VM).
//!
//! `berth-resize-bench [--socket PATH] [--image REF] [--runs N]`
//!
//! One container holds ~48 MiB of shmem (unreclaimable without swap) and
//! keeps allocating (dd, 1 MiB at a time), under a 256 MiB limit. Each run:
//! a decrease to 24 MiB, which cannot fit and must be refused, timed and
//! counted in `memory.events high` (throttling of the workload); then a
//! decrease to 128 MiB, which fits, timed, and the raise back. Prints
//! medians and the `high` events per refusal.

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth_proto::cri;
use berth_tests::figures::ms;
use berth_tests::{container_config, median, pod_config, CriClient};

const MIB: i64 = 1 << 20;

fn high_events(dir: &Path) -> anyhow::Result<u64> {
    let text = std::fs::read_to_string(dir.join("memory.events"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("high "))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no high in {}/memory.events", dir.display()))
}

async fn update(c: &mut CriClient, id: &str, limit: i64) -> Result<(), tonic::Status> {
    c.runtime
        .update_container_resources(cri::UpdateContainerResourcesRequest {
            container_id: id.into(),
            linux: Some(cri::LinuxContainerResources {
                memory_limit_in_bytes: limit,
                cpu_shares: 1024,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .map(|_| ())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let mut socket = PathBuf::from("/run/berth/berth.sock");
    let mut image = "127.0.0.1:5000/library/busybox:latest".to_string();
    let mut runs = 10usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let v = args.next().ok_or_else(|| anyhow::anyhow!("{a} needs a value"))?;
        match a.as_str() {
            "--socket" => socket = v.into(),
            "--image" => image = v,
            "--runs" => runs = v.parse()?,
            other => {
                anyhow::bail!(
                    "usage: berth-resize-bench [--socket P] [--image R] [--runs N]; unknown {other}"
                )
            }
        }
    }
    anyhow::ensure!(runs > 0, "--runs must be at least 1");
    let mut c = CriClient::connect(&socket).await?;
    c.pull(&image).await?;
    let logs = std::env::temp_dir().join("berth-resize-bench");
    std::fs::create_dir_all(&logs)?;
    let pod = pod_config("resizebench", &logs);
    let sb = c.run_pod(&pod).await?;
    let script = "head -c 50331648 /dev/zero > /dev/shm/hold; echo ready; \
                  while :; do dd if=/dev/zero of=/dev/null bs=1M count=1 2>/dev/null; done";
    let id = c
        .create(
            &sb,
            &container_config("holder", &image, &["sh", "-c", script]),
            &pod,
        )
        .await?;
    c.start(&id).await?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while !std::fs::read_to_string(logs.join("holder.log"))
        .unwrap_or_default()
        .contains("ready")
    {
        anyhow::ensure!(Instant::now() < deadline, "the holder never got ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // berthd's default cgroup parent.
    let dir = Path::new("/sys/fs/cgroup/berth").join(&sb).join(&id);
    update(&mut c, &id, 256 * MIB).await?;
    let (mut refused, mut accepted) = (Vec::new(), Vec::new());
    let high_before = high_events(&dir)?;
    let mut high_in_refusals = 0;
    for _ in 0..runs {
        let h = high_events(&dir)?;
        let t = Instant::now();
        let r = update(&mut c, &id, 24 * MIB).await;
        refused.push(t.elapsed());
        high_in_refusals += high_events(&dir)? - h;
        anyhow::ensure!(
            r.as_ref()
                .is_err_and(|e| e.code() == tonic::Code::FailedPrecondition),
            "the impossible decrease was not refused: {r:?}"
        );
        let t = Instant::now();
        update(&mut c, &id, 128 * MIB).await?;
        accepted.push(t.elapsed());
        update(&mut c, &id, 256 * MIB).await?;
    }
    let high_total = high_events(&dir)? - high_before;
    c.stop_and_remove_pod(&sb).await?;
    println!(
        "BERTH-BENCH resize runs={runs} refusal_median_ms={:.2} high_events_per_refusal={:.1} \
         accepted_decrease_median_ms={:.2} high_events_total={high_total}",
        ms(median(refused)),
        high_in_refusals as f64 / runs as f64,
        ms(median(accepted)),
    );
    Ok(())
}
