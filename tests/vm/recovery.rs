//! What berthd finds after a crash, through a real restart (SIGKILL, then a
//! new berthd on the same root and state), as README promises: a shim that
//! dies after the restart is noticed through a pidfd; a sandbox's state dir
//! with no record (berthd stopped inside RunPodSandbox) is swept with its
//! mounts; a pull killed mid-download leaves nothing once berthd is back.
//!
//! Runs inside the VM (`hack/vm`), with `--test-threads=1`. Every test name
//! starts with `recovery`, so `BERTH_VM_FILTER=recovery` runs this suite.

use std::path::Path;
use std::time::{Duration, Instant};

use berth_proto::cri;
use berth_tests::gated_registry::{layer_digests, GatedRegistry};
use berth_tests::*;

/// Generous: a deadline only turns "never" into a failure.
const WAIT: Duration = Duration::from_secs(60);

async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A crash, then a new berthd on the same root and state.
async fn restart(b: &mut Berthd) -> CriClient {
    b.kill_hard();
    b.spawn().await.expect("berthd after the crash")
}

async fn pod_state(c: &mut CriClient, sb: &str) -> i32 {
    c.pod_status(sb).await.expect("pod status").0.state
}

/// The shim outlived the old berthd; the new one is not its parent, so only
/// a pidfd (or polling, which berthd logs) can tell it died. It does: the
/// pod turns NotReady, berthd says why, and the pod stops and goes cleanly.
#[tokio::test]
async fn recovery_a_shim_dying_after_a_restart_is_seen_through_its_pidfd() {
    let (mut b, mut c) = Berthd::start().await.expect("berthd");
    let pod = pod_config("watched", &b.log_dir());
    let sb = c.run_pod(&pod).await.expect("runp");
    let shim = c.pod_status(&sb).await.unwrap().1["pid"].as_u64().unwrap() as i32;
    let mut c = restart(&mut b).await;
    assert_eq!(
        pod_state(&mut c, &sb).await,
        cri::PodSandboxState::SandboxReady as i32,
        "the pod survives the restart"
    );
    // SAFETY: kill(2) of the pod's shim.
    unsafe { libc::kill(shim, libc::SIGKILL) };
    let deadline = Instant::now() + WAIT;
    while pod_state(&mut c, &sb).await != cri::PodSandboxState::SandboxNotready as i32 {
        assert!(
            Instant::now() < deadline,
            "still Ready after its shim died: {}",
            b.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = b.log();
    assert!(log.contains("pod shim exited unexpectedly"), "{log}");
    assert!(
        !log.contains("pidfd not pollable"),
        "watched by pidfd, not polling: {log}"
    );
    c.stop_and_remove_pod(&sb).await.expect("stop+remove");
    assert!(mounts_containing(&b.dir.path().to_string_lossy()).is_empty());
}

/// A sandbox state dir with no record, as a berthd killed inside
/// RunPodSandbox leaves it: its namespace pin and /dev/shm are real mounts.
/// The restarted berthd unmounts and removes it, and leaves a real pod that
/// lived through the restart alone.
#[tokio::test]
async fn recovery_an_orphaned_sandbox_state_dir_is_swept_at_restart() {
    let (mut b, mut c) = Berthd::start().await.expect("berthd");
    let pod = pod_config("kept", &b.log_dir());
    let kept = c.run_pod(&pod).await.expect("runp");
    let orphan = b
        .dir
        .path()
        .join("state/sandboxes/0rphan0000000000000000000000000000000000000000000000000000000");
    std::fs::create_dir_all(orphan.join("ns")).unwrap();
    std::fs::create_dir_all(orphan.join("shm")).unwrap();
    let pin = orphan.join("ns/net");
    std::fs::write(&pin, "").unwrap();
    // Undone however the test ends (the sweep should have done it first).
    let _pin = Unmount(pin.clone());
    let _shm = Unmount(orphan.join("shm"));
    nix::mount::mount(
        Some("/proc/self/ns/net"),
        &pin,
        None::<&str>,
        nix::mount::MsFlags::MS_BIND,
        None::<&str>,
    )
    .expect("pin a network namespace");
    nix::mount::mount(
        Some("shm"),
        &orphan.join("shm"),
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some("size=64k"),
    )
    .expect("mount the orphan's shm");
    let orphan_s = orphan.to_string_lossy().into_owned();
    assert_eq!(mounts_containing(&orphan_s).len(), 2);

    let mut c = restart(&mut b).await;
    assert!(
        mounts_containing(&orphan_s).is_empty(),
        "{:?}",
        mounts_containing(&orphan_s)
    );
    assert!(!orphan.exists(), "the orphan's state dir is removed");
    assert!(
        b.log()
            .contains("removed the state of a sandbox that has no record"),
        "{}",
        b.log()
    );
    assert_eq!(
        pod_state(&mut c, &kept).await,
        cri::PodSandboxState::SandboxReady as i32,
        "a pod with a record is not swept"
    );
    c.stop_and_remove_pod(&kept).await.expect("stop+remove");
}

/// berthd killed while a layer is mid-download (held there by the registry):
/// a `.partial` blob is on disk. The next berthd removes it and whatever
/// else no image record references, and the same pull then works.
#[tokio::test]
async fn recovery_a_pull_killed_mid_download_is_swept_at_restart() {
    let storage = Path::new("/var/lib/registry");
    let reg = GatedRegistry::start(storage);
    reg.hold(layer_digests(storage, "noise", "latest"));
    let (mut b, c) = Berthd::start().await.expect("berthd");
    let image = format!("{}/library/noise:latest", reg.addr);
    let pull = {
        let (mut c, image) = (c.clone(), image.clone());
        tokio::spawn(async move { c.pull(&image).await })
    };
    reg.wait_for("the layer download began", WAIT, |s| s.in_flight == 1)
        .await;
    let blobs = b.dir.path().join("root/images/blobs/sha256");
    let partials = || -> Vec<String> {
        std::fs::read_dir(&blobs)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".partial"))
            .collect()
    };
    until("a .partial blob on disk", || !partials().is_empty()).await;
    let mut c = restart(&mut b).await;
    assert!(pull.await.unwrap().is_err(), "the pull died with its berthd");
    let left: Vec<String> = ["snapshots", "meta", "blobs/sha256"]
        .iter()
        .flat_map(|d| {
            std::fs::read_dir(b.dir.path().join("root/images").join(d))
                .into_iter()
                .flatten()
                .flatten()
                .map(move |e| format!("{d}/{}", e.file_name().to_string_lossy()))
        })
        .collect();
    assert!(left.is_empty(), "swept at start: {left:?}");
    assert!(
        b.log().contains("image store: removed what no image references"),
        "{}",
        b.log()
    );
    assert!(c.list_images().await.unwrap().is_empty());
    reg.release(1);
    c.pull(&image).await.expect("the pull after the restart");
}
