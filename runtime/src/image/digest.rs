//! Content digests, validated before the store makes a path of one.
//!
//! Every digest Berth handles comes from somewhere hostile: a manifest, an
//! index or an image config served by a registry, or an image record read
//! back from disk. The store names its files by digest, so a digest that is
//! not exactly `sha256:` + 64 lowercase hex digits (a path, `..`, another
//! algorithm) is refused when it is parsed, and the store's path functions
//! take only this type.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::error::{Error, Result};

/// The one algorithm the store supports (as the OCI spec requires of
/// registries; `sha512` images are rare and refused by name).
const PREFIX: &str = "sha256:";
/// Hex digits of a sha256 digest.
const HEX_LEN: usize = 64;
/// How much of a refused digest an error quotes (it is hostile input).
const SHOWN_CHARS: usize = 120;

/// A validated `sha256:<64 lowercase hex>` digest.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Digest(String);

impl Digest {
    /// Parses an untrusted digest; the error names it (quoted, shortened).
    pub fn parse(s: &str) -> Result<Self> {
        if let Some(hex) = s.strip_prefix(PREFIX) {
            if hex.len() == HEX_LEN && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
                return Ok(Digest(s.to_string()));
            }
            return Err(Error::Image(format!(
                "invalid digest {}: expected sha256: and {HEX_LEN} lowercase hex digits",
                shown(s)
            )));
        }
        match s.split_once(':') {
            Some((alg, _)) if !alg.is_empty() && alg.bytes().all(|b| b.is_ascii_alphanumeric()) => {
                Err(Error::Image(format!(
                    "digest {} uses algorithm {alg}; only sha256 is supported",
                    shown(s)
                )))
            }
            _ => Err(Error::Image(format!(
                "invalid digest {}: expected sha256:<hex>",
                shown(s)
            ))),
        }
    }

    /// The digest of a finished hash.
    pub fn from_hasher(h: Sha256) -> Self {
        use sha2::Digest as _;
        Digest(format!("{PREFIX}{}", hex::encode(h.finalize())))
    }

    /// The digest of `data`.
    pub fn of(data: &[u8]) -> Self {
        use sha2::Digest as _;
        Self::from_hasher(Sha256::new_with_prefix(data))
    }

    /// The 64 hex digits: a safe single path component.
    pub fn hex(&self) -> &str {
        &self.0[PREFIX.len()..]
    }

    /// `sha256:<hex>`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A hostile string, quoted and cut short for an error message.
fn shown(s: &str) -> String {
    if s.chars().count() <= SHOWN_CHARS {
        format!("{s:?}")
    } else {
        let head: String = s.chars().take(SHOWN_CHARS).collect();
        format!("{head:?}...")
    }
}

impl TryFrom<String> for Digest {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        Digest::parse(&s)
    }
}

impl From<Digest> for String {
    fn from(d: Digest) -> String {
        d.0
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl PartialEq<str> for Digest {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_only_sha256_with_64_lowercase_hex() {
        let hex = "0123456789abcdef".repeat(4);
        let d = Digest::parse(&format!("sha256:{hex}")).unwrap();
        assert_eq!(d.hex(), hex);
        assert_eq!(d.to_string(), format!("sha256:{hex}"));
        for bad in [
            String::new(),
            "sha256:".into(),
            hex.clone(),
            format!("sha256:{}", hex.to_uppercase()),
            format!("sha256:{}", &hex[1..]),
            format!("sha256:{hex}0"),
            format!("sha256:{}/..", &hex[..61]),
            "sha256:../../../var/lib/x".into(),
            "/var/lib/x".into(),
            format!(" sha256:{hex}"),
            format!("SHA256:{hex}"),
        ] {
            let e = Digest::parse(&bad).expect_err(&bad);
            assert!(e.to_string().contains("digest"), "{bad}: {e}");
        }
        let e = Digest::parse(&format!("sha512:{hex}{hex}")).unwrap_err();
        assert!(e.to_string().contains("algorithm sha512"), "{e}");
        let long = format!("/{}", "x".repeat(10_000));
        assert!(
            Digest::parse(&long).unwrap_err().to_string().len() < 300,
            "quoted short"
        );
    }

    #[test]
    fn deserializing_validates() {
        let hex = "a".repeat(64);
        let d: Digest = serde_json::from_str(&format!("\"sha256:{hex}\"")).unwrap();
        assert_eq!(serde_json::to_string(&d).unwrap(), format!("\"sha256:{hex}\""));
        assert!(serde_json::from_str::<Digest>("\"/etc\"").is_err());
        assert_eq!(
            Digest::of(b"").hex(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
