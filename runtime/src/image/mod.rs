//! The image store: pull from registries, unpack into overlay snapshots keyed
//! by chain ID, and keep image records.
//!
//! Layout below `<root>/images`:
//! * `blobs/sha256/<hex>`: verified manifests, configs and layer blobs;
//! * `snapshots/<chain-id hex>/`: one unpacked layer, used as an overlay lowerdir;
//! * `meta/<image id hex>.json`: the image record (crash-safe, versioned).
//!
//! Snapshots are unpacked into a temp dir and renamed into place, so a
//! half-unpacked layer is never visible under its final name.

pub mod auth;
mod claims;
pub mod digest;
pub mod hosts;
mod in_use;
mod layers;
pub mod limits;
pub mod manifest;
pub mod pull_auth;
pub mod reference;
pub mod registry;
mod tls;
pub mod unpack;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};
use crate::store;
pub use digest::Digest;
use reference::Reference;
use registry::Registry;

/// The parts of an image config a container needs.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ImageConfig {
    /// ENTRYPOINT.
    pub entrypoint: Vec<String>,
    /// CMD.
    pub cmd: Vec<String>,
    /// ENV, `K=V`.
    pub env: Vec<String>,
    /// WORKDIR.
    pub working_dir: String,
    /// USER, as written (`uid`, `uid:gid`, `name`, `name:group`).
    pub user: String,
    /// STOPSIGNAL.
    pub stop_signal: String,
    /// VOLUME paths, sorted (each gets an empty dir unless a CRI mount covers it).
    /// Absent in records written before volumes were parsed.
    #[serde(default)]
    pub volumes: Vec<String>,
}

/// A pulled image.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ImageRecord {
    /// `sha256:<config digest>` (a [`Digest`], checked when a record is
    /// loaded; a string because the container side keys by it).
    pub id: String,
    /// Normalised `domain/repo:tag` names pointing at this image.
    pub repo_tags: Vec<String>,
    /// `domain/repo@sha256:<manifest digest>`.
    pub repo_digests: Vec<String>,
    /// Compressed size of config + layers, bytes.
    pub size_bytes: u64,
    /// Runtime-relevant config.
    pub config: ImageConfig,
    /// Layer chain IDs, lowest layer first (validated when read back).
    pub chain_ids: Vec<Digest>,
}

/// Pulls, finds and lists images.
pub struct ImageStore {
    root: PathBuf,
    images: Mutex<HashMap<String, ImageRecord>>,
    pulls_in_flight: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Snapshots being made, shared by every pull (images share layers).
    layer_gates: layers::LayerGates,
    /// Snapshots and blobs in-flight pulls use; what a failed pull leaves
    /// unclaimed and unrecorded is removed as it ends.
    claims: claims::Claims,
    /// Per-registry mirrors, TLS settings and credentials from the config;
    /// SIGHUP swaps them, a pull keeps the ones it started with.
    hosts: parking_lot::RwLock<Arc<hosts::Hosts>>,
    /// Bounds on layers, bytes, entries and paths of one pull.
    limits: limits::Limits,
    /// Registry connect, response-header and idle timeouts.
    timeouts: hosts::Timeouts,
}

/// `chain[0] = diff[0]`, `chain[i] = sha256(chain[i-1] + " " + diff[i])` (OCI image spec).
pub fn chain_ids(diff_ids: &[Digest]) -> Vec<Digest> {
    let mut out: Vec<Digest> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(prev) => Digest::of(format!("{prev} {d}").as_bytes()),
        };
        out.push(next);
    }
    out
}

