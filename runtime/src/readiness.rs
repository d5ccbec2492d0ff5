//! RuntimeReady: whether this node can run a pod right now.
//!
//! Checked on every Status call (kubelet polls it every few seconds) from
//! what each RunPodSandbox needs: writable state directories, a usable
//! cgroup root and an executable shim. A node whose state disk turned
//! read-only or whose shim was removed goes NotReady, saying why, instead
//! of failing pods one by one. Each check is a few syscalls.

use std::path::{Path, PathBuf};

use nix::unistd::{access, AccessFlags};

use crate::cgroup::CgroupManager;
use crate::config::Config;

/// One reason the runtime is not ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// CamelCase reason, as CRI conditions carry it.
    pub reason: &'static str,
    /// What is wrong, with the path involved.
    pub message: String,
}

/// Every problem found; empty when the runtime is ready.
pub fn check(cfg: &Config) -> Vec<Problem> {
    let mut problems = Vec::new();
    for dir in [&cfg.root, &cfg.state] {
        if let Err(message) = dir_writable(dir) {
            problems.push(Problem {
                reason: "StateNotWritable",
                message,
            });
        }
    }
    if let Err(message) = cgroup_root_usable(&cfg.cgroup_root) {
        problems.push(Problem {
            reason: "CgroupRootUnusable",
            message,
        });
    }
    if let Err(message) = shim_executable(&cfg.resolve_shim()) {
        problems.push(Problem {
            reason: "ShimNotExecutable",
            message,
        });
    }
    problems
}

/// Creates, writes and removes a probe file in `dir`: the operations every
/// state record needs. (`access(2)` answers root "yes" whatever the mode
/// bits, and says nothing of a full disk.)
fn dir_writable(dir: &Path) -> Result<(), String> {
    use std::io::Write;
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let probe = dir.join(format!(".ready-probe.{}.{n}", std::process::id()));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
        .and_then(|mut f| f.write_all(b"ok"));
    let removed = std::fs::remove_file(&probe);
    written
        .and(removed)
        .map_err(|e| format!("state directory {} is not writable: {e}", dir.display()))
}

/// The root offers the required controllers and berthd may create cgroups in it.
fn cgroup_root_usable(root: &Path) -> Result<(), String> {
    CgroupManager::new(root).check_host().map_err(|e| e.to_string())?;
    access(root, AccessFlags::W_OK)
        .map_err(|e| format!("cgroup root {} is not writable: {e}", root.display()))
}

/// `path` (searched in `$PATH` when it is a bare name, as spawning does) is
/// a regular file berthd may execute.
fn shim_executable(path: &Path) -> Result<(), String> {
    let found = if path.components().count() == 1 {
        std::env::var_os("PATH")
            .into_iter()
            .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
            .map(|d| d.join(path))
            .find(|p| p.is_file())
    } else {
        Some(PathBuf::from(path))
    };
    let Some(shim) = found else {
        return Err(format!("shim {} is not in $PATH", path.display()));
    };
    match std::fs::metadata(&shim) {
        Ok(m) if m.is_file() => access(&shim, AccessFlags::X_OK)
            .map_err(|e| format!("shim {} is not executable: {e}", shim.display())),
        Ok(_) => Err(format!("shim {} is not a regular file", shim.display())),
        Err(e) => Err(format!("shim {} is missing: {e}", shim.display())),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    /// A config whose every check passes, in a temp dir.
    fn ready(d: &Path) -> Config {
        let (root, state, cg) = (d.join("root"), d.join("state"), d.join("cg"));
        for p in [&root, &state, &cg] {
            std::fs::create_dir(p).unwrap();
        }
        std::fs::write(cg.join("cgroup.controllers"), "cpu memory pids").unwrap();
        let shim = d.join("berth-shim");
        std::fs::write(&shim, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&shim, std::fs::Permissions::from_mode(0o755)).unwrap();
        Config {
            root,
            state,
            cgroup_root: cg,
            shim_path: shim,
            ..Config::default()
        }
    }

    fn reasons(cfg: &Config) -> Vec<&'static str> {
        check(cfg).into_iter().map(|p| p.reason).collect()
    }

    #[test]
    fn a_complete_node_is_ready_and_leaves_no_probe_behind() {
        let d = tempfile::tempdir().unwrap();
        let cfg = ready(d.path());
        assert_eq!(check(&cfg), vec![]);
        assert_eq!(std::fs::read_dir(&cfg.state).unwrap().count(), 0);
        assert_eq!(std::fs::read_dir(&cfg.root).unwrap().count(), 0);
    }

    #[test]
    fn each_missing_piece_is_named() {
        let d = tempfile::tempdir().unwrap();
        let cfg = ready(d.path());

        std::fs::set_permissions(&cfg.shim_path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(reasons(&cfg), ["ShimNotExecutable"]);
        std::fs::remove_file(&cfg.shim_path).unwrap();
        let p = check(&cfg);
        assert!(p[0].message.contains("missing"), "{p:?}");
        let bare = Config {
            shim_path: "no-such-berth-shim-anywhere".into(),
            ..cfg.clone()
        };
        assert!(check(&bare)[0].message.contains("not in $PATH"));

        let again = d.path().join("again");
        std::fs::create_dir(&again).unwrap();
        let cfg = ready(&again);
        std::fs::remove_dir(&cfg.state).unwrap();
        std::fs::write(&cfg.state, "").unwrap();
        let p = check(&cfg);
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].reason, "StateNotWritable");
        assert!(p[0].message.contains(cfg.state.to_str().unwrap()), "{p:?}");

        std::fs::write(cfg.cgroup_root.join("cgroup.controllers"), "cpu").unwrap();
        assert_eq!(reasons(&cfg), ["StateNotWritable", "CgroupRootUnusable"]);
        let p = check(&cfg);
        assert!(p[1].message.contains("memory, pids"), "{p:?}");
    }
}
