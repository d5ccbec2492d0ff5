//! Which endpoint of a pull (a mirror, or the registry itself) receives
//! which credentials.
//!
//! A pull's credentials (kubelet's image pull secret) were given for one
//! registry host: CRI's `auth.server_address` names it, and when it is
//! empty it is the image's own registry. They go only there:
//! * the registry gets them unless `server_address` names another host;
//! * a mirror gets them only when `server_address` names the mirror
//!   itself, or when the operator set `forward_pull_credentials` on the
//!   mirror's `[registry."<mirror>"]` entry (a pull-through cache of that
//!   registry trusted with its credentials). Never over plain http.
//!
//! containerd's CRI does the same with `server_address` (its `ParseAuth`
//! drops credentials for any other host); a mirror there gets the
//! upstream's credentials only through its own hosts configuration.
//! Every endpoint the pull's credentials do not reach uses what the config
//! sets for it, if anything.

use super::auth::Credentials;
use super::hosts::{self, Endpoint, Hosts};
use super::reference::{Reference, DOCKER_HUB};
use crate::error::Result;

/// A pull's credentials and the registry host they were given for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PullAuth {
    /// The credentials (anonymous when the pull brought none).
    pub creds: Credentials,
    /// CRI `auth.server_address` as sent (`""` when unset).
    pub server_address: String,
}

impl PullAuth {
    /// From CRI's AuthConfig (see [`Credentials::from_cri`]).
    pub fn from_cri(a: Option<&berth_proto::cri::AuthConfig>) -> Result<Self> {
        Ok(PullAuth {
            creds: Credentials::from_cri(a)?,
            server_address: a.map(|a| a.server_address.clone()).unwrap_or_default(),
        })
    }

    /// The host[:port] `server_address` names, normalised; `None` if unset.
    fn given_for(&self) -> Option<String> {
        let s = self.server_address.trim();
        (!s.is_empty()).then(|| normalise(s))
    }
}

/// `https://Index.Docker.io/v1/` → `docker.io`; `reg:5000/v2/` → `reg:5000`:
/// the scheme and any path go, Docker Hub's names are one.
fn normalise(address: &str) -> String {
    let rest = address
        .split_once("://")
        .map_or(address, |(_, r)| r)
        .split('/')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    match rest.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => DOCKER_HUB.to_string(),
        _ => rest,
    }
}