impl ImageStore {
    /// Opens the store under `<root>/images`, loading every image record.
    pub fn open(root: &Path) -> Result<Self> {
        let root = root.join("images");
        // Root's alone whatever the umask: layers are every container's files.
        for d in ["blobs/sha256", "snapshots", "meta"] {
            store::modes::create_dir(&root.join(d), store::modes::PRIVATE_DIR)
                .ctx(|| format!("create {}/{d}", root.display()))?;
        }
        let mut images = HashMap::new();
        for entry in std::fs::read_dir(root.join("meta")).ctx(|| "read image meta".into())? {
            let p = entry.ctx(|| "read image meta".into())?.path();
            if p.extension().and_then(|e| e.to_str()) != Some("json") {
                let _ = std::fs::remove_file(&p); // leftover temp file of a crash
                continue;
            }
            // Chain ids are checked by their type; the id here: a record
            // is as untrusted as the registry it was pulled from.
            match store::read_record::<ImageRecord>(&p).and_then(|r| Digest::parse(&r.id).map(|_| r)) {
                Ok(r) => {
                    images.insert(r.id.clone(), r);
                }
                Err(e) => tracing::warn!(path = %p.display(), error = %e, "skipping unreadable image record"),
            }
        }
        let store = ImageStore {
            root,
            images: Mutex::new(images),
            pulls_in_flight: Mutex::new(HashMap::new()),
            layer_gates: Default::default(),
            claims: Default::default(),
            hosts: Default::default(),
            limits: Default::default(),
            timeouts: Default::default(),
        };
        store.collect_garbage();
        Ok(store)
    }

    /// Uses these per-registry settings (mirrors, TLS) for pulls.
    pub fn with_hosts(self, hosts: hosts::Hosts) -> Self {
        self.set_hosts(hosts);
        self
    }

    /// Replaces the per-registry settings for pulls that start from now on.
    pub fn set_hosts(&self, hosts: hosts::Hosts) {
        *self.hosts.write() = Arc::new(hosts);
    }

    /// Uses these registry timeouts (the config's `registry_timeouts`).
    pub fn with_timeouts(mut self, timeouts: hosts::Timeouts) -> Self {
        self.timeouts = timeouts;
        self
    }

    /// Uses these bounds for pulls (the config's `image_limits`).
    pub fn with_limits(mut self, limits: limits::Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Opens a session with the first endpoint (mirrors in order, then the
    /// registry) that serves the reference's manifest.
    fn connect(
        &self,
        r: &Reference,
        auth: &pull_auth::PullAuth,
    ) -> Result<(Registry, registry::FetchedManifest)> {
        // One snapshot of the hosts settings per pull: a SIGHUP reload
        // swaps them whole, never in the middle of a pull.
        let settings = self.hosts.read().clone();
        let endpoints = hosts::endpoints(&settings, &r.domain, r.registry_host(), r.is_loopback());
        let mut last = None;
        for e in &endpoints {
            let agent = hosts::agent(&settings, &e.host, &self.timeouts)?;
            // The pull's credentials go only to the host they were given
            // for; every other endpoint gets what the config names for it.
            let creds = pull_auth::credentials_for(&settings, r, e, auth)?;
            let mut reg = Registry::new(r, e, agent, creds, &self.timeouts);
            match reg.manifest(r.manifest_ref()) {
                Ok(m) => {
                    if e.mirror {
                        tracing::info!(mirror = %e.base, image = %r.name(), "pulling from a mirror");
                    }
                    return Ok((reg, m));
                }
                Err(err) if e.mirror => {
                    tracing::warn!(mirror = %e.base, image = %r.name(), error = %err, "mirror failed; trying the next");
                    last = Some(err);
                }
                Err(err) => return Err(err),
            }
        }
        Err(last.unwrap_or_else(|| Error::Internal("no registry endpoint".into())))
    }

    /// Removes what no image record references: snapshots and blobs left by
    /// a crash mid-pull (`.tmp-*` dirs, `*.partial` files, snapshots whose
    /// image record was never written) or mid-remove (record gone,
    /// snapshots not yet). Runs at start, before any pull can be under way.
    fn collect_garbage(&self) {
        let (chains, configs): (
            std::collections::HashSet<String>,
            std::collections::HashSet<String>,
        ) = {
            let images = self.images.lock().expect("images lock");
            (
                images
                    .values()
                    .flat_map(|r| r.chain_ids.iter().map(|c| c.hex().to_string()))
                    .collect(),
                images
                    .keys()
                    .filter_map(|id| Digest::parse(id).ok())
                    .map(|d| d.hex().to_string())
                    .collect(),
            )
        };
        let sweep = |dir: PathBuf, keep: &std::collections::HashSet<String>| -> usize {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                return 0;
            };
            let mut removed = 0;
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if keep.contains(&name) {
                    continue;
                }
                let p = e.path();
                let gone = if p.is_dir() {
                    std::fs::remove_dir_all(&p)
                } else {
                    std::fs::remove_file(&p)
                };
                match gone {
                    Ok(()) => removed += 1,
                    Err(e) => tracing::warn!(path = %p.display(), error = %e, "image GC could not remove"),
                }
            }
            removed
        };
        let snapshots = sweep(self.root.join("snapshots"), &chains);
        let blobs = sweep(self.root.join("blobs/sha256"), &configs);
        if snapshots + blobs > 0 {
            tracing::info!(snapshots, blobs, "image store: removed what no image references");
        }
    }

