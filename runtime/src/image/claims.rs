//! What in-flight pulls use: each pull claims the snapshots (chain IDs) and
//! blobs (digests) it is about to look for, make or read, *before* it checks
//! whether they exist. When a pull ends its claim is released; whatever then
//! has no claimant left and no image record naming it is garbage and goes at
//! once — so a failed or cancelled pull leaves nothing behind, not until the
//! next start. A successful pull has written its record before it releases,
//! so its snapshots stay.
//!
//! Why this cannot remove a snapshot another pull relies on: the decision
//! (no claim, no record) and the rename out of the way happen under the
//! claims lock. A pull that claims before that sees the count above zero
//! and nothing is removed; one that claims after finds the snapshot gone
//! and makes it anew. RemoveImage decides the same way under the same lock,
//! so it never waits for a pull (a slow registry holds only its own pull).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;

use super::{Digest, ImageStore};
use crate::store;

/// One thing a pull uses.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum Item {
    /// `snapshots/<chain id hex>`.
    Snapshot(Digest),
    /// `blobs/sha256/<digest hex>`: a config (kept while an image record has
    /// that id) or a compressed layer (never kept once unpacked).
    Blob(Digest),
}

/// How many claims each item has (an item appears once per claimant use:
/// a layer blob listed twice in one manifest counts twice).
#[derive(Default)]
pub(super) struct Claims(Mutex<HashMap<Item, usize>>);

/// A pull's claims; released (and the garbage removed) on drop.
#[must_use]
pub(super) struct Claim<'a> {
    store: &'a ImageStore,
    items: Vec<Item>,
}

impl ImageStore {
    /// An empty claim for one pull.
    pub(super) fn claim(&self) -> Claim<'_> {
        Claim {
            store: self,
            items: Vec::new(),
        }
    }

    /// Whether any pull besides the caller (which holds one claim on it)
    /// still needs `item`.
    pub(super) fn claimed_by_others(&self, item: &Item) -> bool {
        self.claims
            .0
            .lock()
            .expect("claims lock")
            .get(item)
            .copied()
            .unwrap_or(0)
            > 1
    }

    fn item_path(&self, item: &Item) -> PathBuf {
        match item {
            Item::Snapshot(chain) => self.snapshot_dir(chain),
            Item::Blob(digest) => self.blob_path(digest),
        }
    }
}

impl ImageStore {
    /// RemoveImage's part under the claims lock: forgets the record `id`
    /// (map and file) and moves out of the way the snapshots and the
    /// config blob no other image names and no pull under way has claimed
    /// (a pull that claims later finds them gone and makes them anew).
    /// Returns the moved snapshot dirs, for the caller to delete unlocked.
    pub(super) fn remove_unclaimed(&self, id: &Digest) -> crate::error::Result<Vec<PathBuf>> {
        let claims = self.claims.0.lock().expect("claims lock");
        let mut images = self.images.lock().expect("images lock");
        let Some(rec) = images.remove(id.as_str()) else {
            return Ok(Vec::new());
        };
        // Under the images lock, as a pull writes its record.
        if let Err(e) = store::remove_record(&self.meta_path(id)) {
            images.insert(rec.id.clone(), rec);
            return Err(e);
        }
        crate::crash::point("remove_image.record");
        let mut doomed = Vec::new();
        for chain in &rec.chain_ids {
            let used = images.values().any(|r| r.chain_ids.contains(chain))
                || claims.contains_key(&Item::Snapshot(chain.clone()));
            if used {
                continue;
            }
            let gone = self
                .root
                .join("snapshots")
                .join(format!(".tmp-gone-{}", store::new_id()));
            if std::fs::rename(self.snapshot_dir(chain), &gone).is_ok() {
                doomed.push(gone);
            }
        }
        if !claims.contains_key(&Item::Blob(id.clone())) {
            let _ = std::fs::remove_file(self.blob_path(id));
        }
        Ok(doomed)
    }
}

