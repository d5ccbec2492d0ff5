//! Domain records -> CRI messages. Status is derived from records here, in
//! one place, so ListX and XStatus can never disagree.

use std::collections::{BTreeMap, HashMap};

use berth_proto::cri;

use crate::container::{ContainerRecord, ContainerState};
use crate::image::ImageRecord;
use crate::sandbox::{Sandbox, SandboxRecord};

/// BTreeMap -> the HashMap prost uses.
pub fn map(m: &BTreeMap<String, String>) -> HashMap<String, String> {
    m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// Every selector pair is present in `labels`.
pub fn labels_match(selector: &HashMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn sandbox_state(sb: &Sandbox) -> cri::PodSandboxState {
    if sb.is_ready() {
        cri::PodSandboxState::SandboxReady
    } else {
        cri::PodSandboxState::SandboxNotready
    }
}

fn sandbox_metadata(r: &SandboxRecord) -> cri::PodSandboxMetadata {
    cri::PodSandboxMetadata {
        name: r.name.clone(),
        uid: r.uid.clone(),
        namespace: r.namespace.clone(),
        attempt: r.attempt,
    }
}

/// ListPodSandbox item.
pub fn pod_sandbox(sb: &Sandbox) -> cri::PodSandbox {
    let r = sb.record();
    cri::PodSandbox {
        id: r.id.clone(),
        metadata: Some(sandbox_metadata(&r)),
        state: sandbox_state(sb) as i32,
        created_at: r.created_at,
        labels: map(&r.labels),
        annotations: map(&r.annotations),
        runtime_handler: r.runtime_handler.clone(),
    }
}

/// PodSandboxStatus body.
pub fn pod_sandbox_status(sb: &Sandbox) -> cri::PodSandboxStatus {
    let r = sb.record();
    let mode = |kind: &str| {
        if r.ns_paths.contains_key(kind) {
            cri::NamespaceMode::Pod
        } else {
            cri::NamespaceMode::Node
        }
    } as i32;
    cri::PodSandboxStatus {
        id: r.id.clone(),
        metadata: Some(sandbox_metadata(&r)),
        state: sandbox_state(sb) as i32,
        created_at: r.created_at,
        // Primary IP first (IPv4 when the pod has one); host-network pods have none.
        network: Some({
            let ips = r.network.as_ref().map(|n| n.ips.clone()).unwrap_or_default();
            cri::PodSandboxNetworkStatus {
                ip: ips.first().cloned().unwrap_or_default(),
                additional_ips: ips
                    .iter()
                    .skip(1)
                    .map(|ip| cri::PodIp { ip: ip.clone() })
                    .collect(),
            }
        }),
        linux: Some(cri::LinuxPodSandboxStatus {
            namespaces: Some(cri::Namespace {
                options: Some(cri::NamespaceOption {
                    network: mode("net"),
                    pid: match r.pid_mode {
                        crate::sandbox::PidMode::Container => cri::NamespaceMode::Container,
                        crate::sandbox::PidMode::Pod => cri::NamespaceMode::Pod,
                        crate::sandbox::PidMode::Node => cri::NamespaceMode::Node,
                    } as i32,
                    ipc: mode("ipc"),
                    userns_options: crate::sandbox::userns_pod::to_cri(r.userns.as_ref()),
                    ..Default::default()
                }),
            }),
        }),
        labels: map(&r.labels),
        annotations: map(&r.annotations),
        runtime_handler: r.runtime_handler.clone(),
    }
}

fn container_state(s: ContainerState) -> cri::ContainerState {
    match s {
        ContainerState::Created => cri::ContainerState::ContainerCreated,
        ContainerState::Running => cri::ContainerState::ContainerRunning,
        ContainerState::Exited => cri::ContainerState::ContainerExited,
    }
}

fn image_spec(r: &ContainerRecord) -> cri::ImageSpec {
    cri::ImageSpec {
        image: r.image.clone(),
        ..Default::default()
    }
}

/// ListContainers item.
pub fn container(r: &ContainerRecord) -> cri::Container {
    cri::Container {
        id: r.id.clone(),
        pod_sandbox_id: r.sandbox_id.clone(),
        metadata: Some(cri::ContainerMetadata {
            name: r.name.clone(),
            attempt: r.attempt,
        }),
        image: Some(image_spec(r)),
        image_ref: r.image_ref.clone(),
        state: container_state(r.state) as i32,
        created_at: r.created_at,
        labels: map(&r.labels),
        annotations: map(&r.annotations),
        image_id: r.image_ref.clone(),
    }
}

/// ContainerStatus body.
pub fn container_status(r: &ContainerRecord) -> cri::ContainerStatus {
    cri::ContainerStatus {
        id: r.id.clone(),
        metadata: Some(cri::ContainerMetadata {
            name: r.name.clone(),
            attempt: r.attempt,
        }),
        state: container_state(r.state) as i32,
        created_at: r.created_at,
        started_at: r.started_at,
        finished_at: r.finished_at,
        exit_code: r.exit_code,
        image: Some(image_spec(r)),
        image_ref: r.image_ref.clone(),
        reason: r.reason.clone(),
        message: r.message.clone(),
        labels: map(&r.labels),
        annotations: map(&r.annotations),
        mounts: r
            .mounts
            .iter()
            .map(|m| cri::Mount {
                container_path: m.container_path.clone(),
                host_path: m.host_path.clone(),
                readonly: m.readonly,
                propagation: m.propagation,
                ..Default::default()
            })
            .collect(),
        log_path: r.log_path.clone(),
        resources: None,
        image_id: r.image_ref.clone(),
        // What the kernel attached to the first process, once it ran.
        user: r.process_user.as_ref().map(|u| cri::ContainerUser {
            linux: Some(cri::LinuxContainerUser {
                uid: u.uid as i64,
                gid: u.gid as i64,
                supplemental_groups: u.groups.iter().map(|g| *g as i64).collect(),
            }),
        }),
        // The signal StopContainer will send (CRI, else image, else SIGTERM).
        stop_signal: crate::container::signal::to_cri(r.stop_signal) as i32,
    }
}

/// Image item for ListImages / ImageStatus.
pub fn image(r: &ImageRecord) -> cri::Image {
    let user = r.config.user.split(':').next().unwrap_or_default();
    let (uid, username) = match user.parse::<i64>() {
        Ok(n) => (Some(cri::Int64Value { value: n }), String::new()),
        Err(_) if user.is_empty() => (None, String::new()),
        Err(_) => (None, user.to_string()),
    };
    cri::Image {
        id: r.id.clone(),
        repo_tags: r.repo_tags.clone(),
        repo_digests: r.repo_digests.clone(),
        size: r.size_bytes,
        uid,
        username,
        spec: Some(cri::ImageSpec {
            image: r.id.clone(),
            ..Default::default()
        }),
        pinned: false,
    }
}
