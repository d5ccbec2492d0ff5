//! berthd's configuration as a node sees it: no config file and no flags on
//! a node laid out as usual.
//!
//! Needs root, cgroup v2, CNI plugins and the loopback registry: runs inside
//! the VM (`hack/vm`). Run with `--test-threads=1`.

use std::path::Path;
use std::time::{Duration, Instant};

use berth_proto::cri;
use berth_tests::*;

/// berthd with no config file and no flags on a node laid out as usual
/// (the VM has /etc/cni/net.d, /opt/cni/bin): the documented defaults
/// (socket /run/berth/berth.sock, root /var/lib/berth, pods under /berth)
/// run a pod end to end and leave nothing behind.
#[tokio::test]
async fn berthd_runs_with_no_config_and_no_flags() {
    use std::process::{Command, Stdio};
    let socket = std::path::Path::new("/run/berth/berth.sock");
    assert!(!socket.exists(), "nothing else uses the defaults");
    let mut berthd = OnNodeDefaults(Some(
        Command::new(bin_dir().join("berthd"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("berthd"),
    ));
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut c = loop {
        if let Ok(mut c) = CriClient::connect(socket).await {
            if c.runtime.version(cri::VersionRequest::default()).await.is_ok() {
                break c;
            }
        }
        assert!(
            Instant::now() < deadline,
            "berthd did not come up on its default socket"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let st = c.runtime_status().await.unwrap();
    let ready: Vec<_> = st
        .status
        .unwrap()
        .conditions
        .iter()
        .map(|c| (c.r#type.clone(), c.status))
        .collect();
    assert!(ready.contains(&("NetworkReady".to_string(), true)), "{ready:?}");
    assert!(ready.contains(&("RuntimeReady".to_string(), true)), "{ready:?}");
    c.pull(&format!("{}/library/busybox:latest", registry()))
        .await
        .expect("pull");
    let logs = tempfile::tempdir().unwrap();
    let pod = pod_config("defaults", logs.path());
    let sb = c.run_pod(&pod).await.expect("runp");
    assert!(
        std::path::Path::new(&format!("/sys/fs/cgroup/berth/{sb}")).exists(),
        "default parent /berth"
    );
    let cfg = container_config(
        "hello",
        &format!("{}/library/busybox:latest", registry()),
        &["echo", "hi"],
    );
    let id = c.create(&sb, &cfg, &pod).await.unwrap();
    c.start(&id).await.unwrap();
    assert_eq!(
        c.wait_exited(&id, Duration::from_secs(20))
            .await
            .unwrap()
            .exit_code,
        0
    );
    let log = std::fs::read_to_string(logs.path().join("hello.log")).unwrap();
    assert!(log.ends_with(" stdout F hi\n"), "{log}");
    assert!(std::path::Path::new("/var/lib/berth/images").exists());
    c.remove(&id).await.unwrap();
    c.stop_and_remove_pod(&sb).await.unwrap();
    assert!(!std::path::Path::new(&format!("/sys/fs/cgroup/berth/{sb}")).exists());
    assert!(mounts_containing(&sb).is_empty());
    let mut child = berthd.0.take().unwrap();
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success(), "berthd exits cleanly on SIGTERM");
    assert!(!socket.exists(), "and removes its socket");
}

/// berthd on the node's default paths (/run/berth, /var/lib/berth, pods
/// under /berth): whatever the test ends with, berthd is stopped and what
/// it made there is gone, so a later test (or a berthd on the defaults)
/// starts on a clean node.
struct OnNodeDefaults(Option<std::process::Child>);

impl Drop for OnNodeDefaults {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Shims outlive berthd by design: end those of the default state dir.
        for (pid, _) in processes_matching("--socket /run/berth/") {
            // SAFETY: kill(2) on a shim of this test's berthd.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
        let pods = Path::new("/sys/fs/cgroup/berth");
        for pod in std::fs::read_dir(pods).into_iter().flatten().flatten() {
            let _ = std::fs::write(pod.path().join("cgroup.kill"), "1");
        }
        remove_cgroup_tree(pods);
        let mut mounts: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
            .filter(|m| m.starts_with("/run/berth/") || m.starts_with("/var/lib/berth/"))
            .collect();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mounts {
            let _ = nix::mount::umount2(m.as_str(), nix::mount::MntFlags::MNT_DETACH);
        }
        let _ = std::fs::remove_dir_all("/var/lib/berth");
        let _ = std::fs::remove_dir_all("/run/berth");
    }
}

/// rmdir's a cgroup and its children, deepest first (cgroupfs refuses to
/// remove a directory with children or processes).
fn remove_cgroup_tree(dir: &Path) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.path().is_dir() {
            remove_cgroup_tree(&e.path());
        }
    }
    for _ in 0..50 {
        if !dir.exists() || std::fs::remove_dir(dir).is_ok() {
            return;
        }
        // Killed processes leave the cgroup asynchronously.
        std::thread::sleep(Duration::from_millis(100));
    }
}
