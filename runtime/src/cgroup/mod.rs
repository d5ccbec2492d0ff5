//! Pod and container cgroups on cgroup v2 (cgroupfs driver).
//!
//! The manager only touches files below its root, so unit tests hand it a
//! temp dir laid out like a cgroup tree; in production the root is
//! `/sys/fs/cgroup`.

pub mod asked;
pub mod bpf;
pub mod desired;
pub mod detect;
pub mod device_filter;
pub mod device_programs;
pub mod driver;
pub mod files;
pub mod reclaim_estimate;
pub mod resize;
pub mod resources;
pub mod systemd;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use self::device_filter::{DeviceFilterHost, DeviceRule, KernelBpf};
use crate::error::{Error, IoContext, Result};

/// Controllers a node must have for Berth to run pods.
pub const REQUIRED_CONTROLLERS: &[&str] = &["cpu", "memory", "pids"];
/// Controllers enabled for pods when the parent offers them.
pub const OPTIONAL_CONTROLLERS: &[&str] = &["cpuset", "io", "hugetlb"];

/// Creates, checks and removes cgroups below a cgroup2 mount.
#[derive(Debug, Clone)]
pub struct CgroupManager {
    root: PathBuf,
    /// Parent cgroups berthd created on the way to a pod's cgroup (e.g.
    /// `/kubepods/besteffort`). Several pods may share them, so they are
    /// removed when the last pod under them goes, whichever pod created them.
    parents: Arc<Mutex<BTreeSet<PathBuf>>>,
    /// Where `parents` is kept across berthd restarts (none in unit tests).
    registry: Option<PathBuf>,
    /// Loads and attaches device filters (the kernel's bpf(2) in production).
    device_filter: Arc<dyn DeviceFilterHost>,
    /// The systemd driver's D-Bus side (`cgroup_driver = "systemd"`): pod
    /// slices and container and shim scopes are systemd units.
    systemd: Option<systemd::Systemd>,
}

#[derive(serde::Serialize, serde::Deserialize, Default)]
struct ParentRegistry {
    parents: BTreeSet<PathBuf>,
}

