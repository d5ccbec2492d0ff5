//! Checks shared by the VM suites: what a container's verbose status says,
//! and that a berthd instance left nothing of itself on the node.

use std::path::Path;

use berth_proto::cri;

use crate::{mounts_containing, processes_matching, Berthd};

/// The `info` JSON of a verbose ContainerStatus.
pub fn status_info(resp: &cri::ContainerStatusResponse) -> serde_json::Value {
    serde_json::from_str(resp.info.get("info").expect("verbose info")).expect("json info")
}

/// Asserts no mount, cgroup, process or pin of this berthd instance remains.
pub fn assert_nothing_left(b: &Berthd, sandbox_cgroup: &str) {
    let base = b.dir.path().to_string_lossy().into_owned();
    let mounts = mounts_containing(&base);
    assert!(mounts.is_empty(), "leftover mounts: {mounts:#?}");
    let cg = Path::new("/sys/fs/cgroup").join(sandbox_cgroup.trim_start_matches('/'));
    assert!(!cg.exists(), "leftover pod cgroup {}", cg.display());
    // Shims are started as `berth-shim serve --id <id> --socket <state>/s/...`.
    let shims = processes_matching(&format!("--socket {base}/state/"));
    assert!(shims.is_empty(), "leftover shim processes: {shims:?}");
    assert_no_orphan_fork_server();
    for dir in ["state/sandboxes", "state/s", "state/containers"] {
        let left: Vec<_> = std::fs::read_dir(b.dir.path().join(dir))
            .map(|r| r.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "leftover {dir}: {left:?}");
    }
    let containers = b.dir.path().join("root/containers");
    let left: Vec<_> = std::fs::read_dir(&containers)
        .map(|r| r.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "leftover container dirs: {left:?}");
}

/// No pod's fork server (`berth-shim zygote`) outlives its shim: each one's
/// parent is a `berth-shim serve`. Waits a little for servers whose shim
/// just exited (the kernel kills them then; /proc shows them until they
/// are gone).
pub fn assert_no_orphan_fork_server() {
    let orphans = || -> Vec<(u32, String)> {
        processes_matching("berth-shim zygote")
            .into_iter()
            .filter(|(pid, _)| {
                let parent = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .ok()
                    .and_then(|s| {
                        let rest = s.get(s.rfind(')')? + 2..)?.to_string();
                        rest.split(' ').nth(1)?.parse::<u32>().ok()
                    });
                // Gone meanwhile: not an orphan.
                parent.is_some_and(|p| {
                    let cmd = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
                    !String::from_utf8_lossy(&cmd).contains("serve")
                })
            })
            .collect()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut left = orphans();
    while !left.is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
        left = orphans();
    }
    assert!(left.is_empty(), "fork servers left without their shim: {left:?}");
}
