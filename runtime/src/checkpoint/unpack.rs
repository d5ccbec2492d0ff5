//! Unpacking a checkpoint archive for restore. The archive may come from
//! another node or from anyone who can write a file berthd can read, so
//! every entry is hostile until checked:
//!
//! - paths are relative and never contain `..` (no absolute names);
//! - only the layout `archive.rs` writes is accepted: `checkpoint/`
//!   (directories and regular files), `rootfs-diff/`, and the regular
//!   files `config.json`, `container.json`, `container.log`,
//!   `descriptors.json`;
//! - symlinks, hard links, fifos and overlay whiteouts (0:0 character
//!   devices) only inside `rootfs-diff/`; a hard link must name an earlier
//!   file of `rootfs-diff/`; no other device node anywhere;
//! - nothing is written through a symlink an earlier entry made (a link's
//!   target is only ever resolved inside the container's root later);
//! - extended attributes (PAX `SCHILY.xattr.` records) only on entries of
//!   `rootfs-diff/` and only those `archive.rs` keeps (the opaque mark,
//!   `user.*`, file capabilities): an archive carrying any other (say
//!   `trusted.overlay.redirect`, which overlayfs would follow) is refused;
//! - the entry count and the bytes unpacked are bounded.
//!
//! `dest` is created by the unpack and removed again on any error, so a
//! refused archive leaves nothing behind.

use std::ffi::CString;
use std::fs::File;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use crate::error::{Error, Result};

/// The bounds one unpack stays within.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Entries in the archive.
    pub max_entries: u64,
    /// Sum of the entries' sizes.
    pub max_bytes: u64,
}

impl Default for Limits {
    /// Generous for a container's memory images and writable layer, small
    /// enough that a crafted archive cannot fill the node's disk.
    fn default() -> Self {
        Self {
            max_entries: 1_000_000,
            max_bytes: 64 << 30,
        }
    }
}

/// Top-level regular files of the layout.
const TOP_FILES: &[&str] = &[
    "config.json",
    "container.json",
    "container.log",
    "descriptors.json",
];
/// Top-level directories of the layout.
const CHECKPOINT_DIR: &str = "checkpoint";
const ROOTFS_DIFF_DIR: &str = "rootfs-diff";

/// Unpacks `archive` into `dest` (which must not exist yet). On error
/// `dest` is removed and the error is `InvalidArgument` naming the entry.
pub fn unpack(archive: &Path, dest: &Path, limits: &Limits) -> Result<()> {
    let file = File::open(archive).map_err(|e| Error::io(format!("open {}", archive.display()), e))?;
    std::fs::create_dir(dest).map_err(|e| Error::io(format!("create {}", dest.display()), e))?;
    let r = unpack_from(file, archive, dest, limits);
    if r.is_err() {
        let _ = std::fs::remove_dir_all(dest);
    }
    r
}

fn bad(archive: &Path, what: String) -> Error {
    Error::InvalidArgument(format!("checkpoint archive {}: {what}", archive.display()))
}

/// `p` as normal components only: `.` dropped, absolute or `..` refused.
fn clean(archive: &Path, p: &Path) -> Result<PathBuf> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::RootDir | Component::ParentDir | Component::Prefix(_) => {
                return Err(bad(
                    archive,
                    format!("entry {:?} leaves the archive's directory", p),
                ))
            }
        }
    }
    Ok(out)
}

