//! The security context's part of the spec: capabilities and the paths
//! hidden from unprivileged containers.

use std::str::FromStr;

use berth_proto::cri;
use oci_spec::runtime::{Capabilities, Capability, LinuxCapabilities, LinuxCapabilitiesBuilder};

use crate::error::{Error, Result};

/// Docker's default capability set, which Kubernetes containers get unless
/// their security context says otherwise.
pub const DEFAULT_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Every capability of Linux 6.x, for `ALL` and privileged containers.
pub const ALL_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// Paths hidden from unprivileged containers (the Kubernetes defaults).
pub const DEFAULT_MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Paths read-only in unprivileged containers.
pub const DEFAULT_READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// The capability set from the security context.
pub fn capabilities(sc: Option<&cri::LinuxContainerSecurityContext>) -> Result<Vec<String>> {
    let Some(sc) = sc else {
        return Ok(DEFAULT_CAPS.iter().map(|s| s.to_string()).collect());
    };
    if sc.privileged {
        return Ok(ALL_CAPS.iter().map(|s| s.to_string()).collect());
    }
    let norm = |c: &str| -> Result<String> {
        let full = with_cap_prefix(c);
        if full == "CAP_ALL" || ALL_CAPS.contains(&full.as_str()) {
            Ok(full)
        } else {
            Err(Error::InvalidArgument(format!("unknown capability {c:?}")))
        }
    };
    let mut caps: Vec<String> = DEFAULT_CAPS.iter().map(|s| s.to_string()).collect();
    if let Some(c) = &sc.capabilities {
        let add: Vec<String> = c
            .add_capabilities
            .iter()
            .map(|c| norm(c))
            .collect::<Result<_>>()?;
        let drop: Vec<String> = c
            .drop_capabilities
            .iter()
            .map(|c| norm(c))
            .collect::<Result<_>>()?;
        // As containerd: ALL in add or drop resets the set first; then the
        // named additions, then the named drops.
        if add.iter().any(|c| c == "CAP_ALL") {
            caps = ALL_CAPS.iter().map(|s| s.to_string()).collect();
        }
        if drop.iter().any(|c| c == "CAP_ALL") {
            caps.clear();
        }
        for a in add.iter().filter(|c| *c != "CAP_ALL") {
            if !caps.contains(a) {
                caps.push(a.clone());
            }
        }
        caps.retain(|c| !drop.contains(c));
    }
    Ok(caps)
}

/// `NET_ADMIN` and `net_admin` as `CAP_NET_ADMIN`.
fn with_cap_prefix(c: &str) -> String {
    let up = c.to_ascii_uppercase();
    if up.starts_with("CAP_") {
        up
    } else {
        format!("CAP_{up}")
    }
}

/// The ambient capabilities asked for, each of which must be in `caps`:
/// the kernel raises an ambient capability only if it is permitted and
/// inheritable, so say so here rather than fail at StartContainer.
pub(super) fn ambient(
    sc: Option<&cri::LinuxContainerSecurityContext>,
    caps: &[String],
) -> Result<Vec<String>> {
    let ambient: Vec<String> = sc
        .and_then(|s| s.capabilities.as_ref())
        .map(|c| {
            c.add_ambient_capabilities
                .iter()
                .map(|a| with_cap_prefix(a))
                .collect()
        })
        .unwrap_or_default();
    if let Some(missing) = ambient.iter().find(|a| !caps.contains(a)) {
        return Err(Error::InvalidArgument(format!(
            "ambient capability {missing} is not in the container's capability set"
        )));
    }
    Ok(ambient)
}

/// `process.capabilities`: `caps` bounding, effective and permitted;
/// `ambient` also inheritable (see [`ambient`]).
pub(super) fn linux_capabilities(caps: &[String], ambient: &[String]) -> Result<LinuxCapabilities> {
    let set = |names: &[String]| -> Result<Capabilities> { names.iter().map(|n| typed(n)).collect() };
    LinuxCapabilitiesBuilder::default()
        .bounding(set(caps)?)
        .effective(set(caps)?)
        .permitted(set(caps)?)
        .inheritable(set(ambient)?)
        .ambient(set(ambient)?)
        .build()
        .map_err(|e| Error::Internal(format!("capabilities: {e}")))
}

/// One of [`ALL_CAPS`] as oci-spec's type (whose names lack `CAP_`).
fn typed(name: &str) -> Result<Capability> {
    name.strip_prefix("CAP_")
        .and_then(|n| Capability::from_str(n).ok())
        .ok_or_else(|| Error::Internal(format!("capability {name} has no oci-spec name")))
}

/// `linux.maskedPaths` and `linux.readonlyPaths`: the request's, else the
/// Kubernetes defaults; none for a privileged container.
pub(super) fn hidden_paths(
    sc: Option<&cri::LinuxContainerSecurityContext>,
    privileged: bool,
) -> (Vec<String>, Vec<String>) {
    if privileged {
        return (vec![], vec![]);
    }
    let or_default = |asked: Option<&Vec<String>>, default: &[&str]| {
        asked
            .filter(|v| !v.is_empty())
            .cloned()
            .unwrap_or_else(|| default.iter().map(|s| s.to_string()).collect())
    };
    (
        or_default(sc.map(|s| &s.masked_paths), DEFAULT_MASKED_PATHS),
        or_default(sc.map(|s| &s.readonly_paths), DEFAULT_READONLY_PATHS),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capability_add_drop_and_all() {
        let sc = |add: &[&str], drop: &[&str]| cri::LinuxContainerSecurityContext {
            capabilities: Some(cri::Capability {
                add_capabilities: add.iter().map(|s| s.to_string()).collect(),
                drop_capabilities: drop.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let c = capabilities(Some(&sc(&["SYS_ADMIN"], &["CHOWN"]))).unwrap();
        assert!(c.contains(&"CAP_SYS_ADMIN".to_string()) && !c.contains(&"CAP_CHOWN".to_string()));
        let c = capabilities(Some(&sc(&["NET_ADMIN"], &["ALL"]))).unwrap();
        assert_eq!(c, vec!["CAP_NET_ADMIN"]);
        let c = capabilities(Some(&sc(&["ALL"], &["KILL"]))).unwrap();
        assert_eq!(c.len(), ALL_CAPS.len() - 1);
        assert!(capabilities(Some(&sc(&["BOGUS"], &[]))).is_err());
        assert_eq!(capabilities(None).unwrap().len(), DEFAULT_CAPS.len());
    }

    #[test]
    fn every_known_capability_has_a_typed_name() {
        for name in ALL_CAPS {
            assert_eq!(format!("CAP_{}", typed(name).unwrap()), *name);
        }
        assert!(typed("CAP_ALL").is_err());
    }
}
