//! A pod's own user namespace (mode POD, `hostUsers: false`).
//!
//! berthd creates it before the shim, with exactly kubelet's maps, and in
//! the same unshare(2) the pod's network, IPC and UTS namespaces, which it
//! therefore owns. The shim joins those three but stays in the node's user
//! namespace: it must stay privileged on the node to move processes between
//! cgroups and to build each container's root filesystem (idmapping a
//! mount needs CAP_SYS_ADMIN over the filesystem's own user namespace, the
//! node's). The user namespace is pinned next to the other pins, so it
//! outlives berthd and is what every container and exec enters last, right
//! before taking the container's identity.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use berth_proto::cri;
use berth_sys::idmap::PodNamespaces;

use super::shm::PodShm;
use super::userns::{IdMap, PodUserns};
use super::userns_probe::UsernsSupport;
use super::{pin, PidMode};
use crate::error::{Error, Result};
use crate::net::files::PodFiles;
use crate::rollback::Rollback;
use crate::shim_client::JoinNamespaces;

/// Refuses a valid mode POD request this node or pod cannot honour:
/// where the probe found no idmapping (naming filesystem and kernel), and
/// together with the node's network, IPC or PID namespace or a privileged
/// pod, which kubelet never sends with `hostUsers: false`.
pub fn admit(
    u: Option<PodUserns>,
    support: &UsernsSupport,
    host_network: bool,
    host_ipc: bool,
    pid_mode: PidMode,
    privileged: bool,
) -> Result<Option<PodUserns>> {
    let Some(u) = u else {
        return Ok(None);
    };
    if privileged {
        return Err(Error::InvalidArgument(
            "a privileged pod cannot have its own user namespace (hostUsers: false)".into(),
        ));
    }
    if host_network || host_ipc || pid_mode == PidMode::Node {
        return Err(Error::InvalidArgument(
            "a pod with its own user namespace (hostUsers: false) cannot share the node's network, IPC or PID namespace"
                .into(),
        ));
    }
    if !support.supported {
        return Err(Error::FailedPrecondition(format!(
            "hostUsers: false cannot be honoured on this node: {}",
            support.describe()
        )));
    }
    Ok(Some(u))
}

/// One `uid_map`/`gid_map` line.
pub fn map_line(m: &IdMap) -> String {
    format!("{} {} {}\n", m.container_id, m.host_id, m.length)
}

/// Creates the pod's namespaces and pins the user namespace at
/// `<state dir>/ns/user`; the pin's undo goes on `undo` (start-up recovery
/// sweeps it too when berthd dies before the record).
pub fn create_and_pin(
    state_dir: &Path,
    u: Option<&PodUserns>,
    undo: &mut Rollback,
) -> Result<Option<(PodNamespaces, PathBuf)>> {
    let Some(u) = u else {
        return Ok(None);
    };
    let ns = berth_sys::idmap::pod_namespaces(&map_line(&u.uid), &map_line(&u.gid))
        .map_err(|e| Error::io("create the pod's user namespace", e))?;
    let at = state_dir.join("ns").join("user");
    pin::pin(Path::new(&format!("/proc/self/fd/{}", ns.user.as_raw_fd())), &at)?;
    let pp = at.clone();
    undo.push(move || {
        let _ = pin::unpin(&pp);
    });
    Ok(Some((ns, at)))
}

/// Gives the pod's /etc/hosts, resolv.conf and hostname and its /dev/shm
/// to the pod's root, so root inside owns them as it would without a user
/// namespace. (They live on berthd's state tmpfs, which Debian's 6.1
/// cannot idmap, so they are made owned instead of idmapped.)
pub fn own_pod_files(files: &PodFiles, shm: &PodShm, u: Option<&PodUserns>) -> Result<()> {
    let Some(u) = u else {
        return Ok(());
    };
    let shm_dir = shm.owned.then_some(shm.source.as_path());
    for p in [&files.hosts, &files.resolv_conf, &files.hostname]
        .into_iter()
        .map(PathBuf::as_path)
        .chain(shm_dir)
    {
        std::os::unix::fs::lchown(p, Some(u.uid.host_id), Some(u.gid.host_id))
            .map_err(|e| Error::io(format!("chown {} to the pod's root", p.display()), e))?;
    }
    Ok(())
}

/// Refuses what would hand a user-namespaced container the node's own
/// objects: privileged mode and device nodes (kubelet refuses both with
/// `hostUsers: false` too).
pub fn refuse_node_access(cfg: &cri::ContainerConfig, u: Option<&PodUserns>) -> Result<()> {
    if u.is_none() {
        return Ok(());
    }
    let privileged = cfg
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .is_some_and(|s| s.privileged);
    if privileged {
        return Err(Error::InvalidArgument(
            "a privileged container cannot run in a pod with its own user namespace (hostUsers: false)"
                .into(),
        ));
    }
    if !cfg.devices.is_empty() {
        return Err(Error::InvalidArgument(
            "devices cannot be given to a container in a pod with its own user namespace (hostUsers: false)"
                .into(),
        ));
    }
    Ok(())
}