/// Refuses when an existing ancestor of `rel` under `root` is a symlink.
fn no_symlink_parents(archive: &Path, root: &Path, rel: &Path) -> Result<()> {
    let mut cur = root.to_path_buf();
    for c in rel.parent().into_iter().flat_map(Path::components) {
        cur.push(c);
        match std::fs::symlink_metadata(&cur) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(bad(
                    archive,
                    format!("entry {:?} is written through a symlink", rel),
                ))
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    Ok(())
}

fn unpack_from<R: Read>(reader: R, archive: &Path, dest: &Path, limits: &Limits) -> Result<()> {
    use tar::EntryType as T;
    let mut tar = tar::Archive::new(reader);
    tar.set_preserve_permissions(true);
    tar.set_preserve_ownerships(true);
    tar.set_unpack_xattrs(false);
    tar.set_overwrite(false);
    let (mut count, mut bytes) = (0u64, 0u64);
    let entries = tar.entries().map_err(|e| bad(archive, format!("read: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| bad(archive, format!("read: {e}")))?;
        count += 1;
        bytes = bytes.saturating_add(entry.header().size().unwrap_or(u64::MAX));
        if count > limits.max_entries || bytes > limits.max_bytes {
            return Err(bad(
                archive,
                format!(
                    "more than {} entries or {} bytes",
                    limits.max_entries, limits.max_bytes
                ),
            ));
        }
        let raw = entry
            .path()
            .map_err(|e| bad(archive, format!("entry path: {e}")))?
            .into_owned();
        let rel = clean(archive, &raw)?;
        let Some(top) = rel.components().next().and_then(|c| c.as_os_str().to_str()) else {
            continue;
        };
        let top = top.to_string();
        let kind = entry.header().entry_type();
        let in_rootfs = top == ROOTFS_DIFF_DIR;
        let allowed = match kind {
            T::Directory => top == CHECKPOINT_DIR || in_rootfs,
            T::Regular | T::Continuous => {
                (top == CHECKPOINT_DIR || in_rootfs) && rel.components().count() > 1
                    || TOP_FILES.contains(&top.as_str()) && rel.components().count() == 1
            }
            T::Symlink | T::Link | T::Fifo => in_rootfs && rel.components().count() > 1,
            T::Char => {
                in_rootfs
                    && entry.header().device_major().ok().flatten() == Some(0)
                    && entry.header().device_minor().ok().flatten() == Some(0)
            }
            _ => false,
        };
        if !allowed {
            return Err(bad(
                archive,
                format!(
                    "entry {:?} of type {kind:?} is not part of a checkpoint archive",
                    raw
                ),
            ));
        }
        let xattrs = kept_xattrs(archive, &mut entry, &raw, in_rootfs)?;
        no_symlink_parents(archive, dest, &rel)?;
        let target = dest.join(&rel);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| Error::io(format!("create {}", parent.display()), e))?;
        }
        match kind {
            T::Link => {
                let link = entry
                    .link_name()
                    .map_err(|e| bad(archive, format!("link name: {e}")))?
                    .ok_or_else(|| bad(archive, format!("hard link {:?} without a target", raw)))?;
                let link_rel = clean(archive, &link)?;
                if link_rel.components().next().map(|c| c.as_os_str()) != Some(ROOTFS_DIFF_DIR.as_ref()) {
                    return Err(bad(
                        archive,
                        format!("hard link {:?} names {:?} outside rootfs-diff", raw, link),
                    ));
                }
                no_symlink_parents(archive, dest, &link_rel)?;
                let src = dest.join(&link_rel);
                match std::fs::symlink_metadata(&src) {
                    Ok(m) if m.file_type().is_file() => {}
                    _ => return Err(bad(archive, format!("hard link {:?} names no earlier file", raw))),
                }
                std::fs::hard_link(&src, &target)
                    .map_err(|e| bad(archive, format!("hard link {:?}: {e}", raw)))?;
            }
            T::Char => {
                nix::sys::stat::mknod(
                    &target,
                    nix::sys::stat::SFlag::S_IFCHR,
                    nix::sys::stat::Mode::empty(),
                    0,
                )
                .map_err(|e| bad(archive, format!("whiteout {:?}: {e}", raw)))?;
            }
            // berthd's own files (CRIU's images, the record, the spec):
            // root's, private, whatever the header says (archive.rs writes
            // some with no owner at all).
            T::Directory if !in_rootfs => {
                std::fs::create_dir_all(&target)
                    .map_err(|e| Error::io(format!("create {}", target.display()), e))?;
            }
            _ if !in_rootfs => {
                use std::os::unix::fs::OpenOptionsExt;
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&target)
                    .map_err(|e| bad(archive, format!("unpack {:?}: {e}", raw)))?;
                std::io::copy(&mut entry, &mut f)
                    .map_err(|e| bad(archive, format!("unpack {:?}: {e}", raw)))?;
            }
            _ => {
                // unpack_in checks the path once more and refuses to leave `dest`.
                let ok = entry.unpack_in(dest).map_err(|e| {
                    let why = std::error::Error::source(&e)
                        .map(|s| s.to_string())
                        .unwrap_or_default();
                    bad(archive, format!("unpack {:?}: {e}: {why}", raw))
                })?;
                if !ok {
                    return Err(bad(
                        archive,
                        format!("entry {:?} leaves the archive's directory", raw),
                    ));
                }
            }
        }
        // A hard link shares its target's inode, which had its own record.
        if kind != T::Link {
            for (name, value) in &xattrs {
                berth_sys::xattr::set(&target, name, value)
                    .map_err(|e| Error::io(format!("set {name:?} on {}", target.display()), e))?;
            }
        }
    }
    Ok(())
}

