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
