//! Where cgroup v2 is mounted, and paths below it.

use std::path::{Path, PathBuf};

/// Where cgroup v2 is mounted on a standard node (berthd's `cgroup_root`
/// default; berthd passes its configured root to each shim).
pub const DEFAULT_ROOT: &str = "/sys/fs/cgroup";

/// The directory of the cgroup `path` (absolute in the cgroup hierarchy,
/// as a spec's `cgroupsPath` or `/proc/<pid>/cgroup` write it) under `root`.
pub fn dir(root: &Path, path: &Path) -> PathBuf {
    root.join(path.strip_prefix("/").unwrap_or(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_paths_land_under_the_root() {
        let root = Path::new(DEFAULT_ROOT);
        assert_eq!(
            dir(root, Path::new("/berth/p/c")),
            Path::new("/sys/fs/cgroup/berth/p/c")
        );
        assert_eq!(
            dir(Path::new("/cg"), Path::new("kubepods/c")),
            Path::new("/cg/kubepods/c")
        );
        assert_eq!(dir(root, Path::new("/")), root);
    }
}
