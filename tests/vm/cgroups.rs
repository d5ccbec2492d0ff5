//! Pod and container cgroups as kubelet lays them out: a kubelet-style
//! `cgroup_parent` created and shared safely, the systemd driver refusing to
//! start without systemd, and the OOM kill read from the container's cgroup.
//!
//! Needs root, cgroup v2 and the loopback registry: runs inside the VM
//! (`hack/vm`). Run with `--test-threads=1`.

use std::path::Path;
use std::time::Duration;

use berth_proto::cri;
use berth_tests::node::{assert_nothing_left, status_info};
use berth_tests::*;

fn busybox() -> String {
    format!("{}/library/busybox:latest", registry())
}

/// kubelet passes `cgroup_parent` like `/kubepods/besteffort/pod<uid>` whose
/// parents may not exist yet: berthd creates the path with the controllers
/// enabled at every level, and removing one pod never disturbs another pod
/// under the same parent.
#[tokio::test]
async fn kubelet_style_cgroup_parent_is_created_and_shared_safely() {
    let (b, mut c) = Berthd::start().await.expect("berthd");
    c.pull(&busybox()).await.expect("pull");
    let top = format!("{}-kubepods", b.cgroup_parent);
    let cgroot = Path::new("/sys/fs/cgroup");
    let mut pods = Vec::new();
    for name in ["qa", "qb"] {
        let mut pod = pod_config(name, &b.log_dir());
        let parent = format!("{top}/besteffort/pod-{name}");
        pod.linux.as_mut().unwrap().cgroup_parent = parent.clone();
        let sb = c.run_pod(&pod).await.expect("runp");
        let cfg = container_config("app", &busybox(), &["sleep", "3600"]);
        let id = c.create(&sb, &cfg, &pod).await.expect("create");
        c.start(&id).await.expect("start");
        let pid = status_info(&c.status(&id).await.unwrap())["pid"]
            .as_u64()
            .unwrap();
        let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
        assert_eq!(cg.trim(), format!("0::{parent}/{id}"), "container cgroup");
        pods.push((sb, pid, parent));
    }
    for level in [top.clone(), format!("{top}/besteffort")] {
        let dir = cgroot.join(level.trim_start_matches('/'));
        let ctl = std::fs::read_to_string(dir.join("cgroup.subtree_control")).unwrap();
        for want in ["cpu", "memory", "pids"] {
            assert!(
                ctl.split_whitespace().any(|c| c == want),
                "{} lacks {want}: {ctl}",
                dir.display()
            );
        }
    }
    let (sa, _, pa) = &pods[0];
    let (sb_b, pid_b, pb) = &pods[1];
    c.stop_and_remove_pod(sa).await.unwrap();
    assert!(
        !cgroot.join(pa.trim_start_matches('/')).exists(),
        "pod qa's cgroup removed"
    );
    assert!(
        Path::new(&format!("/proc/{pid_b}")).exists(),
        "pod qb's container survives qa's removal"
    );
    assert!(cgroot.join(pb.trim_start_matches('/')).is_dir());
    c.stop_and_remove_pod(sb_b).await.unwrap();
    assert!(
        !cgroot.join(top.trim_start_matches('/')).exists(),
        "parents berthd created are gone with the last pod"
    );
    assert_nothing_left(&b, pb);
}

/// With `cgroup_driver = "systemd"`, kubelet's slice names become the paths
/// systemd would use; pod resources plus overhead limit the pod cgroup.
#[tokio::test]
async fn systemd_slices_and_pod_resources() {
    // The systemd driver talks to systemd over D-Bus (tested in the systemd
    // VM, hack/vm-systemd); this VM has no systemd, so berthd must refuse
    // to start and say why rather than write systemd's tree behind its back.
    let err = Berthd::start_with("cgroup_driver = \"systemd\"\n")
        .await
        .err()
        .expect("berthd started with the systemd driver and no systemd");
    assert!(
        format!("{err:#}").contains("systemd cannot be reached"),
        "unexpected error: {err:#}"
    );
}

/// A container the kernel OOM-kills reports exit 137 and reason OOMKilled
/// (from its cgroup's memory.events), unlike one killed by StopContainer.
#[tokio::test]
async fn oom_killed_containers_say_so() {
    let (b, mut c) = Berthd::start().await.expect("berthd");
    c.pull(&busybox()).await.expect("pull");
    let pod = pod_config("oom", &b.log_dir());
    let sb = c.run_pod(&pod).await.unwrap();
    let mut cfg = container_config(
        "hog",
        &busybox(),
        &["dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"],
    );
    cfg.linux.as_mut().unwrap().resources = Some(cri::LinuxContainerResources {
        memory_limit_in_bytes: 16 << 20,
        ..Default::default()
    });
    let id = c.create(&sb, &cfg, &pod).await.unwrap();
    c.start(&id).await.unwrap();
    let s = c.wait_exited(&id, Duration::from_secs(30)).await.unwrap();
    assert_eq!((s.exit_code, s.reason.as_str()), (137, "OOMKilled"), "{s:?}");
    c.stop_and_remove_pod(&sb).await.unwrap();
}