impl CgroupManager {
    /// A manager for the cgroup2 tree mounted at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        CgroupManager {
            root: root.into(),
            parents: Arc::default(),
            registry: None,
            device_filter: Arc::new(KernelBpf::default()),
            systemd: None,
        }
    }

    /// Makes pod, container and shim cgroups systemd units created through
    /// `systemd` (the systemd cgroup driver).
    pub fn with_systemd(mut self, systemd: systemd::Systemd) -> Self {
        self.systemd = Some(systemd);
        self
    }

    /// The systemd driver, when cgroups are systemd units.
    pub fn systemd(&self) -> Option<&systemd::Systemd> {
        self.systemd.as_ref()
    }

    /// Uses `host` instead of the kernel to attach device filters (tests
    /// record the programs instead of needing root).
    #[cfg(test)]
    pub fn with_device_filter_host(mut self, host: Arc<dyn DeviceFilterHost>) -> Self {
        self.device_filter = host;
        self
    }

    /// Restricts the devices processes in cgroup `path` may create and open
    /// to `rules` (default deny). The filter goes when the cgroup goes.
    pub fn install_device_filter(&self, path: &str, rules: &[DeviceRule]) -> Result<()> {
        let program = device_filter::program(rules)?;
        self.device_filter.attach(&self.dir(path), &program)
    }

    /// Keeps the set of created parents in the record file `path`.
    pub fn with_registry(mut self, path: PathBuf) -> Result<Self> {
        if path.exists() {
            let r: ParentRegistry = crate::store::read_record(&path)?;
            *self.parents.lock() = r.parents;
        }
        self.registry = Some(path);
        Ok(self)
    }

    fn save_parents(&self, parents: &BTreeSet<PathBuf>) -> Result<()> {
        match &self.registry {
            Some(p) => crate::store::write_record(
                p,
                &ParentRegistry {
                    parents: parents.clone(),
                },
            ),
            None => Ok(()),
        }
    }

    /// The directory of cgroup `path` (`/kubepods/pod1` -> `<root>/kubepods/pod1`).
    pub fn dir(&self, path: &str) -> PathBuf {
        self.root.join(path.trim_start_matches('/'))
    }

    /// Startup check: a cgroup v2 root offering the required controllers.
    /// The error says exactly what is missing.
    pub fn check_host(&self) -> Result<()> {
        let ctl = self.root.join("cgroup.controllers");
        let text = std::fs::read_to_string(&ctl).map_err(|_| {
            Error::FailedPrecondition(format!(
                "no cgroup v2 at {} ({} is missing): berth needs the unified hierarchy \
                 (boot with systemd.unified_cgroup_hierarchy=1 or mount -t cgroup2 none {})",
                self.root.display(),
                ctl.display(),
                self.root.display()
            ))
        })?;
        let have: Vec<&str> = text.split_whitespace().collect();
        let missing: Vec<&str> = REQUIRED_CONTROLLERS
            .iter()
            .copied()
            .filter(|c| !have.contains(c))
            .collect();
        if !missing.is_empty() {
            return Err(Error::FailedPrecondition(format!(
                "cgroup v2 at {} lacks controller(s) {} (has: {})",
                self.root.display(),
                missing.join(", "),
                text.trim()
            )));
        }
        Ok(())
    }

    /// Startup check: this cgroup v2 has `cgroup.kill` (Linux 5.14), which
    /// berthd uses to kill a pod's every process at once. Only non-root
    /// cgroups carry the file, so it looks in an existing child cgroup, or
    /// in a probe child it creates and removes when the root has none.
    pub fn check_kill(&self) -> Result<()> {
        let missing = |dir: &Path| {
            Error::FailedPrecondition(format!(
                "cgroup v2 at {} has no cgroup.kill (in {}): berth needs Linux 5.14 or later",
                self.root.display(),
                dir.display()
            ))
        };
        let child = std::fs::read_dir(&self.root)
            .ctx(|| format!("read {}", self.root.display()))?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .find(|p| p.join("cgroup.controllers").is_file());
        if let Some(child) = child {
            if child.join("cgroup.kill").exists() {
                return Ok(());
            }
            return Err(missing(&child));
        }
        let probe = self.root.join(format!("berth-probe-{}", std::process::id()));
        std::fs::create_dir(&probe).ctx(|| format!("create probe cgroup {}", probe.display()))?;
        let has_kill = probe.join("cgroup.kill").exists();
        std::fs::remove_dir(&probe).ctx(|| format!("remove probe cgroup {}", probe.display()))?;
        if has_kill {
            Ok(())
        } else {
            Err(missing(&probe))
        }
    }

    /// Creates `path` and any missing parents, enabling the pod controllers in
    /// each parent's `cgroup.subtree_control` on the way down. Returns the
    /// directories it created, deepest last, so a caller can undo exactly them.
    pub fn ensure(&self, path: &str) -> Result<Vec<PathBuf>> {
        let rel = path.trim_start_matches('/');
        if rel.is_empty() || rel.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
            return Err(Error::InvalidArgument(format!("bad cgroup path {path:?}")));
        }
        let mut created = Vec::new();
        let mut parent = self.root.clone();
        for comp in rel.split('/') {
            self.enable_controllers(&parent)?;
            let child = parent.join(comp);
            match std::fs::create_dir(&child) {
                Ok(()) => created.push(child.clone()),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(Error::io(format!("create cgroup {}", child.display()), e)),
            }
            parent = child;
        }
        if created.len() > 1 {
            let mut parents = self.parents.lock();
            parents.extend(created[..created.len() - 1].iter().cloned());
            self.save_parents(&parents)?;
        }
        Ok(created)
    }

    /// Makes `dir`'s children get the pod controllers.
    fn enable_controllers(&self, dir: &Path) -> Result<()> {
        let offered = std::fs::read_to_string(dir.join("cgroup.controllers"))
            .ctx(|| format!("read {}/cgroup.controllers", dir.display()))?;
        let offered: Vec<&str> = offered.split_whitespace().collect();
        if let Some(m) = REQUIRED_CONTROLLERS.iter().find(|c| !offered.contains(c)) {
            return Err(Error::FailedPrecondition(format!(
                "cgroup {} does not offer the {m} controller",
                dir.display()
            )));
        }
        let current = std::fs::read_to_string(dir.join("cgroup.subtree_control")).unwrap_or_default();
        let enabled: Vec<&str> = current.split_whitespace().collect();
        let want: Vec<String> = REQUIRED_CONTROLLERS
            .iter()
            .chain(OPTIONAL_CONTROLLERS)
            .filter(|c| offered.contains(c) && !enabled.contains(c))
            .map(|c| format!("+{c}"))
            .collect();
        if want.is_empty() {
            return Ok(());
        }
        std::fs::write(dir.join("cgroup.subtree_control"), want.join(" ")).ctx(|| {
            format!(
                "enable {} in {}/cgroup.subtree_control",
                want.join(" "),
                dir.display()
            )
        })
    }

    /// Removes a cgroup directory and the cgroups below it; a missing one is
    /// fine. Processes still inside are killed with `cgroup.kill`. Children
    /// go first: rmdir of a cgroup that has a child fails with EBUSY however
    /// often its processes are killed (a container cgroup left by a
    /// CreateContainer berthd did not finish made RemovePodSandbox fail
    /// forever).
    pub fn remove(&self, dir: &Path) -> Result<()> {
        if !dir.starts_with(&self.root) || dir == self.root {
            return Err(Error::Internal(format!(
                "refusing to remove cgroup {} outside {}",
                dir.display(),
                self.root.display()
            )));
        }
        self.remove_children_where(dir, |_| true)?;
        for attempt in 0..50 {
            match std::fs::remove_dir(dir) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) && attempt < 49 => {
                    let _ = std::fs::write(dir.join("cgroup.kill"), b"1");
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(e) => return Err(Error::io(format!("remove cgroup {}", dir.display()), e)),
            }
        }
        Ok(())
    }
}

