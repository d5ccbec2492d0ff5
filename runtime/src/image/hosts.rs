//! Per-registry settings from the config file (`[registry."<host>"]`):
//! mirrors tried in order before the registry itself, plain HTTP, an extra
//! CA file, or (for a lab) no certificate verification at all.
//!
//! Loopback registries are plain HTTP without any setting, as Docker allows
//! (unless their entry gives a `ca_file` or `skip_verify`); every other host
//! speaks TLS verified against the node's CA bundle unless its entry says
//! otherwise.

use std::time::Duration;

use super::auth::Credentials;
use super::reference::is_loopback;
use super::tls::{roots_from, system_roots, with_ca_file};
pub use crate::config::registry::{HostConfig, Hosts, Timeouts};
pub use crate::config::secret::{Secret, REDACTED};
use crate::error::{Error, Result};

/// The configured credentials for `key` (a registry's domain, or a mirror's
/// host[:port]); anonymous when none are set.
pub fn credentials(hosts: &Hosts, key: &str) -> Result<Credentials> {
    let Some(h) = hosts.get(key) else {
        return Ok(Credentials::None);
    };
    Credentials::from_cri(Some(&berth_proto::cri::AuthConfig {
        username: h.username.clone(),
        password: h.password.expose().to_string(),
        auth: h.auth.expose().to_string(),
        identity_token: h.identity_token.expose().to_string(),
        ..Default::default()
    }))
}

/// Checks the settings at start-up: CA files must hold certificates,
/// mirrors must be host names or http(s) URLs.
pub fn validate(hosts: &Hosts) -> Result<()> {
    for (host, h) in hosts {
        if host.is_empty() || host.contains('/') {
            return Err(Error::InvalidArgument(format!(
                "config registry {host:?}: the key is a host[:port], e.g. \"docker.io\" or \"reg.local:5000\""
            )));
        }
        if let Some(ca) = &h.ca_file {
            let certs = roots_from(ca).map_err(|e| {
                Error::InvalidArgument(format!("config registry {host:?}: ca_file {}: {e}", ca.display()))
            })?;
            if certs.is_empty() {
                return Err(Error::InvalidArgument(format!(
                    "config registry {host:?}: ca_file {} holds no certificate",
                    ca.display()
                )));
            }
        }
        if h.username.is_empty() && !h.password.expose().is_empty() {
            return Err(Error::InvalidArgument(format!(
                "config registry {host:?}: password without username"
            )));
        }
        credentials(hosts, host)
            .map_err(|e| Error::InvalidArgument(format!("config registry {host:?}: {e}")))?;
        for m in &h.mirrors {
            let rest = m
                .strip_prefix("https://")
                .or_else(|| m.strip_prefix("http://"))
                .unwrap_or(m);
            if rest.is_empty() || rest.contains('/') || rest.contains(' ') {
                return Err(Error::InvalidArgument(format!(
                    "config registry {host:?}: mirror {m:?} is not host[:port] or http(s)://host[:port]"
                )));
            }
        }
    }
    Ok(())
}

/// Where to fetch from, in order, for one registry host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `http(s)://host[:port]`.
    pub base: String,
    /// The host[:port] part (for its own settings and logs).
    pub host: String,
    /// A mirror, not the registry itself.
    pub mirror: bool,
}

/// The endpoints for `registry_host` (`registry-1.docker.io` style names
/// are keyed by the reference's domain, `docker.io` for Docker Hub):
/// its mirrors in order, then itself.
pub fn endpoints(hosts: &Hosts, domain: &str, registry_host: &str, loopback: bool) -> Vec<Endpoint> {
    let own = hosts.get(domain).cloned().unwrap_or_default();
    let mut out = Vec::new();
    for m in &own.mirrors {
        let (scheme, host) = match (m.strip_prefix("https://"), m.strip_prefix("http://")) {
            (Some(h), _) => ("https", h.to_string()),
            (_, Some(h)) => ("http", h.to_string()),
            _ => {
                let plain = hosts.get(m.as_str()).is_some_and(|h| h.plain_http) || is_loopback(m);
                (if plain { "http" } else { "https" }, m.clone())
            }
        };
        out.push(Endpoint {
            base: format!("{scheme}://{host}"),
            host,
            mirror: true,
        });
    }
    // A loopback registry is plain HTTP unless its entry sets up TLS.
    let tls_configured = own.ca_file.is_some() || own.skip_verify;
    let scheme = if own.plain_http || (loopback && !tls_configured) {
        "http"
    } else {
        "https"
    };
    out.push(Endpoint {
        base: format!("{scheme}://{registry_host}"),
        host: registry_host.to_string(),
        mirror: false,
    });
    out
}

