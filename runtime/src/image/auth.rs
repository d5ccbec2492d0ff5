//! Registry credentials: what a pull logs in with, from CRI's `AuthConfig`
//! or the `[registry]` config, never printed.

use crate::error::{Error, Result};

/// What the client (kubelet's image pull secret) gave to log in with.
#[derive(Clone, Default, PartialEq, Eq)]
pub enum Credentials {
    /// Anonymous.
    #[default]
    None,
    /// A username and password (or the `auth` base64 `user:pass` form).
    Basic {
        /// User name.
        username: String,
        /// Password.
        password: String,
    },
    /// An OAuth2 refresh token for the registry's token endpoint.
    IdentityToken(String),
    /// A bearer token for the registry itself.
    RegistryToken(String),
}

impl std::fmt::Debug for Credentials {
    /// Never prints a secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Credentials::None => "None",
            Credentials::Basic { .. } => "Basic(..)",
            Credentials::IdentityToken(_) => "IdentityToken(..)",
            Credentials::RegistryToken(_) => "RegistryToken(..)",
        })
    }
}

impl Credentials {
    /// From CRI's AuthConfig: a registry token wins, then an identity
    /// token, then username/password, then the `auth` field.
    pub fn from_cri(a: Option<&berth_proto::cri::AuthConfig>) -> Result<Self> {
        use base64::Engine;
        let Some(a) = a else { return Ok(Credentials::None) };
        if !a.registry_token.is_empty() {
            return Ok(Credentials::RegistryToken(a.registry_token.clone()));
        }
        if !a.identity_token.is_empty() {
            return Ok(Credentials::IdentityToken(a.identity_token.clone()));
        }
        if !a.username.is_empty() {
            return Ok(Credentials::Basic {
                username: a.username.clone(),
                password: a.password.clone(),
            });
        }
        if !a.auth.is_empty() {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(a.auth.trim())
                .map_err(|e| Error::InvalidArgument(format!("auth is not base64: {e}")))?;
            let text = String::from_utf8(raw)
                .map_err(|_| Error::InvalidArgument("auth is not UTF-8 user:password".into()))?;
            let (u, p) = text
                .split_once(':')
                .ok_or_else(|| Error::InvalidArgument("auth is not user:password".into()))?;
            return Ok(Credentials::Basic {
                username: u.to_string(),
                password: p.to_string(),
            });
        }
        Ok(Credentials::None)
    }

    /// The `Authorization: Basic` value, for basic credentials only.
    pub(super) fn basic_header(&self) -> Option<String> {
        use base64::Engine;
        match self {
            Credentials::Basic { username, password } => Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"))
            )),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_from_cri_auth() {
        use berth_proto::cri::AuthConfig;
        let c = |a: AuthConfig| Credentials::from_cri(Some(&a));
        assert_eq!(Credentials::from_cri(None).unwrap(), Credentials::None);
        assert_eq!(c(AuthConfig::default()).unwrap(), Credentials::None);
        let basic = Credentials::Basic {
            username: "u".into(),
            password: "p:w".into(),
        };
        let up = AuthConfig {
            username: "u".into(),
            password: "p:w".into(),
            ..Default::default()
        };
        assert_eq!(c(up).unwrap(), basic);
        // `auth` is base64("u:p:w"): the first colon splits.
        let b64 = AuthConfig {
            auth: "dTpwOnc=".into(),
            ..Default::default()
        };
        assert_eq!(c(b64).unwrap(), basic);
        assert_eq!(basic.basic_header().unwrap(), "Basic dTpwOnc=");
        let bad = AuthConfig {
            auth: "not base64!".into(),
            ..Default::default()
        };
        assert!(matches!(c(bad), Err(Error::InvalidArgument(_))));
        let tokens = AuthConfig {
            username: "u".into(),
            identity_token: "refresh".into(),
            ..Default::default()
        };
        assert_eq!(c(tokens).unwrap(), Credentials::IdentityToken("refresh".into()));
        let bearer = AuthConfig {
            registry_token: "tok".into(),
            identity_token: "refresh".into(),
            ..Default::default()
        };
        assert_eq!(c(bearer).unwrap(), Credentials::RegistryToken("tok".into()));
        assert_eq!(format!("{basic:?}"), "Basic(..)", "no secret in logs");
    }
}