    /// Directory of a snapshot (an overlay lowerdir).
    pub fn snapshot_dir(&self, chain_id: &Digest) -> PathBuf {
        self.root.join("snapshots").join(chain_id.hex())
    }

    fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(digest.hex())
    }

    /// Finds an image by id (full or `sha256:`-less), tag or digest reference.
    pub fn resolve(&self, name: &str) -> Option<ImageRecord> {
        let images = self.images.lock().expect("images lock");
        let as_id = if name.starts_with("sha256:") {
            name.to_string()
        } else {
            format!("sha256:{name}")
        };
        if let Some(r) = images.get(&as_id) {
            return Some(r.clone());
        }
        let parsed = Reference::parse(name).ok()?;
        let tagged = parsed.tagged();
        let digested = parsed.digest.as_ref().map(|d| format!("{}@{d}", parsed.name()));
        images
            .values()
            .find(|r| {
                // name@digest wins over the tag when both are given.
                match &digested {
                    Some(d) => r.repo_digests.contains(d),
                    None => tagged.as_ref().is_some_and(|t| r.repo_tags.contains(t)),
                }
            })
            .cloned()
    }

    /// Every image.
    pub fn list(&self) -> Vec<ImageRecord> {
        let mut v: Vec<_> = self
            .images
            .lock()
            .expect("images lock")
            .values()
            .cloned()
            .collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    /// Pulls `image` (blocking; run on the blocking pool). Returns the record.
    /// `cancel` (the client went away) stops it, leaving nothing half-made.
    pub fn pull(&self, image: &str, auth: &pull_auth::PullAuth, cancel: &AtomicBool) -> Result<ImageRecord> {
        let r = Reference::parse(image)?;
        let key = r.tagged().unwrap_or_else(|| r.name());
        let gate = self
            .pulls_in_flight
            .lock()
            .expect("pull lock")
            .entry(key.clone())
            .or_default()
            .clone();
        // Two pulls of the same reference run one after the other; the second
        // finds every blob and snapshot in place and finishes at once.
        let _guard = gate.blocking_lock();
        let started = std::time::Instant::now();
        let (mut reg, mut m) = self.connect(&r, auth)?;
        // The digest the reference names (an index's, for a multi-arch image):
        // `name@<it>` is what kubelet asks ImageStatus about.
        let top_digest = m.digest.clone();
        if manifest::kind_of(&m.media_type)? == manifest::Kind::Index {
            let chosen = pick_platform(&manifest::parse_index(&m.bytes)?)?;
            m = reg.manifest(chosen.as_str())?;
            if manifest::kind_of(&m.media_type)? != manifest::Kind::Manifest {
                return Err(Error::Image(format!(
                    "image index entry {chosen} is {:?}, not an image manifest",
                    m.media_type
                )));
            }
        }
        let parsed = manifest::parse_manifest(&m.bytes)?;
        let config_digest = parsed.config;
        // What this pull uses, claimed before it looks on disk: RemoveImage
        // leaves it alone, and should the pull fail, what it alone made
        // goes when the claim is dropped.
        let mut claim = self.claim();
        claim.add(claims::Item::Blob(config_digest.clone()));
        let config_bytes = reg.blob_bytes(&config_digest)?;
        self.store_blob(&config_digest, &config_bytes)?;
        let (config, diff_ids) = manifest::parse_config(&config_bytes)?;
        let layers: Vec<(Digest, u64)> = parsed.layers.into_iter().map(|l| (l.digest, l.size)).collect();
        self.limits.check_layers(layers.len())?;
        for (digest, size) in &layers {
            self.limits.check_blob_size(digest, *size)?;
        }
        if layers.len() != diff_ids.len() {
            return Err(Error::Image(format!(
                "manifest lists {} layers but the config has {} diff_ids",
                layers.len(),
                diff_ids.len()
            )));
        }
        let chains = chain_ids(&diff_ids);
        let size = config_bytes.len() as u64 + layers.iter().map(|l| l.1).sum::<u64>();
        let layers: Vec<layers::Layer> = layers
            .into_iter()
            .zip(diff_ids.iter().zip(&chains))
            .map(|((digest, size), (diff_id, chain_id))| layers::Layer {
                digest,
                size,
                diff_id: diff_id.clone(),
                chain_id: chain_id.clone(),
            })
            .collect();
        for l in &layers {
            claim.add(claims::Item::Snapshot(l.chain_id.clone()));
            claim.add(claims::Item::Blob(l.digest.clone()));
        }
        self.fetch_layers(&reg, &layers, &limits::ImageBytes::default(), cancel)?;
        crate::crash::point("pull_image.layers");
        // Every layer may have been in place already: a pull cancelled by now
        // still records nothing (kubelet gave up on it and will retry).
        if cancel.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(Error::Image("pull cancelled".into()));
        }
        let mut rec = ImageRecord {
            id: config_digest.to_string(),
            repo_tags: r.tagged().into_iter().collect(),
            repo_digests: vec![format!("{}@{top_digest}", r.name())],
            size_bytes: size,
            config,
            chain_ids: chains,
        };
        {
            let mut images = self.images.lock().expect("images lock");
            // A tag moves to the newly pulled image.
            let mut changed = Vec::new();
            for other in images.values_mut() {
                if other.id != rec.id && other.repo_tags.iter().any(|t| rec.repo_tags.contains(t)) {
                    other.repo_tags.retain(|t| !rec.repo_tags.contains(t));
                    changed.push(other.clone());
                }
            }
            if let Some(existing) = images.get(&rec.id) {
                for t in &existing.repo_tags {
                    if !rec.repo_tags.contains(t) {
                        rec.repo_tags.push(t.clone());
                    }
                }
                for d in &existing.repo_digests {
                    if !rec.repo_digests.contains(d) {
                        rec.repo_digests.push(d.clone());
                    }
                }
            }
            for c in &changed {
                store::write_record(&self.meta_path(&Digest::parse(&c.id)?), c)?;
            }
            store::write_record(&self.meta_path(&config_digest), &rec)?;
            crate::crash::point("pull_image.record");
            images.insert(rec.id.clone(), rec.clone());
        }
        tracing::info!(
            image = %image,
            id = %rec.id,
            bytes = size,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "image pulled"
        );
        Ok(rec)
    }

    /// Writes a verified blob (a config) by temp file and rename: a
    /// concurrent pull of the same image never reads it half-written.
    fn store_blob(&self, digest: &Digest, bytes: &[u8]) -> Result<()> {
        let path = self.blob_path(digest);
        let tmp = PathBuf::from(format!("{}.{}.partial", path.display(), store::new_id()));
        std::fs::write(&tmp, bytes)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|e| {
                let _ = std::fs::remove_file(&tmp);
                Error::io(format!("store blob {}", path.display()), e)
            })
    }

    fn meta_path(&self, id: &Digest) -> PathBuf {
        self.root.join("meta").join(format!("{}.json", id.hex()))
    }

    /// Removes an image by id, tag or digest. Unknown images are fine (CRI).
    /// Snapshots still used by another image, or claimed by a pull under
    /// way, stay. It waits for no pull: a slow registry holding one pull
    /// must not hold kubelet's image GC (nor the pulls queued behind it).
    pub fn remove(&self, name: &str) -> Result<()> {
        let Some(rec) = self.resolve(name) else {
            return Ok(());
        };
        // Every loaded or pulled record's id is a digest.
        let id = Digest::parse(&rec.id)?;
        for dir in self.remove_unclaimed(&id)? {
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                // Start-up GC sweeps `.tmp-*` names.
                tracing::warn!(path = %dir.display(), error = %e, "could not remove a snapshot");
            }
        }
        Ok(())
    }

    /// Overlay lowerdirs for an image, topmost layer first (overlayfs order).
    pub fn lower_dirs(&self, rec: &ImageRecord) -> Vec<PathBuf> {
        rec.chain_ids.iter().rev().map(|c| self.snapshot_dir(c)).collect()
    }

    /// Bytes used by snapshots (for ImageFsInfo).
    pub fn root(&self) -> &Path {
        &self.root
    }
}