impl Claim<'_> {
    /// Claims `item` for this pull (before the pull looks for it on disk).
    pub(super) fn add(&mut self, item: Item) {
        *self
            .store
            .claims
            .0
            .lock()
            .expect("claims lock")
            .entry(item.clone())
            .or_default() += 1;
        self.items.push(item);
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        if self.items.is_empty() {
            return;
        }
        let s = self.store;
        let mut doomed_dirs = Vec::new();
        let (mut snapshots, mut blobs) = (0usize, 0usize);
        {
            let mut claims = s.claims.0.lock().expect("claims lock");
            // Lock order: claims, then images (a pull records its image
            // under the images lock alone, before releasing its claim).
            let images = s.images.lock().expect("images lock");
            let referenced = |item: &Item| match item {
                Item::Snapshot(chain) => images.values().any(|r| r.chain_ids.contains(chain)),
                Item::Blob(digest) => images.contains_key(digest.as_str()),
            };
            for item in self.items.drain(..) {
                let Some(n) = claims.get_mut(&item) else {
                    continue;
                };
                *n -= 1;
                if *n > 0 {
                    continue;
                }
                claims.remove(&item);
                if referenced(&item) {
                    continue;
                }
                let path = s.item_path(&item);
                match item {
                    Item::Snapshot(_) => {
                        // Out of the way now (a rename); deleted outside the lock.
                        let gone = s
                            .root
                            .join("snapshots")
                            .join(format!(".tmp-gone-{}", store::new_id()));
                        if std::fs::rename(&path, &gone).is_ok() {
                            doomed_dirs.push(gone);
                            snapshots += 1;
                        }
                    }
                    Item::Blob(_) => {
                        if std::fs::remove_file(&path).is_ok() {
                            blobs += 1;
                        }
                    }
                }
            }
        }
        for d in doomed_dirs {
            if let Err(e) = std::fs::remove_dir_all(&d) {
                // Start-up GC sweeps `.tmp-*` names.
                tracing::warn!(path = %d.display(), error = %e, "could not remove an unused snapshot");
            }
        }
        if snapshots + blobs > 0 {
            tracing::info!(
                snapshots,
                blobs,
                "image store: removed what an unfinished pull made and nothing else uses"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::{ImageConfig, ImageRecord};

    fn chain(c: char) -> Digest {
        Digest::parse(&format!("sha256:{}", c.to_string().repeat(64))).unwrap()
    }

    fn make_snapshot(s: &ImageStore, chain: &Digest) {
        std::fs::create_dir_all(s.snapshot_dir(chain).join("etc")).unwrap();
    }

    #[test]
    fn a_failed_pull_removes_what_nobody_else_claims() {
        let d = tempfile::tempdir().unwrap();
        let s = ImageStore::open(d.path()).unwrap();
        let (shared, own, cfg) = (chain('a'), chain('b'), chain('c'));
        let mut failed = s.claim();
        failed.add(Item::Blob(cfg.clone()));
        failed.add(Item::Snapshot(shared.clone()));
        failed.add(Item::Snapshot(own.clone()));
        std::fs::write(s.blob_path(&cfg), b"{}").unwrap();
        make_snapshot(&s, &shared);
        make_snapshot(&s, &own);
        // Another image's pull has claimed the shared layer and found it in
        // place: it must stay when the first pull fails.
        let mut other = s.claim();
        other.add(Item::Snapshot(shared.clone()));
        assert!(s.claimed_by_others(&Item::Snapshot(shared.clone())));
        drop(failed);
        assert!(s.snapshot_dir(&shared).exists(), "claimed by the other pull");
        assert!(!s.snapshot_dir(&own).exists(), "made by the failed pull only");
        assert!(!s.blob_path(&cfg).exists(), "config of no recorded image");
        // The other pull succeeds: its record names the layer, so it stays.
        s.images.lock().unwrap().insert(
            chain('d').to_string(),
            ImageRecord {
                id: chain('d').to_string(),
                repo_tags: vec![],
                repo_digests: vec![],
                size_bytes: 1,
                config: ImageConfig::default(),
                chain_ids: vec![shared.clone()],
            },
        );
        drop(other);
        assert!(s.snapshot_dir(&shared).join("etc").exists());
        let left: Vec<_> = std::fs::read_dir(s.root.join("snapshots"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(left.len(), 1, "no .tmp-gone-* left: {left:?}");
    }

    /// RemoveImage waits for no pull, and takes nothing a pull under way
    /// has claimed: that snapshot and config blob stay for it.
    #[test]
    fn remove_leaves_what_a_pull_under_way_claimed() {
        let d = tempfile::tempdir().unwrap();
        let s = ImageStore::open(d.path()).unwrap();
        let (claimed, own, id) = (chain('1'), chain('2'), chain('3'));
        let rec = ImageRecord {
            id: id.to_string(),
            repo_tags: vec!["docker.io/library/x:latest".into()],
            repo_digests: vec![],
            size_bytes: 1,
            config: ImageConfig::default(),
            chain_ids: vec![claimed.clone(), own.clone()],
        };
        store::write_record(&s.meta_path(&id), &rec).unwrap();
        s.images.lock().unwrap().insert(id.to_string(), rec);
        make_snapshot(&s, &claimed);
        make_snapshot(&s, &own);
        std::fs::write(s.blob_path(&id), b"{}").unwrap();
        let mut pull = s.claim();
        pull.add(Item::Snapshot(claimed.clone()));
        pull.add(Item::Blob(id.clone()));
        s.remove("x:latest").unwrap();
        assert!(s.resolve("x:latest").is_none() && !s.meta_path(&id).exists());
        assert!(s.snapshot_dir(&claimed).join("etc").exists(), "the pull's");
        assert!(s.blob_path(&id).exists(), "the pull's config");
        assert!(!s.snapshot_dir(&own).exists(), "nobody's");
        // The pull fails: what it claimed is garbage now.
        drop(pull);
        assert!(!s.snapshot_dir(&claimed).exists() && !s.blob_path(&id).exists());
    }

    #[test]
    fn the_last_claimant_removes_an_unrecorded_snapshot() {
        let d = tempfile::tempdir().unwrap();
        let s = ImageStore::open(d.path()).unwrap();
        let c = chain('e');
        let mut a = s.claim();
        let mut b = s.claim();
        a.add(Item::Snapshot(c.clone()));
        b.add(Item::Snapshot(c.clone()));
        make_snapshot(&s, &c);
        drop(a);
        assert!(s.snapshot_dir(&c).exists());
        drop(b);
        assert!(!s.snapshot_dir(&c).exists(), "both pulls failed: garbage");
        // A layer blob claimed twice by one pull (the same layer twice in a
        // manifest) is needed until both uses are done.
        let blob = chain('f');
        let mut p = s.claim();
        p.add(Item::Blob(blob.clone()));
        p.add(Item::Blob(blob.clone()));
        assert!(s.claimed_by_others(&Item::Blob(blob.clone())));
        std::fs::write(s.blob_path(&blob), b"x").unwrap();
        drop(p);
        assert!(!s.blob_path(&blob).exists());
    }
}
