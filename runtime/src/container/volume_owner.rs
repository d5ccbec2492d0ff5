//! Which CRI binds of a user-namespaced pod (`hostUsers: false`) are
//! idmapped through the pod's user namespace and which are bound as they
//! are, the contract (docs/user-namespaces.md):
//!
//! - The dirs kubelet fills itself, as node root, under
//!   `<kubelet_root>/pods/<pod-uid>/`: secret, configMap, projected and
//!   downwardAPI volumes, `etc-hosts` and `containers/` (the
//!   termination-log). Their files are the node root's, so they are
//!   idmapped (the node's 0..n are the container's 0..n): root inside
//!   reads a 0600 token and its writes stay the node root's. A filesystem
//!   that cannot be idmapped there (a projected tmpfs on Linux 6.1) is
//!   refused by `idmap_mounts::check`, never bound unmapped.
//! - Everything else (a hostPath, an emptyDir, any other dir): a plain
//!   bind, seen through the pod's range, which is the identity idmapping
//!   of the node's files that the kernel gives every bind for free. The
//!   container's root writes as the pod's first host uid, a node-root
//!   0600 file is nobody's (65534) inside and unreadable, and a tmpfs
//!   hostPath works on any kernel.
//!
//! The host path is the canonical one (`mounts::resolve`) and is compared
//! by path components, so neither a symlink nor `..` can make a hostPath
//! look like one of kubelet's dirs; the pod uid must be one plain path
//! component, or nothing is kubelet's.
//!
//! A chosen bind carries the pod's mappings in `cri::Mount::uid_mappings`
//! / `gid_mappings` from here on; the spec marks exactly those `ridmap`.

use std::ffi::OsStr;
use std::path::{Component, Path, PathBuf};

use berth_proto::cri;

use crate::error::{Error, Result};
use crate::sandbox::userns::{IdMap, PodUserns};

/// Volume plugin dirs under `<pod>/volumes/` whose files kubelet writes
/// itself as node root (atomic writer), so the container needs them
/// idmapped to read them as its root.
const KUBELET_FILLED_VOLUMES: [&str; 4] = [
    "kubernetes.io~secret",
    "kubernetes.io~configmap",
    "kubernetes.io~projected",
    "kubernetes.io~downward-api",
];

/// How one bind of a user-namespaced pod is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binding {
    /// Idmapped through the pod's user namespace (node 0..n = container 0..n).
    Idmapped,
    /// Bound as it is and seen through the pod's range.
    Plain,
}

/// One pod's dir under kubelet's root, canonical; None when the pod uid is
/// not a single plain path component (then no bind is kubelet's).
#[derive(Debug, Clone)]
pub struct KubeletPodDir(Option<PathBuf>);

impl KubeletPodDir {
    /// `<kubelet_root>/pods/<pod_uid>`, with kubelet's root canonicalized
    /// (when it exists) the way the host paths it is compared with are.
    pub fn new(kubelet_root: &Path, pod_uid: &str) -> Self {
        let mut parts = Path::new(pod_uid).components();
        let plain = matches!((parts.next(), parts.next()), (Some(Component::Normal(_)), None))
            && !pod_uid.contains(['/', '\0']);
        if !plain {
            return KubeletPodDir(None);
        }
        let root = std::fs::canonicalize(kubelet_root).unwrap_or_else(|_| kubelet_root.to_path_buf());
        KubeletPodDir(Some(root.join("pods").join(pod_uid)))
    }

    /// How the canonical `host_path` is bound.
    pub fn classify(&self, host_path: &Path) -> Binding {
        let Some(dir) = &self.0 else {
            return Binding::Plain;
        };
        let Ok(rest) = host_path.strip_prefix(dir) else {
            return Binding::Plain;
        };
        let mut parts: Vec<&OsStr> = Vec::new();
        for c in rest.components() {
            match c {
                Component::Normal(p) => parts.push(p),
                // Not canonical after all: trust nothing of it.
                _ => return Binding::Plain,
            }
        }
        let is = |p: &OsStr, s: &str| p == OsStr::new(s);
        match parts.as_slice() {
            [f] if is(f, "etc-hosts") => Binding::Idmapped,
            [c, _, ..] if is(c, "containers") => Binding::Idmapped,
            [v, kind, _, ..] if is(v, "volumes") && KUBELET_FILLED_VOLUMES.iter().any(|k| is(kind, k)) => {
                Binding::Idmapped
            }
            _ => Binding::Plain,
        }
    }
}