impl CgroupManager {
    /// Removes the child cgroups of `dir` whose names `pred` accepts (with
    /// everything below them).
    pub fn remove_children_where(&self, dir: &Path, pred: impl Fn(&str) -> bool) -> Result<()> {
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io(format!("read cgroup {}", dir.display()), e)),
        };
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) && pred(&e.file_name().to_string_lossy()) {
                self.remove(&e.path())?;
            }
        }
        Ok(())
    }

    /// Undoes `ensure`: the leaf (the pod's own cgroup) is emptied and removed
    /// if `ensure` created it; then parent cgroups berthd created (for this or
    /// any other pod) are removed once nothing uses them. A parent still in
    /// use is kept: other pods live under the same `/kubepods/...` and must
    /// never be touched on this one's behalf.
    pub fn remove_created(&self, created: &[PathBuf], leaf: &Path) -> Result<()> {
        if created.iter().any(|d| d == leaf) {
            self.remove(leaf)?;
        }
        let mut parents = self.parents.lock();
        let before = parents.len();
        let mut dir = leaf.parent();
        while let Some(d) = dir {
            if d == self.root || !d.starts_with(&self.root) || !parents.contains(d) {
                break;
            }
            match std::fs::remove_dir(d) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::EBUSY) | Some(libc::ENOTEMPTY)) => {
                    tracing::debug!(cgroup = %d.display(), "parent cgroup still in use; kept");
                    break;
                }
                Err(e) => return Err(Error::io(format!("remove cgroup {}", d.display()), e)),
            }
            parents.remove(d);
            dir = d.parent();
        }
        if parents.len() != before {
            self.save_parents(&parents)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_root(controllers: &str) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("cgroup.controllers"), controllers).unwrap();
        std::fs::write(d.path().join("cgroup.subtree_control"), "").unwrap();
        d
    }

    #[test]
    fn remove_created_keeps_parents_in_use() {
        let d = tempfile::tempdir().unwrap();
        let reg = d.path().join("registry.json");
        let root = d.path().join("cg");
        let m = CgroupManager::new(&root).with_registry(reg.clone()).unwrap();
        let besteffort = root.join("kubepods/besteffort");
        // Stand-ins for what ensure() does on cgroupfs (files appear by
        // themselves there): pod A created both parents, pod B only its leaf.
        for p in ["podA", "podB"] {
            std::fs::create_dir_all(besteffort.join(p)).unwrap();
        }
        let a = vec![root.join("kubepods"), besteffort.clone(), besteffort.join("podA")];
        {
            let mut p = m.parents.lock();
            p.extend(a[..2].iter().cloned());
            m.save_parents(&p).unwrap();
        }
        let b = vec![besteffort.join("podB")];

        // rmdir of a parent with children fails (ENOTEMPTY here, EBUSY on cgroupfs).
        m.remove_created(&a, &a[2]).unwrap();
        assert!(!besteffort.join("podA").exists());
        assert!(besteffort.join("podB").is_dir(), "podB untouched");
        assert!(
            !besteffort.join("cgroup.kill").exists(),
            "a shared parent is never killed"
        );
        // The last pod out removes the parents, though another pod created them.
        let again = CgroupManager::new(&root).with_registry(reg).unwrap();
        again.remove_created(&b, &b[0]).unwrap();
        assert!(!root.join("kubepods").exists());
        assert!(root.is_dir(), "never above the parents berthd made");
        assert!(again.parents.lock().is_empty());
    }

    #[test]
    fn check_host_names_missing_controllers() {
        let d = fake_root("cpuset cpu io");
        let err = CgroupManager::new(d.path()).check_host().unwrap_err().to_string();
        assert!(err.contains("memory, pids"), "{err}");
        let d = fake_root("cpuset cpu io memory hugetlb pids");
        CgroupManager::new(d.path()).check_host().unwrap();
        let empty = tempfile::tempdir().unwrap();
        let err = CgroupManager::new(empty.path())
            .check_host()
            .unwrap_err()
            .to_string();
        assert!(err.contains("no cgroup v2"), "{err}");
    }

    #[test]
    fn check_kill_looks_in_a_child_cgroup() {
        let d = fake_root("cpu memory pids");
        let m = CgroupManager::new(d.path());
        // No child cgroup: a probe child is made (a plain directory here, so
        // no cgroup.kill) and removed again.
        let err = m.check_kill().unwrap_err().to_string();
        assert!(
            err.contains("has no cgroup.kill") && err.contains("5.14"),
            "{err}"
        );
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 2, "probe removed");
        // A child cgroup without the file (a pre-5.14 kernel), then with it.
        let child = d.path().join("init.scope");
        std::fs::create_dir(&child).unwrap();
        std::fs::write(child.join("cgroup.controllers"), "cpu").unwrap();
        let err = m.check_kill().unwrap_err().to_string();
        assert!(err.contains(child.to_str().unwrap()), "{err}");
        std::fs::write(child.join("cgroup.kill"), "").unwrap();
        m.check_kill().unwrap();
    }

    #[test]
    fn ensure_creates_path_and_enables_controllers() {
        let d = fake_root("cpuset cpu io memory pids");
        let m = CgroupManager::new(d.path());
        // A real cgroupfs fills these in on mkdir; the fake needs them up front.
        let kube = d.path().join("kubepods");
        std::fs::create_dir(&kube).unwrap();
        std::fs::write(kube.join("cgroup.controllers"), "cpuset cpu io memory pids").unwrap();
        let created = m.ensure("/kubepods/pod1").unwrap();
        assert_eq!(created, vec![kube.join("pod1")]);
        let top = std::fs::read_to_string(d.path().join("cgroup.subtree_control")).unwrap();
        assert_eq!(top, "+cpu +memory +pids +cpuset +io");
        let mid = std::fs::read_to_string(kube.join("cgroup.subtree_control")).unwrap();
        assert_eq!(mid, "+cpu +memory +pids +cpuset +io");
        // Idempotent.
        assert!(m.ensure("/kubepods/pod1").unwrap().is_empty());
    }

    #[test]
    fn ensure_rejects_bad_paths_and_missing_controllers() {
        let d = fake_root("cpu pids");
        let m = CgroupManager::new(d.path());
        assert!(matches!(m.ensure("/../etc"), Err(Error::InvalidArgument(_))));
        assert!(matches!(m.ensure("/"), Err(Error::InvalidArgument(_))));
        let err = m.ensure("/berth/x").unwrap_err().to_string();
        assert!(err.contains("memory"), "{err}");
        assert!(!d.path().join("berth").exists(), "nothing created on failure");
    }

    #[derive(Debug, Default)]
    struct RecordingFilter(Mutex<Vec<(PathBuf, usize)>>);

    impl DeviceFilterHost for RecordingFilter {
        fn attach(&self, cgroup: &Path, program: &[bpf::Insn]) -> Result<()> {
            self.0.lock().push((cgroup.to_path_buf(), program.len()));
            Ok(())
        }
    }

    #[test]
    fn device_filter_goes_to_the_container_cgroup() {
        let d = fake_root("cpu memory pids");
        let rec = Arc::new(RecordingFilter::default());
        let m = CgroupManager::new(d.path()).with_device_filter_host(rec.clone());
        let rules = device_filter::default_rules();
        m.install_device_filter("/berth/pod/c1", &rules).unwrap();
        let calls = rec.0.lock().clone();
        assert_eq!(
            calls,
            vec![(
                d.path().join("berth/pod/c1"),
                device_filter::program(&rules).unwrap().len()
            )]
        );
    }

    #[test]
    fn remove_is_idempotent() {
        let d = fake_root("cpu memory pids");
        let m = CgroupManager::new(d.path());
        let x = d.path().join("x");
        std::fs::create_dir(&x).unwrap();
        m.remove(&x).unwrap();
        m.remove(&x).unwrap();
        assert!(!x.exists());
    }
}
