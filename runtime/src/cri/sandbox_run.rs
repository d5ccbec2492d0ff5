//! RunPodSandbox.

use berth_proto::cri::{NamespaceMode, Protocol, RunPodSandboxRequest, RunPodSandboxResponse};

use super::Cri;
use crate::error::{Error, Result};
use crate::net::files::Dns;
use crate::sandbox::{userns, PidMode, PortMapping, SandboxRequest};

/// Handles RunPodSandbox.
pub async fn handle(cri: &Cri, req: RunPodSandboxRequest) -> Result<RunPodSandboxResponse> {
    let cfg = req
        .config
        .ok_or_else(|| Error::InvalidArgument("RunPodSandbox without config".into()))?;
    let meta = cfg
        .metadata
        .ok_or_else(|| Error::InvalidArgument("pod sandbox config has no metadata".into()))?;
    if meta.name.is_empty() || meta.namespace.is_empty() || meta.uid.is_empty() {
        return Err(Error::InvalidArgument(
            "pod sandbox metadata needs name, namespace and uid".into(),
        ));
    }
    if !req.runtime_handler.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "unknown runtime handler {:?} (berth has only the default handler \"\")",
            req.runtime_handler
        )));
    }
    let linux = cfg.linux.unwrap_or_default();
    let ns = linux
        .security_context
        .as_ref()
        .and_then(|s| s.namespace_options.clone())
        .unwrap_or_default();
    let pid_mode = match NamespaceMode::try_from(ns.pid) {
        Ok(NamespaceMode::Pod) => PidMode::Pod,
        Ok(NamespaceMode::Node) => PidMode::Node,
        Ok(NamespaceMode::Container) => PidMode::Container,
        _ => {
            return Err(Error::InvalidArgument(format!(
                "pod PID namespace mode {} is not valid for a pod (TARGET is for containers)",
                ns.pid
            )))
        }
    };
    // Checked before anything is created; where the start-up probe found
    // no idmapping the refusal carries its finding for this node.
    let host_network = ns.network == NamespaceMode::Node as i32;
    let host_ipc = ns.ipc == NamespaceMode::Node as i32;
    let pod_userns = crate::sandbox::userns_pod::admit(
        userns::validate(ns.userns_options.as_ref())?,
        &cri.userns,
        host_network,
        host_ipc,
        pid_mode,
        linux.security_context.as_ref().is_some_and(|s| s.privileged),
    )?;
    let id = cri
        .sandboxes
        .run(SandboxRequest {
            name: meta.name,
            uid: meta.uid,
            namespace: meta.namespace,
            attempt: meta.attempt,
            hostname: cfg.hostname,
            log_directory: cfg.log_directory,
            cgroup_parent: linux.cgroup_parent,
            labels: cfg.labels.into_iter().collect(),
            annotations: cfg.annotations.into_iter().collect(),
            runtime_handler: req.runtime_handler,
            host_network,
            host_ipc,
            pid_mode,
            pod_limits: crate::cgroup::resources::Limits::pod(
                linux.resources.as_ref(),
                linux.overhead.as_ref(),
            )?,
            dns: cfg.dns_config.map(|d| Dns {
                servers: d.servers,
                searches: d.searches,
                options: d.options,
            }),
            port_mappings: cfg
                .port_mappings
                .into_iter()
                .map(|p| {
                    let protocol = match Protocol::try_from(p.protocol) {
                        Ok(Protocol::Udp) => "udp",
                        Ok(Protocol::Sctp) => "sctp",
                        _ => "tcp",
                    };
                    PortMapping {
                        protocol: protocol.into(),
                        container_port: p.container_port,
                        host_port: p.host_port,
                        host_ip: p.host_ip,
                    }
                })
                .collect(),
            sysctls: linux.sysctls.into_iter().collect(),
            userns: pod_userns,
        })
        .await?;
    Ok(RunPodSandboxResponse { pod_sandbox_id: id })
}
