//! The `unpack` target: a layer blob from the fuzzer unpacked into a
//! snapshot dir, as a pull does. Invariants, checked after every run:
//! it returns (no panic); an error is a typed image or I/O error; nothing
//! outside the snapshot dir changed (a sibling snapshot, a canary dir
//! reachable by `..` and by absolute symlinks, their contents, link counts
//! and xattrs); the snapshot dir is still a directory; and a layer that
//! unpacks has the diff_id of exactly the tar it was given.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::image::limits::{ImageBytes, Limits};
use crate::image::unpack::unpack_layer;
use crate::image::Digest;

/// First input byte: the rest is the blob as is (any compression, any
/// garbage). Otherwise the rest is a tar whose header checksums are fixed
/// first, so mutated names, types and sizes reach the unpacker instead of
/// stopping at the checksum.
const RAW: u8 = 1;
/// First input byte: gzip the fixed tar (the path most registries serve).
const GZIP: u8 = 2;

/// Small bounds, so a bomb or an entry flood ends quickly.
fn limits() -> Limits {
    Limits {
        max_layer_bytes: 4 << 20,
        max_image_bytes: 4 << 20,
        max_layer_entries: 512,
        ..Limits::default()
    }
}

/// What one path outside the snapshot looks like; compared before and after.
#[derive(Debug, PartialEq, Eq)]
struct Node {
    path: PathBuf,
    mode: u32,
    uid: u32,
    gid: u32,
    nlink: u64,
    size: u64,
    content: Vec<u8>,
    xattrs: Vec<u8>,
}

/// A work dir laid out like an image store: the snapshot being unpacked
/// (`snapshots/fs`), a sibling snapshot and a canary dir outside it.
#[derive(Debug)]
pub struct Workspace {
    root: PathBuf,
    baseline: Vec<Node>,
}

impl Workspace {
    /// Lays out `root` (emptied first) and records what lies outside the
    /// snapshot.
    pub fn create(root: &Path) -> std::io::Result<Self> {
        let _ = std::fs::remove_dir_all(root);
        std::fs::create_dir_all(root.join("outside/sub"))?;
        std::fs::write(root.join("outside/canary"), b"canary\n")?;
        std::fs::write(root.join("outside/sub/deep"), b"deep\n")?;
        std::fs::create_dir_all(root.join("snapshots/sibling/etc"))?;
        std::fs::write(root.join("snapshots/sibling/etc/keep"), b"keep\n")?;
        std::fs::create_dir(root.join("snapshots/fs"))?;
        let mut ws = Workspace {
            root: root.to_path_buf(),
            baseline: Vec::new(),
        };
        ws.baseline = ws.outside();
        Ok(ws)
    }

    /// The work dir; seeds point absolute symlinks into it.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The snapshot dir a run unpacks into.
    pub fn dest(&self) -> PathBuf {
        self.root.join("snapshots/fs")
    }

    /// Every path of the work dir but the snapshot and the blob, in order.
    fn outside(&self) -> Vec<Node> {
        let (dest, blob) = (self.dest(), self.root.join("blob"));
        let mut out = Vec::new();
        let mut todo = vec![self.root.clone()];
        while let Some(p) = todo.pop() {
            if p == dest || p == blob {
                continue;
            }
            let m = std::fs::symlink_metadata(&p).expect("lstat outside the snapshot");
            let content = if m.file_type().is_symlink() {
                std::fs::read_link(&p)
                    .unwrap()
                    .into_os_string()
                    .into_encoded_bytes()
            } else if m.is_file() {
                std::fs::read(&p).unwrap()
            } else {
                Vec::new()
            };
            if m.is_dir() {
                let mut names: Vec<PathBuf> = std::fs::read_dir(&p)
                    .unwrap()
                    .map(|e| e.unwrap().path())
                    .collect();
                names.sort();
                todo.extend(names.into_iter().rev());
            }
            out.push(Node {
                xattrs: xattr_names(&p),
                path: p,
                mode: m.mode(),
                uid: m.uid(),
                gid: m.gid(),
                nlink: m.nlink(),
                size: if m.is_dir() { 0 } else { m.size() },
                content,
            });
        }
        out
    }
}

/// The xattr names of `p` (not following a symlink), as the kernel lists them.
fn xattr_names(p: &Path) -> Vec<u8> {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    let mut buf = vec![0u8; 4096];
    // SAFETY: a valid NUL-terminated path and a buffer of the length given.
    let n = unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    buf.truncate(n.max(0) as usize);
    buf
}

