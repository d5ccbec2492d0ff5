//! The cgroup every shim runs in: `berth-shims`, a sibling of berthd's own
//! (cgroupfs driver), or the pod's own `berth-shim-<pod>.scope` in its
//! slice (systemd driver, [`open_scope`]).
//!
//! A shim started by berthd would inherit berthd's cgroup, and a service
//! manager stopping berthd (systemd kills its unit's whole cgroup) would
//! then kill every pod on the node. A sibling of berthd's cgroup outlives
//! berthd's unit under both cgroup drivers and is a leaf no controller is
//! delegated below, so cgroup v2's no-internal-process rule never refuses
//! the move (the pod's cgroup would: its containers' cgroups are children
//! with controllers enabled). The shim is born in it (or, on a kernel
//! before 5.7, moves itself there between fork and exec), so neither it nor
//! the pod's PID 1 it starts ever runs in berthd's cgroup.

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

/// A shim's cgroup, opened: its directory (for a clone into it,
/// `CLONE_INTO_CGROUP`) and its `cgroup.procs` (for a child that has to
/// move itself, on a kernel without that).
#[derive(Debug)]
pub struct ShimCgroup {
    /// The cgroup's directory.
    pub dir: File,
    /// Its `cgroup.procs`, open for writing.
    pub procs: File,
}

impl ShimCgroup {
    fn open(dir: &Path) -> Result<Self> {
        let procs = dir.join("cgroup.procs");
        Ok(ShimCgroup {
            dir: File::open(dir).ctx(|| format!("open {}", dir.display()))?,
            procs: std::fs::OpenOptions::new()
                .write(true)
                .open(&procs)
                .ctx(|| format!("open {}", procs.display()))?,
        })
    }
}

/// Creates the shims' cgroup if needed and opens it for the next shim.
pub fn open(cgroups: &CgroupManager) -> Result<ShimCgroup> {
    let dir = cgroups.dir(&path_for(&own_cgroup()?));
    std::fs::create_dir_all(&dir).ctx(|| format!("create shim cgroup {}", dir.display()))?;
    ShimCgroup::open(&dir)
}

/// systemd driver, at start-up: removes the `berth-shims` cgroup a
/// cgroupfs-driver berthd left (an operator switched drivers) when no shim
/// is in it. A shim still there belongs to a live pod, so the cgroup is
/// kept, and the kernel would refuse the rmdir anyway (EBUSY). The reverse
/// switch leaves nothing: systemd drops a `berth-shim-<pod>.scope` itself
/// once its last process exits. Returns whether it removed the cgroup.
pub fn remove_unused_sibling(cgroups: &CgroupManager) -> Result<bool> {
    remove_unused(&cgroups.dir(&path_for(&own_cgroup()?)))
}

fn remove_unused(dir: &Path) -> Result<bool> {
    let procs = match std::fs::read_to_string(dir.join("cgroup.procs")) {
        Ok(p) => p,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !dir.exists() => return Ok(false),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).ctx(|| format!("read {}/cgroup.procs", dir.display())),
    };
    if !procs.trim().is_empty() {
        tracing::info!(cgroup = %dir.display(), "keeping the cgroupfs driver's shim cgroup: live pods' shims run in it");
        return Ok(false);
    }
    match std::fs::remove_dir(dir) {
        Ok(()) => {
            tracing::info!(cgroup = %dir.display(), "removed the cgroupfs driver's unused shim cgroup");
            Ok(true)
        }
        // A shim moved in between the read and the rmdir.
        Err(e) if e.raw_os_error() == Some(nix::libc::EBUSY) => Ok(false),
        Err(e) => Err(e).ctx(|| format!("remove {}", dir.display())),
    }
}

/// systemd driver: starts the shim's scope `berth-shim-<pod>.scope` in
/// the pod's slice (held by a placeholder until the shim is in it; drop
/// the holder then) and opens it.
pub async fn open_scope(
    systemd: &Systemd,
    cgroups: &CgroupManager,
    pod_cgroup_path: &str,
    sandbox_id: &str,
) -> Result<(ShimCgroup, Holder)> {
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
    let cgroup = ShimCgroup::open(&cgroups.dir(pod_cgroup_path).join(&unit))?;
    Ok((cgroup, holder))
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

    #[test]
    fn an_unused_shim_cgroup_goes_and_a_used_one_stays() {
        let tmp = tempfile::tempdir().unwrap();
        let used = tmp.path().join("used");
        std::fs::create_dir(&used).unwrap();
        std::fs::write(used.join("cgroup.procs"), "4242\n").unwrap();
        assert!(!remove_unused(&used).unwrap());
        assert!(
            used.join("cgroup.procs").exists(),
            "a live pod's shim cgroup is never touched"
        );
        let unused = tmp.path().join("unused");
        std::fs::create_dir(&unused).unwrap();
        assert!(remove_unused(&unused).unwrap());
        assert!(!unused.exists());
        assert!(!remove_unused(&unused).unwrap(), "absent: nothing to do");
    }
}