/// The CRI form of one of the pod's ranges.
fn cri_range(m: IdMap) -> cri::IdMapping {
    cri::IdMapping {
        host_id: m.host_id,
        container_id: m.container_id,
        length: m.length,
    }
}

/// A mount's own `uid_mappings`/`gid_mappings`: none, or exactly its pod's
/// (the only idmapping Berth makes); anything else is InvalidArgument,
/// checked before any host path is created.
pub fn check_requested(m: &cri::Mount, pod: Option<&PodUserns>) -> Result<()> {
    if m.uid_mappings.is_empty() && m.gid_mappings.is_empty() {
        return Ok(());
    }
    let Some(p) = pod else {
        return Err(Error::InvalidArgument(format!(
            "mount {:?}: uid/gid mappings need a pod with a user namespace of its own (hostUsers: false)",
            m.container_path
        )));
    };
    if m.uid_mappings == [cri_range(p.uid)] && m.gid_mappings == [cri_range(p.gid)] {
        return Ok(());
    }
    Err(Error::InvalidArgument(format!(
        "mount {:?}: uid mappings {} and gid mappings {} differ from the pod's user namespace \
         (uid {}, gid {}); a mount can only be idmapped through its pod's",
        m.container_path,
        describe(&m.uid_mappings),
        describe(&m.gid_mappings),
        describe(&[cri_range(p.uid)]),
        describe(&[cri_range(p.gid)]),
    )))
}

fn describe(maps: &[cri::IdMapping]) -> String {
    if maps.is_empty() {
        return "none".into();
    }
    maps.iter()
        .map(|m| format!("{}:{}:{}", m.container_id, m.host_id, m.length))
        .collect::<Vec<_>>()
        .join(",")
}

/// The resolved CRI binds of a pod, each carrying the pod's mappings when
/// it is to be idmapped (asked for explicitly, already checked by
/// [`check_requested`], or one of kubelet's own dirs) and none otherwise.
pub fn assign(mounts: Vec<cri::Mount>, pod: Option<&PodUserns>, dir: &KubeletPodDir) -> Vec<cri::Mount> {
    mounts
        .into_iter()
        .map(|m| {
            let idmapped = pod.is_some()
                && (!m.uid_mappings.is_empty() || dir.classify(Path::new(&m.host_path)) == Binding::Idmapped);
            set(m, pod.filter(|_| idmapped))
        })
        .collect()
}

/// `m` with the pod's mappings (Berth's own binds of a user-namespaced
/// pod: image VOLUME dirs and image volumes, owned like the rootfs), or
/// with none.
pub fn set(mut m: cri::Mount, pod: Option<&PodUserns>) -> cri::Mount {
    match pod {
        Some(p) => {
            m.uid_mappings = vec![cri_range(p.uid)];
            m.gid_mappings = vec![cri_range(p.gid)];
        }
        None => {
            m.uid_mappings.clear();
            m.gid_mappings.clear();
        }
    }
    m
}

