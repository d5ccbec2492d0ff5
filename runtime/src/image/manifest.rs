//! Manifests, indexes and image configs as `oci-spec`'s typed structs.
//!
//! Every document comes from a registry and is hostile: it is parsed into
//! the spec's types (a missing or mistyped field is an error, not a
//! default), its media types must be ones Berth knows (OCI, or Docker's
//! v2 schema 2), and each digest in it becomes a validated [`Digest`]
//! before anything else looks at it.

use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest};

use super::{Digest, ImageConfig};
use crate::error::{Error, Result};

/// An image index (multi-platform): OCI, or Docker's manifest list.
const INDEX_TYPES: &[&str] = &[
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];
/// One platform's image manifest: OCI, or Docker's v2 schema 2.
const MANIFEST_TYPES: &[&str] = &[
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];
/// The image config.
const CONFIG_TYPES: &[&str] = &[
    "application/vnd.oci.image.config.v1+json",
    "application/vnd.docker.container.image.v1+json",
];
/// Layers: OCI tar, gzip and zstd (also non-distributable), Docker's gzip
/// (also foreign). Unpack tells the compression by its magic number.
const LAYER_TYPES: &[&str] = &[
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
];

/// What a fetched manifest document is.
#[derive(Debug, PartialEq, Eq)]
pub enum Kind {
    /// An image index / manifest list.
    Index,
    /// One image's manifest.
    Manifest,
}

/// Classifies a manifest by its media type (the document's own, else the
/// registry's Content-Type); anything else is refused by name.
pub fn kind_of(media_type: &str) -> Result<Kind> {
    // A Content-Type may carry parameters (`; charset=utf-8`).
    let bare = media_type.split(';').next().unwrap_or_default().trim();
    if INDEX_TYPES.contains(&bare) {
        Ok(Kind::Index)
    } else if MANIFEST_TYPES.contains(&bare) {
        Ok(Kind::Manifest)
    } else {
        Err(Error::Image(format!(
            "unsupported manifest media type {media_type:?} (want an OCI or Docker v2 schema 2 manifest or index)"
        )))
    }
}

/// A descriptor's digest, as the store's [`Digest`].
fn digest_of(d: &Descriptor, what: &str) -> Result<Digest> {
    Digest::parse(d.digest().as_ref()).map_err(|e| Error::Image(format!("{what}: {e}")))
}

/// Refuses a descriptor whose media type is not in `allowed`.
fn check_type(d: &Descriptor, allowed: &[&str], what: &str) -> Result<()> {
    let t = d.media_type().to_string();
    if !allowed.contains(&t.as_str()) {
        return Err(Error::Image(format!(
            "{what} {} has unsupported media type {t:?}",
            d.digest()
        )));
    }
    Ok(())
}

/// One layer as a manifest lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerRef {
    /// The compressed blob's digest.
    pub digest: Digest,
    /// The blob's size, bytes.
    pub size: u64,
}

/// An image manifest's config and layers, checked.
#[derive(Debug)]
pub struct Parsed {
    /// The config blob's digest (the image id).
    pub config: Digest,
    /// Layers, lowest first.
    pub layers: Vec<LayerRef>,
}

/// Parses an image manifest.
pub fn parse_manifest(bytes: &[u8]) -> Result<Parsed> {
    let m: ImageManifest =
        serde_json::from_slice(bytes).map_err(|e| Error::Image(format!("image manifest: {e}")))?;
    check_type(m.config(), CONFIG_TYPES, "image config")?;
    let config = digest_of(m.config(), "manifest config")?;
    let layers = m
        .layers()
        .iter()
        .map(|l| {
            check_type(l, LAYER_TYPES, "layer")?;
            Ok(LayerRef {
                digest: digest_of(l, "manifest layer")?,
                size: l.size(),
            })
        })
        .collect::<Result<_>>()?;
    Ok(Parsed { config, layers })
}

/// Parses an image index.
pub fn parse_index(bytes: &[u8]) -> Result<ImageIndex> {
    serde_json::from_slice(bytes).map_err(|e| Error::Image(format!("image index: {e}")))
}

/// Picks the linux/`arch` manifest of an index: one whose variant equals
/// `variant` first, else one that states no variant (as containerd's
/// matcher does; an index for arm64 often omits `v8`). A manifest for
/// another variant (arm/v6 on an arm/v7 host, or the reverse) is not taken.
pub fn pick_platform_for(index: &ImageIndex, arch: &str, variant: Option<&str>) -> Result<Digest> {
    let for_arch = || {
        index.manifests().iter().filter(|m| {
            m.platform()
                .as_ref()
                .is_some_and(|p| p.os().to_string() == "linux" && p.architecture().to_string() == arch)
        })
    };
    let variant_of = |m: &&Descriptor| m.platform().as_ref().and_then(|p| p.variant().clone());
    let exact = for_arch().find(|m| variant_of(m).as_deref() == variant);
    let unstated = || for_arch().find(|m| variant_of(m).as_deref().is_none_or(str::is_empty));
    let Some(chosen) = exact.or_else(unstated) else {
        let wanted = match variant {
            Some(v) => format!("linux/{arch}/{v}"),
            None => format!("linux/{arch}"),
        };
        return Err(Error::NotFound(format!("image for platform {wanted}")));
    };
    check_type(chosen, MANIFEST_TYPES, "image index entry")?;
    // The digest goes into the manifest URL and is then the store's key.
    digest_of(chosen, "image index entry")
}

