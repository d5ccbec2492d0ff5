//! Unpacks one image layer into an overlay snapshot directory.
//!
//! OCI whiteouts become overlayfs whiteouts: `.wh.<name>` turns into a 0:0
//! character device `<name>`, and `.wh..wh..opq` marks its directory opaque
//! with the `trusted.overlay.opaque=y` xattr. Both need root, which berthd has.
//! A whiteout names one file of its own directory: `<name>` must be a single
//! normal path component (never empty, `.` or `..`), and the whiteout is made
//! inside the layer being unpacked.
//!
//! Extended attributes: only `user.*` and `security.capability` are taken
//! from a layer (see [`xattr_allowed`]).
//!
//! Safety: an entry may not escape the snapshot. Paths with `..` or that are
//! absolute are rejected, no entry may be written through a symlink that an
//! earlier entry created, and hard links must point inside the snapshot.

use std::fs::File;
use std::io::{BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use sha2::{Digest as _, Sha256};

use super::limits::{CountingReader, ImageBytes, Limits};
use super::Digest;
use crate::error::{Error, Result};

/// The whiteout prefix of the OCI layer format.
const WHITEOUT_PREFIX: &str = ".wh.";
/// The opaque-directory marker.
const OPAQUE_MARKER: &str = ".wh..wh..opq";
/// aufs bookkeeping names (`.wh..wh.plnk`, `.wh..wh.aufs`): never applied.
const AUFS_META_PREFIX: &str = ".wh..wh.";

/// What an entry named like a whiteout asks for.
#[derive(Debug, PartialEq)]
enum Whiteout<'a> {
    /// `.wh..wh..opq`: hide what lower layers hold in this directory.
    Opaque,
    /// `.wh.<name>`: hide `<name>` of lower layers.
    Hide(&'a str),
    /// aufs metadata: skipped, as containerd and Docker do.
    AufsMeta,
}

/// Classifies an entry's file name; `None` for an ordinary file. A whiteout
/// whose target is not a single normal file name is refused: `..` would
/// remove the snapshot's parent (every image on the node), `.` the
/// directory itself.
fn whiteout_of<'a>(rel: &Path, name: &'a str) -> Result<Option<Whiteout<'a>>> {
    if name == OPAQUE_MARKER {
        return Ok(Some(Whiteout::Opaque));
    }
    if name.starts_with(AUFS_META_PREFIX) {
        return Ok(Some(Whiteout::AufsMeta));
    }
    let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX) else {
        return Ok(None);
    };
    if hidden.is_empty() || hidden == "." || hidden == ".." || hidden.contains(['/', '\0']) {
        return Err(Error::Image(format!(
            "layer entry {}: whiteout of {hidden:?} is not a single file name",
            rel.display()
        )));
    }
    Ok(Some(Whiteout::Hide(hidden)))
}

/// The PAX key prefix tar uses for extended attributes.
const PAX_XATTR_PREFIX: &[u8] = b"SCHILY.xattr.";

/// Whether a layer may set this xattr: `user.*` (the application's own) and
/// `security.capability` (file capabilities, as ping's `cap_net_raw`).
/// Never `trusted.*`: `trusted.overlay.*` steers overlayfs (redirects to
/// other paths, opaque dirs, metacopy origins). Nor other `security.*`
/// (SELinux labels, IMA/EVM): those are the node's to set.
fn xattr_allowed(name: &[u8]) -> bool {
    name.starts_with(b"user.") || name == b"security.capability"
}

/// The allowed xattrs an entry carries; the others are logged and dropped.
fn entry_xattrs<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    rel: &Path,
) -> Result<Vec<(std::ffi::CString, Vec<u8>)>> {
    let Some(exts) = entry
        .pax_extensions()
        .map_err(|e| Error::Image(format!("layer entry {}: PAX header: {e}", rel.display())))?
    else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for ext in exts {
        let ext = ext.map_err(|e| Error::Image(format!("layer entry {}: PAX header: {e}", rel.display())))?;
        let Some(name) = ext.key_bytes().strip_prefix(PAX_XATTR_PREFIX) else {
            continue;
        };
        if !xattr_allowed(name) {
            tracing::debug!(entry = %rel.display(), xattr = %String::from_utf8_lossy(name), "layer xattr not applied");
            continue;
        }
        let name = std::ffi::CString::new(name)
            .map_err(|_| Error::Image(format!("layer entry {}: xattr name with NUL", rel.display())))?;
        out.push((name, ext.value_bytes().to_vec()));
    }
    Ok(out)
}