/// The credentials to send to endpoint `e` of a pull of `r`.
pub fn credentials_for(hosts: &Hosts, r: &Reference, e: &Endpoint, auth: &PullAuth) -> Result<Credentials> {
    let own_key = if e.mirror {
        e.host.as_str()
    } else {
        r.domain.as_str()
    };
    if auth.creds == Credentials::None {
        return hosts::credentials(hosts, own_key);
    }
    let given_for = auth.given_for();
    let for_registry = given_for
        .as_deref()
        .is_none_or(|g| g == normalise(&r.domain) || g == normalise(r.registry_host()));
    let reaches = if e.mirror {
        // Plain http shows them to whoever is on the path.
        let forwarded = hosts.get(&e.host).is_some_and(|h| h.forward_pull_credentials) && for_registry;
        let named = given_for.as_deref() == Some(normalise(&e.host).as_str());
        !e.base.starts_with("http://") && (forwarded || named)
    } else {
        for_registry
    };
    if reaches {
        return Ok(auth.creds.clone());
    }
    if !e.mirror {
        tracing::warn!(
            registry = %r.domain,
            server_address = %auth.server_address,
            "the pull's credentials are for another registry; not sent"
        );
    }
    hosts::credentials(hosts, own_key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::hosts::HostConfig;

    fn basic() -> Credentials {
        Credentials::Basic {
            username: "u".into(),
            password: "secret".into(),
        }
    }

    fn auth(server_address: &str) -> PullAuth {
        PullAuth {
            creds: basic(),
            server_address: server_address.into(),
        }
    }

    fn endpoint(base: &str, mirror: bool) -> Endpoint {
        Endpoint {
            base: base.into(),
            host: base.split_once("://").unwrap().1.into(),
            mirror,
        }
    }

    #[test]
    fn server_address_names_the_only_registry_that_gets_them() {
        let hosts = Hosts::default();
        let r = Reference::parse("reg.example:5000/app:1").unwrap();
        let reg = endpoint("https://reg.example:5000", false);
        for given in [
            "",
            "reg.example:5000",
            "https://REG.example:5000/v2/",
            "reg.example:5000/",
        ] {
            assert_eq!(
                credentials_for(&hosts, &r, &reg, &auth(given)).unwrap(),
                basic(),
                "{given:?}"
            );
        }
        for other in [
            "other.example",
            "reg.example",
            "reg.example:5001",
            "https://docker.io",
        ] {
            assert_eq!(
                credentials_for(&hosts, &r, &reg, &auth(other)).unwrap(),
                Credentials::None,
                "{other:?}"
            );
        }
        // Docker Hub's many names are one registry.
        let hub = Reference::parse("busybox").unwrap();
        let hub_ep = endpoint("https://registry-1.docker.io", false);
        for given in ["https://index.docker.io/v1/", "docker.io", "registry-1.docker.io"] {
            assert_eq!(
                credentials_for(&hosts, &hub, &hub_ep, &auth(given)).unwrap(),
                basic()
            );
        }
    }

    #[test]
    fn a_mirror_gets_them_only_when_configured_or_named() {
        let r = Reference::parse("reg.example/app:1").unwrap();
        let mirror = endpoint("https://mirror.example", true);
        let mut hosts = Hosts::default();
        assert_eq!(
            credentials_for(&hosts, &r, &mirror, &auth("")).unwrap(),
            Credentials::None,
            "an https mirror is not the registry"
        );
        assert_eq!(
            credentials_for(&hosts, &r, &mirror, &auth("mirror.example")).unwrap(),
            basic(),
            "given for the mirror itself"
        );
        hosts.insert(
            "mirror.example".into(),
            HostConfig {
                forward_pull_credentials: true,
                ..Default::default()
            },
        );
        assert_eq!(credentials_for(&hosts, &r, &mirror, &auth("")).unwrap(), basic());
        assert_eq!(
            credentials_for(&hosts, &r, &mirror, &auth("reg.example")).unwrap(),
            basic()
        );
        assert_eq!(
            credentials_for(&hosts, &r, &mirror, &auth("third.example")).unwrap(),
            Credentials::None,
            "given for a third registry"
        );
        // Never over plain http, whatever the config says.
        hosts.insert(
            "plain.example".into(),
            HostConfig {
                forward_pull_credentials: true,
                ..Default::default()
            },
        );
        let plain = endpoint("http://plain.example", true);
        assert_eq!(
            credentials_for(&hosts, &r, &plain, &auth("")).unwrap(),
            Credentials::None
        );
        assert_eq!(
            credentials_for(&hosts, &r, &plain, &auth("plain.example")).unwrap(),
            Credentials::None
        );
    }

    #[test]
    fn endpoints_the_pull_does_not_reach_use_their_configured_credentials() {
        let r = Reference::parse("reg.example/app:1").unwrap();
        let mut hosts = Hosts::default();
        for key in ["reg.example", "mirror.example"] {
            hosts.insert(
                key.into(),
                HostConfig {
                    username: format!("cfg-{key}"),
                    password: serde_json::from_value(serde_json::json!("pw")).unwrap(),
                    ..Default::default()
                },
            );
        }
        let user = |c: Credentials| match c {
            Credentials::Basic { username, .. } => username,
            other => format!("{other:?}"),
        };
        let mirror = endpoint("https://mirror.example", true);
        let reg = endpoint("https://reg.example", false);
        assert_eq!(
            user(credentials_for(&hosts, &r, &mirror, &auth("")).unwrap()),
            "cfg-mirror.example"
        );
        assert_eq!(
            user(credentials_for(&hosts, &r, &reg, &auth("other")).unwrap()),
            "cfg-reg.example"
        );
        assert_eq!(user(credentials_for(&hosts, &r, &reg, &auth("")).unwrap()), "u");
        let anonymous = PullAuth::default();
        assert_eq!(
            user(credentials_for(&hosts, &r, &reg, &anonymous).unwrap()),
            "cfg-reg.example"
        );
    }
}
