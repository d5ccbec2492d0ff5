//! A container's cgroup as the shim uses it: signalling every process in it
//! (Kill with `all`, Delete, Shutdown). berthd creates and configures the
//! cgroup; the shim only finds it and signals it.

use std::path::{Path, PathBuf};

use nix::sys::signal::Signal;
use oci_spec::runtime::Spec;

/// The cgroup directory of a container whose spec names a cgroups path,
/// under `root` (where cgroup v2 is mounted).
pub fn dir(root: &Path, spec: &Spec) -> Option<PathBuf> {
    let p = spec.linux().as_ref()?.cgroups_path().clone()?;
    Some(berth_sys::cgroup::dir(root, &p))
}

/// Sends `sig` to every process in the cgroup `dir`; SIGKILL through
/// `cgroup.kill` where the kernel has it (5.14+), which also reaches
/// processes forked while we signal.
pub fn signal_all(dir: &Path, sig: Signal) -> std::io::Result<()> {
    if sig == Signal::SIGKILL && dir.join("cgroup.kill").exists() {
        return std::fs::write(dir.join("cgroup.kill"), b"1");
    }
    let procs = std::fs::read_to_string(dir.join("cgroup.procs"))?;
    for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec_with_cgroup(path: &str) -> Spec {
        let mut spec = Spec::default();
        let mut linux = spec.linux().clone().unwrap_or_default();
        linux.set_cgroups_path(Some(PathBuf::from(path)));
        spec.set_linux(Some(linux));
        spec
    }

    #[test]
    fn the_cgroup_dir_is_under_the_configured_root() {
        let spec = spec_with_cgroup("/berth/pod1/c1");
        assert_eq!(
            dir(Path::new("/sys/fs/cgroup"), &spec),
            Some(PathBuf::from("/sys/fs/cgroup/berth/pod1/c1"))
        );
        assert_eq!(
            dir(Path::new("/mnt/cg"), &spec_with_cgroup("kubepods/c1")),
            Some(PathBuf::from("/mnt/cg/kubepods/c1"))
        );
        let mut none = Spec::default();
        none.set_linux(None);
        assert_eq!(dir(Path::new("/sys/fs/cgroup"), &none), None);
    }

    #[test]
    fn sigkill_goes_through_cgroup_kill_when_there_is_one() {
        let cg = tempfile::tempdir().unwrap();
        std::fs::write(cg.path().join("cgroup.kill"), "").unwrap();
        // No cgroup.procs: only cgroup.kill may be touched.
        signal_all(cg.path(), Signal::SIGKILL).unwrap();
        assert_eq!(std::fs::read(cg.path().join("cgroup.kill")).unwrap(), b"1");
    }

    #[test]
    fn other_signals_reach_each_listed_process() {
        let cg = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        std::fs::write(cg.path().join("cgroup.kill"), "").unwrap();
        std::fs::write(cg.path().join("cgroup.procs"), format!("{}\n", child.id())).unwrap();
        signal_all(cg.path(), Signal::SIGTERM).unwrap();
        let status = child.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(libc::SIGTERM)
        );
        assert_eq!(
            std::fs::read(cg.path().join("cgroup.kill")).unwrap(),
            b"",
            "not a kill"
        );
    }
}
