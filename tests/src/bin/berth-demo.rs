//! berth-demo: runs one busybox pod through a running berthd the way crictl
//! would (pull, runp, create, start, logs, stop, rm) and prints each step.
//!
//! `berth-demo [--socket PATH] [--image REF]`

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use berth_tests::{container_config, parse_cri_log_line, pod_config, CriClient};

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut socket = PathBuf::from("/run/berth/berth.sock");
    let mut image = "127.0.0.1:5000/library/busybox:latest".to_string();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--socket" => socket = args.next().expect("--socket PATH").into(),
            "--image" => image = args.next().expect("--image REF"),
            other => {
                anyhow::bail!("unknown argument {other}; usage: berth-demo [--socket PATH] [--image REF]")
            }
        }
    }
    let t0 = Instant::now();
    let step = |what: &str| println!("[{:>7.1} ms] {what}", t0.elapsed().as_secs_f64() * 1e3);
    let mut c = CriClient::connect(&socket).await?;
    let v = c
        .runtime
        .version(berth_proto::cri::VersionRequest::default())
        .await?
        .into_inner();
    step(&format!(
        "connected to {} {} (CRI {})",
        v.runtime_name, v.runtime_version, v.runtime_api_version
    ));
    let image_ref = c.pull(&image).await?;
    step(&format!("pulled {image} -> {image_ref}"));
    let logs = std::env::temp_dir().join("berth-demo-logs");
    let pod = pod_config("demo", &logs);
    let sb = c.run_pod(&pod).await?;
    let st = c
        .runtime
        .pod_sandbox_status(berth_proto::cri::PodSandboxStatusRequest {
            pod_sandbox_id: sb.clone(),
            verbose: false,
        })
        .await?
        .into_inner();
    let ip = st
        .status
        .and_then(|s| s.network)
        .map(|n| n.ip)
        .unwrap_or_default();
    step(&format!("pod sandbox ready: {sb} (pod IP {ip})"));
    let cfg = container_config(
        "hello",
        &image,
        &[
            "sh",
            "-c",
            "echo 'Hello from a Berth pod!'; echo \"hostname=$(hostname) uid=$(id -u) pid=$$\"; ip -4 addr show eth0 | grep inet; ls /",
        ],
    );
    let id = c.create(&sb, &cfg, &pod).await?;
    step(&format!("container created: {id}"));
    c.start(&id).await?;
    step("container started");
    let s = c.wait_exited(&id, Duration::from_secs(30)).await?;
    step(&format!("container exited: code {} ({})", s.exit_code, s.reason));
    let log = std::fs::read_to_string(logs.join("hello.log"))?;
    println!("---- container log ({}) ----", logs.join("hello.log").display());
    for line in log.lines() {
        if let Some((_, stream, _, content)) = parse_cri_log_line(line) {
            println!("{stream}: {content}");
        }
    }
    println!("----");
    c.remove(&id).await?;
    c.stop_and_remove_pod(&sb).await?;
    step("container and pod removed");
    Ok(())
}
