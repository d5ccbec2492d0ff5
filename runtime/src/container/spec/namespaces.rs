//! `linux.namespaces`: the container's own mount and cgroup namespaces, a
//! PID namespace unless it shares the pod's or the node's, and the pod's
//! pinned network, IPC and UTS namespaces.

use berth_proto::cri;
use oci_spec::runtime::{LinuxNamespace, LinuxNamespaceBuilder, LinuxNamespaceType};

use super::SandboxContext;
use crate::error::{Error, Result};
use crate::sandbox::{userns, PidMode};

/// The namespaces, in the order the shim enters them.
pub(super) fn namespaces(
    cfg: &cri::ContainerConfig,
    sandbox: &SandboxContext,
) -> Result<Vec<LinuxNamespace>> {
    // A container may only repeat its pod's user namespace.
    let userns = cfg
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.as_ref())
        .and_then(|n| n.userns_options.as_ref());
    userns::check_container(userns, sandbox.userns.as_ref())?;
    crate::sandbox::userns_pod::refuse_node_access(cfg, sandbox.userns.as_ref())?;
    let own = |kind| LinuxNamespaceBuilder::default().typ(kind).build();
    let mut out = vec![own(LinuxNamespaceType::Mount), own(LinuxNamespaceType::Cgroup)];
    // No "pid" entry: the container is cloned into the shim's children's PID
    // namespace, which is the pod's (POD) or the node's (NODE).
    if new_pid_namespace(cfg, sandbox.pid_mode)? {
        out.insert(0, own(LinuxNamespaceType::Pid));
    }
    // The pod's user namespace leads the list; the shim enters it last,
    // after building the container (see shim/src/userns.rs).
    if let Some(p) = sandbox.ns_paths.get("user") {
        out.insert(
            0,
            LinuxNamespaceBuilder::default()
                .typ(LinuxNamespaceType::User)
                .path(p.clone())
                .build(),
        );
    }
    for (kind, typ) in [
        ("net", LinuxNamespaceType::Network),
        ("ipc", LinuxNamespaceType::Ipc),
        ("uts", LinuxNamespaceType::Uts),
    ] {
        if let Some(p) = sandbox.ns_paths.get(kind) {
            out.push(LinuxNamespaceBuilder::default().typ(typ).path(p.clone()).build());
        }
    }
    out.into_iter()
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| Error::Internal(format!("namespace: {e}")))
}

/// Whether the container gets a PID namespace of its own, checking that its
/// mode fits the pod's (kubelet sends matching ones).
pub(super) fn new_pid_namespace(cfg: &cri::ContainerConfig, pod: PidMode) -> Result<bool> {
    let mode = cfg
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.as_ref())
        .map(|n| n.pid)
        .unwrap_or(cri::NamespaceMode::Container as i32);
    match (cri::NamespaceMode::try_from(mode), pod) {
        (Ok(cri::NamespaceMode::Container), _) => Ok(true),
        (Ok(cri::NamespaceMode::Pod), PidMode::Pod) | (Ok(cri::NamespaceMode::Node), PidMode::Node) => {
            Ok(false)
        }
        (Ok(cri::NamespaceMode::Node), PidMode::Container) => Ok(false),
        (Ok(cri::NamespaceMode::Target), _) => Err(Error::InvalidArgument(
            "PID namespace mode TARGET (ephemeral containers) is not supported yet".into(),
        )),
        (m, pod) => Err(Error::InvalidArgument(format!(
            "container PID namespace mode {m:?} does not fit the pod's {pod:?} mode"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_namespace_modes_fit_the_pod() {
        let with = |mode: cri::NamespaceMode| cri::ContainerConfig {
            linux: Some(cri::LinuxContainerConfig {
                security_context: Some(cri::LinuxContainerSecurityContext {
                    namespace_options: Some(cri::NamespaceOption {
                        pid: mode as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let plain = cri::ContainerConfig::default();
        assert!(new_pid_namespace(&plain, PidMode::Container).unwrap());
        assert!(!new_pid_namespace(&with(cri::NamespaceMode::Pod), PidMode::Pod).unwrap());
        assert!(!new_pid_namespace(&with(cri::NamespaceMode::Node), PidMode::Node).unwrap());
        let e = new_pid_namespace(&with(cri::NamespaceMode::Pod), PidMode::Container).unwrap_err();
        assert!(e.to_string().contains("does not fit"), "{e}");
        assert!(new_pid_namespace(&with(cri::NamespaceMode::Node), PidMode::Pod).is_err());
        assert!(new_pid_namespace(&with(cri::NamespaceMode::Target), PidMode::Container).is_err());
    }

    /// A pod with its own user namespace: the container's spec names the
    /// pin first, and the container must repeat the pod's mappings.
    #[test]
    fn a_pods_user_namespace_leads_the_list() {
        let range = vec![cri::IdMapping {
            host_id: 65536,
            container_id: 0,
            length: 65536,
        }];
        let opts = cri::UserNamespace {
            mode: cri::NamespaceMode::Pod as i32,
            uids: range.clone(),
            gids: range,
        };
        let pod = userns::validate(Some(&opts)).unwrap();
        let sandbox = SandboxContext {
            ns_paths: [("user", "/s/ns/user"), ("net", "/s/ns/net")]
                .into_iter()
                .map(|(k, p)| (k.to_string(), p.into()))
                .collect(),
            userns: pod,
            ..Default::default()
        };
        let cfg = cri::ContainerConfig {
            linux: Some(cri::LinuxContainerConfig {
                security_context: Some(cri::LinuxContainerSecurityContext {
                    namespace_options: Some(cri::NamespaceOption {
                        pid: cri::NamespaceMode::Container as i32,
                        userns_options: Some(opts),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let ns = namespaces(&cfg, &sandbox).unwrap();
        assert_eq!(ns[0].typ(), LinuxNamespaceType::User);
        assert_eq!(ns[0].path().as_deref(), Some(std::path::Path::new("/s/ns/user")));
        let e = namespaces(&cri::ContainerConfig::default(), &sandbox).unwrap_err();
        assert!(e.to_string().contains("differs from its pod's"), "{e}");
    }
}
