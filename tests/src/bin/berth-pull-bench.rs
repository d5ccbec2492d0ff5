//! berth-pull-bench: pull + unpack of one image through a running berthd,
//! against `skopeo copy` + `umoci unpack` of the same image from the same
//! registry (`hack/bench/pull.sh` runs it in the VM).
//!
//! `berth-pull-bench [--socket PATH] [--image REF] [--runs N] [--against PATH]`
//!
//! Each run removes the image (RemoveImage: blobs and snapshots go) and
//! times PullImage; then times skopeo into a fresh OCI layout plus umoci
//! into a fresh bundle. The two alternate run by run so neither gets a
//! warmer cache. Prints medians, the spread and the ratio.
//!
//! With `--against PATH` the peer is another berthd (another build) on that
//! socket instead of skopeo + umoci, and the two take turns at going first:
//! an A/B of two builds' pulls (`hack/bench/pull-ab.sh`).

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use berth_proto::cri;
use berth_tests::figures::ms;
use berth_tests::{median, CriClient};

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let out = cmd.output()?;
    anyhow::ensure!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let mut socket = PathBuf::from("/run/berth/berth.sock");
    let mut image = "127.0.0.1:5000/library/bench-big:latest".to_string();
    let mut runs = 5usize;
    let mut against: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let v = args.next().ok_or_else(|| anyhow::anyhow!("{a} needs a value"))?;
        match a.as_str() {
            "--socket" => socket = v.into(),
            "--image" => image = v,
            "--runs" => runs = v.parse()?,
            "--against" => against = Some(v.into()),
            other => {
                anyhow::bail!("usage: berth-pull-bench [--socket P] [--image R] [--runs N] [--against P]; unknown {other}")
            }
        }
    }
    let mut c = CriClient::connect(&socket).await?;
    if let Some(b) = against {
        return ab(c, CriClient::connect(&b).await?, &image, runs).await;
    }
    let spec = || {
        Some(cri::ImageSpec {
            image: image.clone(),
            ..Default::default()
        })
    };
    let scratch = std::env::temp_dir().join("berth-pull-bench");
    let (mut berth, mut peer) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        c.images
            .remove_image(cri::RemoveImageRequest { image: spec() })
            .await?;
        let t = Instant::now();
        c.pull(&image).await?;
        berth.push(t.elapsed());

        let _ = std::fs::remove_dir_all(&scratch);
        std::fs::create_dir_all(&scratch)?;
        let layout = scratch.join("oci");
        let t = Instant::now();
        run(Command::new("skopeo")
            .args(["--insecure-policy", "copy", "--quiet", "--src-tls-verify=false"])
            .arg(format!("docker://{image}"))
            .arg(format!("oci:{}:latest", layout.display())))?;
        run(Command::new("umoci")
            .args(["unpack", "--image"])
            .arg(format!("{}:latest", layout.display()))
            .arg(scratch.join("bundle")))?;
        peer.push(t.elapsed());
    }
    let _ = std::fs::remove_dir_all(&scratch);
    let spread = |v: &[Duration]| {
        let mut s = v.to_vec();
        s.sort();
        (ms(s[0]), ms(s[s.len() - 1]))
    };
    let (bmin, bmax) = spread(&berth);
    let (pmin, pmax) = spread(&peer);
    let (bm, pm) = (ms(median(berth)), ms(median(peer)));
    println!(
        "BERTH-BENCH pull image={image} runs={runs} berth_median_ms={bm:.0} (min {bmin:.0}, max {bmax:.0}) \
         skopeo_umoci_median_ms={pm:.0} (min {pmin:.0}, max {pmax:.0}) ratio_peer_over_berth={:.2}",
        pm / bm
    );
    Ok(())
}

/// Removes `image` from the berthd behind `c`, then times its pull.
async fn timed_pull(c: &mut CriClient, image: &str) -> anyhow::Result<Duration> {
    c.images
        .remove_image(cri::RemoveImageRequest {
            image: Some(cri::ImageSpec {
                image: image.into(),
                ..Default::default()
            }),
        })
        .await?;
    let t = Instant::now();
    c.pull(image).await?;
    Ok(t.elapsed())
}

/// Two berthds pull the same image in turns, each going first every other
/// run (so neither always finds the registry's files in the page cache).
async fn ab(mut a: CriClient, mut b: CriClient, image: &str, runs: usize) -> anyhow::Result<()> {
    let (mut ta, mut tb) = (Vec::new(), Vec::new());
    for run in 0..runs {
        if run % 2 == 0 {
            ta.push(timed_pull(&mut a, image).await?);
            tb.push(timed_pull(&mut b, image).await?);
        } else {
            tb.push(timed_pull(&mut b, image).await?);
            ta.push(timed_pull(&mut a, image).await?);
        }
    }
    let list = |v: &[Duration]| {
        v.iter()
            .map(|d| format!("{:.0}", ms(*d)))
            .collect::<Vec<_>>()
            .join(",")
    };
    println!(
        "BERTH-BENCH pull-ab runs_a_ms={} runs_b_ms={}",
        list(&ta),
        list(&tb)
    );
    let (ma, mb) = (ms(median(ta)), ms(median(tb)));
    println!(
        "BERTH-BENCH pull-ab image={image} runs={runs} a_median_ms={ma:.0} b_median_ms={mb:.0} ratio_b_over_a={:.3}",
        mb / ma
    );
    Ok(())
}