/// Picks linux/<host arch>[/<variant>] from an image index.
fn pick_platform(index: &oci_spec::image::ImageIndex) -> Result<Digest> {
    let (arch, variant) = match std::env::consts::ARCH {
        "x86_64" => ("amd64", None),
        "aarch64" => ("arm64", Some("v8")),
        // Rust's "arm" targets are ARMv6/v7; v7 is what distributions ship.
        "arm" => ("arm", Some("v7")),
        other => (other, None),
    };
    manifest::pick_platform_for(index, arch, variant)
}

#[cfg(test)]
mod tests {
    use super::auth::Credentials;
    use super::manifest::{parse_config, parse_index, pick_platform_for};
    use super::*;

    /// The pull's credentials were given for the registry: a mirror over
    /// plain http never receives them, even when it asks.
    #[test]
    fn an_http_mirror_never_gets_the_pulls_credentials() {
        let (port, rx) = registry::tests::recording_server(|_| {
            "HTTP/1.1 401 Unauthorized\r\nwww-authenticate: Basic realm=\"m\"\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                .to_string()
        });
        let mut hosts = hosts::Hosts::default();
        hosts.insert(
            "reg.invalid".into(),
            hosts::HostConfig {
                mirrors: vec![format!("http://127.0.0.1:{port}")],
                ..Default::default()
            },
        );
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(dir.path()).unwrap().with_hosts(hosts);
        let r = Reference::parse("reg.invalid/lib/app:1").unwrap();
        let auth = pull_auth::PullAuth {
            creds: Credentials::Basic {
                username: "u".into(),
                password: "secret".into(),
            },
            server_address: String::new(),
        };
        assert!(store.connect(&r, &auth).is_err());
        let seen: Vec<String> = rx.try_iter().collect();
        assert!(!seen.is_empty(), "the mirror was not tried");
        for req in seen {
            assert!(
                !req.contains("authorization"),
                "credentials sent to an http mirror: {req}"
            );
        }
    }

