//! The `manifest` target: bytes a registry serves (a manifest, an index, an
//! image config, a digest) and names a CRI caller sends (an image
//! reference), through the parsers a pull runs. Invariants: no panic; an
//! error is a typed image error (NotFound for an index without the node's
//! platform, InvalidArgument for a reference); and every digest a parser
//! accepts is `sha256:` + 64 lowercase hex, whose hex is one plain path
//! component, as are the chain ids made of the config's diff_ids.

use std::path::{Component, Path};

use crate::error::{Error, Result};
use crate::image::manifest::{kind_of, parse_config, parse_index, parse_manifest, pick_platform_for};
use crate::image::reference::Reference;
use crate::image::{chain_ids, Digest};

/// Platforms an index is asked for (the ones Berth's nodes run on).
const PLATFORMS: &[(&str, Option<&str>)] = &[("amd64", None), ("arm64", Some("v8")), ("arm", Some("v7"))];

/// Panics unless `d` is a digest the store may make a path of.
fn assert_store_safe(d: &Digest) {
    let hex = d.hex();
    assert!(
        d.as_str() == format!("sha256:{hex}")
            && hex.len() == 64
            && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
        "accepted digest {d:?}"
    );
    let joined = Path::new("/store").join(hex);
    let mut parts = joined.components().skip(2);
    assert!(
        matches!(parts.next(), Some(Component::Normal(_))) && parts.next().is_none(),
        "digest {d:?} is not one path component"
    );
}

/// Panics on an untyped error; `allowed` tells the typed ones.
fn assert_typed<T: std::fmt::Debug>(what: &str, r: &Result<T>, allowed: fn(&Error) -> bool) {
    if let Err(e) = r {
        assert!(allowed(e), "{what}: untyped error {e:?}");
    }
}

fn image_error(e: &Error) -> bool {
    matches!(e, Error::Image(_))
}

