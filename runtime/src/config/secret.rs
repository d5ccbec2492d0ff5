//! Secrets in the config (registry passwords, tokens): what counts as one
//! and how it is shown wherever config is shown (verbose Status, /flagz,
//! `berthd config dump`).

use serde::{Deserialize, Serialize};

/// A secret from the config: shown as `[redacted]` when serialized (verbose
/// Status, /flagz) or debug-printed, so it never leaves berthd.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

/// What a set secret looks like wherever config is shown.
pub const REDACTED: &str = "[redacted]";

impl Secret {
    /// The secret itself (for the registry client only).
    pub fn expose(&self) -> &str {
        &self.0
    }
    fn shown(&self) -> &'static str {
        if self.0.is_empty() {
            ""
        } else {
            REDACTED
        }
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.shown())
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.shown())
    }
}

/// Keys whose values are secrets wherever they appear.
const SECRET_KEYS: &[&str] = &[
    "password",
    "auth",
    "identity_token",
    "registry_token",
    "token",
    "secret",
];

/// Whether a (dotted) key names a secret.
pub fn is_secret(key: &str) -> bool {
    let last = key.rsplit('.').next().unwrap_or(key);
    SECRET_KEYS.contains(&last)
}
