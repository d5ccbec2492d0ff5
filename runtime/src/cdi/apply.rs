//! Makes resolved CDI edits on a container: env, device nodes (and the
//! device filter's rules for exactly them), bind mounts, extra groups and
//! OCI hooks (run by the shim).
//!
//! Every edit is checked and every host path looked up before the spec is
//! touched, so an error leaves the spec as it was; CreateContainer calls
//! this before any step with a side effect.

use std::path::{Component, Path};

use oci_spec::runtime::{Mount, MountBuilder, Spec};

use super::{CdiError, EditSet};
use crate::cgroup::device_filter::{Access, DeviceKind, DeviceRule};
use crate::container::devices::{ContainerDevices, DeviceNode, HostDevices, HostEntry};
use crate::container::mounts::{check_destination, HostPaths, MountOrigin};

/// Mount options a CDI bind mount may carry: flags and propagation. Any
/// other option would be filesystem data, meaningless for a bind mount.
const BIND_OPTIONS: &[&str] = &[
    "bind",
    "rbind",
    "ro",
    "rw",
    "rro",
    "nosuid",
    "suid",
    "nodev",
    "dev",
    "noexec",
    "exec",
    "relatime",
    "noatime",
    "nodiratime",
    "strictatime",
    "private",
    "rprivate",
    "slave",
    "rslave",
    "shared",
    "rshared",
];
const PROPAGATIONS: &[&str] = &["private", "rprivate", "slave", "rslave", "shared", "rshared"];

/// Everything the edits add, checked.
#[derive(Debug, Default)]
struct Planned {
    env: Vec<(String, String)>,
    nodes: Vec<(DeviceNode, Option<Access>)>,
    mounts: Vec<Mount>,
    gids: Vec<u32>,
    hooks: Vec<(super::hooks::Moment, oci_spec::runtime::Hook)>,
}

/// Applies `sets` to the container's spec and devices, or changes nothing.
pub fn apply(
    sets: &[EditSet],
    spec: &mut Spec,
    devices: &mut ContainerDevices,
    host_devices: &dyn HostDevices,
    host_paths: &dyn HostPaths,
) -> Result<(), CdiError> {
    if sets.is_empty() {
        return Ok(());
    }
    let mut plan = Planned::default();
    for set in sets {
        let bad = |reason: String| CdiError::BadEdit {
            name: set.device.to_string(),
            file: set.file.clone(),
            reason,
        };
        for e in &set.edits.env {
            plan.env.push(env_entry(e).map_err(bad)?);
        }
        for n in &set.edits.device_nodes {
            plan.nodes.push(device_node(n, host_devices).map_err(bad)?);
        }
        for m in &set.edits.mounts {
            plan.mounts.push(bind_mount(m, host_paths).map_err(bad)?);
        }
        plan.gids
            .extend(set.edits.additional_gids.iter().filter(|g| **g != 0));
        for h in &set.edits.hooks {
            plan.hooks.push(super::hooks::oci_hook(h).map_err(bad)?);
        }
    }

    let process = spec.process_mut().get_or_insert_with(Default::default);
    let mut env = process.env().clone().unwrap_or_default();
    for (k, v) in plan.env {
        let line = format!("{k}={v}");
        match env
            .iter_mut()
            .find(|e| e.split_once('=').map_or(e.as_str(), |s| s.0) == k)
        {
            Some(e) => *e = line,
            None => env.push(line),
        }
    }
    process.set_env(Some(env));
    let user = process.user_mut();
    let mut gids = user.additional_gids().clone().unwrap_or_default();
    for g in plan.gids {
        if !gids.contains(&g) && g != user.gid() {
            gids.push(g);
        }
    }
    user.set_additional_gids(Some(gids));

    let mounts = spec.mounts_mut().get_or_insert_with(Vec::new);
    for m in plan.mounts {
        mounts.retain(|x| x.destination() != m.destination());
        mounts.push(m);
    }
    super::hooks::add(spec, plan.hooks);

    for (node, access) in plan.nodes {
        if let (Some(rules), Some(access)) = (devices.rules.as_mut(), access) {
            rules.push(DeviceRule {
                kind: Some(node.kind),
                major: Some(node.major),
                minor: Some(node.minor),
                access,
            });
        }
        devices.nodes.retain(|n| n.path != node.path);
        devices.nodes.push(node);
    }
    Ok(())
}

fn env_entry(e: &str) -> Result<(String, String), String> {
    let (k, v) = e
        .split_once('=')
        .ok_or_else(|| format!("env {e:?} is not NAME=value"))?;
    if k.is_empty() || e.contains('\0') {
        return Err(format!("env {e:?}: empty name or NUL"));
    }
    Ok((k.to_string(), v.to_string()))
}

/// An absolute path without `..`.
fn clean_absolute(p: &str, what: &str) -> Result<(), String> {
    let path = Path::new(p);
    if !path.is_absolute() || path.components().any(|c| c == Component::ParentDir) || p.contains('\0') {
        return Err(format!("{what} {p:?} must be an absolute path without .."));
    }
    Ok(())
}

