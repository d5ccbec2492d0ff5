//! Pod sysctls. Only namespaced sysctls can be per pod: they are written from
//! a thread that has joined the pod's namespaces, so the host's values are
//! never touched. Anything else is refused with a clear error.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The namespace a sysctl lives in, by kernel rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SysctlNs {
    /// `net.*`.
    Net,
    /// `kernel.shm*`, `kernel.msg*`, `kernel.sem`, `fs.mqueue.*`.
    Ipc,
    /// `kernel.hostname`, `kernel.domainname`.
    Uts,
}

/// Which namespace `name` belongs to, or an error for a node-wide sysctl.
pub fn namespace_of(name: &str) -> Result<SysctlNs> {
    const IPC: &[&str] = &[
        "kernel.sem",
        "kernel.shmall",
        "kernel.shmmax",
        "kernel.shmmni",
        "kernel.shm_rmid_forced",
        "kernel.msgmax",
        "kernel.msgmnb",
        "kernel.msgmni",
    ];
    if name.is_empty() || name.contains("..") || name.starts_with('/') {
        return Err(Error::InvalidArgument(format!(
            "sysctl {name:?} is not a valid name"
        )));
    }
    if name.starts_with("net.") {
        Ok(SysctlNs::Net)
    } else if IPC.contains(&name) || name.starts_with("fs.mqueue.") {
        Ok(SysctlNs::Ipc)
    } else if name == "kernel.hostname" || name == "kernel.domainname" {
        Ok(SysctlNs::Uts)
    } else {
        Err(Error::InvalidArgument(format!(
            "sysctl {name:?} is not namespaced: it would change the whole node, so a pod may not set it"
        )))
    }
}

/// `/proc/sys/...` path of a sysctl (`.` or `/` separated).
fn proc_path(name: &str) -> PathBuf {
    let rel = if name.contains('/') {
        name.to_string()
    } else {
        name.replace('.', "/")
    };
    Path::new("/proc/sys").join(rel)
}

/// Checks every sysctl against the namespaces the pod actually owns.
pub fn validate(sysctls: &BTreeMap<String, String>, owned: &BTreeMap<String, PathBuf>) -> Result<()> {
    for name in sysctls.keys() {
        let kind = match namespace_of(name)? {
            SysctlNs::Net => "net",
            SysctlNs::Ipc => "ipc",
            SysctlNs::Uts => "uts",
        };
        if !owned.contains_key(kind) {
            return Err(Error::InvalidArgument(format!(
                "sysctl {name:?} needs the pod's own {kind} namespace, but the pod uses the host's"
            )));
        }
    }
    Ok(())
}

/// Writes the sysctls inside the pod's pinned namespaces (`ns_paths` by kind).
/// Runs on a dedicated thread: setns(2) changes only the calling thread, and
/// that thread ends afterwards so no other work runs in the pod's namespaces.
pub fn apply(sysctls: &BTreeMap<String, String>, ns_paths: &BTreeMap<String, PathBuf>) -> Result<()> {
    if sysctls.is_empty() {
        return Ok(());
    }
    validate(sysctls, ns_paths)?;
    let sysctls = sysctls.clone();
    let ns_paths = ns_paths.clone();
    berth_sys::thread::spawn(move || -> Result<()> {
        for (kind, flag) in [
            ("net", nix::sched::CloneFlags::CLONE_NEWNET),
            ("ipc", nix::sched::CloneFlags::CLONE_NEWIPC),
            ("uts", nix::sched::CloneFlags::CLONE_NEWUTS),
        ] {
            if let Some(p) = ns_paths.get(kind) {
                let f = std::fs::File::open(p).map_err(|e| Error::io(format!("open {}", p.display()), e))?;
                nix::sched::setns(f, flag).map_err(|e| Error::Internal(format!("setns {kind}: {e}")))?;
            }
        }
        for (name, value) in &sysctls {
            let p = proc_path(name);
            if !p.exists() {
                return Err(Error::InvalidArgument(format!(
                    "sysctl {name:?} does not exist on this kernel"
                )));
            }
            std::fs::write(&p, value.as_bytes())
                .map_err(|e| Error::InvalidArgument(format!("set sysctl {name}={value:?}: {e}")))?;
        }
        Ok(())
    })
    .join()
    .map_err(|_| Error::Internal("sysctl thread panicked".into()))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_namespaced_sysctls_are_allowed() {
        assert_eq!(
            namespace_of("net.ipv4.ip_local_port_range").unwrap(),
            SysctlNs::Net
        );
        assert_eq!(namespace_of("kernel.shm_rmid_forced").unwrap(), SysctlNs::Ipc);
        assert_eq!(namespace_of("fs.mqueue.msg_max").unwrap(), SysctlNs::Ipc);
        assert_eq!(namespace_of("kernel.domainname").unwrap(), SysctlNs::Uts);
        let e = namespace_of("vm.swappiness").unwrap_err().to_string();
        assert!(e.contains("not namespaced"), "{e}");
        assert!(namespace_of("kernel.panic").is_err());
        assert!(namespace_of("net/../../x").is_err());
        assert_eq!(
            proc_path("net.ipv4.ip_forward"),
            PathBuf::from("/proc/sys/net/ipv4/ip_forward")
        );
    }

    #[test]
    fn host_namespaces_refuse_their_sysctls() {
        let s = BTreeMap::from([("net.ipv4.ip_unprivileged_port_start".to_string(), "0".to_string())]);
        let e = validate(&s, &BTreeMap::new()).unwrap_err().to_string();
        assert!(e.contains("host's"), "{e}");
        let owned = BTreeMap::from([("net".to_string(), PathBuf::from("/x"))]);
        validate(&s, &owned).unwrap();
    }
}
