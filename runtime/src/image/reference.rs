//! Image reference parsing and normalisation (`busybox` ==
//! `docker.io/library/busybox:latest`), following the distribution rules
//! kubelet and the Docker CLI use.

use crate::error::{Error, Result};

/// The default registry for names without a domain.
pub const DOCKER_HUB: &str = "docker.io";

/// A parsed, normalised image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// Registry host[:port], e.g. `docker.io`, `127.0.0.1:5000`.
    pub domain: String,
    /// Repository path, e.g. `library/busybox`.
    pub repository: String,
    /// Tag, if any (`latest` is implied when there is neither tag nor digest).
    pub tag: Option<String>,
    /// `sha256:...` digest, if any.
    pub digest: Option<String>,
}

impl Reference {
    /// Parses `name[:tag][@digest]`.
    pub fn parse(s: &str) -> Result<Self> {
        let bad = |why: &str| Error::InvalidArgument(format!("image reference {s:?}: {why}"));
        if s.is_empty() {
            return Err(bad("empty"));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => {
                let hex = d
                    .strip_prefix("sha256:")
                    .ok_or_else(|| bad("digest must be sha256:<hex>"))?;
                if hex.len() != 64
                    || !hex
                        .chars()
                        .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
                {
                    return Err(bad("digest must be sha256 with 64 lowercase hex digits"));
                }
                (r, Some(d.to_string()))
            }
            None => (s, None),
        };
        // A tag is after the last ':' that comes after the last '/'.
        let last_slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (
                &rest[..last_slash + i],
                Some(rest[last_slash + i + 1..].to_string()),
            ),
            None => (rest, None),
        };
        if let Some(t) = &tag {
            if t.is_empty()
                || t.len() > 128
                || !t.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
            {
                return Err(bad("invalid tag"));
            }
        }
        let (domain, repository) = match name.split_once('/') {
            Some((first, remainder))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), remainder.to_string())
            }
            _ => (DOCKER_HUB.to_string(), name.to_string()),
        };
        let repository = if domain == DOCKER_HUB && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        if repository.is_empty()
            || repository.split('/').any(|c| {
                c.is_empty()
                    || !c
                        .chars()
                        .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || "._-".contains(ch))
            })
        {
            return Err(bad(
                "invalid repository name (lowercase letters, digits, '.', '_', '-')",
            ));
        }
        let tag = if tag.is_none() && digest.is_none() {
            Some("latest".into())
        } else {
            tag
        };
        Ok(Reference {
            domain,
            repository,
            tag,
            digest,
        })
    }

    /// `domain/repository`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.domain, self.repository)
    }

    /// `domain/repository:tag`, when tagged.
    pub fn tagged(&self) -> Option<String> {
        self.tag.as_ref().map(|t| format!("{}:{t}", self.name()))
    }

    /// What to ask the registry for: the digest if pinned, else the tag.
    pub fn manifest_ref(&self) -> &str {
        self.digest.as_deref().or(self.tag.as_deref()).unwrap_or("latest")
    }

    /// Registry host to connect to (Docker Hub's API lives elsewhere).
    pub fn registry_host(&self) -> &str {
        if self.domain == DOCKER_HUB {
            "registry-1.docker.io"
        } else {
            &self.domain
        }
    }

    /// Loopback registries are reachable over plain HTTP, as Docker allows.
    pub fn is_loopback(&self) -> bool {
        // An address, not a prefix: `127.evil.example` is a public name.
        is_loopback(&self.domain)
    }
}

/// A loopback host[:port] (`localhost`, 127.0.0.0/8, ::1).
pub fn is_loopback(host_port: &str) -> bool {
    let host = match host_port.rsplit_once(':') {
        Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) && !h.ends_with(':') => h,
        _ => host_port,
    };
    let ip = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost" || ip.parse::<std::net::IpAddr>().is_ok_and(|a| a.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_docker_hub_names() {
        let r = Reference::parse("busybox").unwrap();
        assert_eq!(r.tagged().unwrap(), "docker.io/library/busybox:latest");
        let r = Reference::parse("user/app:1.2").unwrap();
        assert_eq!(r.tagged().unwrap(), "docker.io/user/app:1.2");
        assert_eq!(r.registry_host(), "registry-1.docker.io");
    }

    #[test]
    fn parses_hosts_ports_and_digests() {
        let d = format!("sha256:{}", "a".repeat(64));
        let r = Reference::parse(&format!("127.0.0.1:5000/library/busybox:1.36@{d}")).unwrap();
        assert_eq!(r.domain, "127.0.0.1:5000");
        assert_eq!(r.repository, "library/busybox");
        assert_eq!(r.tag.as_deref(), Some("1.36"));
        assert_eq!(r.digest.as_deref(), Some(d.as_str()));
        assert_eq!(r.manifest_ref(), d);
        assert!(r.is_loopback());
        let r = Reference::parse(&format!("localhost:5000/x@{d}")).unwrap();
        assert_eq!(r.tag, None);
        assert!(r.is_loopback());
        assert!(!Reference::parse("quay.io/a/b").unwrap().is_loopback());
        assert!(!Reference::parse("127.evil.example/a/b").unwrap().is_loopback());
        assert!(Reference::parse("127.0.0.2:5000/a/b").unwrap().is_loopback());
        assert!(Reference::parse("[::1]:5000/a/b").unwrap().is_loopback());
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["", "Busybox", "a:", "a@sha256:zz", "a//b", "x:t@sha512:00"] {
            assert!(Reference::parse(bad).is_err(), "{bad} should be rejected");
        }
    }
}
