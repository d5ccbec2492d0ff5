//! Reading a file (`/etc/passwd`, `/etc/group`) out of an image's layer
//! stack the way the container will see it, without ever leaving the image.
//!
//! Image content is untrusted: `/etc` may be a symlink to `/etc` of the host,
//! `/etc/group` a symlink to `../../../../etc/group`. Following such links on
//! the host would read the node's files into a container's identity. So the
//! path is resolved component by component over the overlay view of the
//! layers (topmost entry wins, 0:0 character devices are whiteouts, opaque
//! directories hide lower layers), and every symlink is interpreted inside
//! the image root, with `..` clamped at `/` and absolute targets restarting
//! at the image root: the semantics of openat2's RESOLVE_IN_ROOT.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// Symlinks followed before giving up (the kernel's limit).
const MAX_SYMLINKS: usize = 40;
/// Larger files are not user databases.
const MAX_FILE_BYTES: u64 = 4 << 20;

/// What lives at a path in the merged view.
enum Entry {
    /// A regular file, at this host path.
    File(PathBuf),
    /// A directory.
    Dir,
    /// A symlink with this target.
    Symlink(PathBuf),
    /// Nothing (or something that is neither: device, fifo, socket).
    Other,
}

fn is_whiteout(m: &std::fs::Metadata) -> bool {
    m.file_type().is_char_device() && m.rdev() == 0
}