/// Runs every parser on `data` and checks what each accepts.
pub fn run(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let d = Digest::parse(&text);
    assert_typed("digest", &d, image_error);
    if let Ok(d) = &d {
        assert_eq!(d.as_str(), text, "a digest is taken verbatim");
        assert_store_safe(d);
    }
    // Deserializing goes through the same check (records read back, JSON fields).
    if let Ok(d) = serde_json::from_slice::<Digest>(data) {
        assert_store_safe(&d);
    }
    assert_typed("media type", &kind_of(&text), image_error);
    let r = Reference::parse(&text);
    assert_typed("reference", &r, |e| matches!(e, Error::InvalidArgument(_)));
    if let Ok(r) = r {
        let _ = (
            r.name(),
            r.tagged(),
            r.manifest_ref(),
            r.registry_host(),
            r.is_loopback(),
        );
    }

    let m = parse_manifest(data);
    assert_typed("manifest", &m, image_error);
    if let Ok(m) = m {
        assert_store_safe(&m.config);
        m.layers.iter().for_each(|l| assert_store_safe(&l.digest));
    }
    let index = parse_index(data);
    assert_typed("index", &index, image_error);
    if let Ok(index) = index {
        for (arch, variant) in PLATFORMS {
            let picked = pick_platform_for(&index, arch, *variant);
            assert_typed("platform", &picked, |e| {
                matches!(e, Error::Image(_) | Error::NotFound(_))
            });
            if let Ok(d) = picked {
                assert_store_safe(&d);
            }
        }
    }
    let config = parse_config(data);
    assert_typed("config", &config, image_error);
    if let Ok((_, diff_ids)) = config {
        diff_ids.iter().for_each(assert_store_safe);
        let chains = chain_ids(&diff_ids);
        assert_eq!(chains.len(), diff_ids.len());
        chains.iter().for_each(assert_store_safe);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fuzzing::Mutator;
    use serde_json::json;

    fn hex(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    /// Documents as registries serve them (the shapes of Docker Hub's
    /// busybox index and manifests, an image config with VOLUMEs), digests
    /// and references.
    fn seeds() -> Vec<Vec<u8>> {
        let platform = |arch: &str, variant: Option<&str>| {
            let mut p = json!({"architecture": arch, "os": "linux"});
            if let Some(v) = variant {
                p["variant"] = json!(v);
            }
            p
        };
        let oci_index = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [
                {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": hex('a'), "size": 610,
                 "platform": platform("amd64", None)},
                {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": hex('b'), "size": 610,
                 "platform": platform("arm64", Some("v8"))},
                {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": hex('c'), "size": 610,
                 "platform": platform("arm", Some("v7"))},
                {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": hex('d'), "size": 566,
                 "annotations": {"vnd.docker.reference.type": "attestation-manifest"},
                 "platform": platform("unknown", None)},
            ],
        });
        let docker_list = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.list.v2+json",
            "manifests": [{"mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                "digest": hex('e'), "size": 528, "platform": platform("amd64", None)}],
        });
        let oci_manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": hex('1'), "size": 1457},
            "layers": [
                {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": hex('2'), "size": 2_152_262},
                {"mediaType": "application/vnd.oci.image.layer.v1.tar+zstd", "digest": hex('3'), "size": 93},
            ],
            "annotations": {"org.opencontainers.image.created": "2024-09-26T21:31:42Z"},
        });
        let docker_manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": hex('4'), "size": 1470},
            "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "digest": hex('5'), "size": 2_150_000}],
        });
        let config = json!({
            "architecture": "amd64",
            "os": "linux",
            "created": "2024-09-26T21:31:42Z",
            "config": {
                "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                "Cmd": ["sh"], "Entrypoint": ["/entry"], "WorkingDir": "/srv", "User": "1000:1000",
                "StopSignal": "SIGQUIT", "Volumes": {"/data": {}, "/var/log": {}},
            },
            "rootfs": {"type": "layers", "diff_ids": [hex('6'), hex('7')]},
            "history": [{"created": "2024-09-26T21:31:42Z", "created_by": "ADD rootfs.tar.xz /"}],
        });
        let mut out: Vec<Vec<u8>> = [oci_index, docker_list, oci_manifest, docker_manifest, config]
            .iter()
            .map(|v| serde_json::to_vec_pretty(v).unwrap())
            .collect();
        for s in [
            hex('f'),
            format!("\"{}\"", hex('0')),
            "application/vnd.oci.image.index.v1+json; charset=utf-8".into(),
            "registry.example:5000/library/busybox:1.36@sha256:".to_string() + &"a".repeat(64),
            "busybox".into(),
        ] {
            out.push(s.into_bytes());
        }
        out
    }

    /// The seeds parse as what they are.
    #[test]
    fn seed_documents_parse() {
        let s = seeds();
        assert!(parse_index(&s[0]).is_ok() && parse_index(&s[1]).is_ok());
        assert!(parse_manifest(&s[2]).is_ok() && parse_manifest(&s[3]).is_ok());
        assert!(parse_config(&s[4]).is_ok());
        assert!(Digest::parse(std::str::from_utf8(&s[5]).unwrap()).is_ok());
        s.iter().for_each(|s| run(s));
        crate::fuzzing::write_corpus("manifest", &s);
    }

    /// The seed with one JSON string (a digest, a media type, a platform,
    /// a diff_id...) mutated: still a document, with one hostile field.
    fn mutate_a_string(m: &mut Mutator, seed: &[u8]) -> Vec<u8> {
        let Ok(mut v) = serde_json::from_slice::<serde_json::Value>(seed) else {
            return seed.to_vec();
        };
        let mut strings = Vec::new();
        collect_strings(&mut v, &mut strings);
        if !strings.is_empty() {
            let s = strings.swap_remove(m.below(strings.len()));
            let mut uniform = |m: &mut Mutator, n: usize| m.below(n);
            *s = String::from_utf8_lossy(&m.mutate(s.as_bytes(), b"sha256:../", &mut uniform)).into_owned();
        }
        serde_json::to_vec(&v).unwrap()
    }

    fn collect_strings<'a>(v: &'a mut serde_json::Value, out: &mut Vec<&'a mut String>) {
        match v {
            serde_json::Value::String(s) => out.push(s),
            serde_json::Value::Array(a) => a.iter_mut().for_each(|v| collect_strings(v, out)),
            serde_json::Value::Object(o) => o.values_mut().for_each(|v| collect_strings(v, out)),
            _ => {}
        }
    }

    /// A fixed-seed mutation run (the libFuzzer target `manifest` runs the
    /// same [`run`] without a bound): mutated documents never panic, fail
    /// only with typed errors, and no accepted digest can become a path.
    #[test]
    fn mutated_documents_yield_only_store_safe_digests() {
        let seeds = seeds();
        let mut m = Mutator::new(0x5eed_d0c5_2026_0017);
        let mut uniform = |m: &mut Mutator, n: usize| m.below(n);
        let mut parsed = 0;
        for _ in 0..6_000 {
            let seed = &seeds[m.below(seeds.len())];
            let other = &seeds[m.below(seeds.len())];
            let input = if m.below(2) == 0 {
                mutate_a_string(&mut m, seed)
            } else {
                m.mutate(seed, other, &mut uniform)
            };
            run(&input);
            parsed += usize::from(parse_manifest(&input).is_ok() || parse_config(&input).is_ok());
        }
        // Mutations that keep a document valid reach the checks after parsing.
        assert!(parsed > 200, "only {parsed} mutated documents parsed");
    }
}
