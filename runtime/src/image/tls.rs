//! Trust anchors for registry TLS: the node's CA bundle, read once, and an
//! operator's `ca_file` added to it. Kept apart from the HTTP client
//! (`registry.rs`) and the host settings (`hosts.rs`), which both need it.

use std::path::Path;
use std::sync::Arc;

use crate::error::{Error, Result};

/// The node's CA bundles, first found wins (Debian/Ubuntu, Fedora/RHEL,
/// Alpine/Arch): the trust an operator configures with
/// `update-ca-certificates`, which a private registry's CA is added to.
pub(super) const SYSTEM_CA_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

/// Trust anchors for registry TLS: the system bundle, read once. Only a node
/// with no bundle at all falls back to the Mozilla roots built into the
/// binary (logged), so a pull never silently trusts less than the node does.
pub(super) fn system_roots() -> &'static ureq::tls::RootCerts {
    static ROOTS: std::sync::OnceLock<ureq::tls::RootCerts> = std::sync::OnceLock::new();
    ROOTS.get_or_init(|| {
        for path in SYSTEM_CA_BUNDLES {
            match roots_from(Path::new(path)) {
                Ok(certs) if !certs.is_empty() => {
                    tracing::debug!(
                        bundle = path,
                        certs = certs.len(),
                        "registry TLS trusts the system CA bundle"
                    );
                    return ureq::tls::RootCerts::from(certs);
                }
                Ok(_) => tracing::warn!(bundle = path, "CA bundle holds no certificate"),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!(bundle = path, error = %e, "CA bundle unreadable"),
            }
        }
        tracing::warn!("no system CA bundle found; registry TLS uses the built-in Mozilla roots");
        ureq::tls::RootCerts::WebPki
    })
}

/// Every certificate in a PEM bundle (keys and other items are skipped).
pub(super) fn roots_from(path: &Path) -> std::io::Result<Vec<ureq::tls::Certificate<'static>>> {
    let pem = std::fs::read(path)?;
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        match item {
            Ok(ureq::tls::PemItem::Certificate(c)) => certs.push(c),
            Ok(_) => {}
            Err(e) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{}: {e}", path.display()),
                ))
            }
        }
    }
    Ok(certs)
}

/// The node's bundle plus the certificates of `ca`.
pub(super) fn with_ca_file(ca: &Path) -> Result<ureq::tls::RootCerts> {
    let mut certs = roots_from(ca).map_err(|e| Error::Image(format!("ca_file {}: {e}", ca.display())))?;
    for path in SYSTEM_CA_BUNDLES {
        if let Ok(system) = roots_from(Path::new(path)) {
            if !system.is_empty() {
                certs.extend(system);
                break;
            }
        }
    }
    Ok(ureq::tls::RootCerts::Specific(Arc::new(certs)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_bundles_yield_their_certificates_only() {
        let dir = tempfile::tempdir().unwrap();
        // A self-signed CA certificate followed by its private key, as some
        // hand-made bundles are: the key is skipped, not an error.
        let one = include_bytes!("testdata/ca-and-key.pem");
        let bundle = dir.path().join("bundle.pem");
        std::fs::write(&bundle, [&one[..], &one[..]].concat()).unwrap();
        assert_eq!(roots_from(&bundle).unwrap().len(), 2);
        std::fs::write(&bundle, b"").unwrap();
        assert!(roots_from(&bundle).unwrap().is_empty());
        let missing = roots_from(&dir.path().join("none.pem")).unwrap_err();
        assert_eq!(missing.kind(), std::io::ErrorKind::NotFound);
    }
}
