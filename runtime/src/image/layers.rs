//! An image's layers: downloaded and unpacked a few at a time, each snapshot
//! (keyed by chain ID) made at most once however many pulls want it, and
//! committed by a rename so a half-made snapshot is never used.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::limits::{ImageBytes, Limits};
use super::registry::Registry;
use super::{unpack, Digest, ImageStore};
use crate::error::{Error, IoContext, Result};
use crate::metrics::counters::LAYER_BYTES_DOWNLOADED;
use crate::store;

/// Layers fetched at once: enough to hide registry latency, few enough not
/// to starve a small node's disk and CPU (gunzip) while pods start.
pub const PARALLEL_LAYERS: usize = 3;

/// One layer of a manifest.
#[derive(Debug, Clone)]
pub struct Layer {
    /// Blob digest (compressed).
    pub digest: Digest,
    /// Blob size from the manifest.
    pub size: u64,
    /// Uncompressed digest from the image config.
    pub diff_id: Digest,
    /// Chain ID: the snapshot's key.
    pub chain_id: Digest,
}

/// Per-snapshot gates shared by every pull of this store.
#[derive(Default)]
pub struct LayerGates(Mutex<HashMap<Digest, Arc<Mutex<()>>>>);

impl LayerGates {
    fn get(&self, chain_id: &Digest) -> Arc<Mutex<()>> {
        self.0
            .lock()
            .expect("layer gates")
            .entry(chain_id.clone())
            .or_default()
            .clone()
    }

    /// Forgets a gate nobody else holds (the map stays small).
    fn release(&self, chain_id: &Digest, gate: Arc<Mutex<()>>) {
        let mut map = self.0.lock().expect("layer gates");
        // Ours and the map's: no other pull waits on it.
        if Arc::strong_count(&gate) <= 2 {
            map.remove(chain_id);
        }
    }
}