/// Sets xattrs on `path` without following a symlink.
fn set_xattrs(path: &Path, xattrs: &[(std::ffi::CString, Vec<u8>)]) -> Result<()> {
    for (name, value) in xattrs {
        berth_sys::xattr::set(path, name, value).map_err(|e| {
            Error::Image(format!(
                "set xattr {} on {}: {e}",
                name.to_string_lossy(),
                path.display()
            ))
        })?;
    }
    Ok(())
}

/// Result of unpacking one layer.
#[derive(Debug)]
pub struct Unpacked {
    /// `sha256:` of the uncompressed tar (the layer's diff_id).
    pub diff_id: Digest,
}

/// A reader that hashes what passes through it.
struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Opens a layer blob, transparently gunzipping it.
fn open_layer(blob: &Path) -> Result<Box<dyn Read>> {
    let mut f = File::open(blob).map_err(|e| Error::io(format!("open layer {}", blob.display()), e))?;
    let mut magic = [0u8; 4];
    let n = f.read(&mut magic).map_err(|e| Error::io("read layer", e))?;
    drop(f);
    let f = BufReader::new(File::open(blob).map_err(|e| Error::io("open layer", e))?);
    // By content, not by the manifest's media type: registries and tools
    // disagree on the names (`tar+gzip`, docker's `tar.gzip`, `tar+zstd`),
    // never on the magic numbers.
    match &magic[..n] {
        [0x1f, 0x8b, ..] => Ok(Box::new(flate2::read::GzDecoder::new(f))),
        [0x28, 0xb5, 0x2f, 0xfd] => {
            Ok(Box::new(ruzstd::StreamingDecoder::new(f).map_err(|e| {
                Error::Image(format!("zstd layer {}: {e}", blob.display()))
            })?))
        }
        _ => Ok(Box::new(f)),
    }
}

/// Checks a tar path and returns it as a clean relative path.
fn clean_entry_path(p: &Path) -> Result<PathBuf> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::RootDir => {} // "/etc" in a tar means "etc" in the layer
            Component::ParentDir | Component::Prefix(_) => {
                return Err(Error::Image(format!(
                    "layer entry {} escapes the snapshot",
                    p.display()
                )))
            }
        }
    }
    Ok(out)
}

/// Refuses if any existing ancestor of `rel` inside `root` is a symlink.
fn ensure_no_symlink_parents(root: &Path, rel: &Path) -> Result<()> {
    let mut cur = root.to_path_buf();
    if let Some(parent) = rel.parent() {
        for c in parent.components() {
            cur.push(c);
            match std::fs::symlink_metadata(&cur) {
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(Error::Image(format!(
                        "layer entry {} would be written through a symlink",
                        rel.display()
                    )))
                }
                Ok(_) => {}
                Err(_) => break, // does not exist yet: created as a real dir below
            }
        }
    }
    Ok(())
}

/// Unpacks `blob` into `dest` (which must exist) and returns its diff_id.
/// Stops at the first limit passed: this layer's, or the pull's
/// (`image_bytes` counts every layer the pull unpacks).
pub fn unpack_layer(blob: &Path, dest: &Path, limits: &Limits, image_bytes: &ImageBytes) -> Result<Unpacked> {
    let (counted, tripped) = CountingReader::new(open_layer(blob)?, limits, image_bytes);
    let reader = HashingReader {
        inner: counted,
        hasher: Sha256::new(),
    };
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
    // Applied by hand, filtered: the tar crate would set every xattr.
    archive.set_unpack_xattrs(false);
    archive.set_overwrite(true);
    unpack_entries(&mut archive, dest, limits)
        .and_then(|()| {
            // Drain any trailing padding so the digest covers the whole stream.
            let mut reader = archive.into_inner();
            std::io::copy(&mut reader, &mut std::io::sink())
                .map_err(|e| Error::Image(format!("read layer: {e}")))?;
            Ok(Digest::from_hasher(reader.hasher))
        })
        .map_err(|e| tripped.or(e))
        .map(|diff_id| {
            // The snapshot root itself must be traversable by any user in the container.
            let _ = std::fs::set_permissions(dest, std::fs::Permissions::from_mode(0o755));
            Unpacked { diff_id }
        })
}