/// The pod's options as PodSandboxStatus reports them (None: the node's).
pub fn to_cri(u: Option<&PodUserns>) -> Option<cri::UserNamespace> {
    let m = |m: &IdMap| cri::IdMapping {
        host_id: m.host_id,
        container_id: m.container_id,
        length: m.length,
    };
    u.map(|u| cri::UserNamespace {
        mode: cri::NamespaceMode::Pod as i32,
        uids: vec![m(&u.uid)],
        gids: vec![m(&u.gid)],
    })
}

/// The fds the shim joins instead of creating namespaces of its own.
pub fn join_fds(ns: &PodNamespaces) -> JoinNamespaces {
    let raw = |f: &OwnedFd| f.as_raw_fd();
    JoinNamespaces {
        net: raw(&ns.net),
        ipc: raw(&ns.ipc),
        uts: raw(&ns.uts),
    }
}

/// Gives a container's upper directory (its `/`) to the pod's root, so the
/// overlay's root is root's inside; the image layers are idmapped instead,
/// never copied or chowned.
pub fn own_upper(upper: &Path, u: Option<&PodUserns>) -> Result<()> {
    let Some(u) = u else {
        return Ok(());
    };
    std::os::unix::fs::chown(upper, Some(u.uid.host_id), Some(u.gid.host_id))
        .map_err(|e| Error::io(format!("chown {} to the pod's root", upper.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn support(ok: bool) -> UsernsSupport {
        UsernsSupport {
            supported: ok,
            fs: "tmpfs".into(),
            kernel: "6.1.0".into(),
            reason: (!ok).then(|| "/var/lib/berth cannot be idmapped".into()),
        }
    }

    fn pod() -> PodUserns {
        let m = IdMap {
            container_id: 0,
            host_id: 65536,
            length: 65536,
        };
        PodUserns { uid: m, gid: m }
    }

    #[test]
    fn node_pods_pass_whatever_the_node_supports() {
        assert_eq!(
            admit(None, &support(false), true, true, PidMode::Node, true).unwrap(),
            None
        );
    }

    #[test]
    fn an_unsupported_node_refuses_naming_the_probe() {
        let e = admit(
            Some(pod()),
            &support(false),
            false,
            false,
            PidMode::Container,
            false,
        )
        .unwrap_err();
        assert!(matches!(e, Error::FailedPrecondition(_)), "{e:?}");
        assert!(
            e.to_string()
                .contains("cannot be idmapped (tmpfs on kernel 6.1.0)"),
            "{e}"
        );
        assert_eq!(
            admit(Some(pod()), &support(true), false, false, PidMode::Pod, false).unwrap(),
            Some(pod())
        );
    }

    #[test]
    fn host_namespaces_do_not_go_with_a_user_namespace() {
        for (net, ipc, pid) in [
            (true, false, PidMode::Container),
            (false, true, PidMode::Container),
            (false, false, PidMode::Node),
        ] {
            let e = admit(Some(pod()), &support(true), net, ipc, pid, false).unwrap_err();
            assert!(matches!(e, Error::InvalidArgument(_)), "{e:?}");
        }
        let e = admit(Some(pod()), &support(true), false, false, PidMode::Pod, true).unwrap_err();
        assert!(e.to_string().contains("privileged pod"), "{e}");
    }

    #[test]
    fn privileged_containers_and_devices_are_refused_with_a_user_namespace() {
        let privileged = cri::ContainerConfig {
            linux: Some(cri::LinuxContainerConfig {
                security_context: Some(cri::LinuxContainerSecurityContext {
                    privileged: true,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let device = cri::ContainerConfig {
            devices: vec![cri::Device {
                container_path: "/dev/fuse".into(),
                host_path: "/dev/fuse".into(),
                permissions: "rwm".into(),
            }],
            ..Default::default()
        };
        for cfg in [&privileged, &device] {
            refuse_node_access(cfg, None).unwrap();
            let e = refuse_node_access(cfg, Some(&pod())).unwrap_err();
            assert!(matches!(e, Error::InvalidArgument(_)), "{e:?}");
        }
        refuse_node_access(&cri::ContainerConfig::default(), Some(&pod())).unwrap();
    }

    #[test]
    fn status_reports_what_was_validated() {
        let back = to_cri(Some(&pod())).unwrap();
        assert_eq!(super::super::userns::validate(Some(&back)).unwrap(), Some(pod()));
        assert_eq!(to_cri(None), None);
    }

    #[test]
    fn map_lines_are_what_the_kernel_reads() {
        assert_eq!(map_line(&pod().uid), "0 65536 65536\n");
    }
}