/// Whether `m` is to be idmapped through its pod's user namespace.
pub fn is_idmapped(m: &cri::Mount) -> bool {
    !m.uid_mappings.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> PodUserns {
        let r = |host_id| IdMap {
            container_id: 0,
            host_id,
            length: 65536,
        };
        PodUserns {
            uid: r(65536),
            gid: r(2 * 65536),
        }
    }

    fn dir() -> KubeletPodDir {
        KubeletPodDir::new(Path::new("/nonexistent/kubelet"), "uid-1")
    }

    #[test]
    fn kubelets_own_dirs_are_idmapped() {
        let d = dir();
        for p in [
            "/nonexistent/kubelet/pods/uid-1/etc-hosts",
            "/nonexistent/kubelet/pods/uid-1/containers/app/0",
            "/nonexistent/kubelet/pods/uid-1/volumes/kubernetes.io~secret/tok",
            "/nonexistent/kubelet/pods/uid-1/volumes/kubernetes.io~configmap/cfg/sub",
            "/nonexistent/kubelet/pods/uid-1/volumes/kubernetes.io~projected/kube-api-access-x",
            "/nonexistent/kubelet/pods/uid-1/volumes/kubernetes.io~downward-api/info",
        ] {
            assert_eq!(d.classify(Path::new(p)), Binding::Idmapped, "{p}");
        }
    }

    #[test]
    fn everything_else_is_plain() {
        let d = dir();
        for p in [
            "/srv/data",
            "/nonexistent/kubelet",
            "/nonexistent/kubelet/pods/uid-1",
            "/nonexistent/kubelet/pods/uid-1/volumes",
            "/nonexistent/kubelet/pods/uid-1/volumes/kubernetes.io~secret",
            "/nonexistent/kubelet/pods/uid-1/volumes/kubernetes.io~empty-dir/cache",
            "/nonexistent/kubelet/pods/uid-1/volumes/kubernetes.io~csi/pv/mount",
            "/nonexistent/kubelet/pods/uid-1/volume-subpaths/tok/app/0",
            "/nonexistent/kubelet/pods/uid-1/containers",
            "/nonexistent/kubelet/pods/uid-2/volumes/kubernetes.io~secret/tok",
            // String prefixes that are not path prefixes.
            "/nonexistent/kubelet/pods/uid-10/etc-hosts",
            "/nonexistent/kubeletx/pods/uid-1/etc-hosts",
            // Not canonical: a `..` is never taken as kubelet's.
            "/nonexistent/kubelet/pods/uid-1/volumes/kubernetes.io~secret/../../../../../srv",
            "/nonexistent/kubelet/pods/uid-1/containers/../../../../srv",
        ] {
            assert_eq!(d.classify(Path::new(p)), Binding::Plain, "{p}");
        }
    }

    #[test]
    fn a_pod_uid_that_is_not_one_component_owns_nothing() {
        for uid in ["", ".", "..", "a/b", "../uid-1", "/", "x\0"] {
            let d = KubeletPodDir::new(Path::new("/nonexistent/kubelet"), uid);
            for p in [
                "/nonexistent/kubelet/pods/uid-1/etc-hosts",
                "/nonexistent/kubelet/etc-hosts",
                "/nonexistent/kubelet/pods/a/b/etc-hosts",
            ] {
                assert_eq!(d.classify(Path::new(p)), Binding::Plain, "{uid:?} {p}");
            }
        }
    }

    #[test]
    fn kubelets_root_is_compared_canonical() {
        let tmp = tempfile::tempdir().unwrap();
        let real = tmp.path().join("real");
        std::fs::create_dir(&real).unwrap();
        std::os::unix::fs::symlink(&real, tmp.path().join("link")).unwrap();
        let d = KubeletPodDir::new(&tmp.path().join("link"), "u");
        let canonical = std::fs::canonicalize(&real).unwrap();
        assert_eq!(d.classify(&canonical.join("pods/u/etc-hosts")), Binding::Idmapped);
    }

    fn mount(host: &str) -> cri::Mount {
        cri::Mount {
            container_path: "/v".into(),
            host_path: host.into(),
            ..Default::default()
        }
    }

    #[test]
    fn requested_mappings_must_be_the_pods() {
        let p = pod();
        let mut m = mount("/srv");
        check_requested(&m, Some(&p)).unwrap();
        check_requested(&m, None).unwrap();
        m = set(m, Some(&p));
        check_requested(&m, Some(&p)).unwrap();
        let e = check_requested(&m, None).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        for (uids, gids) in [
            (vec![cri_range(p.uid)], vec![]),
            (vec![], vec![cri_range(p.gid)]),
            (vec![cri_range(p.gid)], vec![cri_range(p.uid)]),
            (vec![cri_range(p.uid), cri_range(p.uid)], vec![cri_range(p.gid)]),
        ] {
            m.uid_mappings = uids;
            m.gid_mappings = gids;
            let e = check_requested(&m, Some(&p)).unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");
            assert!(e.to_string().contains("\"/v\""), "{e}");
        }
    }

    #[test]
    fn only_kubelets_dirs_and_explicit_requests_get_the_pods_mappings() {
        let p = pod();
        let d = dir();
        let asked = set(mount("/srv/asked"), Some(&p));
        let out = assign(
            vec![
                mount("/srv/host"),
                mount("/nonexistent/kubelet/pods/uid-1/etc-hosts"),
                asked,
            ],
            Some(&p),
            &d,
        );
        let idmapped: Vec<bool> = out.iter().map(is_idmapped).collect();
        assert_eq!(idmapped, [false, true, true]);
        assert_eq!(out[1].uid_mappings, [cri_range(p.uid)]);
        assert_eq!(out[1].gid_mappings, [cri_range(p.gid)]);
        let out = assign(vec![mount("/nonexistent/kubelet/pods/uid-1/etc-hosts")], None, &d);
        assert!(!is_idmapped(&out[0]));
    }
}