    /// The digest of the `i`th index entry (i < 10).
    fn entry(i: usize) -> String {
        format!("sha256:{}", i.to_string().repeat(64))
    }

    fn pick(idx: &serde_json::Value, arch: &str, variant: Option<&str>) -> Result<String> {
        let idx = parse_index(idx.to_string().as_bytes())?;
        pick_platform_for(&idx, arch, variant).map(|d| d.to_string())
    }

    fn index(platforms: &[(&str, &str, Option<&str>)]) -> serde_json::Value {
        let manifests: Vec<_> = platforms
            .iter()
            .enumerate()
            .map(|(i, (os, arch, variant))| {
                let mut p = serde_json::json!({"os": os, "architecture": arch});
                if let Some(v) = variant {
                    p["variant"] = (*v).into();
                }
                serde_json::json!({"mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "size": 1, "digest": entry(i), "platform": p})
            })
            .collect();
        serde_json::json!({ "schemaVersion": 2, "manifests": manifests })
    }

    #[test]
    fn platform_prefers_the_exact_variant_then_an_unstated_one() {
        let idx = index(&[
            ("linux", "amd64", None),
            ("linux", "arm", Some("v6")),
            ("linux", "arm", Some("v7")),
            ("linux", "arm64", None),
            ("linux", "arm64", Some("v8")),
            ("windows", "amd64", None),
        ]);
        assert_eq!(pick(&idx, "amd64", None).unwrap(), entry(0));
        assert_eq!(pick(&idx, "arm", Some("v7")).unwrap(), entry(2));
        assert_eq!(pick(&idx, "arm", Some("v6")).unwrap(), entry(1));
        // Exact v8 wins over the entry without a variant listed before it.
        assert_eq!(pick(&idx, "arm64", Some("v8")).unwrap(), entry(4));
    }

    #[test]
    fn platform_accepts_a_missing_variant_but_not_another_one() {
        let idx = index(&[("linux", "arm64", None), ("linux", "arm", Some("v6"))]);
        assert_eq!(pick(&idx, "arm64", Some("v8")).unwrap(), entry(0));
        let err = pick(&idx, "arm", Some("v7")).unwrap_err();
        assert!(err.to_string().contains("linux/arm/v7"), "{err}");
        // An amd64 entry that names a variant is still no match for "none".
        let idx = index(&[("linux", "amd64", Some("v3")), ("linux", "amd64", None)]);
        assert_eq!(pick(&idx, "amd64", None).unwrap(), entry(1));
        let idx = index(&[("windows", "amd64", None)]);
        assert!(pick(&idx, "amd64", None).is_err());
        assert!(pick(&serde_json::json!({}), "amd64", None).is_err());
    }

    #[test]
    fn chain_ids_follow_the_spec() {
        let d1 = Digest::parse(&format!("sha256:{}", "1".repeat(64))).unwrap();
        let d2 = Digest::parse(&format!("sha256:{}", "2".repeat(64))).unwrap();
        let c = chain_ids(&[d1.clone(), d2.clone()]);
        assert_eq!(c[0], d1);
        use sha2::{Digest as _, Sha256};
        let want = format!("sha256:{}", hex::encode(Sha256::digest(format!("{d1} {d2}"))));
        assert_eq!(c[1].as_str(), want);
    }

    #[test]
    fn parses_image_config() {
        let (c, diffs) = parse_config(
            br#"{"architecture":"amd64","os":"linux","config":{"Entrypoint":["/bin/sh","-c"],"Cmd":["echo hi"],"Env":["PATH=/bin"],
                "WorkingDir":"/w","User":"1000:50","Volumes":{"/var/cache":{},"/data":{}}},"rootfs":{"type":"layers","diff_ids":["sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"]}}"#,
        )
        .unwrap();
        assert_eq!(c.entrypoint, vec!["/bin/sh", "-c"]);
        assert_eq!(c.cmd, vec!["echo hi"]);
        assert_eq!(c.user, "1000:50");
        assert_eq!(c.volumes, vec!["/data", "/var/cache"]);
        assert_eq!(
            diffs,
            vec![Digest::parse(&format!("sha256:{}", "a".repeat(64))).unwrap()]
        );
    }

