//! The pod network: CNI runtime config (capabilities) built from the
//! request and kubelet's pod CIDR (kept on disk), CNI CHECK, and the DEL that
//! tears a pod's attachment down.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{Sandbox, SandboxManager, SandboxRequest};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::net::cni;
use crate::store;

impl SandboxManager {
    /// Records kubelet's pod CIDR (UpdateRuntimeConfig) for later pods.
    pub fn set_pod_cidr(&self, cidr: &str) -> Result<()> {
        if !cidr.is_empty() {
            let (ip, len) = cidr
                .split_once('/')
                .ok_or_else(|| Error::InvalidArgument(format!("pod CIDR {cidr:?} is not ip/prefix")))?;
            let ok = ip.parse::<std::net::IpAddr>().is_ok() && len.parse::<u8>().is_ok_and(|l| l <= 128);
            if !ok {
                return Err(Error::InvalidArgument(format!(
                    "pod CIDR {cidr:?} is not ip/prefix"
                )));
            }
        }
        let mut current = self.pod_cidr.lock();
        if *current != cidr {
            // Kept on disk: kubelet sends it once, and pods created after a
            // berthd restart must still get their `ipRanges`.
            let rec = PodCidrRecord {
                cidr: cidr.to_string(),
            };
            store::write_record(&pod_cidr_path(&self.cfg), &rec)?;
            *current = rec.cidr;
        }
        Ok(())
    }

    /// Runtime config a pod's CNI plugins may ask for by capability.
    pub(super) fn cni_runtime_config(&self, req: &SandboxRequest) -> BTreeMap<String, serde_json::Value> {
        let mut caps = BTreeMap::new();
        if !req.port_mappings.is_empty() {
            let pm: Vec<_> = req
                .port_mappings
                .iter()
                .filter(|p| p.host_port > 0)
                .map(|p| {
                    let mut m = serde_json::json!({
                        "hostPort": p.host_port, "containerPort": p.container_port, "protocol": p.protocol,
                    });
                    if !p.host_ip.is_empty() {
                        m["hostIP"] = serde_json::json!(p.host_ip);
                    }
                    m
                })
                .collect();
            if !pm.is_empty() {
                caps.insert("portMappings".to_string(), serde_json::Value::Array(pm));
            }
        }
        let bw = |key: &str| req.annotations.get(key).and_then(|v| parse_bandwidth(v));
        let (ingress, egress) = (
            bw("kubernetes.io/ingress-bandwidth"),
            bw("kubernetes.io/egress-bandwidth"),
        );
        if ingress.is_some() || egress.is_some() {
            let mut b = serde_json::Map::new();
            if let Some(r) = ingress {
                b.insert("ingressRate".into(), r.into());
                b.insert("ingressBurst".into(), MAX_BURST_BITS.into());
            }
            if let Some(r) = egress {
                b.insert("egressRate".into(), r.into());
                b.insert("egressBurst".into(), MAX_BURST_BITS.into());
            }
            caps.insert("bandwidth".to_string(), serde_json::Value::Object(b));
        }
        let cidr = self.pod_cidr.lock().clone();
        if !cidr.is_empty() {
            caps.insert("ipRanges".to_string(), serde_json::json!([[{"subnet": cidr}]]));
        }
        caps
    }

    /// Whether a CNI config is present (NetworkReady).
    pub fn network_config(&self) -> Result<Option<cni::NetConfList>> {
        cni::load_conf_dir(&self.cfg.cni_conf_dir)
    }

    /// CNI CHECK of a ready pod's attachment (plugins of CNI ≥ 0.4.0).
    /// None when there is nothing to check (host network, torn down).
    pub async fn check_network(&self, sb: &Sandbox) -> Option<Result<()>> {
        let rec = sb.record();
        let net = rec.network.clone().filter(|n| !n.torn_down)?;
        let list = match cni::parse_conf_file(&net.conf_file) {
            Ok(l) => l,
            Err(e) => return Some(Err(e)),
        };
        let a = rec.attachment(net.capabilities.clone());
        let cni = self.cni.clone();
        Some(
            crate::blocking::run("CNI CHECK task", move || cni.check(&list, &a, &net.result))
                .await
                .and_then(|r| r),
        )
    }

    /// CNI DEL for a pod whose network is still attached; marks it torn down.
    pub(super) async fn teardown_network(&self, sb: &Sandbox) -> Result<()> {
        let rec = sb.record();
        let Some(net) = rec.network.clone().filter(|n| !n.torn_down) else {
            return Ok(());
        };
        let list = cni::parse_conf_file(&net.conf_file).or_else(|e| {
            // The file may have been replaced since ADD: DEL with the current config.
            tracing::warn!(error = %e, "CNI config used at ADD is gone; using the current one");
            self.network_config()?
                .ok_or_else(|| Error::Network("no CNI config to tear the pod network down with".into()))
        })?;
        let a = rec.attachment(net.capabilities.clone());
        let cni = self.cni.clone();
        let result = net.result.clone();
        crate::blocking::run("CNI DEL task", move || cni.del(&list, &a, Some(&result))).await??;
        crate::crash::point("stop_sandbox.cni_del");
        let rec = {
            let mut r = sb.record.lock();
            if let Some(n) = r.network.as_mut() {
                n.torn_down = true;
            }
            r.clone()
        };
        self.persist(sb)?;
        tracing::info!(sandbox = %rec.id, "pod network torn down");
        Ok(())
    }
}