/// The entry's extended attributes, all of them ones `archive.rs` keeps
/// and only in `rootfs-diff/`; any other is refused.
fn kept_xattrs<R: Read>(
    archive: &Path,
    entry: &mut tar::Entry<'_, R>,
    raw: &Path,
    in_rootfs: bool,
) -> Result<Vec<(CString, Vec<u8>)>> {
    let mut out = Vec::new();
    let Some(exts) = entry
        .pax_extensions()
        .map_err(|e| bad(archive, format!("entry {raw:?}: PAX records: {e}")))?
    else {
        return Ok(out);
    };
    for ext in exts {
        let ext = ext.map_err(|e| bad(archive, format!("entry {raw:?}: PAX record: {e}")))?;
        let key = ext
            .key()
            .map_err(|e| bad(archive, format!("entry {raw:?}: PAX key: {e}")))?;
        let Some(name) = key.strip_prefix(super::archive::PAX_XATTR_PREFIX) else {
            continue;
        };
        if !in_rootfs || !super::archive::kept_xattr(name.as_bytes()) {
            return Err(bad(
                archive,
                format!("entry {raw:?} carries the extended attribute {name:?}, which a checkpoint archive does not keep"),
            ));
        }
        let name =
            CString::new(name).map_err(|_| bad(archive, format!("entry {raw:?}: a NUL in an xattr name")))?;
        out.push((name, ext.value_bytes().to_vec()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tar::EntryType as T;

    /// One raw entry: path (written byte for byte, so `..` and `/x` get in),
    /// type, body or link target, device numbers.
    struct E<'a>(&'a str, T, &'a str, u32, u32);

    fn tar_of(entries: &[E<'_>]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for E(path, kind, body, major, minor) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_mode(if *kind == T::Directory { 0o755 } else { 0o644 });
            h.set_mtime(0);
            h.set_uid(0);
            h.set_gid(0);
            let gnu = h.as_gnu_mut().unwrap();
            gnu.name[..path.len()].copy_from_slice(path.as_bytes());
            let data: &[u8] = match kind {
                T::Symlink | T::Link => {
                    gnu.linkname[..body.len()].copy_from_slice(body.as_bytes());
                    &[]
                }
                _ => body.as_bytes(),
            };
            h.set_size(data.len() as u64);
            if *kind == T::Char || *kind == T::Block {
                h.set_device_major(*major).unwrap();
                h.set_device_minor(*minor).unwrap();
            }
            h.set_cksum();
            b.append(&h, data).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn good() -> Vec<E<'static>> {
        vec![
            E("container.json", T::Regular, "{}", 0, 0),
            E("config.json", T::Regular, "{}", 0, 0),
            E("checkpoint/", T::Directory, "", 0, 0),
            E("checkpoint/pages-1.img", T::Regular, "pages", 0, 0),
            E("rootfs-diff/", T::Directory, "", 0, 0),
            E("rootfs-diff/tmp/count", T::Regular, "42", 0, 0),
            E("rootfs-diff/tmp/abs", T::Symlink, "/etc/passwd", 0, 0),
            E("rootfs-diff/tmp/hl", T::Link, "rootfs-diff/tmp/count", 0, 0),
            E("rootfs-diff/gone", T::Char, "", 0, 0),
        ]
    }

    /// Unpacks `entries` into `<tmp>/box/dest`; returns the temp dir and result.
    fn run(entries: &[E<'_>], limits: Limits) -> (tempfile::TempDir, Result<()>) {
        let d = tempfile::tempdir().unwrap();
        let archive = d.path().join("ckpt.tar");
        std::fs::write(&archive, tar_of(entries)).unwrap();
        std::fs::create_dir(d.path().join("box")).unwrap();
        let r = unpack(&archive, &d.path().join("box/dest"), &limits);
        (d, r)
    }

    /// Everything under `dir`, relative.
    fn listing(dir: &Path) -> Vec<String> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(p) = stack.pop() {
            for e in std::fs::read_dir(&p).unwrap() {
                let e = e.unwrap();
                out.push(e.path().strip_prefix(dir).unwrap().display().to_string());
                if e.file_type().unwrap().is_dir() {
                    stack.push(e.path());
                }
            }
        }
        out.sort();
        out
    }

    fn assert_refused(entries: &[E<'_>]) {
        let (d, r) = run(entries, Limits::default());
        match r {
            Err(Error::InvalidArgument(m)) => assert!(m.contains("checkpoint archive"), "{m}"),
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
        // Nothing left: not the unpack dir, not anything beside or above it.
        assert_eq!(listing(&d.path().join("box")), Vec::<String>::new());
        assert_eq!(listing(d.path()), vec!["box".to_string(), "ckpt.tar".to_string()]);
    }

    #[test]
    fn the_layout_unpacks_with_links_and_whiteouts_kept() {
        let (d, r) = run(&good(), Limits::default());
        r.unwrap();
        let dest = d.path().join("box/dest");
        assert_eq!(
            std::fs::read_to_string(dest.join("rootfs-diff/tmp/count")).unwrap(),
            "42"
        );
        assert_eq!(
            std::fs::read_link(dest.join("rootfs-diff/tmp/abs")).unwrap(),
            Path::new("/etc/passwd")
        );
        assert_eq!(
            std::fs::read_to_string(dest.join("rootfs-diff/tmp/hl")).unwrap(),
            "42"
        );
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        let m = std::fs::symlink_metadata(dest.join("rootfs-diff/gone")).unwrap();
        assert!(m.file_type().is_char_device());
        assert_eq!(m.rdev(), 0);
        assert_eq!(
            std::fs::read_to_string(dest.join("checkpoint/pages-1.img")).unwrap(),
            "pages"
        );
    }

    #[test]
    fn dot_dot_entries_are_refused_and_nothing_is_written() {
        let mut e = good();
        e.push(E("rootfs-diff/../../escaped", T::Regular, "x", 0, 0));
        assert_refused(&e);
        assert_refused(&[E("../escaped", T::Regular, "x", 0, 0)]);
    }

    #[test]
    fn absolute_entries_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let victim = d.path().join("victim");
        let name = victim.display().to_string();
        let mut e = good();
        e.push(E(&name, T::Regular, "x", 0, 0));
        assert_refused(&e);
        assert!(!victim.exists());
    }

    #[test]
    fn writing_through_a_symlink_is_refused() {
        let outside = tempfile::tempdir().unwrap();
        let target = outside.path().display().to_string();
        let mut e = good();
        e.push(E("rootfs-diff/esc", T::Symlink, &target, 0, 0));
        e.push(E("rootfs-diff/esc/pwned", T::Regular, "x", 0, 0));
        assert_refused(&e);
        assert!(!outside.path().join("pwned").exists());
        // A relative escape the same way.
        assert_refused(&[
            E("rootfs-diff/up", T::Symlink, "../../..", 0, 0),
            E("rootfs-diff/up/pwned", T::Regular, "x", 0, 0),
        ]);
    }

    #[test]
    fn device_nodes_other_than_whiteouts_are_refused() {
        assert_refused(&[E("rootfs-diff/null", T::Char, "", 1, 3)]);
        assert_refused(&[E("rootfs-diff/sda", T::Block, "", 8, 0)]);
        // A whiteout outside rootfs-diff is no whiteout.
        assert_refused(&[E("checkpoint/wh", T::Char, "", 0, 0)]);
    }

    #[test]
    fn links_outside_rootfs_diff_are_refused() {
        assert_refused(&[E("checkpoint/l", T::Symlink, "/etc", 0, 0)]);
        assert_refused(&[
            E("container.json", T::Regular, "{}", 0, 0),
            E("rootfs-diff/hl", T::Link, "container.json", 0, 0),
        ]);
        assert_refused(&[E("rootfs-diff/hl", T::Link, "../../ckpt.tar", 0, 0)]);
        assert_refused(&[E("rootfs-diff/hl", T::Link, "/etc/passwd", 0, 0)]);
    }

    /// An archive as `archive.rs` writes it now: `descriptors.json`, and
    /// `xattrs` (name, value) in a PAX record before `rootfs-diff/etc/`.
    fn with_xattrs(xattrs: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let add = |b: &mut tar::Builder<Vec<u8>>, name: &str, kind: T, body: &[u8]| {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(kind);
            h.set_mode(0o755);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            h.set_size(body.len() as u64);
            b.append_data(&mut h, name, body).unwrap();
        };
        add(&mut b, "rootfs-diff/", T::Directory, b"");
        let records: Vec<(String, &[u8])> = xattrs
            .iter()
            .map(|(n, v)| (format!("{}{n}", super::super::archive::PAX_XATTR_PREFIX), *v))
            .collect();
        b.append_pax_extensions(records.iter().map(|(k, v)| (k.as_str(), *v)))
            .unwrap();
        add(&mut b, "rootfs-diff/etc/", T::Directory, b"");
        add(
            &mut b,
            "descriptors.json",
            T::Regular,
            br#"["/dev/null","pipe:[1]","pipe:[2]"]"#,
        );
        b.into_inner().unwrap()
    }

    fn run_bytes(bytes: &[u8]) -> (tempfile::TempDir, Result<()>) {
        let d = tempfile::tempdir().unwrap();
        let archive = d.path().join("ckpt.tar");
        std::fs::write(&archive, bytes).unwrap();
        std::fs::create_dir(d.path().join("box")).unwrap();
        let r = unpack(&archive, &d.path().join("box/dest"), &Limits::default());
        (d, r)
    }

    #[test]
    fn an_opaque_mark_and_the_descriptors_are_kept() {
        let (d, r) = run_bytes(&with_xattrs(&[
            ("trusted.overlay.opaque", b"y"),
            ("user.app", b"v"),
        ]));
        r.unwrap();
        let dest = d.path().join("box/dest");
        let etc = dest.join("rootfs-diff/etc");
        let get = |n: &str| berth_sys::xattr::get(&etc, &std::ffi::CString::new(n).unwrap()).unwrap();
        assert_eq!(get("trusted.overlay.opaque").as_deref(), Some(&b"y"[..]));
        assert_eq!(get("user.app").as_deref(), Some(&b"v"[..]));
        assert!(std::fs::read_to_string(dest.join("descriptors.json"))
            .unwrap()
            .contains("pipe:[1]"));
    }

    #[test]
    fn node_specific_or_foreign_xattrs_are_refused() {
        for (name, value) in [
            ("trusted.overlay.redirect", &b"/etc"[..]),
            ("trusted.overlay.origin", &b"x"[..]),
            ("security.selinux", &b"system_u:object_r:x"[..]),
        ] {
            let (d, r) = run_bytes(&with_xattrs(&[(name, value)]));
            match r {
                Err(Error::InvalidArgument(m)) => assert!(m.contains(name), "{m}"),
                other => panic!("{name}: expected InvalidArgument, got {other:?}"),
            }
            assert!(!d.path().join("box/dest").exists());
        }
    }

    /// `archive.rs` writes its own files (`container.json`, ...) with a
    /// bare header: mode and size, no owner or time. They unpack as root's.
    #[test]
    fn berths_own_files_need_no_owner_in_their_headers() {
        let mut b = tar::Builder::new(Vec::new());
        for name in ["container.json", "descriptors.json", "checkpoint/dump.log"] {
            let mut h = tar::Header::new_gnu();
            h.set_size(2);
            h.set_mode(0o600);
            h.set_entry_type(T::Regular);
            b.append_data(&mut h, name, &b"{}"[..]).unwrap();
        }
        let (d, r) = run_bytes(&b.into_inner().unwrap());
        r.unwrap();
        let dest = d.path().join("box/dest");
        assert_eq!(
            std::fs::read_to_string(dest.join("container.json")).unwrap(),
            "{}"
        );
        assert_eq!(
            std::fs::read_to_string(dest.join("checkpoint/dump.log")).unwrap(),
            "{}"
        );
    }

    #[test]
    fn unknown_names_and_limits_are_refused() {
        assert_refused(&[E("extra.sh", T::Regular, "x", 0, 0)]);
        assert_refused(&[E("container.json/", T::Directory, "", 0, 0)]);
        let (d, r) = run(
            &good(),
            Limits {
                max_entries: 3,
                max_bytes: u64::MAX,
            },
        );
        assert!(matches!(r, Err(Error::InvalidArgument(_))), "{r:?}");
        assert!(!d.path().join("box/dest").exists());
        let (d, r) = run(
            &good(),
            Limits {
                max_entries: 100,
                max_bytes: 3,
            },
        );
        assert!(matches!(r, Err(Error::InvalidArgument(_))), "{r:?}");
        assert!(!d.path().join("box/dest").exists());
    }
}
