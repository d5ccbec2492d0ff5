//! Start-up collection of host-local IP leases (and what the same CNI DEL
//! releases: portmap chains, the bandwidth plugin's ifb) held by a sandbox
//! of this node's Berth that no record and no intent names.
//!
//! A lease file (`<dataDir>/<network>/<ip>`) holds only the CNI container id
//! and the interface name, so a lease is Berth's only if its id carries this
//! node's tag ([`super::ids`]); leases of other runtimes sharing the network
//! are never touched. Runs after the intents are undone and the orphan
//! shims are killed, so the pod's network namespace is gone and DEL is run
//! with an empty `CNI_NETNS`, which every plugin accepts for DEL.

use std::collections::{BTreeMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::{ids, SandboxManager};
use crate::error::Result;
use crate::net::cni::{Attachment, NetConfList};

/// host-local's default `dataDir`.
const HOST_LOCAL_DIR: &str = "/var/lib/cni/networks";
/// A lease file is an id, a line break and an interface name.
const MAX_LEASE: u64 = 512;

/// The directories host-local keeps `list`'s leases in: one per plugin whose
/// `ipam.type` is host-local.
pub(crate) fn lease_dirs(list: &NetConfList) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = list
        .plugins
        .iter()
        .filter_map(|p| p.get("ipam")?.as_object())
        .filter(|ipam| ipam.get("type").and_then(Value::as_str) == Some("host-local"))
        .map(|ipam| {
            let base = ipam
                .get("dataDir")
                .and_then(Value::as_str)
                .unwrap_or(HOST_LOCAL_DIR);
            Path::new(base).join(&list.name)
        })
        .collect();
    dirs.dedup();
    dirs
}

/// The container id and interface a lease file names, if it is a lease
/// (host-local also keeps `lock` and `last_reserved_ip.<n>` there).
pub(crate) fn parse_lease(file_name: &str, text: &str) -> Option<(String, String)> {
    file_name.parse::<std::net::IpAddr>().ok()?;
    let mut lines = text.lines().map(str::trim);
    let id = lines.next().filter(|s| !s.is_empty())?.to_string();
    let ifname = lines.next().unwrap_or("").to_string();
    Some((id, ifname))
}

impl SandboxManager {
    /// Runs CNI DEL for every lease whose id is one of ours that `known`
    /// (the sandbox records) does not name. Returns how many it released.
    pub(crate) fn collect_leases(&self, known: &HashSet<String>) -> Result<usize> {
        let Some(key) = ids::read_key(&self.cfg.root)? else {
            return Ok(0);
        };
        let Some(list) = self.network_config()? else {
            return Ok(0);
        };
        let mut seen = HashSet::new();
        for dir in lease_dirs(&list) {
            for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let mut text = String::new();
                let read =
                    std::fs::File::open(e.path()).and_then(|f| f.take(MAX_LEASE).read_to_string(&mut text));
                if read.is_err() {
                    continue;
                }
                let Some((id, ifname)) = parse_lease(&name, &text) else {
                    continue;
                };
                if known.contains(&id) || !ids::is_ours(&key, &id) {
                    continue;
                }
                seen.insert((id, ifname));
            }
        }
        for (id, ifname) in &seen {
            self.release_unnamed(&list, id, ifname);
        }
        Ok(seen.len())
    }

    fn release_unnamed(&self, list: &NetConfList, id: &str, ifname: &str) {
        // portmap's DEL does nothing without a `portMappings` entry; what it
        // deletes is named by the container id, so one placeholder mapping
        // makes it remove the pod's chains whatever its ports were.
        let capabilities = BTreeMap::from([(
            "portMappings".to_string(),
            json!([{ "hostPort": 1, "containerPort": 1, "protocol": "tcp" }]),
        )]);
        let a = Attachment {
            container_id: id.to_string(),
            netns: PathBuf::new(),
            ifname: if ifname.is_empty() {
                "eth0".into()
            } else {
                ifname.to_string()
            },
            pod_name: String::new(),
            pod_namespace: String::new(),
            pod_uid: String::new(),
            capabilities,
        };
        match self.cni.del(list, &a, None) {
            Ok(()) => {
                tracing::warn!(sandbox = %id, "released the network (IP lease, port maps) of a pod no record names")
            }
            Err(e) => {
                tracing::warn!(sandbox = %id, error = %e, "CNI DEL of a pod no record names failed; retried at the next start")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(plugins: Value) -> NetConfList {
        NetConfList {
            source: "/etc/cni/net.d/10-test.conflist".into(),
            name: "podnet".into(),
            cni_version: "1.0.0".into(),
            plugins: plugins
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p.as_object().unwrap().clone())
                .collect(),
        }
    }

    #[test]
    fn lease_dirs_come_from_host_local_ipam_only() {
        let l = list(json!([
            {"type": "bridge", "ipam": {"type": "host-local", "dataDir": "/run/ipam"}},
            {"type": "portmap"},
            {"type": "macvlan", "ipam": {"type": "dhcp"}},
        ]));
        assert_eq!(lease_dirs(&l), vec![PathBuf::from("/run/ipam/podnet")]);
        let l = list(json!([{"type": "bridge", "ipam": {"type": "host-local"}}]));
        assert_eq!(
            lease_dirs(&l),
            vec![PathBuf::from("/var/lib/cni/networks/podnet")]
        );
        assert!(lease_dirs(&list(json!([{"type": "loopback"}]))).is_empty());
    }

    #[test]
    fn only_ip_named_files_are_leases() {
        assert_eq!(
            parse_lease("10.88.0.5", "abc\r\neth0"),
            Some(("abc".into(), "eth0".into()))
        );
        assert_eq!(parse_lease("fd00::5", "abc"), Some(("abc".into(), String::new())));
        assert_eq!(parse_lease("lock", "abc\r\neth0"), None);
        assert_eq!(parse_lease("last_reserved_ip.0", "10.88.0.5"), None);
        assert_eq!(parse_lease("10.88.0.6", ""), None);
    }
}
