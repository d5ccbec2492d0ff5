//! The idmapped binds of a user-namespaced pod (`hostUsers: false`): the
//! ones `volume_owner` chooses (the dirs kubelet fills itself as node root:
//! secret, configMap, projected and downwardAPI volumes, etc-hosts, the
//! termination-log) and Berth's own (image VOLUME dirs, image volumes) are
//! idmapped through the pod's user namespace: the node's ids 0..n are the
//! container's, so root inside reads kubelet's root-owned files and what
//! it writes there stays the node root's. Every other bind (hostPath,
//! emptyDir) is plain, seen through the pod's range (`volume_owner`). The
//! pod's own files and /dev/shm live on the state tmpfs and are chowned
//! instead (`sandbox::userns_pod::own_pod_files`).
//!
//! A bind chosen for idmapping whose filesystem cannot be idmapped (tmpfs
//! before Linux 6.3, NFS) is refused here, before anything of the
//! container exists; binding it unmapped would hand the container root
//! files it cannot read, or make its writes the pod's instead of root's.

use std::os::fd::OwnedFd;
use std::path::Path;

use berth_proto::cri;
use oci_spec::runtime::Mount;

use crate::error::{Error, Result};
use crate::sandbox::userns::PodUserns;

/// Adds runc's `ridmap` option (idmapped through the container's user
/// namespace, submounts included) to a bind mount chosen for idmapping
/// (`volume_owner`); the shim idmaps it (`shim/src/userns.rs`).
pub fn mark(mut m: Mount, idmapped: bool) -> Mount {
    if idmapped {
        let mut opts = m.options().clone().unwrap_or_default();
        opts.push("ridmap".into());
        m.set_options(Some(opts));
    }
    m
}

/// Refuses, with FailedPrecondition naming the container path, the host
/// path and its filesystem, every mount in `mounts` (host paths already
/// resolved) chosen for idmapping (`volume_owner::is_idmapped`) that cannot
/// be idmapped through the pod's pinned user namespace at `user_pin`. Each
/// is tried on a detached clone that is dropped at once: nothing is
/// mounted. Plain binds are not checked: any filesystem can be bound.
pub fn check(mounts: &[cri::Mount], u: Option<&PodUserns>, user_pin: Option<&Path>) -> Result<()> {
    let mounts: Vec<&cri::Mount> = mounts
        .iter()
        .filter(|m| super::volume_owner::is_idmapped(m))
        .collect();
    if u.is_none() || mounts.is_empty() {
        return Ok(());
    }
    let pin = user_pin.ok_or_else(|| Error::Internal("the pod's user namespace is not pinned".into()))?;
    let ns = std::fs::File::open(pin)
        .map(OwnedFd::from)
        .map_err(|e| Error::io(format!("open the pod's user namespace {}", pin.display()), e))?;
    for m in mounts {
        let host = Path::new(&m.host_path);
        if let Err(e) = berth_sys::idmap::idmapped_tree(host, &ns, true) {
            return Err(refusal(m, &e, fs_of(host), &kernel()));
        }
    }
    Ok(())
}

/// The error for mount `m` that failed to idmap with `e`.
fn refusal(m: &cri::Mount, e: &std::io::Error, fs: String, kernel: &str) -> Error {
    match e.raw_os_error() {
        // The filesystem (or one mounted below the path) has no idmap
        // support, or the path is a mount the kernel will not clone.
        Some(libc::EINVAL | libc::EPERM | libc::EOPNOTSUPP) => Error::FailedPrecondition(format!(
            "mount {}: {} is on {fs}, which cannot be idmapped for the pod's user namespace \
             (hostUsers: false) on kernel {kernel}: {e}",
            m.container_path, m.host_path
        )),
        _ => Error::io(
            format!("idmap {} for mount {}", m.host_path, m.container_path),
            std::io::Error::new(e.kind(), e.to_string()),
        ),
    }
}

/// The filesystem holding `p`, by name.
fn fs_of(p: &Path) -> String {
    use crate::sandbox::userns_probe::{fs_name, ProbeHost, RealProbe};
    match RealProbe.fs_magic(p) {
        Ok(magic) => fs_name(magic),
        Err(e) => format!("an unknown filesystem ({e})"),
    }
}

fn kernel() -> String {
    use crate::sandbox::userns_probe::{ProbeHost, RealProbe};
    RealProbe
        .kernel_release()
        .unwrap_or_else(|e| format!("unknown ({e})"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::userns::IdMap;

    fn pod() -> PodUserns {
        let m = IdMap {
            container_id: 0,
            host_id: 65536,
            length: 65536,
        };
        PodUserns { uid: m, gid: m }
    }

    fn bind() -> Mount {
        oci_spec::runtime::MountBuilder::default()
            .destination("/v")
            .typ("bind")
            .source("/h")
            .options(vec!["rbind".to_string(), "rw".to_string()])
            .build()
            .unwrap()
    }

    #[test]
    fn only_binds_chosen_for_idmapping_are_marked() {
        assert_eq!(mark(bind(), false).options().as_deref().unwrap(), ["rbind", "rw"]);
        assert_eq!(
            mark(bind(), true).options().as_deref().unwrap(),
            ["rbind", "rw", "ridmap"]
        );
    }

    #[test]
    fn only_idmapped_binds_of_a_user_namespaced_pod_are_checked() {
        let plain = cri::Mount {
            container_path: "/v".into(),
            host_path: "/nonexistent".into(),
            ..Default::default()
        };
        check(std::slice::from_ref(&plain), None, None).unwrap();
        check(&[], Some(&pod()), None).unwrap();
        check(std::slice::from_ref(&plain), Some(&pod()), None).unwrap();
        let m = super::super::volume_owner::set(plain, Some(&pod()));
        check(std::slice::from_ref(&m), None, None).unwrap();
        let e = check(&[m], Some(&pod()), None).unwrap_err();
        assert!(matches!(e, Error::Internal(_)), "{e:?}");
    }

    #[test]
    fn an_unidmappable_filesystem_is_a_failed_precondition_naming_it() {
        let m = cri::Mount {
            container_path: "/vol".into(),
            host_path: "/srv/vol".into(),
            ..Default::default()
        };
        let e = refusal(
            &m,
            &std::io::Error::from_raw_os_error(libc::EINVAL),
            "tmpfs".into(),
            "6.1.0",
        );
        assert_eq!(e.code(), tonic::Code::FailedPrecondition);
        let msg = e.to_string();
        for w in ["/vol", "/srv/vol", "tmpfs", "6.1.0", "hostUsers: false"] {
            assert!(msg.contains(w), "{w} not in {msg}");
        }
        let e = refusal(
            &m,
            &std::io::Error::from_raw_os_error(libc::ENOENT),
            "ext4".into(),
            "6.1.0",
        );
        assert_ne!(e.code(), tonic::Code::FailedPrecondition, "{e}");
    }
}
