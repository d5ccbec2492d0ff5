//! The checkpoint archive: one uncompressed tar an operator can list and
//! unpack, laid out as
//!
//! - `checkpoint/`: CRIU's image files (and its `dump.log`);
//! - `rootfs-diff/`: the container's writable overlay layer (its changes
//!   to the image; overlay whiteouts stay 0:0 character devices, and an
//!   opaque directory keeps `trusted.overlay.opaque`: see [`kept_xattr`]);
//! - `config.json`: the OCI spec it was created with;
//! - `container.json`: the container's CRI config and status (berthd's
//!   record of it);
//! - `container.log`: its log, when it has one;
//! - `descriptors.json`: what the init's stdin, stdout and stderr were,
//!   by the names CRIU gives those files (`pipe:[4026]`, or the external
//!   key `file[<mnt>:<ino>]` of a file outside the container's mounts), so
//!   a restore can hand it new ones in their place.
//!
//! It is written to a temporary file beside the final path and renamed
//! over it only when complete, so a failed checkpoint leaves no archive.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use crate::error::{Error, IoContext, Result};

/// One piece of the archive.
pub enum Part<'a> {
    /// A directory tree stored under `name`.
    Tree { name: &'a str, dir: &'a Path },
    /// A file stored as `name` (skipped when `optional` and missing).
    File {
        name: &'a str,
        path: &'a Path,
        optional: bool,
    },
    /// Bytes stored as `name`.
    Bytes { name: &'a str, data: &'a [u8] },
}

/// Writes `parts` as a tar to a temporary file in `dir` and renames it to
/// `dest`. Returns the archive's size in bytes. `note` is given the
/// temporary file's path before the file is created, so a crash at any
/// later moment can be cleaned up (`leftovers.rs`).
pub fn write(dest: &Path, dir: &Path, parts: &[Part<'_>], note: &dyn Fn(&Path) -> Result<()>) -> Result<u64> {
    let tmp = tempfile::Builder::new()
        .prefix(super::leftovers::TEMP_PREFIX)
        .make_in(dir, |path| {
            note(path).map_err(|e| std::io::Error::other(e.to_string()))?;
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(path)
        })
        .ctx(|| format!("create a temporary archive in {}", dir.display()))?;
    let mut b = tar::Builder::new(std::io::BufWriter::new(tmp.as_file()));
    for p in parts {
        match p {
            Part::Tree { name, dir } => append_tree(&mut b, dir, Path::new(name))?,
            Part::File { name, path, optional } => match File::open(path) {
                Ok(f) => append_file(&mut b, Path::new(name), f)?,
                Err(e) if *optional && e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(format!("open {}", path.display()), e)),
            },
            Part::Bytes { name, data } => {
                let mut h = tar::Header::new_gnu();
                h.set_size(data.len() as u64);
                h.set_mode(0o600);
                h.set_entry_type(tar::EntryType::Regular);
                b.append_data(&mut h, name, *data)
                    .ctx(|| format!("archive {name}"))?;
            }
        }
    }
    let mut w = b.into_inner().ctx(|| "finish the archive".into())?;
    w.flush().ctx(|| "write the archive".into())?;
    drop(w);
    tmp.as_file().sync_all().ctx(|| "sync the archive".into())?;
    crate::crash::point("checkpoint.archive");
    let size = tmp.as_file().metadata().map(|m| m.len()).unwrap_or(0);
    tmp.persist(dest)
        .map_err(|e| Error::io(format!("rename the archive to {}", dest.display()), e.error))?;
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(size)
}

/// A header carrying `m`'s mode, owner and times.
fn header(m: &std::fs::Metadata, kind: tar::EntryType) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(m.mode() & 0o7777);
    h.set_uid(m.uid().into());
    h.set_gid(m.gid().into());
    h.set_mtime(m.mtime().max(0) as u64);
    h.set_size(0);
    h
}

/// Appends an open regular file. The container runs on while it is read,
/// so the file may change size: exactly the size seen at open is stored
/// (cut or zero-padded), which keeps the tar well-formed.
fn append_file<W: Write>(b: &mut tar::Builder<W>, name: &Path, f: File) -> Result<()> {
    let m = f.metadata().ctx(|| format!("stat {}", name.display()))?;
    let mut h = header(&m, tar::EntryType::Regular);
    h.set_size(m.len());
    let body = f.take(m.len()).chain(std::io::repeat(0)).take(m.len());
    b.append_data(&mut h, name, body)
        .ctx(|| format!("archive {}", name.display()))
}

/// Whether an entry's extended attribute goes into the archive (as a PAX
/// `SCHILY.xattr.` record): `trusted.overlay.opaque`, without which an
/// opaque directory of the writable layer would show the image's files
/// again once restored; the application's `user.*`; file capabilities.
/// Not overlayfs's other `trusted.overlay.*` (origin and impure name this
/// node's lower inodes), nor the node's security labels.
pub fn kept_xattr(name: &[u8]) -> bool {
    name == b"trusted.overlay.opaque" || name.starts_with(b"user.") || name == b"security.capability"
}