/// A node from the spec's numbers when it gives type and major (as the
/// CDI library does), else from the host node at `hostPath`.
fn device_node(
    n: &super::spec::DeviceNode,
    host: &dyn HostDevices,
) -> Result<(DeviceNode, Option<Access>), String> {
    clean_absolute(&n.path, "device node path")?;
    let host_path = n.host_path.as_deref().unwrap_or(&n.path);
    clean_absolute(host_path, "device node hostPath")?;
    let kind = match n.r#type.as_deref() {
        None | Some("") => None,
        Some("c" | "u") => Some(DeviceKind::Char),
        Some("b") => Some(DeviceKind::Block),
        Some("p") => return Err(format!("device node {:?}: fifo nodes are not supported", n.path)),
        Some(t) => return Err(format!("device node {:?}: unknown type {t:?}", n.path)),
    };
    let number = |v: Option<i64>, what: &str| -> Result<Option<u32>, String> {
        v.map(|v| u32::try_from(v).map_err(|_| format!("device node {:?}: bad {what} {v}", n.path)))
            .transpose()
    };
    let (major, minor) = (number(n.major, "major")?, number(n.minor, "minor")?);
    let node = match (kind, major) {
        (Some(kind), Some(major)) if major != 0 => DeviceNode {
            path: n.path.clone().into(),
            kind,
            major,
            minor: minor.unwrap_or(0),
            file_mode: n.file_mode.map_or(0o666, |m| m & 0o7777),
            uid: n.uid.unwrap_or(0),
            gid: n.gid.unwrap_or(0),
        },
        _ => {
            let entry = host
                .entry(Path::new(host_path), true)
                .map_err(|e| match e.kind() {
                    std::io::ErrorKind::NotFound => format!("host device {host_path:?} does not exist"),
                    _ => format!("stat host device {host_path:?}: {e}"),
                })?;
            let HostEntry::Device {
                kind: host_kind,
                major: host_major,
                minor: host_minor,
                mode,
                uid,
                gid,
            } = entry
            else {
                return Err(format!("host path {host_path:?} is not a device node"));
            };
            if kind.is_some_and(|k| k != host_kind) {
                return Err(format!(
                    "device node {:?}: type differs from host {host_path:?}",
                    n.path
                ));
            }
            DeviceNode {
                path: n.path.clone().into(),
                kind: host_kind,
                major: major.filter(|m| *m != 0).unwrap_or(host_major),
                minor: if major.is_some_and(|m| m != 0) {
                    minor.unwrap_or(0)
                } else {
                    host_minor
                },
                file_mode: n.file_mode.map_or(mode, |m| m & 0o7777),
                uid: n.uid.unwrap_or(uid),
                gid: n.gid.unwrap_or(gid),
            }
        }
    };
    let access = match n.permissions.as_deref() {
        None | Some("") => Some(Access::ALL),
        Some("none") => None,
        Some(p) => Some(Access::parse(p).map_err(|_| {
            format!(
                "device node {:?}: permissions {p:?} are not r, w, m or none",
                n.path
            )
        })?),
    };
    Ok((node, access))
}

/// A bind mount of an existing host path; other mount types are refused.
fn bind_mount(m: &super::spec::Mount, host: &dyn HostPaths) -> Result<Mount, String> {
    clean_absolute(&m.host_path, "mount hostPath")?;
    clean_absolute(&m.container_path, "mount containerPath")?;
    check_destination(&m.container_path, MountOrigin::Cri).map_err(|e| e.to_string())?;
    let is_bind = m.options.iter().any(|o| o == "bind" || o == "rbind");
    if !is_bind && !matches!(m.r#type.as_deref(), None | Some("" | "bind" | "none")) {
        return Err(format!(
            "mount {:?}: only bind mounts are supported, not type {:?}",
            m.container_path,
            m.r#type.as_deref().unwrap_or_default()
        ));
    }
    if let Some(o) = m.options.iter().find(|o| !BIND_OPTIONS.contains(&o.as_str())) {
        return Err(format!(
            "mount {:?}: option {o:?} is not supported",
            m.container_path
        ));
    }
    let source = host
        .canonicalize(Path::new(&m.host_path))
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => format!("mount hostPath {:?} does not exist", m.host_path),
            _ => format!("resolve mount hostPath {:?}: {e}", m.host_path),
        })?;
    let mut options = m.options.clone();
    if !is_bind {
        options.insert(0, "rbind".into());
    }
    if !options.iter().any(|o| PROPAGATIONS.contains(&o.as_str())) {
        options.push("rprivate".into());
    }
    MountBuilder::default()
        .destination(&m.container_path)
        .typ("bind")
        .source(source)
        .options(options)
        .build()
        .map_err(|e| format!("mount {:?}: {e}", m.container_path))
}
