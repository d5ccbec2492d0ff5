//! Start-up collection of what no record names: a berthd killed between a
//! side effect and the record (or intent) that names it, or by a path the
//! intents do not cover, leaves it behind, and no CRI call will ever name
//! it. Runs once, before the socket opens, after the intents are undone;
//! every step tolerates "already gone", so it is idempotent.
//!
//! What counts as Berth's is decided by name and place, never guessed: shim
//! sockets live in `<state>/s/` and name the pod by its id's first 16
//! characters; pod cgroups berthd names itself sit under its default parent
//! (`<parent>/<64-hex id>` on cgroupfs, `berth-pod<16 hex>.slice` on
//! systemd); container cgroups sit in their pod's cgroup
//! ([`crate::cgroup::driver::container_id_of`]).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::SandboxManager;
use crate::cgroup::driver::{self, CgroupDriver};
use crate::error::Result;

/// The sandbox a shim socket file name (`<id prefix>.sock`) names, when no
/// known sandbox id starts with it: an orphan to collect.
pub(crate) fn orphan_socket<'a>(file_name: &'a str, known: &HashSet<String>) -> Option<&'a str> {
    let prefix = file_name.strip_suffix(".sock")?;
    if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (!known.iter().any(|id| id.starts_with(prefix))).then_some(prefix)
}

/// Whether a child of the default pod parent is a pod cgroup berthd named
/// for a sandbox it does not know.
pub(crate) fn orphan_pod_cgroup(driver: CgroupDriver, name: &str, known: &HashSet<String>) -> bool {
    match driver {
        CgroupDriver::Cgroupfs | CgroupDriver::Auto => driver::is_id(name) && !known.contains(name),
        CgroupDriver::Systemd => {
            let Some(prefix) = name
                .strip_prefix("berth-pod")
                .and_then(|n| n.strip_suffix(".slice"))
            else {
                return false;
            };
            prefix.len() == 16
                && prefix.bytes().all(|b| b.is_ascii_hexdigit())
                && !known.iter().any(|id| id.starts_with(prefix))
        }
    }
}

/// Pids whose command line has `arg` as one argument.
pub(crate) fn processes_with_arg(arg: &Path) -> Vec<i32> {
    let want = arg.as_os_str().as_encoded_bytes();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    rd.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmd| cmd.split(|b| *b == 0).any(|a| a == want))
        })
        .collect()
}

impl SandboxManager {
    /// Kills shims serving sockets of unknown pods, removes those sockets,
    /// the pod cgroups under the default parent that no record names and
    /// the other driver's unused shim cgroup.
    /// Returns how many things it collected.
    pub(crate) fn collect_unnamed(&self, known: &HashSet<String>) -> Result<usize> {
        let mut n = 0;
        let sockets: PathBuf = self
            .cfg
            .shim_socket("x")
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        for e in std::fs::read_dir(&sockets).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if orphan_socket(&name, known).is_none() {
                continue;
            }
            for pid in processes_with_arg(&e.path()) {
                // A process whose command line names a shim socket of a pod
                // no record names: an orphaned shim.
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
                tracing::warn!(pid, socket = %e.path().display(), "killed the shim of a pod no record names");
            }
            let _ = std::fs::remove_file(e.path());
            n += 1;
        }
        // After a switch from cgroupfs; kept while a live pod's shim is in it.
        if self.cfg.cgroup_driver == CgroupDriver::Systemd
            && super::shim_cgroup::remove_unused_sibling(&self.cgroups)?
        {
            n += 1;
        }
        let parent_path = match self.cfg.cgroup_driver {
            CgroupDriver::Cgroupfs | CgroupDriver::Auto => self.cfg.default_cgroup_parent.clone(),
            CgroupDriver::Systemd => driver::pod_path(CgroupDriver::Systemd, "", &"0".repeat(64), "")?
                .rsplit_once('/')
                .map(|(p, _)| p.to_string())
                .unwrap_or_default(),
        };
        if parent_path.trim_matches('/').is_empty() {
            return Ok(n);
        }
        let parent = self.cgroups.dir(&parent_path);
        for e in std::fs::read_dir(&parent).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !e.path().is_dir() || !orphan_pod_cgroup(self.cfg.cgroup_driver, &name, known) {
                continue;
            }
            self.cgroups.remove(&e.path())?;
            tracing::warn!(cgroup = %e.path().display(), "removed a pod cgroup no record names");
            n += 1;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known(ids: &[&str]) -> HashSet<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn sockets_of_unknown_pods_are_orphans() {
        let k = known(&["ab".repeat(32).as_str()]);
        assert_eq!(orphan_socket("abababababababab.sock", &k), None);
        assert_eq!(
            orphan_socket("cdcdcdcdcdcdcdcd.sock", &k),
            Some("cdcdcdcdcdcdcdcd")
        );
        // Not a shim socket's name: never touched.
        assert_eq!(orphan_socket("berth.sock", &k), None);
        assert_eq!(orphan_socket("cdcd.json", &k), None);
    }

    #[test]
    fn only_berth_named_pod_cgroups_are_orphans() {
        let id = "ab".repeat(32);
        let other = "cd".repeat(32);
        let k = known(&[id.as_str()]);
        assert!(!orphan_pod_cgroup(CgroupDriver::Cgroupfs, &id, &k));
        assert!(orphan_pod_cgroup(CgroupDriver::Cgroupfs, &other, &k));
        assert!(!orphan_pod_cgroup(CgroupDriver::Cgroupfs, "kubepods", &k));
        assert!(!orphan_pod_cgroup(CgroupDriver::Cgroupfs, "berth-shims", &k));
        assert!(!orphan_pod_cgroup(
            CgroupDriver::Systemd,
            "berth-podabababababababab.slice",
            &k
        ));
        assert!(orphan_pod_cgroup(
            CgroupDriver::Systemd,
            "berth-podcdcdcdcdcdcdcdcd.slice",
            &k
        ));
        assert!(!orphan_pod_cgroup(CgroupDriver::Systemd, "user.slice", &k));
    }
}