/// The PAX key prefix of an extended attribute.
pub const PAX_XATTR_PREFIX: &str = "SCHILY.xattr.";

/// Appends a PAX record with `path`'s kept xattrs (nothing when it has
/// none), which the tar readers apply to the entry that follows.
fn append_xattrs<W: Write>(b: &mut tar::Builder<W>, path: &Path, inner: &Path) -> Result<()> {
    // Gone or unreadable since the listing: the entry itself will say so.
    let names = berth_sys::xattr::list(path).unwrap_or_default();
    let mut records: Vec<(String, Vec<u8>)> = Vec::new();
    for n in names.iter().filter(|n| kept_xattr(n.to_bytes())) {
        if let Ok(Some(v)) = berth_sys::xattr::get(path, n) {
            records.push((format!("{PAX_XATTR_PREFIX}{}", n.to_string_lossy()), v));
        }
    }
    b.append_pax_extensions(records.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
        .ctx(|| format!("archive the xattrs of {}", inner.display()))
}

/// Appends `dir`'s tree under `name`, never following a symlink (the
/// tree is the container's: hostile). Sockets and fifos are skipped.
fn append_tree<W: Write>(b: &mut tar::Builder<W>, dir: &Path, name: &Path) -> Result<()> {
    let m = std::fs::symlink_metadata(dir).ctx(|| format!("stat {}", dir.display()))?;
    let mut h = header(&m, tar::EntryType::Directory);
    b.append_data(&mut h, name, std::io::empty())
        .ctx(|| format!("archive {}", name.display()))?;
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .ctx(|| format!("read {}", dir.display()))?
        .collect::<std::io::Result<_>>()
        .ctx(|| format!("read {}", dir.display()))?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let path = e.path();
        let inner = name.join(e.file_name());
        // Gone since the listing (the container deleted it): skip it.
        let Ok(m) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        let ft = m.file_type();
        // Each xattr record goes right before the entry it belongs to:
        // never before one that is then skipped.
        if ft.is_dir() {
            append_xattrs(b, &path, &inner)?;
            append_tree(b, &path, &inner)?;
        } else if ft.is_symlink() {
            let target = std::fs::read_link(&path).ctx(|| format!("readlink {}", path.display()))?;
            let mut h = header(&m, tar::EntryType::Symlink);
            append_xattrs(b, &path, &inner)?;
            b.append_link(&mut h, &inner, &target)
                .ctx(|| format!("archive {}", inner.display()))?;
        } else if ft.is_file() {
            // O_NOFOLLOW: it was a file a moment ago; a symlink now is skipped.
            use std::os::unix::fs::OpenOptionsExt;
            let f = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&path);
            if let Ok(f) = f {
                append_xattrs(b, &path, &inner)?;
                append_file(b, &inner, f)?;
            }
        } else if ft.is_char_device() || ft.is_block_device() {
            let kind = if ft.is_char_device() {
                tar::EntryType::Char
            } else {
                tar::EntryType::Block
            };
            let mut h = header(&m, kind);
            let rdev = m.rdev();
            h.set_device_major(libc::major(rdev))
                .ctx(|| "device major".into())?;
            h.set_device_minor(libc::minor(rdev))
                .ctx(|| "device minor".into())?;
            append_xattrs(b, &path, &inner)?;
            b.append_data(&mut h, &inner, std::io::empty())
                .ctx(|| format!("archive {}", inner.display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(archive: &Path) -> Vec<String> {
        let mut a = tar::Archive::new(File::open(archive).unwrap());
        a.entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn parts_land_under_their_names_and_symlinks_are_not_followed() {
        let d = tempfile::tempdir().unwrap();
        let tree = d.path().join("upper");
        std::fs::create_dir_all(tree.join("tmp")).unwrap();
        std::fs::write(tree.join("tmp/c"), "42\n").unwrap();
        std::os::unix::fs::symlink("/etc/shadow", tree.join("evil")).unwrap();
        let log = d.path().join("log");
        std::fs::write(&log, "hello\n").unwrap();
        let dest = d.path().join("out.tar");
        write(
            &dest,
            d.path(),
            &[
                Part::Tree {
                    name: "rootfs-diff",
                    dir: &tree,
                },
                Part::File {
                    name: "container.log",
                    path: &log,
                    optional: false,
                },
                Part::File {
                    name: "nope",
                    path: &d.path().join("missing"),
                    optional: true,
                },
                Part::Bytes {
                    name: "config.json",
                    data: b"{}",
                },
            ],
            &|_| Ok(()),
        )
        .unwrap();
        let n = names(&dest);
        for want in [
            "rootfs-diff/tmp/c",
            "rootfs-diff/evil",
            "container.log",
            "config.json",
        ] {
            assert!(n.iter().any(|x| x == want), "{want} in {n:?}");
        }
        let mut a = tar::Archive::new(File::open(&dest).unwrap());
        let mut evil = a
            .entries()
            .unwrap()
            .map(|e| e.unwrap())
            .find(|e| e.path().unwrap().ends_with("evil"))
            .unwrap();
        assert_eq!(evil.header().entry_type(), tar::EntryType::Symlink);
        let mut body = String::new();
        evil.read_to_string(&mut body).unwrap();
        assert!(body.is_empty(), "the link's target was not read");
    }

    /// An entry's xattrs: (name, value) pairs.
    type Xattrs = Vec<(String, Vec<u8>)>;

    /// The kept xattrs each entry of `archive` carries, by entry name.
    fn xattrs_by_entry(archive: &Path) -> Vec<(String, Xattrs)> {
        let mut a = tar::Archive::new(File::open(archive).unwrap());
        let mut out = Vec::new();
        for e in a.entries().unwrap() {
            let mut e = e.unwrap();
            let name = e.path().unwrap().to_string_lossy().into_owned();
            let mut xs = Vec::new();
            if let Some(exts) = e.pax_extensions().unwrap() {
                for x in exts {
                    let x = x.unwrap();
                    if let Some(n) = x.key().unwrap().strip_prefix(PAX_XATTR_PREFIX) {
                        xs.push((n.to_string(), x.value_bytes().to_vec()));
                    }
                }
            }
            out.push((name, xs));
        }
        out
    }

    #[test]
    fn an_opaque_directory_keeps_its_mark_and_node_specific_xattrs_stay_out() {
        let d = tempfile::tempdir().unwrap();
        let tree = d.path().join("upper");
        let opaque = tree.join("etc");
        std::fs::create_dir_all(&opaque).unwrap();
        // Sorted before the file: skipped, so it must not take the file's record.
        nix::unistd::mkfifo(
            &tree.join("a-fifo"),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        let file = tree.join("b-file");
        std::fs::write(&file, "x").unwrap();
        let set =
            |p: &Path, n: &str, v: &[u8]| berth_sys::xattr::set(p, &std::ffi::CString::new(n).unwrap(), v);
        let root = nix::unistd::geteuid().is_root();
        if root {
            set(&opaque, "trusted.overlay.opaque", b"y").unwrap();
            set(&opaque, "trusted.overlay.origin", b"\x00node-handle").unwrap();
        }
        set(&file, "user.mime", b"text/plain").unwrap();
        let dest = d.path().join("out.tar");
        write(
            &dest,
            d.path(),
            &[Part::Tree {
                name: "rootfs-diff",
                dir: &tree,
            }],
            &|_| Ok(()),
        )
        .unwrap();
        let got = xattrs_by_entry(&dest);
        let of = |name: &str| got.iter().find(|(n, _)| n == name).map(|(_, x)| x.clone());
        assert_eq!(of("rootfs-diff/a-fifo"), None, "a fifo is skipped: {got:?}");
        assert_eq!(
            of("rootfs-diff/b-file").unwrap(),
            [("user.mime".to_string(), b"text/plain".to_vec())],
            "{got:?}"
        );
        if root {
            assert_eq!(
                of("rootfs-diff/etc").unwrap(),
                [("trusted.overlay.opaque".to_string(), b"y".to_vec())],
                "the opaque mark, not the node's origin handle: {got:?}"
            );
        }
        assert_eq!(of("rootfs-diff").unwrap(), [], "{got:?}");
    }

    #[test]
    fn a_failure_leaves_no_archive_and_no_temporary_file() {
        let d = tempfile::tempdir().unwrap();
        let dest = d.path().join("out.tar");
        let e = write(
            &dest,
            d.path(),
            &[Part::File {
                name: "x",
                path: &d.path().join("missing"),
                optional: false,
            }],
            &|_| Ok(()),
        );
        assert!(e.is_err());
        let left: Vec<_> = std::fs::read_dir(d.path()).unwrap().collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn the_temporary_archive_is_noted_before_it_exists() {
        let d = tempfile::tempdir().unwrap();
        let dest = d.path().join("out.tar");
        let seen = std::cell::RefCell::new(Vec::new());
        write(
            &dest,
            d.path(),
            &[Part::Bytes {
                name: "x",
                data: b"1",
            }],
            &|tmp| {
                seen.borrow_mut().push((tmp.to_path_buf(), tmp.exists()));
                Ok(())
            },
        )
        .unwrap();
        let seen = seen.into_inner();
        assert_eq!(seen.len(), 1, "{seen:?}");
        let (tmp, existed) = &seen[0];
        assert!(!existed, "noted before it was created");
        assert_eq!(tmp.parent(), Some(d.path()));
        let name = tmp.file_name().unwrap().to_string_lossy();
        assert!(
            name.starts_with(crate::checkpoint::leftovers::TEMP_PREFIX),
            "{name}"
        );
        assert!(!tmp.exists() && dest.exists(), "renamed into place");
    }

    #[test]
    fn a_note_that_cannot_be_written_stops_before_any_file() {
        let d = tempfile::tempdir().unwrap();
        let dest = d.path().join("out.tar");
        let e = write(
            &dest,
            d.path(),
            &[Part::Bytes {
                name: "x",
                data: b"1",
            }],
            &|_| Err(crate::error::Error::Internal("disk full".into())),
        )
        .unwrap_err();
        assert!(e.to_string().contains("disk full"), "{e}");
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 0);
    }
}