fn is_opaque(dir: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    let mut buf = [0u8; 2];
    // SAFETY: lgetxattr(2) into a buffer we own.
    let n = unsafe {
        libc::lgetxattr(
            c.as_ptr(),
            c"trusted.overlay.opaque".as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    n == 1 && buf[0] == b'y'
}

/// Looks `rel` (already resolved, no symlinks in its parents) up in the
/// layers, topmost first.
fn lookup(layers: &[PathBuf], rel: &[String]) -> Entry {
    let rel_path: PathBuf = rel.iter().collect();
    for layer in layers {
        let p = layer.join(&rel_path);
        match std::fs::symlink_metadata(&p) {
            Ok(m) if is_whiteout(&m) => return Entry::Other,
            Ok(m) if m.file_type().is_symlink() => {
                return std::fs::read_link(&p).map_or(Entry::Other, Entry::Symlink);
            }
            Ok(m) if m.is_dir() => return Entry::Dir,
            Ok(m) if m.is_file() => return Entry::File(p),
            Ok(_) => return Entry::Other,
            Err(_) => {
                // Not here: lower layers count only if no parent directory
                // in this layer is opaque or a whiteout.
                let mut hidden = false;
                let mut dir = layer.clone();
                for c in rel.iter().take(rel.len().saturating_sub(1)) {
                    dir.push(c);
                    match std::fs::symlink_metadata(&dir) {
                        Ok(m) if is_whiteout(&m) => hidden = true,
                        Ok(m) if m.is_dir() && is_opaque(&dir) => hidden = true,
                        _ => {}
                    }
                }
                if hidden {
                    return Entry::Other;
                }
            }
        }
    }
    Entry::Other
}

/// Reads `path` (absolute inside the image) from `layers` (topmost first).
/// None when it does not exist, is not a regular file, or is too large.
pub fn read(layers: &[PathBuf], path: &str) -> Option<Vec<u8>> {
    let mut pending: Vec<String> = path.split('/').rev().map(str::to_string).collect();
    let mut resolved: Vec<String> = Vec::new();
    let mut links = 0;
    while let Some(c) = pending.pop() {
        match c.as_str() {
            "" | "." => continue,
            ".." => {
                resolved.pop();
                continue;
            }
            _ => {}
        }
        resolved.push(c);
        match lookup(layers, &resolved) {
            Entry::Dir => {}
            Entry::File(p) if pending.iter().all(|c| c.is_empty() || c == ".") => {
                let m = std::fs::metadata(&p).ok()?;
                if m.len() > MAX_FILE_BYTES {
                    return None;
                }
                return std::fs::read(p).ok();
            }
            Entry::Symlink(target) => {
                links += 1;
                if links > MAX_SYMLINKS {
                    return None;
                }
                resolved.pop();
                if target.is_absolute() {
                    resolved.clear();
                }
                let t = target.to_string_lossy().into_owned();
                pending.extend(t.split('/').rev().map(str::to_string));
            }
            Entry::File(_) | Entry::Other => return None,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn layers(n: usize) -> (tempfile::TempDir, Vec<PathBuf>) {
        let d = tempfile::tempdir().unwrap();
        let v: Vec<PathBuf> = (0..n).map(|i| d.path().join(format!("l{i}"))).collect();
        for l in &v {
            std::fs::create_dir_all(l).unwrap();
        }
        (d, v)
    }

    #[test]
    fn topmost_layer_wins_and_symlinks_resolve_across_layers() {
        let (_d, l) = layers(2); // l[0] is the top
        std::fs::create_dir_all(l[1].join("etc")).unwrap();
        std::fs::write(l[1].join("etc/passwd"), "lower").unwrap();
        assert_eq!(read(&l, "/etc/passwd").unwrap(), b"lower");
        std::fs::create_dir_all(l[0].join("etc")).unwrap();
        std::fs::write(l[0].join("etc/passwd"), "upper").unwrap();
        assert_eq!(read(&l, "/etc/passwd").unwrap(), b"upper");
        // A relative link in the top layer to a file only in the lower one.
        std::fs::create_dir_all(l[1].join("usr/lib")).unwrap();
        std::fs::write(l[1].join("usr/lib/group"), "real group").unwrap();
        symlink("../usr/lib/group", l[0].join("etc/group")).unwrap();
        assert_eq!(read(&l, "/etc/group").unwrap(), b"real group");
        assert!(read(&l, "/etc/shadow").is_none());
        assert!(read(&l, "/etc").is_none(), "a directory is not a file");
    }

    #[test]
    fn links_never_leave_the_image() {
        let (d, l) = layers(1);
        // Something outside the image that a naive join would read.
        std::fs::create_dir_all(d.path().join("outside")).unwrap();
        std::fs::write(d.path().join("outside/group"), "HOST").unwrap();
        std::fs::create_dir_all(l[0].join("outside")).unwrap();
        std::fs::write(l[0].join("outside/group"), "image").unwrap();
        symlink(d.path().join("outside"), l[0].join("etc")).unwrap();
        // /etc -> <abs host path>: resolved inside the image, where it does not exist.
        assert!(read(&l, "/etc/group").is_none());
        // ../../.. clamps at the image root.
        std::fs::remove_file(l[0].join("etc")).unwrap();
        std::fs::create_dir_all(l[0].join("etc")).unwrap();
        symlink("../../../../../outside/group", l[0].join("etc/group")).unwrap();
        assert_eq!(read(&l, "/etc/group").unwrap(), b"image");
        // Loops end.
        symlink("loop2", l[0].join("etc/loop1")).unwrap();
        symlink("loop1", l[0].join("etc/loop2")).unwrap();
        assert!(read(&l, "/etc/loop1").is_none());
    }

    #[test]
    fn whiteouts_hide_lower_files() {
        let (_d, l) = layers(2);
        std::fs::create_dir_all(l[1].join("etc")).unwrap();
        std::fs::write(l[1].join("etc/group"), "lower").unwrap();
        // A whiteout needs mknod (root); without it, a whited-out *directory*
        // above is modelled by an opaque-free empty dir check instead.
        std::fs::create_dir_all(l[0].join("etc")).unwrap();
        if nix::sys::stat::mknod(
            &l[0].join("etc/group"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o600),
            0,
        )
        .is_ok()
        {
            assert!(read(&l, "/etc/group").is_none(), "whited out");
        } else {
            assert_eq!(read(&l, "/etc/group").unwrap(), b"lower");
        }
    }
}