/// Parses an image config: what a container needs, and the diff_ids (each
/// becomes part of a chain id, a snapshot's directory name).
pub fn parse_config(bytes: &[u8]) -> Result<(ImageConfig, Vec<Digest>)> {
    let v: ImageConfiguration =
        serde_json::from_slice(bytes).map_err(|e| Error::Image(format!("image config: {e}")))?;
    let c = v.config().clone().unwrap_or_default();
    let mut volumes = c.volumes().clone().unwrap_or_default();
    volumes.sort();
    let cfg = ImageConfig {
        entrypoint: c.entrypoint().clone().unwrap_or_default(),
        cmd: c.cmd().clone().unwrap_or_default(),
        env: c.env().clone().unwrap_or_default(),
        working_dir: c.working_dir().clone().unwrap_or_default(),
        user: c.user().clone().unwrap_or_default(),
        stop_signal: c.stop_signal().clone().unwrap_or_default(),
        volumes,
    };
    let diff_ids = v
        .rootfs()
        .diff_ids()
        .iter()
        .map(|d| Digest::parse(d).map_err(|e| Error::Image(format!("image config diff_id: {e}"))))
        .collect::<Result<_>>()?;
    Ok((cfg, diff_ids))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    fn manifest(config_type: &str, layer_type: &str) -> Vec<u8> {
        serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_TYPES[0],
            "config": {"mediaType": config_type, "digest": hex('c'), "size": 10},
            "layers": [{"mediaType": layer_type, "digest": hex('1'), "size": 20}],
        })
        .to_string()
        .into_bytes()
    }

    #[test]
    fn known_media_types_are_accepted() {
        for t in INDEX_TYPES {
            assert_eq!(kind_of(t).unwrap(), Kind::Index);
        }
        assert_eq!(
            kind_of(&format!("{}; charset=utf-8", MANIFEST_TYPES[1])).unwrap(),
            Kind::Manifest
        );
        for c in CONFIG_TYPES {
            for l in LAYER_TYPES {
                let p = parse_manifest(&manifest(c, l)).unwrap();
                assert_eq!(p.config.to_string(), hex('c'));
                assert_eq!(
                    p.layers,
                    vec![LayerRef {
                        digest: Digest::parse(&hex('1')).unwrap(),
                        size: 20
                    }]
                );
            }
        }
    }

    #[test]
    fn unknown_media_types_are_refused_by_name() {
        for t in [
            "",
            "application/json",
            "application/vnd.docker.distribution.manifest.v1+prettyjws",
            "application/vnd.oci.artifact.manifest.v1+json",
        ] {
            let e = kind_of(t).unwrap_err().to_string();
            assert!(e.contains("unsupported manifest media type"), "{t}: {e}");
        }
        let e = parse_manifest(&manifest("application/vnd.example.config+json", LAYER_TYPES[1])).unwrap_err();
        assert!(
            e.to_string().contains("application/vnd.example.config+json"),
            "{e}"
        );
        let e = parse_manifest(&manifest(
            CONFIG_TYPES[0],
            "application/vnd.oci.image.layer.v1.tar+evil",
        ))
        .unwrap_err();
        assert!(e.to_string().contains("unsupported media type"), "{e}");
        // A helm chart or other artifact is not an image either.
        let e = parse_manifest(&manifest(
            "application/vnd.cncf.helm.config.v1+json",
            LAYER_TYPES[1],
        ))
        .unwrap_err();
        assert!(e.to_string().contains("helm"), "{e}");
    }

    #[test]
    fn documents_missing_required_fields_or_with_bad_digests_are_refused() {
        assert!(
            parse_manifest(br#"{"schemaVersion":2,"layers":[]}"#).is_err(),
            "no config"
        );
        let mut bad =
            serde_json::from_slice::<serde_json::Value>(&manifest(CONFIG_TYPES[0], LAYER_TYPES[1])).unwrap();
        bad["layers"][0]["digest"] = "sha256:../../../etc".into();
        assert!(parse_manifest(bad.to_string().as_bytes()).is_err());
        let sha512 = format!("sha512:{}", "a".repeat(128));
        bad["layers"][0]["digest"] = sha512.into();
        let e = parse_manifest(bad.to_string().as_bytes())
            .unwrap_err()
            .to_string();
        assert!(e.contains("algorithm sha512"), "{e}");
        // A config without rootfs is no image config.
        assert!(parse_config(br#"{"architecture":"amd64","os":"linux"}"#).is_err());
    }

    #[test]
    fn an_index_entry_must_be_an_image_manifest() {
        let idx = serde_json::json!({"schemaVersion": 2, "manifests": [{
            "mediaType": INDEX_TYPES[0], "digest": hex('a'), "size": 1,
            "platform": {"os": "linux", "architecture": "amd64"}}]});
        let idx = parse_index(idx.to_string().as_bytes()).unwrap();
        let e = pick_platform_for(&idx, "amd64", None).unwrap_err().to_string();
        assert!(e.contains("unsupported media type"), "{e}");
    }
}
