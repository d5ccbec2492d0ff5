//! Disk use of a directory tree, counted one way everywhere: a container's
//! writable layer (its overlay upper dir) for the stats RPCs, the image
//! store and the containers' directory for ImageFsInfo.
//!
//! A tree walk costs time in proportion to the files in it, so it never
//! runs on an async worker: the stats sampler walks the writable layers in
//! the background (the RPCs answer the cached result with the time it was
//! taken), and ImageFsInfo walks on the blocking pool.

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

/// What the walk reads of one entry's `lstat`.
#[derive(Debug, Clone, Copy)]
struct Entry {
    dev: u64,
    ino: u64,
    nlink: u64,
    blocks: u64,
    is_dir: bool,
}

/// `lstat` of `path`: symlinks are never followed.
fn lstat(path: &Path) -> std::io::Result<Entry> {
    let m = std::fs::symlink_metadata(path)?;
    Ok(Entry {
        dev: m.dev(),
        ino: m.ino(),
        nlink: m.nlink(),
        blocks: m.blocks(),
        is_dir: m.is_dir(),
    })
}

/// Walks `root` without following symlinks or leaving its filesystem (a
/// mount below it, such as a running container's overlay rootfs, is not
/// counted); hard links count once. Entries that vanish during the walk (a
/// container is writing) are skipped. None when `root` does not exist.
pub fn measure(root: &Path) -> Option<TreeUsage> {
    measure_with(root, lstat)
}

/// [`measure`] with the `lstat` it uses given, so tests can put an entry
/// on another filesystem.
fn measure_with(root: &Path, stat: impl Fn(&Path) -> std::io::Result<Entry>) -> Option<TreeUsage> {
    let top = stat(root).ok()?;
    let mut usage = TreeUsage::default();
    let mut linked = HashSet::new();
    let mut count = |e: &Entry, usage: &mut TreeUsage| {
        if e.nlink > 1 && !e.is_dir && !linked.insert(e.ino) {
            return;
        }
        usage.used_bytes += e.blocks * 512;
        usage.inodes_used += 1;
    };
    count(&top, &mut usage);
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(e) = stat(&path) else {
                continue;
            };
            if e.dev != top.dev {
                continue;
            }
            count(&e, &mut usage);
            if e.is_dir {
                dirs.push(path);
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

    /// A file with two names occupies its blocks once (image layers and
    /// writable layers share files through hard links).
    #[test]
    fn a_hard_linked_file_counts_once() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("store");
        std::fs::create_dir(&root).unwrap();
        std::fs::write(root.join("data"), vec![7u8; 1 << 20]).unwrap();
        let alone = measure(&root).unwrap();
        std::fs::hard_link(root.join("data"), root.join("again")).unwrap();
        assert_eq!(measure(&root).unwrap(), alone, "the second name adds nothing");
    }

    /// A directory on another filesystem (a mount point below the root) is
    /// neither counted nor entered: the walk sees the mount's `st_dev`.
    #[test]
    fn another_filesystem_is_not_entered() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("containers");
        std::fs::create_dir_all(root.join("c1/rootfs/usr")).unwrap();
        std::fs::write(root.join("c1/rootfs/usr/big"), vec![7u8; 1 << 20]).unwrap();
        std::fs::write(root.join("c1/log"), vec![7u8; 4096]).unwrap();
        let mounted = root.join("c1/rootfs");
        let on_own_fs = measure_with(&root, lstat).unwrap();
        let with_mount = measure_with(&root, |p: &Path| {
            let mut e = lstat(p)?;
            if p.starts_with(&mounted) {
                e.dev = e.dev.wrapping_add(1);
            }
            Ok(e)
        })
        .unwrap();
        // containers, c1, log: rootfs, usr and big are on the mount.
        assert_eq!(with_mount.inodes_used, 3, "{with_mount:?}");
        assert_eq!(on_own_fs.inodes_used, 6, "{on_own_fs:?}");
        assert!(with_mount.used_bytes < 1 << 20, "{with_mount:?}");
        assert!(on_own_fs.used_bytes >= 1 << 20, "{on_own_fs:?}");
    }
}
