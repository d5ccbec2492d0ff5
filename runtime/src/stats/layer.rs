//! Disk use of a container's writable layer (its overlay upper dir).
//!
//! A tree walk costs time in proportion to the files a container wrote, so
//! it never runs inside an RPC: the sampler walks every layer in the
//! background and the RPCs answer the cached result with the time it was
//! taken.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Bytes and inodes a directory tree occupies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TreeUsage {
    /// Allocated bytes (`st_blocks` × 512, as `du` counts: sparse files
    /// count what they occupy, not their length).
    pub used_bytes: u64,
    /// Distinct inodes, the directory itself included.
    pub inodes_used: u64,
}

/// Walks `root` without following symlinks or leaving its filesystem;
/// hard links count once. Entries that vanish during the walk (the
/// container is writing) are skipped. None when `root` does not exist.
pub fn measure(root: &Path) -> Option<TreeUsage> {
    let top = std::fs::symlink_metadata(root).ok()?;
    let dev = top.dev();
    let mut usage = TreeUsage::default();
    let mut linked = HashSet::new();
    let mut count = |m: &std::fs::Metadata, usage: &mut TreeUsage| {
        if m.nlink() > 1 && !m.is_dir() && !linked.insert(m.ino()) {
            return;
        }
        usage.used_bytes += m.blocks() * 512;
        usage.inodes_used += 1;
    };
    count(&top, &mut usage);
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(m) = entry.metadata() else {
                continue;
            };
            if m.dev() != dev {
                continue;
            }
            count(&m, &mut usage);
            if m.is_dir() {
                dirs.push(entry.path());
            }
        }
    }
    Some(usage)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_dirs_links_and_holes() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("upper");
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::write(root.join("a/b/data"), vec![7u8; 256 * 1024]).unwrap();
        std::fs::hard_link(root.join("a/b/data"), root.join("a/again")).unwrap();
        std::os::unix::fs::symlink("/etc", root.join("etc-link")).unwrap();
        // A sparse file of 64 MiB that occupies (almost) nothing.
        std::fs::File::create(root.join("sparse"))
            .unwrap()
            .set_len(64 << 20)
            .unwrap();
        let u = measure(&root).unwrap();
        // upper, a, a/b, data (= again), etc-link, sparse.
        assert_eq!(u.inodes_used, 6);
        assert!(u.used_bytes >= 256 * 1024, "{u:?}");
        assert!(
            u.used_bytes < 256 * 1024 * 2 + 64 * 1024,
            "the hard link counts once, the hole not at all, /etc is not walked: {u:?}"
        );
        assert_eq!(measure(&d.path().join("none")), None);
    }
}