    /// A config's diff_ids become store paths (chain ids): anything but
    /// `sha256:` + 64 lowercase hex is refused, naming the bad digest.
    #[test]
    fn config_diff_ids_that_are_not_sha256_digests_are_refused() {
        let good = "a".repeat(64);
        for bad in [
            "/var/lib/x".to_string(),
            "sha256:../../../var/lib/x".to_string(),
            format!("sha256:{}", "A".repeat(64)),
            format!("sha256:{}", &good[1..]),
            format!("sha256:{good}0"),
            format!("sha512:{good}{good}"),
            "sha256:".to_string(),
            String::new(),
        ] {
            let cfg = serde_json::json!({"architecture": "amd64", "os": "linux",
                "rootfs": {"type": "layers", "diff_ids": [bad]}});
            let err = parse_config(cfg.to_string().as_bytes()).expect_err(&bad);
            assert!(err.to_string().contains("digest"), "{bad}: {err}");
        }
        let cfg = serde_json::json!({"architecture": "amd64", "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [format!("sha512:{good}{good}")]}});
        let err = parse_config(cfg.to_string().as_bytes()).unwrap_err();
        assert!(err.to_string().contains("sha512"), "names the algorithm: {err}");
    }

    /// An image record on disk whose chain id is a path is not loaded, so
    /// RemoveImage cannot delete what it names.
    #[test]
    fn records_with_path_chain_ids_are_not_loaded() {
        let d = tempfile::tempdir().unwrap();
        let outside = d.path().join("node-dir");
        std::fs::create_dir_all(outside.join("keep")).unwrap();
        let s = ImageStore::open(&d.path().join("root")).unwrap();
        let id = format!("sha256:{}", "f".repeat(64));
        let rec = serde_json::json!({
            "id": id, "repo_tags": ["docker.io/library/evil:latest"], "repo_digests": [],
            "size_bytes": 1, "config": ImageConfig::default(),
            "chain_ids": [outside.to_str().unwrap()],
        });
        store::write_record(
            &s.root.join("meta").join(format!("{}.json", "f".repeat(64))),
            &rec,
        )
        .unwrap();
        drop(s);
        let s = ImageStore::open(&d.path().join("root")).unwrap();
        assert!(s.resolve("evil:latest").is_none(), "hostile record skipped");
        s.remove("evil:latest").unwrap();
        assert!(outside.join("keep").exists(), "node dir untouched");
    }

    #[test]
    fn picks_host_platform() {
        let m = "application/vnd.oci.image.manifest.v1+json";
        let idx = serde_json::json!({"schemaVersion":2,"manifests":[
            {"mediaType":m,"size":1,"digest":entry(1),"platform":{"os":"linux","architecture":"arm64"}},
            {"mediaType":m,"size":1,"digest":entry(2),"platform":{"os":"linux","architecture":"amd64"}}]});
        let got = pick_platform(&parse_index(idx.to_string().as_bytes()).unwrap()).unwrap();
        if std::env::consts::ARCH == "x86_64" {
            assert_eq!(got.to_string(), entry(2));
        }
    }

    #[test]
    fn start_up_removes_what_no_image_references() {
        let d = tempfile::tempdir().unwrap();
        let s = ImageStore::open(d.path()).unwrap();
        let chain = Digest::parse(&format!("sha256:{}", "e".repeat(64))).unwrap();
        let id = Digest::parse(&format!("sha256:{}", "f".repeat(64))).unwrap();
        let rec = ImageRecord {
            id: id.to_string(),
            repo_tags: vec!["docker.io/library/x:latest".into()],
            repo_digests: vec![],
            size_bytes: 1,
            config: ImageConfig::default(),
            chain_ids: vec![chain.clone()],
        };
        store::write_record(&s.meta_path(&id), &rec).unwrap();
        std::fs::create_dir_all(s.snapshot_dir(&chain).join("etc")).unwrap();
        std::fs::write(s.blob_path(&id), b"{}").unwrap();
        // What a crash mid-pull or mid-remove leaves behind.
        let orphan = s.snapshot_dir(&Digest::parse(&format!("sha256:{}", "0".repeat(64))).unwrap());
        std::fs::create_dir_all(orphan.join("usr")).unwrap();
        let tmp = s.root.join("snapshots/.tmp-123");
        std::fs::create_dir_all(&tmp).unwrap();
        let partial = s.root.join("blobs/sha256/abc.1.partial");
        std::fs::write(&partial, b"half").unwrap();
        drop(s);
        let s = ImageStore::open(d.path()).unwrap();
        assert!(s.resolve("x:latest").is_some());
        assert!(s.snapshot_dir(&chain).join("etc").exists(), "in use: kept");
        assert!(s.blob_path(&id).exists(), "config blob kept");
        assert!(!orphan.exists() && !tmp.exists() && !partial.exists());
    }

    #[test]
    fn resolves_by_id_tag_and_digest() {
        let d = tempfile::tempdir().unwrap();
        let s = ImageStore::open(d.path()).unwrap();
        let id = format!("sha256:{}", "c".repeat(64));
        let mdig = format!("sha256:{}", "d".repeat(64));
        let rec = ImageRecord {
            id: id.clone(),
            repo_tags: vec!["docker.io/library/busybox:latest".into()],
            repo_digests: vec![format!("docker.io/library/busybox@{mdig}")],
            size_bytes: 1,
            config: ImageConfig::default(),
            chain_ids: vec![],
        };
        s.images.lock().unwrap().insert(id.clone(), rec);
        assert!(s.resolve("busybox").is_some());
        assert!(s.resolve("busybox:latest").is_some());
        assert!(s.resolve(&id).is_some());
        assert!(s.resolve(&"c".repeat(64)).is_some());
        assert!(s.resolve(&format!("busybox@{mdig}")).is_some());
        assert!(s.resolve("busybox:other").is_none());
        s.remove("busybox").unwrap();
        assert!(s.resolve(&id).is_none());
        s.remove("busybox").unwrap(); // unknown is fine
    }
}