/// Refuses a path or link target longer than the limit (before it is used).
fn check_path_len(what: &str, bytes: &[u8], limits: &Limits) -> Result<()> {
    if bytes.len() > limits.max_path_bytes {
        let head = String::from_utf8_lossy(&bytes[..bytes.len().min(64)]);
        return Err(Error::Image(format!(
            "layer entry {what} {head:?}... is {} bytes, more than image_limits.max_path_bytes ({})",
            bytes.len(),
            limits.max_path_bytes
        )));
    }
    Ok(())
}

fn unpack_entries<R: Read>(archive: &mut tar::Archive<R>, dest: &Path, limits: &Limits) -> Result<()> {
    let mut count = 0u64;
    let entries = archive
        .entries()
        .map_err(|e| Error::Image(format!("read layer tar: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| Error::Image(format!("read layer tar: {e}")))?;
        count += 1;
        if count > limits.max_layer_entries {
            return Err(Error::Image(format!(
                "layer has more than image_limits.max_layer_entries ({}) entries",
                limits.max_layer_entries
            )));
        }
        check_path_len("path", &entry.path_bytes(), limits)?;
        if let Some(link) = entry.link_name_bytes() {
            check_path_len("link target", &link, limits)?;
        }
        let raw_path = entry
            .path()
            .map_err(|e| Error::Image(format!("bad entry path: {e}")))?
            .into_owned();
        let rel = clean_entry_path(&raw_path)?;
        if rel.as_os_str().is_empty() {
            continue;
        }
        ensure_no_symlink_parents(dest, &rel)?;
        let name = rel
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        let parent = dest.join(rel.parent().unwrap_or(Path::new("")));
        match whiteout_of(&rel, &name)? {
            None => {}
            Some(Whiteout::AufsMeta) => continue,
            Some(Whiteout::Opaque) => {
                std::fs::create_dir_all(&parent).map_err(|e| Error::io("create dir", e))?;
                set_opaque(&parent)?;
                continue;
            }
            Some(Whiteout::Hide(hidden)) => {
                std::fs::create_dir_all(&parent).map_err(|e| Error::io("create dir", e))?;
                let target = parent.join(hidden);
                let _ = std::fs::remove_dir_all(&target).or_else(|_| std::fs::remove_file(&target));
                nix::sys::stat::mknod(
                    &target,
                    nix::sys::stat::SFlag::S_IFCHR,
                    nix::sys::stat::Mode::empty(),
                    0,
                )
                .map_err(|e| Error::Image(format!("whiteout {}: {e}", target.display())))?;
                continue;
            }
        }
        if entry.header().entry_type().is_hard_link() {
            let link = entry
                .link_name()
                .map_err(|e| Error::Image(format!("bad link name: {e}")))?
                .ok_or_else(|| Error::Image("hard link without target".into()))?;
            let link_rel = clean_entry_path(&link)?;
            ensure_no_symlink_parents(dest, &link_rel)?;
            std::fs::create_dir_all(&parent).map_err(|e| Error::io("create dir", e))?;
            let target = dest.join(&rel);
            let _ = std::fs::remove_file(&target);
            std::fs::hard_link(dest.join(&link_rel), &target).map_err(|e| {
                // Each layer is its own snapshot: a link can only name a file
                // of the same layer (builders copy a lower file up first).
                let why = if e.kind() == std::io::ErrorKind::NotFound {
                    "its target is not in this layer".to_string()
                } else {
                    e.to_string()
                };
                Error::Image(format!(
                    "hard link {} -> {}: {why}",
                    rel.display(),
                    link_rel.display()
                ))
            })?;
            continue;
        }
        std::fs::create_dir_all(&parent).map_err(|e| Error::io("create dir", e))?;
        let xattrs = entry_xattrs(&mut entry, &rel)?;
        // unpack_in re-validates the path and refuses to escape `dest`.
        entry.unpack_in(dest).map_err(|e| {
            Error::Image(format!(
                "unpack {}: {e}: {:?}",
                rel.display(),
                std::error::Error::source(&e)
            ))
        })?;
        // After unpack_in's chown, which would clear security.capability;
        // a symlink takes no user.* xattrs (the kernel refuses them).
        if !entry.header().entry_type().is_symlink() {
            set_xattrs(&dest.join(&rel), &xattrs)?;
        }
    }
    Ok(())
}

fn set_opaque(dir: &Path) -> Result<()> {
    let c_path = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())
        .map_err(|_| Error::Image("path with NUL".into()))?;
    // SAFETY: valid NUL-terminated strings and a 1-byte value buffer.
    let rc = unsafe {
        libc::lsetxattr(
            c_path.as_ptr(),
            c"trusted.overlay.opaque".as_ptr(),
            b"y".as_ptr().cast(),
            1,
            0,
        )
    };
    if rc != 0 {
        return Err(Error::Image(format!(
            "mark {} opaque: {}",
            dir.display(),
            std::io::Error::last_os_error()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_with(entries: &[(&str, tar::EntryType, &str)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, kind, data_or_link) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            match *kind {
                tar::EntryType::Symlink | tar::EntryType::Link => {
                    h.set_size(0);
                    h.set_link_name(data_or_link).unwrap();
                    h.set_path(path).unwrap_or_else(|_| {
                        // set_path refuses "..": write the raw name instead.
                        let name = h.as_gnu_mut().unwrap();
                        name.name[..path.len()].copy_from_slice(path.as_bytes());
                    });
                    h.set_cksum();
                    b.append(&h, std::io::empty()).unwrap();
                }
                _ => {
                    h.set_size(data_or_link.len() as u64);
                    if h.set_path(path).is_err() {
                        let gnu = h.as_gnu_mut().unwrap();
                        gnu.name[..path.len()].copy_from_slice(path.as_bytes());
                    }
                    h.set_cksum();
                    b.append(&h, data_or_link.as_bytes()).unwrap();
                }
            }
        }
        b.into_inner().unwrap()
    }

    fn unpack(tarball: &[u8]) -> (tempfile::TempDir, Result<Unpacked>) {
        unpack_with(tarball, &Limits::default())
    }

    fn unpack_with(tarball: &[u8], limits: &Limits) -> (tempfile::TempDir, Result<Unpacked>) {
        let d = tempfile::tempdir().unwrap();
        let blob = d.path().join("blob");
        std::fs::write(&blob, tarball).unwrap();
        let dest = d.path().join("fs");
        std::fs::create_dir(&dest).unwrap();
        let r = unpack_layer(&blob, &dest, limits, &ImageBytes::default());
        (d, r)
    }

    #[test]
    fn unpacks_files_and_reports_diff_id() {
        let t = tar_with(&[("etc/hostname", tar::EntryType::Regular, "box\n")]);
        let want = format!("sha256:{}", hex::encode(Sha256::digest(&t)));
        let (d, r) = unpack(&t);
        assert_eq!(r.unwrap().diff_id.as_str(), want);
        assert_eq!(
            std::fs::read_to_string(d.path().join("fs/etc/hostname")).unwrap(),
            "box\n"
        );
    }

    #[test]
    fn gzip_layers_hash_the_uncompressed_stream() {
        let t = tar_with(&[("a", tar::EntryType::Regular, "1")]);
        let want = format!("sha256:{}", hex::encode(Sha256::digest(&t)));
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &t).unwrap();
        let (_d, r) = unpack(&gz.finish().unwrap());
        assert_eq!(r.unwrap().diff_id.as_str(), want);
    }

    #[test]
    fn zstd_layers_unpack_and_hash_the_uncompressed_stream() {
        // `zstd -19` of a one-file tar; the diff_id is sha256 of that tar.
        let (d, r) = unpack(include_bytes!("testdata/layer.tar.zst"));
        assert_eq!(
            r.unwrap().diff_id.as_str(),
            "sha256:2f25eb7c5954ebea1c66542cb2e4e3064cc005d06ab729a8866c7cfa40ab7321"
        );
        assert_eq!(
            std::fs::read_to_string(d.path().join("fs/etc/zstd-layer")).unwrap(),
            "from a zstd layer\n"
        );
        // A truncated frame is an error, not a short layer.
        let whole = include_bytes!("testdata/layer.tar.zst");
        let (_d, r) = unpack(&whole[..whole.len() - 8]);
        assert!(r.is_err());
    }

    #[test]
    fn rejects_parent_dir_escape() {
        let t = tar_with(&[("../evil", tar::EntryType::Regular, "x")]);
        let (d, r) = unpack(&t);
        assert!(r.unwrap_err().to_string().contains("escapes"));
        assert!(!d.path().join("evil").exists());
    }

    #[test]
    fn rejects_writes_through_symlinks() {
        let outside = tempfile::tempdir().unwrap();
        let t = tar_with(&[
            ("link", tar::EntryType::Symlink, outside.path().to_str().unwrap()),
            ("link/pwned", tar::EntryType::Regular, "x"),
        ]);
        let (_d, r) = unpack(&t);
        assert!(r.unwrap_err().to_string().contains("symlink"));
        assert!(!outside.path().join("pwned").exists());
    }

    /// A whiteout of `..` (`.wh...`) once removed the snapshot's parent:
    /// every image on the node. `.` and the empty name are as bad.
    #[test]
    fn whiteouts_of_dot_dotdot_or_nothing_are_refused() {
        for (path, target) in [
            (".wh...", ".."),
            ("data/.wh...", ".."),
            (".wh..", "."),
            ("data/.wh..", "."),
            (".wh.", ""),
        ] {
            let t = tar_with(&[
                ("data/keep", tar::EntryType::Regular, "k"),
                (path, tar::EntryType::Regular, ""),
            ]);
            let (d, r) = unpack(&t);
            let e = r.expect_err(path).to_string();
            assert!(
                e.contains("whiteout") && e.contains(&format!("{target:?}")),
                "{path}: {e}"
            );
            assert!(
                d.path().join("blob").exists(),
                "{path}: sibling of the snapshot kept"
            );
            assert!(d.path().join("fs/data/keep").exists(), "{path}: layer kept");
        }
    }

    /// Good whiteouts still work, the opaque marker only under its exact
    /// name, and aufs metadata names are not applied.
    #[test]
    fn whiteouts_hide_one_name_and_the_opaque_marker_is_exact() {
        use std::os::unix::fs::FileTypeExt;
        let t = tar_with(&[
            ("data/.wh.gone", tar::EntryType::Regular, ""),
            ("data/.wh..hidden", tar::EntryType::Regular, ""),
            ("opq/.wh..wh..opq", tar::EntryType::Regular, ""),
            ("notopq/.wh..wh..opqx", tar::EntryType::Regular, ""),
        ]);
        let (d, r) = unpack(&t);
        r.unwrap();
        let fs = d.path().join("fs");
        for hidden in ["data/gone", "data/.hidden"] {
            let m = std::fs::symlink_metadata(fs.join(hidden)).unwrap();
            assert!(m.file_type().is_char_device(), "{hidden}");
        }
        assert!(xattr_of(&fs.join("opq"), "trusted.overlay.opaque").is_some());
        assert!(xattr_of(&fs.join("notopq"), "trusted.overlay.opaque").is_none());
        assert!(!fs.join("notopq/.wh..wh..opqx").exists());
        assert!(!fs.join("notopq/.wh.opqx").exists() && !fs.join("notopq/wh..opqx").exists());
    }

    fn xattr_of(p: &Path, name: &str) -> Option<Vec<u8>> {
        let c_path = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
        let c_name = std::ffi::CString::new(name).unwrap();
        let mut buf = [0u8; 256];
        // SAFETY: valid NUL-terminated strings and a buffer of the length given.
        let n = unsafe {
            libc::lgetxattr(
                c_path.as_ptr(),
                c_name.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        (n >= 0).then(|| buf[..n as usize].to_vec())
    }

    /// One PAX record: `"<len> <key>=<value>\n"`, len counting itself.
    fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
        let body = 1 + key.len() + 1 + value.len() + 1;
        let mut len = body + 1;
        while len != body + len.to_string().len() {
            len = body + len.to_string().len();
        }
        let mut r = format!("{len} {key}=").into_bytes();
        r.extend_from_slice(value);
        r.push(b'\n');
        r
    }

    /// A tar of one file `path` carrying these xattrs (PAX `SCHILY.xattr.*`).
    fn tar_with_xattrs(path: &str, xattrs: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let pax: Vec<u8> = xattrs
            .iter()
            .flat_map(|(k, v)| pax_record(&format!("SCHILY.xattr.{k}"), v))
            .collect();
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::XHeader);
        h.set_path("PaxHeader").unwrap();
        h.set_size(pax.len() as u64);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_cksum();
        b.append(&h, &pax[..]).unwrap();
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_path(path).unwrap();
        h.set_size(1);
        h.set_mode(0o755);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_cksum();
        b.append(&h, &b"x"[..]).unwrap();
        b.into_inner().unwrap()
    }

    /// Only `user.*` and `security.capability` are taken from a layer:
    /// `trusted.overlay.*` would steer overlayfs (redirects, opaque dirs),
    /// other `trusted.*`/`security.*` are the node's.
    #[test]
    fn only_allow_listed_xattrs_are_applied() {
        // VFS v2 capability: cap_net_raw permitted and effective.
        let cap: &[u8] = &[0, 0, 0, 2, 0, 0x20, 0, 0, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        let t = tar_with_xattrs(
            "bin/ping",
            &[
                ("user.mime", b"app"),
                ("security.capability", cap),
                ("trusted.overlay.opaque", b"y"),
                ("trusted.overlay.redirect", b"/etc"),
                ("trusted.other", b"1"),
                ("security.selinux", b"system_u:object_r:shadow_t:s0"),
                ("security.ima", b"x"),
            ],
        );
        let (d, r) = unpack(&t);
        r.unwrap();
        let f = d.path().join("fs/bin/ping");
        assert_eq!(xattr_of(&f, "user.mime").as_deref(), Some(&b"app"[..]));
        assert_eq!(xattr_of(&f, "security.capability").as_deref(), Some(cap));
        for refused in [
            "trusted.overlay.opaque",
            "trusted.overlay.redirect",
            "trusted.other",
            "security.ima",
        ] {
            assert_eq!(xattr_of(&f, refused), None, "{refused}");
        }
        // SELinux may label the file itself; never with the layer's label.
        assert_ne!(
            xattr_of(&f, "security.selinux").as_deref(),
            Some(&b"system_u:object_r:shadow_t:s0"[..])
        );
    }

    /// A gzip bomb (16 MiB of zeros in ~16 KiB) stops at the layer limit
    /// while it streams: what reached the disk is below the limit.
    #[test]
    fn a_decompression_bomb_stops_at_the_layer_limit() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        {
            let mut b = tar::Builder::new(&mut gz);
            let mut h = tar::Header::new_gnu();
            h.set_path("bomb").unwrap();
            h.set_size(16 << 20);
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            h.set_cksum();
            b.append(&h, std::io::Read::take(std::io::repeat(0), 16 << 20))
                .unwrap();
            b.finish().unwrap();
        }
        let blob = gz.finish().unwrap();
        assert!(blob.len() < 1 << 20, "a bomb: {} bytes", blob.len());
        let limits = Limits {
            max_layer_bytes: 1 << 20,
            ..Limits::default()
        };
        let (d, r) = unpack_with(&blob, &limits);
        let e = r.unwrap_err().to_string();
        assert!(e.contains("max_layer_bytes (1048576 bytes)"), "{e}");
        let written = std::fs::metadata(d.path().join("fs/bomb"))
            .map(|m| m.len())
            .unwrap_or(0);
        assert!(written < 1 << 20, "stopped at the limit: {written}");
        // The same bomb against the pull's budget (several layers' worth).
        let image = Limits {
            max_image_bytes: 1 << 20,
            ..Limits::default()
        };
        let (_d, r) = unpack_with(&blob, &image);
        assert!(r.unwrap_err().to_string().contains("max_image_bytes"));
    }

    #[test]
    fn entry_count_and_path_length_are_bounded() {
        let limits = Limits {
            max_layer_entries: 3,
            max_path_bytes: 50,
            ..Limits::default()
        };
        let four = [
            ("a", tar::EntryType::Regular, ""),
            ("b", tar::EntryType::Regular, ""),
            ("c", tar::EntryType::Regular, ""),
            ("d", tar::EntryType::Regular, ""),
        ];
        let (_d, r) = unpack_with(&tar_with(&four[..3]), &limits);
        r.unwrap();
        let (_d, r) = unpack_with(&tar_with(&four), &limits);
        let e = r.unwrap_err().to_string();
        assert!(e.contains("max_layer_entries (3)"), "{e}");
        let long = "d/".repeat(30);
        let (_d, r) = unpack_with(&tar_with(&[(&long, tar::EntryType::Regular, "")]), &limits);
        assert!(r.unwrap_err().to_string().contains("max_path_bytes (50)"));
        let (_d, r) = unpack_with(&tar_with(&[("l", tar::EntryType::Symlink, &long)]), &limits);
        let e = r.unwrap_err().to_string();
        assert!(e.contains("link target") && e.contains("max_path_bytes"), "{e}");
    }

    #[test]
    fn rejects_hard_links_outside() {
        let t = tar_with(&[("h", tar::EntryType::Link, "../../etc/passwd")]);
        let (_d, r) = unpack(&t);
        assert!(r.unwrap_err().to_string().contains("escapes"));
    }
}
