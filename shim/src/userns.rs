//! A pod's own user namespace, in the init and exec stages.
//!
//! berthd pins it and names it in the spec (`linux.namespaces`, type
//! `user`, with a path). The stages build the container while still in the
//! node's user namespace, where they may idmap mounts (which needs
//! CAP_SYS_ADMIN over the filesystem's user namespace, the node's) and
//! mount the rootfs, /proc and /sys; they enter the pod's user namespace
//! last, right before taking the container's identity, so the process's
//! root is the pod's root (a host id of the pod's range) and its
//! capabilities count only inside. The container's mount namespace stays
//! owned by the node's user namespace: its root cannot remount anything.

use std::fs::File;
use std::os::fd::AsFd;
use std::path::Path;

use anyhow::{bail, Context, Result};
use nix::sched::CloneFlags;
use oci_spec::runtime::{Linux, LinuxNamespaceType, Spec};

use crate::init::syscall::Syscall;

/// The pinned user namespace the spec names, opened while its path is in
/// sight (before pivot_root); None: the node's user namespace.
pub fn open(linux: &Linux) -> Result<Option<File>> {
    let Some(ns) = linux
        .namespaces()
        .as_deref()
        .unwrap_or_default()
        .iter()
        .find(|n| n.typ() == LinuxNamespaceType::User)
    else {
        return Ok(None);
    };
    let Some(path) = ns.path() else {
        bail!("a user namespace of the container's own is not supported (only its pod's)");
    };
    // Mounts made here (the idmapped layers) must never reach the node.
    if matches!(linux.rootfs_propagation().as_deref(), Some("shared" | "rshared")) {
        bail!("a container in a user namespace cannot have shared mount propagation");
    }
    File::open(path)
        .map(Some)
        .with_context(|| format!("open user namespace {}", path.display()))
}

/// The exec stage's user namespace: the target process's, when the spec
/// names one. Opened by pid; the caller checks the pidfd afterwards.
pub fn open_of_target(spec: &Spec, target_pid: i32) -> Result<Option<File>> {
    let named = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .is_some_and(|n| n.iter().any(|n| n.typ() == LinuxNamespaceType::User));
    if !named {
        return Ok(None);
    }
    let path = format!("/proc/{target_pid}/ns/user");
    File::open(&path)
        .map(Some)
        .with_context(|| format!("open {path}"))
}

/// Over-mounts each `lowerdir=` layer of overlay options `data` with an
/// idmapped copy of itself (in this stage's private mount namespace), so
/// the overlay shows the image's root-owned files as owned by the pod's
/// root; nothing is copied or chowned. A filesystem that cannot be
/// idmapped fails the container naming the layer.
pub fn idmap_layers(data: &str, userns: &File) -> Result<()> {
    let Some(lower) = data.split(',').find_map(|o| o.strip_prefix("lowerdir=")) else {
        return Ok(());
    };
    for dir in lower.split(':').filter(|d| !d.is_empty()) {
        berth_sys::idmap::idmap_in_place(Path::new(dir), userns.as_fd())
            .with_context(|| format!("idmap image layer {dir} for the pod's user namespace"))?;
    }
    Ok(())
}

/// The idmapping a bind mount's options ask for: `ridmap` (with its
/// submounts) or `idmap` (the top mount only), runc's words for "idmapped
/// through the container's user namespace". berthd puts one on every
/// volume of a user-namespaced pod. None: bind as it is.
pub fn idmap_option(options: &[String]) -> Option<bool> {
    options.iter().rev().find_map(|o| match o.as_str() {
        "ridmap" => Some(true),
        "idmap" => Some(false),
        _ => None,
    })
}

/// Binds `source` onto the open mount point `dest`, idmapped through the
/// pod's user namespace (so the node's ids 0..n are the container's, as
/// kubelet expects of its volumes). Built detached and moved in: it is
/// never visible unmapped. A filesystem that cannot be idmapped (tmpfs
/// before Linux 6.3) fails the container naming the mount; berthd checks
/// the same before creating anything, so this is the last line.
pub fn bind_idmapped(
    source: &Path,
    dest: impl AsFd,
    recursive: bool,
    userns: Option<&File>,
    name: &Path,
) -> Result<()> {
    let Some(u) = userns else {
        bail!(
            "mount {}: idmap asked for a container without its pod's user namespace",
            name.display()
        );
    };
    berth_sys::idmap::bind_idmapped(source, dest, u.as_fd(), recursive).with_context(|| {
        format!(
            "idmap bind {} to {} for the pod's user namespace",
            source.display(),
            name.display()
        )
    })
}

/// Enters the pod's user namespace: full capabilities there, none on the
/// node; the caller then sets the container's ids and capabilities.
pub fn enter(sys: &dyn Syscall, userns: &File) -> Result<()> {
    sys.setns(userns.as_fd(), CloneFlags::CLONE_NEWUSER)
        .context("enter the pod's user namespace")
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{LinuxBuilder, LinuxNamespaceBuilder};

    fn linux(path: Option<&str>, propagation: Option<&str>) -> Linux {
        let mut ns = LinuxNamespaceBuilder::default().typ(LinuxNamespaceType::User);
        if let Some(p) = path {
            ns = ns.path(p);
        }
        let mut b = LinuxBuilder::default().namespaces(vec![ns.build().unwrap()]);
        if let Some(p) = propagation {
            b = b.rootfs_propagation(p);
        }
        b.build().unwrap()
    }

    #[test]
    fn no_user_namespace_is_the_nodes() {
        assert!(open(&Linux::default()).unwrap().is_none());
    }

    #[test]
    fn an_own_user_namespace_or_shared_propagation_is_refused() {
        let e = open(&linux(None, None)).unwrap_err();
        assert!(e.to_string().contains("only its pod's"), "{e}");
        let e = open(&linux(Some("/proc/self/ns/user"), Some("rshared"))).unwrap_err();
        assert!(e.to_string().contains("shared mount propagation"), "{e}");
        assert!(open(&linux(Some("/proc/self/ns/user"), None)).unwrap().is_some());
    }

    #[test]
    fn idmap_options_say_how_deep() {
        let o = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(idmap_option(&o(&["rbind", "rprivate", "rw"])), None);
        assert_eq!(idmap_option(&o(&["rbind", "ridmap"])), Some(true));
        assert_eq!(idmap_option(&o(&["bind", "idmap", "ro"])), Some(false));
    }

    #[test]
    fn idmap_without_the_pods_user_namespace_is_refused() {
        let dest = File::open("/").unwrap();
        let e = bind_idmapped(Path::new("/"), &dest, true, None, Path::new("/v")).unwrap_err();
        assert!(e.to_string().contains("without its pod's user namespace"), "{e}");
    }

    #[test]
    fn options_without_layers_idmap_nothing() {
        let f = File::open("/proc/self/ns/user").unwrap();
        idmap_layers("upperdir=/u,workdir=/w", &f).unwrap();
    }
}
