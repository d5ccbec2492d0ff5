//! berth-lifecycle-bench: pod and container lifecycle latencies and memory
//! through a running berthd (`hack/bench/lifecycle.sh` runs it in the VM,
//! with berthd's defaults and the VM's bridge CNI network).
//!
//! `berth-lifecycle-bench [--socket PATH] [--image REF] [--runs N] [--pods N]`
//!
//! Per run: RunPodSandbox (with CNI ADD), CreateContainer + StartContainer,
//! StopContainer + RemoveContainer, StopPodSandbox + RemovePodSandbox (with
//! CNI DEL); prints their medians. Then `--pods` pods with one container
//! each, and berthd's and one shim's RSS. A benchmark, not a test: it
//! asserts only that every call succeeded and nothing was left behind.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use berth_proto::cri;
use berth_tests::{container_config, median, pod_config, rss_kib, CriClient};

fn ms(v: Vec<Duration>) -> f64 {
    median(v).as_secs_f64() * 1e3
}

/// The berthd process serving the node (its argv[0] ends in `/berthd`).
fn berthd_pid() -> anyhow::Result<u32> {
    for e in std::fs::read_dir("/proc")?.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let argv0 = cmd.split(|&b| b == 0).next().unwrap_or_default();
        if argv0.ends_with(b"/berthd") {
            return Ok(pid);
        }
    }
    anyhow::bail!("no berthd process")
}

/// Fails unless berthd lists no pod and no container.
async fn assert_nothing_left(c: &mut CriClient) -> anyhow::Result<()> {
    let pods = c
        .runtime
        .list_pod_sandbox(cri::ListPodSandboxRequest::default())
        .await?
        .into_inner()
        .items;
    let ctrs = c
        .runtime
        .list_containers(cri::ListContainersRequest::default())
        .await?
        .into_inner()
        .containers;
    anyhow::ensure!(
        pods.is_empty() && ctrs.is_empty(),
        "left behind: {} pods, {} containers",
        pods.len(),
        ctrs.len()
    );
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let mut socket = PathBuf::from("/run/berth/berth.sock");
    let mut image = "127.0.0.1:5000/library/busybox:latest".to_string();
    let (mut runs, mut pods) = (20usize, 10usize);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let v = args.next().ok_or_else(|| anyhow::anyhow!("{a} needs a value"))?;
        match a.as_str() {
            "--socket" => socket = v.into(),
            "--image" => image = v,
            "--runs" => runs = v.parse()?,
            "--pods" => pods = v.parse()?,
            other => anyhow::bail!(
                "unknown argument {other}; usage: berth-lifecycle-bench [--socket P] [--image R] [--runs N] [--pods N]"
            ),
        }
    }
    anyhow::ensure!(runs > 0 && pods > 0, "--runs and --pods must be at least 1");
    let mut c = CriClient::connect(&socket).await?;
    c.pull(&image).await?;
    let logs = std::env::temp_dir().join("berth-lifecycle-bench-logs");

    let (mut runp, mut create_start, mut stop_remove, mut teardown) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..runs {
        let pod = pod_config(&format!("bench{i}"), &logs);
        let t = Instant::now();
        let sb = c.run_pod(&pod).await?;
        runp.push(t.elapsed());
        let cfg = container_config("app", &image, &["sleep", "3600"]);
        let t = Instant::now();
        let id = c.create(&sb, &cfg, &pod).await?;
        c.start(&id).await?;
        create_start.push(t.elapsed());
        let t = Instant::now();
        c.stop(&id, 0).await?;
        c.remove(&id).await?;
        stop_remove.push(t.elapsed());
        let t = Instant::now();
        c.stop_and_remove_pod(&sb).await?;
        teardown.push(t.elapsed());
    }
    assert_nothing_left(&mut c).await?;
    println!(
        "BERTH-BENCH lifecycle runs={runs} run_pod_sandbox_median_ms={:.2} create_start_median_ms={:.2} \
         stop_remove_container_median_ms={:.2} stop_remove_pod_median_ms={:.2}",
        ms(runp),
        ms(create_start),
        ms(stop_remove),
        ms(teardown),
    );

    let mut sandboxes = Vec::new();
    for i in 0..pods {
        let pod = pod_config(&format!("rss{i}"), &logs);
        let sb = c.run_pod(&pod).await?;
        let id = c
            .create(&sb, &container_config("app", &image, &["sleep", "3600"]), &pod)
            .await?;
        c.start(&id).await?;
        sandboxes.push(sb);
    }
    let (_, info) = c.pod_status(&sandboxes[0]).await?;
    let shim = info["pid"]
        .as_u64()
        .ok_or_else(|| anyhow::anyhow!("no shim pid in {info}"))? as u32;
    println!(
        "BERTH-BENCH memory pods={pods} berthd_rss_kib={} one_shim_rss_kib={}",
        rss_kib(berthd_pid()?),
        rss_kib(shim)
    );
    for sb in &sandboxes {
        c.stop_and_remove_pod(sb).await?;
    }
    assert_nothing_left(&mut c).await
}
