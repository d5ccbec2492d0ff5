//! The cgroup every shim runs in: `berth-shims`, a sibling of berthd's own
//! (cgroupfs driver), or the pod's own `berth-shim-<pod>.scope` in its
//! slice (systemd driver, [`open_scope_procs`]).
//!
//! A shim started by berthd would inherit berthd's cgroup, and a service
//! manager stopping berthd (systemd kills its unit's whole cgroup) would
//! then kill every pod on the node. A sibling of berthd's cgroup outlives
//! berthd's unit under both cgroup drivers and is a leaf no controller is
//! delegated below, so cgroup v2's no-internal-process rule never refuses
//! the move (the pod's cgroup would: its containers' cgroups are children
//! with controllers enabled). The shim moves itself between fork and exec,
//! so neither it nor the pod's PID 1 it starts ever runs in berthd's cgroup.

use std::fs::File;
use std::path::Path;

use crate::cgroup::systemd::{self, holder::Holder, Systemd};
use crate::cgroup::CgroupManager;
use crate::error::{IoContext, Result};

/// Name of the shims' cgroup next to berthd's.
const SHIMS: &str = "berth-shims";

/// The shims' cgroup path below the cgroup2 root, for a berthd in
/// `own` (its `/proc/self/cgroup` path): `/a/berthd.service` gives
/// `/a/berth-shims`; a berthd in the root cgroup gives `/berth-shims`.
pub fn path_for(own: &str) -> String {
    let parent = Path::new(own).parent().unwrap_or(Path::new("/"));
    parent.join(SHIMS).to_string_lossy().into_owned()
}

/// berthd's cgroup v2 path (`0::<path>` in `/proc/self/cgroup`).
fn own_cgroup() -> Result<String> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ctx(|| "read /proc/self/cgroup".into())?;
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .unwrap_or("/")
        .to_string())
}

/// Creates the shims' cgroup if needed and opens its `cgroup.procs` for the
/// next shim to write itself into.
pub fn open_procs(cgroups: &CgroupManager) -> Result<File> {
    let dir = cgroups.dir(&path_for(&own_cgroup()?));
    std::fs::create_dir_all(&dir).ctx(|| format!("create shim cgroup {}", dir.display()))?;
    let procs = dir.join("cgroup.procs");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&procs)
        .ctx(|| format!("open {}", procs.display()))
}

/// systemd driver: starts the shim's scope `berth-shim-<pod>.scope` in
/// the pod's slice (held by a placeholder until the shim has moved itself
/// in; drop the holder then) and opens its `cgroup.procs`.
pub async fn open_scope_procs(
    systemd: &Systemd,
    cgroups: &CgroupManager,
    pod_cgroup_path: &str,
    sandbox_id: &str,
) -> Result<(File, Holder)> {
    let unit = systemd::shim_scope(sandbox_id);
    let holder = Holder::spawn()?;
    systemd
        .start_scope(
            &unit,
            systemd::slice_of(pod_cgroup_path),
            &[holder.pid()],
            vec![("TasksMax", systemd::Value::U64(systemd::properties::INFINITY))],
        )
        .await?;
    let procs = cgroups.dir(pod_cgroup_path).join(&unit).join("cgroup.procs");
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&procs)
        .ctx(|| format!("open {}", procs.display()))?;
    Ok((file, holder))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shims_go_next_to_berthd() {
        assert_eq!(
            path_for("/system.slice/berthd.service"),
            "/system.slice/berth-shims"
        );
        assert_eq!(path_for("/berthd"), "/berth-shims");
        assert_eq!(path_for("/"), "/berth-shims");
    }
}
