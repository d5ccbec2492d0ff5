//! `mounts`: the filesystems every container gets, the pod's name-service
//! files and /dev/shm, then the CRI's bind mounts.

use std::ffi::OsStr;
use std::path::Path;

use berth_proto::cri;
use oci_spec::runtime::{Mount, MountBuilder};

use super::SandboxContext;
use crate::error::{Error, Result};

/// A mount of `kind` from `source` at `destination`.
fn mount(destination: &str, kind: &str, source: impl AsRef<Path>, options: &[&str]) -> Result<Mount> {
    MountBuilder::default()
        .destination(destination)
        .typ(kind)
        .source(source.as_ref())
        .options(options.iter().map(|o| o.to_string()).collect::<Vec<_>>())
        .build()
        .map_err(|e| Error::Internal(format!("mount {destination}: {e}")))
}

fn propagation_option(p: i32) -> &'static str {
    match cri::MountPropagation::try_from(p) {
        Ok(cri::MountPropagation::PropagationHostToContainer) => "rslave",
        Ok(cri::MountPropagation::PropagationBidirectional) => "rshared",
        _ => "rprivate",
    }
}

/// The container's `/dev/shm`: the pod's, bound in (so the pod's containers
/// share it and it survives each of them), with the same nosuid, nodev and
/// noexec as the tmpfs; a tmpfs of its own only for a sandbox that has none.
fn dev_shm(pod: Option<&crate::sandbox::shm::PodShm>) -> Result<Mount> {
    match pod {
        Some(s) => mount(
            "/dev/shm",
            "bind",
            &s.source,
            &["rbind", "rprivate", "nosuid", "noexec", "nodev", "rw"],
        ),
        None => mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        ),
    }
}

/// Every mount of the container, in the order the shim makes them. `cfg`'s
/// mounts are validated here; a CRI mount of a path we mount (kubelet's
/// own /etc/hosts) replaces ours.
pub(super) fn container_mounts(
    cfg: &cri::ContainerConfig,
    sandbox: &SandboxContext,
    privileged: bool,
) -> Result<Vec<Mount>> {
    let rw_if_privileged = if privileged { "rw" } else { "ro" };
    let mut mounts = vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"])?,
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        )?,
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        )?,
        mount("/dev/mqueue", "mqueue", "mqueue", &["nosuid", "noexec", "nodev"])?,
        dev_shm(sandbox.shm.as_ref())?,
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", rw_if_privileged],
        )?,
        mount(
            "/sys/fs/cgroup",
            "cgroup2",
            "cgroup",
            &["nosuid", "noexec", "nodev", "relatime", rw_if_privileged],
        )?,
    ];
    // Every container of the pod sees the same name-service files.
    if let Some(f) = &sandbox.pod_files {
        let readonly_rootfs = cfg
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .is_some_and(|s| s.readonly_rootfs);
        let ro = if readonly_rootfs { "ro" } else { "rw" };
        for (dest, src) in [
            ("/etc/hosts", &f.hosts),
            ("/etc/resolv.conf", &f.resolv_conf),
            ("/etc/hostname", &f.hostname),
        ] {
            mounts.push(mount(dest, "bind", src, &["rbind", "rprivate", ro])?);
        }
    }
    for m in &cfg.mounts {
        crate::container::mounts::validate(m)?;
        let mut opts = vec!["rbind", propagation_option(m.propagation)];
        opts.push(if m.readonly { "ro" } else { "rw" });
        // OCI runtime-spec 1.1 "rro": read-only all the way down (mount_setattr).
        if m.recursive_read_only {
            opts.push("rro");
        }
        // The path as written: "/x/" replaces no "/x" (Path equality would).
        mounts.retain(|x| x.destination().as_os_str() != OsStr::new(&m.container_path));
        let bind = mount(&m.container_path, "bind", &m.host_path, &opts)?;
        // Only the binds chosen for idmapping carry the pod's mappings
        // (container::volume_owner); the rest are plain binds.
        let idmapped = sandbox.userns.is_some() && crate::container::volume_owner::is_idmapped(m);
        mounts.push(crate::container::idmap_mounts::mark(bind, idmapped));
    }
    Ok(mounts)
}

/// `linux.rootfsPropagation`: a Bidirectional mount must stay in its host
/// peer group, so the container's root may not be made rslave (containerd
/// sets the same).
pub(super) fn rootfs_propagation(cfg: &cri::ContainerConfig) -> Option<String> {
    cfg.mounts
        .iter()
        .any(|m| m.propagation == cri::MountPropagation::PropagationBidirectional as i32)
        .then(|| "rshared".to_string())
}