/// Rewrites the checksum of every header of a tar stream, walking from
/// header to header by the size fields, up to the end marker.
pub fn fix_checksums(tar: &mut [u8]) {
    let mut at = 0usize;
    while let Some(h) = tar.get_mut(at..at + 512) {
        if h.iter().all(|b| *b == 0) {
            break;
        }
        h[148..156].fill(b' ');
        let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        let size = std::str::from_utf8(&h[124..136])
            .ok()
            .and_then(|s| u64::from_str_radix(s.trim_matches(|c: char| c == '\0' || c == ' '), 8).ok())
            .unwrap_or(0);
        let Some(next) = usize::try_from(size.div_ceil(512) * 512)
            .ok()
            .and_then(|n| at.checked_add(512)?.checked_add(n))
        else {
            break;
        };
        at = next;
    }
}

/// Unpacks the blob `data` describes (see [`RAW`], [`GZIP`]) into the
/// workspace's snapshot, checks the invariants (panicking on a violation)
/// and returns what unpacking returned.
pub fn run(ws: &Workspace, data: &[u8]) -> Result<()> {
    let Some((&flags, rest)) = data.split_first() else {
        return Ok(());
    };
    let mut tar = rest.to_vec();
    let blob = if flags & RAW != 0 {
        tar.clear();
        rest.to_vec()
    } else {
        fix_checksums(&mut tar);
        if flags & GZIP != 0 {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            std::io::Write::write_all(&mut gz, &tar).unwrap();
            gz.finish().unwrap()
        } else {
            tar.clone()
        }
    };
    let dest = ws.dest();
    if std::fs::symlink_metadata(&dest).is_ok() {
        std::fs::remove_dir_all(&dest).expect("clear the snapshot dir");
    }
    std::fs::create_dir(&dest).unwrap();
    let blob_path = ws.root.join("blob");
    std::fs::write(&blob_path, &blob).unwrap();

    let r = unpack_layer(&blob_path, &dest, &limits(), &ImageBytes::default());

    let after = ws.outside();
    if after != ws.baseline {
        let changed: Vec<_> = after
            .iter()
            .filter(|n| !ws.baseline.contains(n))
            .chain(ws.baseline.iter().filter(|n| !after.contains(n)))
            .map(|n| &n.path)
            .collect();
        panic!("unpacking changed paths outside the snapshot: {changed:?} (result {r:?})");
    }
    let m = std::fs::symlink_metadata(&dest).expect("the snapshot dir is still there");
    assert!(m.is_dir(), "the snapshot dir became a {:?}", m.file_type());
    match &r {
        Ok(u) if flags & RAW == 0 => {
            assert_eq!(u.diff_id, Digest::of(&tar), "diff_id of a {}-byte tar", tar.len())
        }
        Ok(_) => {}
        Err(Error::Image(_) | Error::Io { .. }) => {}
        Err(e) => panic!("unpacking failed with an untyped error: {e:?}"),
    }
    r.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fuzzing::Mutator;
    use tar::EntryType;

    /// A tar entry: path, type, data or link target, mode.
    type Entry<'a> = (&'a str, EntryType, &'a str, u32);
    /// PAX records for the layer's first entry.
    type Pax<'a> = Vec<(&'a str, &'a [u8])>;

    /// Builds a tar with GNU headers (long names become GNU long-name
    /// entries); names `set_path` refuses (`..`) are written raw.
    fn tar(entries: &[Entry], pax: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        if !pax.is_empty() {
            b.append_pax_extensions(pax.iter().map(|(k, v)| (*k, *v)))
                .unwrap();
        }
        for (path, kind, data, mode) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_mode(*mode);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            let body: &[u8] = if kind.is_symlink() || kind.is_hard_link() {
                h.set_link_name(data).unwrap();
                b""
            } else {
                data.as_bytes()
            };
            h.set_size(body.len() as u64);
            if path.contains("..") {
                h.as_gnu_mut().unwrap().name[..path.len()].copy_from_slice(path.as_bytes());
                h.set_cksum();
                b.append(&h, body).unwrap();
            } else {
                b.append_data(&mut h, path, body).unwrap();
            }
        }
        b.into_inner().unwrap()
    }

    /// Real layers: files, dirs, setuid, symlinks (relative, absolute into
    /// the canary dir, and `..` ones), hard links (also to a symlink),
    /// whiteouts and an opaque dir, aufs metadata, xattrs, a long name; and
    /// the attacks the unpacker refuses, so mutations start from both sides.
    fn seeds(work: &Path) -> Vec<Vec<u8>> {
        use EntryType::{Directory as D, Link as H, Regular as F, Symlink as S};
        let outside = work.join("outside");
        let abs = outside.to_str().unwrap();
        let canary = work.join("outside/canary");
        let long = format!("usr/share/{}/file", "long-directory-name".repeat(8));
        let layers: Vec<(Vec<Entry>, Pax)> = vec![
            (
                vec![
                    ("etc/", D, "", 0o755),
                    ("etc/hostname", F, "box\n", 0o644),
                    ("bin/", D, "", 0o755),
                    ("bin/busybox", F, "ELF", 0o4755),
                    ("bin/sh", H, "bin/busybox", 0o755),
                    ("usr/lib/libc.so", F, "lib", 0o644),
                    ("lib", S, "usr/lib", 0o777),
                    ("lib64", S, "/usr/lib", 0o777),
                    ("tmp/", D, "", 0o1777),
                ],
                vec![],
            ),
            (
                vec![
                    ("etc/.wh.hostname", F, "", 0o644),
                    ("var/cache/.wh..wh..opq", F, "", 0o644),
                    ("var/cache/new", F, "n", 0o644),
                    (".wh..wh.plnk", D, "", 0o700),
                    ("data/.wh..hidden", F, "", 0o644),
                ],
                vec![],
            ),
            (
                vec![
                    ("abs", S, abs, 0o777),
                    ("up", S, "../../outside", 0o777),
                    ("deep/up2", S, "../../../outside/sub", 0o777),
                    ("linked", H, "abs", 0o777),
                    ("ok/file", F, "x", 0o600),
                ],
                vec![],
            ),
            (
                vec![("bin/ping", F, "ping", 0o755)],
                vec![
                    (
                        "SCHILY.xattr.security.capability",
                        b"\0\0\0\x02\0\x20\0\0\0\x20\0\0\0\0\0\0\0\0\0\0",
                    ),
                    ("SCHILY.xattr.user.mime", b"app"),
                    ("SCHILY.xattr.trusted.overlay.opaque", b"y"),
                ],
            ),
            (vec![(long.as_str(), F, "long", 0o644)], vec![]),
            (vec![("abs", S, abs, 0o777), ("abs/pwned", F, "x", 0o644)], vec![]),
            (vec![("../escape", F, "x", 0o644)], vec![]),
            (vec![("h", H, canary.to_str().unwrap(), 0o644)], vec![]),
            (vec![("h", H, "../../outside/canary", 0o644)], vec![]),
            (vec![("a/.wh...", F, "", 0o644)], vec![]),
        ];
        layers.iter().map(|(e, pax)| tar(e, pax)).collect()
    }

    /// Positions biased to header fields: name, mode..typeflag, link name.
    fn header_biased(m: &mut Mutator, len: usize) -> usize {
        if m.below(4) == 0 {
            return m.below(len);
        }
        m.below(len.div_ceil(512)) * 512 + m.below(257)
    }

    /// The seeds unpack as built, with the outcome each is meant to have.
    #[test]
    fn seed_layers_unpack_or_are_refused_as_built() {
        let work = tempfile::tempdir().unwrap();
        let ws = Workspace::create(&work.path().join("w")).unwrap();
        let results: Vec<bool> = seeds(ws.root())
            .iter()
            .map(|s| run(&ws, &[&[0u8][..], s].concat()).is_ok())
            .collect();
        assert_eq!(
            results,
            [true, true, true, true, true, false, false, false, false, false]
        );
        crate::fuzzing::write_corpus(
            "unpack",
            &seeds(Path::new("/tmp/berth-fuzz-unpack"))
                .into_iter()
                .map(|s| [&[0u8][..], &s].concat())
                .collect::<Vec<_>>(),
        );
    }

    /// A fixed-seed mutation run (the libFuzzer target `unpack` runs the
    /// same [`run`] without a bound): mutated layers, plain, gzipped and
    /// raw, never panic, never touch anything outside the snapshot, and
    /// fail only with typed errors.
    #[test]
    fn mutated_layers_stay_inside_the_snapshot() {
        let work = tempfile::tempdir().unwrap();
        let ws = Workspace::create(&work.path().join("w")).unwrap();
        let seeds = seeds(ws.root());
        let mut m = Mutator::new(0x5eed_1a7e_2026_0017);
        let (mut ok, mut refused) = (0, 0);
        for _ in 0..600 {
            let seed = &seeds[m.below(seeds.len())];
            let other = &seeds[m.below(seeds.len())];
            let body = m.mutate(seed, other, &mut header_biased);
            let flags = match m.below(8) {
                0 => RAW,
                1 => GZIP,
                _ => 0,
            };
            match run(&ws, &[&[flags][..], &body].concat()) {
                Ok(()) => ok += 1,
                Err(_) => refused += 1,
            }
        }
        // Both outcomes are exercised, or the mutations test nothing.
        assert!(ok > 40 && refused > 100, "ok {ok}, refused {refused}");
    }
}
