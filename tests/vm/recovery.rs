//! What berthd finds after a crash, through a real restart (SIGKILL, then a
//! new berthd on the same root and state), as README promises: a shim that
//! dies after the restart is noticed through a pidfd; a sandbox's state dir
//! with no record (berthd stopped inside RunPodSandbox) is swept with its
//! mounts; a pull killed mid-download leaves nothing once berthd is back;
//! running containers survive a kill -9 of berthd and are adopted again.
//!
//! Runs inside the VM (`hack/vm`), with `--test-threads=1`. Every test name
//! starts with `recovery`, so `BERTH_VM_FILTER=recovery` runs this suite.

use std::path::Path;
use std::time::{Duration, Instant};

use berth_proto::cri;
use berth_tests::gated_registry::{layer_digests, GatedRegistry};
use berth_tests::node::{assert_nothing_left, status_info};
use berth_tests::*;

fn busybox() -> String {
    format!("{}/library/busybox:latest", registry())
}

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

/// kill -9 of berthd with 5 containers running: they keep running and
/// logging; a restarted berthd lists all of them as running, reports the real
/// exit code of one that exited while it was down, and can stop and remove
/// everything (CNI DEL included) as if it had never gone.
#[tokio::test]
async fn recovery_containers_survive_a_berthd_restart() {
    let (mut b, mut c) = Berthd::start().await.expect("berthd");
    c.pull(&busybox()).await.expect("pull");
    let pod = pod_config("survivor", &b.log_dir());
    let sb = c.run_pod(&pod).await.expect("runp");
    let pod_ip = c.pod_status(&sb).await.unwrap().0.network.unwrap().ip;
    let mut running = Vec::new();
    for i in 0..5 {
        let cfg = container_config(
            &format!("sleeper{i}"),
            &busybox(),
            &["sh", "-c", "while true; do echo tick; sleep 0.2; done"],
        );
        let id = c.create(&sb, &cfg, &pod).await.unwrap();
        c.start(&id).await.unwrap();
        let pid = status_info(&c.status(&id).await.unwrap())["pid"]
            .as_u64()
            .unwrap();
        running.push((id, pid));
    }
    // Exits with 7 once berthd is gone.
    let flag = b.dir.path().join("berthd-is-down");
    let quitter_cfg = {
        let mut cfg = container_config(
            "quitter",
            &busybox(),
            &[
                "sh",
                "-c",
                "while [ ! -e /flag/berthd-is-down ]; do sleep 0.05; done; exit 7",
            ],
        );
        cfg.mounts.push(cri::Mount {
            container_path: "/flag".into(),
            host_path: b.dir.path().to_string_lossy().into_owned(),
            ..Default::default()
        });
        cfg
    };
    let quitter = c.create(&sb, &quitter_cfg, &pod).await.unwrap();
    c.start(&quitter).await.unwrap();
    let created_only = c
        .create(
            &sb,
            &container_config("later", &busybox(), &["echo", "started-after-restart"]),
            &pod,
        )
        .await
        .unwrap();

    let base = b.dir.path().to_string_lossy().into_owned();
    let shims = processes_matching(&format!("--socket {base}/state/"));
    assert_eq!(shims.len(), 1, "one shim per pod: {shims:?}");
    b.kill_hard();
    drop(c);
    std::fs::write(&flag, "").unwrap();
    let log_path = b.log_dir().join("sleeper0.log");
    let before = std::fs::read_to_string(&log_path).unwrap().lines().count();
    // Waits for the condition (a new line) with a generous deadline, not a
    // fixed sleep.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let after = std::fs::read_to_string(&log_path).unwrap().lines().count();
        if after > before {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "output keeps flowing without berthd ({before} -> {after})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (_, pid) in &running {
        assert!(
            Path::new(&format!("/proc/{pid}")).exists(),
            "container died with berthd"
        );
    }
    assert!(
        Path::new(&format!("/proc/{}", shims[0].0)).exists(),
        "the shim outlives berthd"
    );

    let mut c = b.spawn().await.expect("berthd restarts");
    let list = c
        .runtime
        .list_containers(cri::ListContainersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .containers;
    assert_eq!(list.len(), 7, "{list:?}");
    for (id, pid) in &running {
        let s = c.status(id).await.unwrap();
        assert_eq!(
            s.status.as_ref().unwrap().state,
            cri::ContainerState::ContainerRunning as i32
        );
        assert_eq!(status_info(&s)["pid"].as_u64(), Some(*pid));
        // The identity read from the kernel at start survives the restart.
        let user = s
            .status
            .as_ref()
            .unwrap()
            .user
            .as_ref()
            .and_then(|u| u.linux.clone());
        assert_eq!(
            user.map(|u| (u.uid, u.gid, u.supplemental_groups)),
            Some((0, 0, vec![0]))
        );
    }
    let q = c.wait_exited(&quitter, Duration::from_secs(10)).await.unwrap();
    assert_eq!(
        (q.exit_code, q.reason.as_str()),
        (7, "Error"),
        "real exit status kept by the shim"
    );
    let pst = c.pod_status(&sb).await.unwrap().0;
    assert_eq!(pst.state, cri::PodSandboxState::SandboxReady as i32);
    assert_eq!(pst.network.unwrap().ip, pod_ip);
    // A container created before the restart still starts.
    c.start(&created_only).await.expect("start after restart");
    let s = c
        .wait_exited(&created_only, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(s.exit_code, 0);
    assert!(std::fs::read_to_string(b.log_dir().join("later.log"))
        .unwrap()
        .contains("started-after-restart"));
    // Stopping works through the reconnected shim.
    c.stop(&running[0].0, 1).await.unwrap();
    assert_eq!(
        c.status(&running[0].0).await.unwrap().status.unwrap().exit_code,
        137
    );

    c.stop_and_remove_pod(&sb)
        .await
        .expect("stop+remove after restart");
    assert_nothing_left(&b, &format!("{}/{sb}", b.cgroup_parent));
}
