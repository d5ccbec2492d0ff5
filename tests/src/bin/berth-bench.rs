//! berth-bench: in-place pod restart vs pod re-creation, through a running
//! berthd (`hack/bench/restart.sh` runs it in the VM).
//!
//! `berth-bench restart [--socket PATH] [--image REF] [--cycles N] [--pods N]`
//!
//! (a) in place: kubelet's RestartAllContainers sequence on one sandbox
//!     (concurrent StopContainer timeout 0 + RemoveContainer, ListContainers
//!     polled until none is left for the pod, then the init, sidecar and app
//!     containers again with attempt + 1);
//! (b) re-creation: StopPodSandbox + RemovePodSandbox + RunPodSandbox (with
//!     CNI) and all containers again;
//! then `--pods` pods restarted in place at the same time.
//! Prints medians, p99s and the ratio.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use berth_proto::cri;
use berth_tests::figures::percentile_ms;
use berth_tests::{container_config, pod_config, CriClient};

fn containers(image: &str, attempt: u32) -> Vec<cri::ContainerConfig> {
    [
        ("init", vec!["sh", "-c", "echo init"]),
        ("sidecar", vec!["sleep", "3600"]),
        ("app", vec!["sleep", "3600"]),
    ]
    .into_iter()
    .map(|(name, argv)| {
        let mut c = container_config(name, image, &argv);
        c.metadata.as_mut().unwrap().attempt = attempt;
        c.log_path = format!("{name}-{attempt}.log");
        c
    })
    .collect()
}

async fn start_all(
    c: &mut CriClient,
    sb: &str,
    pod: &cri::PodSandboxConfig,
    image: &str,
    attempt: u32,
) -> anyhow::Result<Vec<String>> {
    let mut ids = Vec::new();
    for (i, cfg) in containers(image, attempt).into_iter().enumerate() {
        let id = c.create(sb, &cfg, pod).await?;
        c.start(&id).await?;
        if i == 0 {
            c.wait_exited(&id, Duration::from_secs(60)).await?;
        }
        ids.push(id);
    }
    Ok(ids)
}

/// kubelet's teardown: every StopContainer(timeout 0) + RemoveContainer at
/// once, then ListContainers for the pod until it is empty.
async fn stop_all(c: &CriClient, sb: &str, ids: &[String]) -> anyhow::Result<()> {
    let mut tasks = tokio::task::JoinSet::new();
    for id in ids {
        let (mut rt, id) = (c.runtime.clone(), id.clone());
        tasks.spawn(async move {
            rt.stop_container(cri::StopContainerRequest {
                container_id: id.clone(),
                timeout: 0,
            })
            .await?;
            rt.remove_container(cri::RemoveContainerRequest { container_id: id })
                .await?;
            Ok::<_, tonic::Status>(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    wait_no_containers(c, sb).await
}

/// Polls ListContainers (filtered by pod) until the pod has no container,
/// as kubelet does before it starts the pod again.
async fn wait_no_containers(c: &CriClient, sb: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = c
            .runtime
            .clone()
            .list_containers(cri::ListContainersRequest {
                filter: Some(cri::ContainerFilter {
                    pod_sandbox_id: sb.into(),
                    ..Default::default()
                }),
            })
            .await?
            .into_inner()
            .containers;
        if left.is_empty() {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "pod {sb} still lists {} containers",
            left.len()
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let mut socket = PathBuf::from("/run/berth/berth.sock");
    let mut image = "127.0.0.1:5000/library/busybox:latest".to_string();
    let (mut cycles, mut pods) = (50usize, 20usize);
    let mut args = std::env::args().skip(1);
    anyhow::ensure!(
        args.next().as_deref() == Some("restart"),
        "usage: berth-bench restart [--socket P] [--image R] [--cycles N] [--pods N]"
    );
    while let Some(a) = args.next() {
        let v = args.next().ok_or_else(|| anyhow::anyhow!("{a} needs a value"))?;
        match a.as_str() {
            "--socket" => socket = v.into(),
            "--image" => image = v,
            "--cycles" => cycles = v.parse()?,
            "--pods" => pods = v.parse()?,
            other => anyhow::bail!("unknown argument {other}"),
        }
    }
    let mut c = CriClient::connect(&socket).await?;
    c.pull(&image).await?;
    let logs = std::env::temp_dir().join("berth-bench-logs");

    // (a) in place.
    let pod = pod_config("inplace", &logs);
    let sb = c.run_pod(&pod).await?;
    let mut ids = start_all(&mut c, &sb, &pod, &image, 0).await?;
    let mut inplace = Vec::new();
    for attempt in 1..=cycles as u32 {
        let t = Instant::now();
        stop_all(&c, &sb, &ids).await?;
        ids = start_all(&mut c, &sb, &pod, &image, attempt).await?;
        inplace.push(t.elapsed());
    }
    c.stop_and_remove_pod(&sb).await?;

    // (b) re-creation.
    let mut recreate = Vec::new();
    let pod = pod_config("recreate", &logs);
    let mut sb = c.run_pod(&pod).await?;
    start_all(&mut c, &sb, &pod, &image, 0).await?;
    for _ in 0..cycles {
        let t = Instant::now();
        c.stop_and_remove_pod(&sb).await?;
        sb = c.run_pod(&pod).await?;
        start_all(&mut c, &sb, &pod, &image, 0).await?;
        recreate.push(t.elapsed());
    }
    c.stop_and_remove_pod(&sb).await?;

    let (mi, pi) = (percentile_ms(inplace.clone(), 50), percentile_ms(inplace, 99));
    let (mr, pr) = (percentile_ms(recreate.clone(), 50), percentile_ms(recreate, 99));
    println!(
        "BERTH-BENCH restart cycles={cycles} in_place_median_ms={mi:.1} in_place_p99_ms={pi:.1} \
         recreate_median_ms={mr:.1} recreate_p99_ms={pr:.1} ratio_median={:.2}",
        mr / mi
    );

    // Many pods restarted in place at the same time.
    let mut set = Vec::new();
    for i in 0..pods {
        let pod = pod_config(&format!("fleet{i}"), &logs);
        let sb = c.run_pod(&pod).await?;
        let ids = start_all(&mut c, &sb, &pod, &image, 0).await?;
        set.push((pod, sb, ids));
    }
    let t = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (pod, sb, ids) in set.clone() {
        let (mut c2, image) = (CriClient::connect(&socket).await?, image.clone());
        tasks.spawn(async move {
            let t = Instant::now();
            stop_all(&c2, &sb, &ids).await?;
            start_all(&mut c2, &sb, &pod, &image, 1).await?;
            Ok::<_, anyhow::Error>(t.elapsed())
        });
    }
    let mut each = Vec::new();
    while let Some(r) = tasks.join_next().await {
        each.push(r??);
    }
    let total = t.elapsed();
    println!(
        "BERTH-BENCH restart_fleet pods={pods} all_done_ms={:.1} per_pod_median_ms={:.1} per_pod_p99_ms={:.1}",
        total.as_secs_f64() * 1e3,
        percentile_ms(each.clone(), 50),
        percentile_ms(each, 99)
    );
    for (_, sb, _) in set {
        c.stop_and_remove_pod(&sb).await?;
    }
    Ok(())
}