impl ImageStore {
    /// Makes every missing snapshot of `layers`, PARALLEL_LAYERS at a time.
    /// The first error stops the others (as does `cancel`) and is returned.
    /// `image_bytes` counts what the pull unpacks against its limit.
    pub(super) fn fetch_layers(
        &self,
        reg: &Registry,
        layers: &[Layer],
        image_bytes: &ImageBytes,
        cancel: &AtomicBool,
    ) -> Result<()> {
        let missing: Vec<&Layer> = layers
            .iter()
            .filter(|l| !self.snapshot_dir(&l.chain_id).exists())
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let next = AtomicUsize::new(0);
        let abort = AtomicBool::new(false);
        let first_error: Mutex<Option<Error>> = Mutex::new(None);
        let workers = PARALLEL_LAYERS.min(missing.len());
        let (next, abort, first_error, missing) = (&next, &abort, &first_error, &missing);
        std::thread::scope(|s| {
            for _ in 0..workers {
                let mut reg = reg.clone();
                let spawned = berth_sys::thread::builder().spawn_scoped(s, move || loop {
                    if abort.load(Ordering::Relaxed) {
                        return;
                    }
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(layer) = missing.get(i) else { return };
                    let stop = StopFlags(cancel, abort);
                    if let Err(e) = self.fetch_layer(&mut reg, layer, image_bytes, &stop) {
                        abort.store(true, Ordering::Relaxed);
                        first_error.lock().expect("error slot").get_or_insert(e);
                        return;
                    }
                });
                if let Err(e) = spawned {
                    // The workers already made go on until they see abort.
                    abort.store(true, Ordering::Relaxed);
                    first_error
                        .lock()
                        .expect("error slot")
                        .get_or_insert(Error::io("spawn a layer fetch thread", e));
                    break;
                }
            }
        });
        let err = first_error.lock().expect("error slot").take();
        match err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn fetch_layer(
        &self,
        reg: &mut Registry,
        layer: &Layer,
        image_bytes: &ImageBytes,
        stop: &StopFlags<'_>,
    ) -> Result<()> {
        let gate = self.layer_gates.get(&layer.chain_id);
        let result = {
            // Another pull making the same snapshot finishes first; then it is
            // there and this one has nothing to do.
            let _held = gate.lock().expect("layer gate");
            if self.snapshot_dir(&layer.chain_id).exists() {
                Ok(())
            } else {
                self.make_snapshot(reg, layer, image_bytes, stop)
            }
        };
        self.layer_gates.release(&layer.chain_id, gate);
        result
    }

    fn make_snapshot(
        &self,
        reg: &mut Registry,
        layer: &Layer,
        image_bytes: &ImageBytes,
        stop: &StopFlags<'_>,
    ) -> Result<()> {
        let blob = self.blob_path(&layer.digest);
        if !blob.exists() {
            reg.blob_to_file(&layer.digest, layer.size, &blob, &|| stop.any())?;
            LAYER_BYTES_DOWNLOADED.fetch_add(layer.size, Ordering::Relaxed);
        }
        if stop.any() {
            return Err(Error::Image("pull cancelled".into()));
        }
        let snap = self.snapshot_dir(&layer.chain_id);
        let tmp = self.new_snapshot_dir()?;
        let committed = unpack_and_check(&blob, &tmp, layer, &self.limits, image_bytes).and_then(|()| {
            std::fs::rename(&tmp, &snap).ctx(|| format!("commit snapshot {}", snap.display()))
        });
        if let Err(e) = committed {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
        // The unpacked snapshot is the copy we use; the compressed blob is
        // only needed again for a re-unpack, so keep disk use down — unless
        // another layer (this manifest's or another pull's) is about to
        // unpack the same blob: then the last claim's release removes it.
        if !self.claimed_by_others(&super::claims::Item::Blob(layer.digest.clone())) {
            let _ = std::fs::remove_file(&blob);
        }
        Ok(())
    }
}

impl ImageStore {
    /// A fresh temp dir under `snapshots/` to unpack a layer into, 0700
    /// whatever the umask (the layer's own `./` entry may set another mode).
    fn new_snapshot_dir(&self) -> Result<std::path::PathBuf> {
        let tmp = self
            .root
            .join("snapshots")
            .join(format!(".tmp-{}", store::new_id()));
        store::modes::create_dir(&tmp, store::modes::PRIVATE_DIR)
            .ctx(|| format!("create {}", tmp.display()))?;
        Ok(tmp)
    }
}

fn unpack_and_check(
    blob: &Path,
    dir: &Path,
    layer: &Layer,
    limits: &Limits,
    image_bytes: &ImageBytes,
) -> Result<()> {
    let unpacked = unpack::unpack_layer(blob, dir, limits, image_bytes).map_err(|e| match e {
        // Which layer: a pull unpacks several at once.
        Error::Image(why) => Error::Image(format!("layer {}: {why}", layer.digest)),
        e => e,
    })?;
    if unpacked.diff_id != layer.diff_id {
        return Err(Error::Image(format!(
            "layer {} unpacks to {}, but the config says {}",
            layer.digest, unpacked.diff_id, layer.diff_id
        )));
    }
    Ok(())
}

/// The client's cancel flag and the pull's own abort flag (another layer
/// failed).
struct StopFlags<'a>(&'a AtomicBool, &'a AtomicBool);

impl StopFlags<'_> {
    fn any(&self) -> bool {
        self.0.load(Ordering::Relaxed) || self.1.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    /// The store's dirs and a snapshot being unpacked are root's alone
    /// under umask 000 (a world-writable snapshot would let any node user
    /// change every container made from the image).
    #[test]
    fn store_and_snapshot_dirs_are_private_under_any_umask() {
        let d = tempfile::tempdir().unwrap();
        // SAFETY: umask(2) only swaps the process mask; restored at once.
        let old = unsafe { libc::umask(0) };
        let made = ImageStore::open(d.path()).and_then(|s| s.new_snapshot_dir().map(|t| (s, t)));
        // SAFETY: as above.
        unsafe { libc::umask(old) };
        let (_store, tmp) = made.unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        let images = d.path().join("images");
        for p in [
            images.clone(),
            images.join("blobs"),
            images.join("blobs/sha256"),
            images.join("snapshots"),
            images.join("meta"),
            tmp,
        ] {
            assert_eq!(mode(&p), 0o700, "{}", p.display());
        }
    }
}
