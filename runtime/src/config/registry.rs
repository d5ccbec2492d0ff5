//! `[registry."<host>"]` and `[registry_timeouts]`: per-registry settings
//! and the registry client's timeouts, as plain data. What they mean for a
//! pull (endpoints, TLS, credentials, and the checks that need those) is
//! in `image::hosts`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::secret::Secret;
use crate::error::{Error, Result};

/// One `[registry."<host>"]` table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HostConfig {
    /// Mirrors (`host[:port]`, or a URL with `http://`/`https://`) tried in
    /// order; the registry itself comes last.
    pub mirrors: Vec<String>,
    /// Speak plain HTTP to this host.
    pub plain_http: bool,
    /// A PEM file of CAs trusted for this host, besides the node's bundle.
    pub ca_file: Option<PathBuf>,
    /// Do not verify this host's certificate (self-signed lab registries).
    pub skip_verify: bool,
    /// User for basic credentials, used only when a pull brings none of its
    /// own (kubelet sends a pod's image pull secrets with the pull).
    pub username: String,
    /// Password for `username`.
    pub password: Secret,
    /// `base64(user:password)`, as in a Docker config's `auth`.
    pub auth: Secret,
    /// An OAuth2 refresh token for the registry's token endpoint.
    pub identity_token: Secret,
    /// As a mirror, this host (over https) also receives the credentials a
    /// pull brings for the registry it mirrors. Off: they were given for
    /// that registry, and a mirror gets only its own configured ones.
    pub forward_pull_credentials: bool,
}

/// Every host's settings, keyed by `host[:port]` (`docker.io` for Docker Hub).
pub type Hosts = BTreeMap<String, HostConfig>;

/// `[registry_timeouts]` (milliseconds). A registry that accepts a
/// connection and never answers, or stops sending mid-layer, must not hold
/// a pull forever, nor the per-image and per-layer gates other pulls of
/// the same image or layer wait on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Timeouts {
    /// DNS, TCP connect and TLS handshake.
    pub connect_ms: u64,
    /// From sending a request to receiving the response's headers.
    pub response_header_ms: u64,
    /// Longest pause in any read or write (also while waiting for
    /// headers). It bounds progress, not duration: a layer download that
    /// keeps receiving takes as long as it needs.
    pub idle_ms: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect_ms: 30_000,
            response_header_ms: 60_000,
            idle_ms: 60_000,
        }
    }
}

impl Timeouts {
    /// The whole-request deadline of a manifest, index, config or token
    /// (small documents, read into memory): each phase's own budget once.
    /// A layer has no such deadline; `idle_ms` bounds its progress.
    pub fn document_deadline(&self) -> Duration {
        Duration::from_millis(
            self.connect_ms
                .saturating_add(self.response_header_ms)
                .saturating_add(self.idle_ms),
        )
    }

    /// Every timeout must be set: zero would mean none.
    pub fn validate(&self) -> Result<()> {
        for (name, ms) in [
            ("connect_ms", self.connect_ms),
            ("response_header_ms", self.response_header_ms),
            ("idle_ms", self.idle_ms),
        ] {
            if ms == 0 {
                return Err(Error::InvalidArgument(format!(
                    "config registry_timeouts.{name} must be greater than 0"
                )));
            }
        }
        Ok(())
    }
}