/// kubelet's pod CIDR as kept on disk.
#[derive(Debug, Serialize, Deserialize)]
struct PodCidrRecord {
    cidr: String,
}

pub(super) fn pod_cidr_path(cfg: &Config) -> PathBuf {
    cfg.root.join("pod-cidr.json")
}

/// The pod CIDR a previous berthd recorded; empty when none (or unreadable,
/// which is logged: kubelet sends it again on its next sync).
pub(super) fn load_pod_cidr(path: &Path) -> String {
    match store::read_record::<PodCidrRecord>(path) {
        Ok(r) => r.cidr,
        Err(_) if !path.exists() => String::new(),
        Err(e) => {
            tracing::error!(record = %path.display(), error = %e, "pod CIDR record unreadable; ignored");
            String::new()
        }
    }
}

/// The burst (bits) sent with a bandwidth limit: kubelet's annotations
/// carry only a rate, and the CNI bandwidth plugin refuses a burst whose
/// bytes do not fit in 32 bits, so this is the largest it accepts (as
/// other CRI runtimes send).
const MAX_BURST_BITS: u64 = u32::MAX as u64;

/// A Kubernetes bandwidth quantity (`10M`, `1Gi`, `500k`) in bits per second.
fn parse_bandwidth(q: &str) -> Option<i64> {
    let q = q.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(q.len());
    let (num, suffix) = q.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult: f64 = match suffix {
        "" => 1.0,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    let v = n * mult;
    (v >= 1.0 && v < i64::MAX as f64).then_some(v as i64)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::cgroup::CgroupManager;
    use crate::net::cni::Cni;
    use crate::sandbox::{shm, PortMapping};

    #[test]
    fn runtime_config_for_cni_capabilities() {
        let root = tempfile::tempdir().unwrap();
        let cfg = Config {
            root: root.path().to_path_buf(),
            ..Config::default()
        };
        let new_manager = || {
            SandboxManager::new(
                cfg.clone(),
                CgroupManager::new("/nonexistent"),
                Cni::new(vec![], Box::new(crate::net::cni::RealExec)),
                Arc::new(shm::fake::FakeShmHost::default()),
            )
        };
        let m = new_manager();
        let mut req = SandboxRequest {
            port_mappings: vec![
                PortMapping {
                    protocol: "udp".into(),
                    container_port: 53,
                    host_port: 5353,
                    host_ip: "127.0.0.1".into(),
                },
                // No host port: nothing to map.
                PortMapping {
                    protocol: "tcp".into(),
                    container_port: 80,
                    host_port: 0,
                    host_ip: String::new(),
                },
            ],
            ..Default::default()
        };
        req.annotations
            .insert("kubernetes.io/ingress-bandwidth".into(), "10M".into());
        let caps = m.cni_runtime_config(&req);
        assert_eq!(
            caps["portMappings"],
            serde_json::json!([{"hostPort": 5353, "containerPort": 53, "protocol": "udp", "hostIP": "127.0.0.1"}])
        );
        assert_eq!(caps["bandwidth"]["ingressRate"], 10_000_000);
        assert!(caps["bandwidth"].get("egressRate").is_none());
        // The bandwidth plugin refuses a burst of 4 GB or more ("burst
        // cannot be more than 4GB": burst / 8 >= u32::MAX); kubelet sets no
        // burst, so the runtime picks the largest one the plugin takes.
        let burst = caps["bandwidth"]["ingressBurst"].as_u64().unwrap();
        assert!(
            burst > 0 && burst / 8 < u64::from(u32::MAX),
            "ingressBurst {burst}"
        );
        assert!(!caps.contains_key("ipRanges"));
        m.set_pod_cidr("10.244.0.0/24").unwrap();
        assert_eq!(
            m.cni_runtime_config(&SandboxRequest::default())["ipRanges"],
            serde_json::json!([[{"subnet": "10.244.0.0/24"}]])
        );
        assert!(m.set_pod_cidr("10.244.0.0/999").is_err());
        // A berthd started later still knows it.
        assert_eq!(
            new_manager().cni_runtime_config(&SandboxRequest::default())["ipRanges"],
            serde_json::json!([[{"subnet": "10.244.0.0/24"}]])
        );
    }

    #[test]
    fn bandwidth_quantities() {
        assert_eq!(parse_bandwidth("10M"), Some(10_000_000));
        assert_eq!(parse_bandwidth("1Mi"), Some(1_048_576));
        assert_eq!(parse_bandwidth("1.5k"), Some(1500));
        assert_eq!(parse_bandwidth("fast"), None);
        assert_eq!(parse_bandwidth("10X"), None);
    }
}