/// The HTTP client for `host`: its TLS settings and the timeouts.
pub fn agent(hosts: &Hosts, host: &str, timeouts: &Timeouts) -> Result<ureq::Agent> {
    let h = hosts.get(host).cloned().unwrap_or_default();
    let mut tls = ureq::tls::TlsConfig::builder();
    if h.skip_verify {
        tls = tls.disable_verification(true);
    } else if let Some(ca) = &h.ca_file {
        tls = tls.root_certs(with_ca_file(ca)?);
    } else {
        tls = tls.root_certs(system_roots().clone());
    }
    Ok(ureq::Agent::config_builder()
        .tls_config(tls.build())
        .http_status_as_error(false)
        .timeout_resolve(Some(ms(timeouts.connect_ms)))
        .timeout_connect(Some(ms(timeouts.connect_ms)))
        .timeout_send_request(Some(ms(timeouts.idle_ms)))
        .timeout_recv_response(Some(ms(timeouts.response_header_ms)))
        .timeout_per_read(Some(ms(timeouts.idle_ms)))
        .timeout_per_write(Some(ms(timeouts.idle_ms)))
        // Blob downloads redirect to storage on other hosts: the registry's
        // token or basic credentials never follow a redirect (ureq's
        // default, stated so a change of default cannot leak them).
        .redirect_auth_headers(ureq::config::RedirectAuthHeaders::Never)
        .build()
        .into())
}

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use serde::Deserialize;

    use super::*;

    fn hosts(toml_text: &str) -> Hosts {
        #[derive(Deserialize)]
        struct W {
            registry: Hosts,
        }
        toml::from_str::<W>(toml_text).unwrap().registry
    }

    #[test]
    fn mirrors_come_first_then_the_registry() {
        let h = hosts(
            r#"
            [registry."docker.io"]
            mirrors = ["mirror.local:5000", "http://10.0.0.1:5000", "127.0.0.1:5001"]
            [registry."mirror.local:5000"]
            plain_http = true
            [registry."reg.lab"]
            plain_http = true
            "#,
        );
        let e = endpoints(&h, "docker.io", "registry-1.docker.io", false);
        let bases: Vec<_> = e.iter().map(|e| e.base.as_str()).collect();
        assert_eq!(
            bases,
            [
                "http://mirror.local:5000",
                "http://10.0.0.1:5000",
                "http://127.0.0.1:5001",
                "https://registry-1.docker.io"
            ]
        );
        assert!(e[0].mirror && !e[3].mirror);
        assert_eq!(
            endpoints(&h, "reg.lab", "reg.lab", false)[0].base,
            "http://reg.lab"
        );
        assert_eq!(
            endpoints(&h, "quay.io", "quay.io", false)[0].base,
            "https://quay.io"
        );
        assert_eq!(
            endpoints(&h, "localhost:5000", "localhost:5000", true)[0].base,
            "http://localhost:5000"
        );
        let tls = hosts("[registry.\"localhost:5443\"]\nskip_verify = true\n");
        assert_eq!(
            endpoints(&tls, "localhost:5443", "localhost:5443", true)[0].base,
            "https://localhost:5443",
            "TLS settings for a loopback host mean TLS"
        );
    }

    #[test]
    fn bad_settings_are_refused_at_start() {
        assert!(validate(&hosts("[registry.\"a/b\"]\n")).is_err());
        assert!(validate(&hosts("[registry.\"x\"]\nmirrors = [\"http://m/path\"]\n")).is_err());
        let d = tempfile::tempdir().unwrap();
        let empty = d.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let with = |p: &Path| format!("[registry.\"x\"]\nca_file = \"{}\"\n", p.display());
        assert!(validate(&hosts(&with(&empty))).is_err(), "no certificate");
        assert!(validate(&hosts(&with(&d.path().join("missing.pem")))).is_err());
        let ca = d.path().join("ca.pem");
        std::fs::write(&ca, include_bytes!("testdata/ca-and-key.pem")).unwrap();
        validate(&hosts(&with(&ca))).unwrap();
        agent(&hosts(&with(&ca)), "x", &Timeouts::default()).unwrap();
        assert!(is_loopback("127.0.0.1:5000") && is_loopback("[::1]:5000") && !is_loopback("127.evil"));
        assert!(validate(&hosts("[registry.\"x\"]\npassword = \"p\"\n")).is_err());
        assert!(validate(&hosts("[registry.\"x\"]\nauth = \"not base64!\"\n")).is_err());
    }

    #[test]
    fn configured_credentials_are_used_and_never_shown() {
        let h = hosts(
            "[registry.\"reg.lab\"]\nusername = \"u\"\npassword = \"hunter2\"\n\
             [registry.\"tok.lab\"]\nidentity_token = \"refresh-me\"\n",
        );
        validate(&h).unwrap();
        match credentials(&h, "reg.lab").unwrap() {
            Credentials::Basic { username, password } => {
                assert_eq!((username.as_str(), password.as_str()), ("u", "hunter2"))
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            credentials(&h, "tok.lab").unwrap(),
            Credentials::IdentityToken(_)
        ));
        assert!(matches!(credentials(&h, "other").unwrap(), Credentials::None));
        let shown = serde_json::to_string(&h).unwrap() + &format!("{h:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("refresh-me"),
            "{shown}"
        );
        assert!(shown.contains(REDACTED), "{shown}");
    }

    /// A registry that accepts and never answers: every phase of a request
    /// ends at its configured timeout with an error saying so.
    #[test]
    fn a_registry_that_never_answers_times_out() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        // Accepts, reads nothing, answers nothing; holds every connection.
        berth_sys::thread::spawn(move || {
            let mut held = Vec::new();
            for c in listener.incoming() {
                held.push(c);
            }
        });
        let t = Timeouts {
            connect_ms: 200,
            response_header_ms: 200,
            idle_ms: 200,
        };
        let agent = agent(&Hosts::default(), &addr.to_string(), &t).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        berth_sys::thread::spawn(move || {
            let r = agent.get(&format!("http://{addr}/v2/")).call();
            let _ = tx.send(r.map(|_| ()).map_err(|e| e.to_string()));
        });
        // Not a timing assertion: the generous wait only turns "hangs
        // forever" (the old agent had no header timeout) into a failure.
        let got = rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("the request hung: no response-header timeout");
        let e = got.expect_err("no answer");
        assert!(e.contains("timeout"), "{e}");
        assert!(Timeouts { idle_ms: 0, ..t }.validate().is_err());
    }
}
