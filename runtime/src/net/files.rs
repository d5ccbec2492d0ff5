//! The pod's `/etc/hosts`, `/etc/resolv.conf` and `/etc/hostname`: written
//! once per sandbox under its state dir and bind-mounted into every container
//! of the pod, so all containers agree and kubelet's DNS policy applies.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// kubelet's DNSConfig, already validated.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Dns {
    /// `nameserver` lines.
    pub servers: Vec<String>,
    /// `search` domains.
    pub searches: Vec<String>,
    /// `options`.
    pub options: Vec<String>,
}

/// The three files of one pod.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PodFiles {
    /// `/etc/hosts` source.
    pub hosts: PathBuf,
    /// `/etc/resolv.conf` source.
    pub resolv_conf: PathBuf,
    /// `/etc/hostname` source.
    pub hostname: PathBuf,
}

/// `resolv.conf` text: from kubelet's DNSConfig, or the host's file when the
/// pod has none (kubelet's `Default` policy resolves to the node's settings).
pub fn resolv_conf(dns: Option<&Dns>, host_resolv: &Path) -> Result<String> {
    let Some(dns) = dns.filter(|d| !(d.servers.is_empty() && d.searches.is_empty() && d.options.is_empty()))
    else {
        return Ok(std::fs::read_to_string(host_resolv).unwrap_or_default());
    };
    for s in &dns.servers {
        if s.parse::<std::net::IpAddr>().is_err() {
            return Err(Error::InvalidArgument(format!(
                "DNS server {s:?} is not an IP address"
            )));
        }
    }
    let mut out = String::new();
    if !dns.searches.is_empty() {
        out.push_str(&format!("search {}\n", dns.searches.join(" ")));
    }
    for s in &dns.servers {
        out.push_str(&format!("nameserver {s}\n"));
    }
    if !dns.options.is_empty() {
        out.push_str(&format!("options {}\n", dns.options.join(" ")));
    }
    Ok(out)
}

/// `/etc/hosts` text: loopback names, then the pod's IPs with its hostname.
pub fn hosts(hostname: &str, ips: &[String]) -> String {
    let mut out = String::from(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n",
    );
    for ip in ips {
        out.push_str(&format!("{ip}\t{hostname}\n"));
    }
    out
}

/// Writes the three files into `dir` and returns their paths. Host-network
/// pods get the node's own `/etc/hosts`, like every runtime gives them.
pub fn write(
    dir: &Path,
    hostname: &str,
    ips: &[String],
    dns: Option<&Dns>,
    host_network: bool,
    host_etc: &Path,
) -> Result<PodFiles> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
    let files = PodFiles {
        hosts: dir.join("hosts"),
        resolv_conf: dir.join("resolv.conf"),
        hostname: dir.join("hostname"),
    };
    let hosts_text = if host_network {
        std::fs::read_to_string(host_etc.join("hosts")).unwrap_or_else(|_| hosts(hostname, ips))
    } else {
        hosts(hostname, ips)
    };
    let write = |p: &Path, text: &str| {
        // Bound into every container of the pod: readable by all, written by root.
        crate::store::modes::write_file(p, text.as_bytes(), 0o644)
            .map_err(|e| Error::io(format!("write {}", p.display()), e))
    };
    write(&files.hosts, &hosts_text)?;
    write(
        &files.resolv_conf,
        &resolv_conf(dns, &host_etc.join("resolv.conf"))?,
    )?;
    write(&files.hostname, &format!("{hostname}\n"))?;
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_follows_kubelets_dns_config() {
        let d = tempfile::tempdir().unwrap();
        let host = d.path().join("resolv.conf");
        std::fs::write(&host, "nameserver 192.0.2.53\n").unwrap();
        let dns = Dns {
            servers: vec!["10.96.0.10".into(), "fd00::a".into()],
            searches: vec!["default.svc.cluster.local".into(), "svc.cluster.local".into()],
            options: vec!["ndots:5".into()],
        };
        assert_eq!(
            resolv_conf(Some(&dns), &host).unwrap(),
            "search default.svc.cluster.local svc.cluster.local\nnameserver 10.96.0.10\nnameserver fd00::a\noptions ndots:5\n"
        );
        assert_eq!(resolv_conf(None, &host).unwrap(), "nameserver 192.0.2.53\n");
        assert_eq!(
            resolv_conf(Some(&Dns::default()), &host).unwrap(),
            "nameserver 192.0.2.53\n"
        );
        let bad = Dns {
            servers: vec!["dns.example".into()],
            ..Dns::default()
        };
        assert!(resolv_conf(Some(&bad), &host)
            .unwrap_err()
            .to_string()
            .contains("not an IP"));
    }

    #[test]
    fn hosts_and_hostname_carry_the_pod_ip() {
        let d = tempfile::tempdir().unwrap();
        let etc = d.path().join("etc");
        std::fs::create_dir_all(&etc).unwrap();
        std::fs::write(etc.join("hosts"), "127.0.0.1 node-hosts\n").unwrap();
        let f = write(
            &d.path().join("pod"),
            "web-0",
            &["10.88.0.5".into()],
            None,
            false,
            &etc,
        )
        .unwrap();
        let h = std::fs::read_to_string(&f.hosts).unwrap();
        assert!(h.starts_with("127.0.0.1\tlocalhost\n"));
        assert!(h.ends_with("10.88.0.5\tweb-0\n"), "{h}");
        assert_eq!(std::fs::read_to_string(&f.hostname).unwrap(), "web-0\n");
        let f = write(&d.path().join("hostnet"), "node1", &[], None, true, &etc).unwrap();
        assert_eq!(
            std::fs::read_to_string(&f.hosts).unwrap(),
            "127.0.0.1 node-hosts\n"
        );
    }
}
