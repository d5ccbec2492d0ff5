//! The spec files of the configured directories, parsed and indexed by
//! device name, re-read when a directory's files change.
//!
//! A change is seen by comparing each spec file's name, size and mtime
//! (and each directory's own mtime) with the last read: a readdir and a
//! stat per file, cheap next to a CreateContainer. Parsing happens outside
//! the lock, so a slow disk never holds up another resolve.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use parking_lot::Mutex;

use super::error::CdiError;
use super::name::QualifiedName;
use super::spec::{self, Parsed};

/// Largest spec file read (a GPU spec with many library mounts is a few
/// hundred KiB).
pub const MAX_SPEC_BYTES: u64 = 4 << 20;
/// Most spec files read from one directory.
pub const MAX_SPEC_FILES: usize = 1024;

/// Where a device is defined.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The file.
    pub file: PathBuf,
    /// The file's parsed spec.
    pub spec: Arc<Parsed>,
    /// The device's index in `spec.spec.devices`.
    pub device: usize,
}

/// Every device of the configured directories.
#[derive(Debug, Default)]
pub struct Index {
    /// Devices by qualified name; a later directory's definition wins.
    pub devices: HashMap<QualifiedName, Entry>,
    /// Devices two files of the winning directory both define.
    pub conflicts: HashMap<QualifiedName, (PathBuf, PathBuf)>,
    /// Files that could not be used, with why.
    pub broken: Vec<(PathBuf, String)>,
    /// Spec files read.
    pub files: usize,
}

/// Name, size and mtime of every spec file (and each directory's mtime):
/// equal fingerprints mean nothing to re-read.
type Fingerprint = Vec<(PathBuf, u64, Option<SystemTime>)>;

/// The cache: the last index and the fingerprint it was built from.
#[derive(Debug)]
pub struct SpecCache {
    dirs: Vec<PathBuf>,
    last: Mutex<Option<(Fingerprint, Arc<Index>)>>,
}

impl SpecCache {
    /// A cache over `dirs`, lowest priority first.
    pub fn new(dirs: Vec<PathBuf>) -> Self {
        SpecCache {
            dirs,
            last: Mutex::new(None),
        }
    }

    /// The directories, lowest priority first.
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// The current index, re-read if any directory changed.
    pub fn index(&self) -> Arc<Index> {
        let fp = fingerprint(&self.dirs);
        if let Some((old, index)) = &*self.last.lock() {
            if *old == fp {
                return index.clone();
            }
        }
        let index = Arc::new(load(&self.dirs));
        *self.last.lock() = Some((fp, index.clone()));
        index
    }
}

/// The spec files of `dir`, sorted by name (so "which file is first" in a
/// conflict does not depend on readdir order); a missing dir has none.
fn spec_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.extension()
                .is_some_and(|e| e == "json" || e == "yaml" || e == "yml")
        })
        .collect();
    files.sort();
    files
}

fn fingerprint(dirs: &[PathBuf]) -> Fingerprint {
    let stat = |p: &Path| match std::fs::metadata(p) {
        Ok(m) => (p.to_path_buf(), m.len(), m.modified().ok()),
        Err(_) => (p.to_path_buf(), 0, None),
    };
    let mut fp = Vec::new();
    for d in dirs {
        fp.push(stat(d));
        fp.extend(spec_files(d).iter().map(|f| stat(f)));
    }
    fp
}

/// Reads every directory, lowest priority first.
fn load(dirs: &[PathBuf]) -> Index {
    let mut index = Index::default();
    for dir in dirs {
        if !dir.is_absolute() {
            index
                .broken
                .push((dir.clone(), "CDI spec directory must be an absolute path".into()));
            continue;
        }
        let files = spec_files(dir);
        if files.len() > MAX_SPEC_FILES {
            index
                .broken
                .push((dir.clone(), format!("more than {MAX_SPEC_FILES} spec files")));
            continue;
        }
        // This directory's definitions; they replace earlier directories'.
        let mut here: HashMap<QualifiedName, Entry> = HashMap::new();
        let mut conflicts_here = HashMap::new();
        for file in files {
            let parsed = match read(&file) {
                Ok(p) => Arc::new(p),
                Err(reason) => {
                    index.broken.push((file, reason));
                    continue;
                }
            };
            index.files += 1;
            for (i, d) in parsed.spec.devices.iter().enumerate() {
                let name = QualifiedName {
                    kind: parsed.kind.clone(),
                    name: d.name.clone(),
                };
                let entry = Entry {
                    file: file.clone(),
                    spec: parsed.clone(),
                    device: i,
                };
                if let Some(first) = here.insert(name.clone(), entry) {
                    conflicts_here.insert(name, (first.file, file.clone()));
                }
            }
        }
        for (name, entry) in here {
            index.conflicts.remove(&name);
            index.devices.insert(name, entry);
        }
        index.conflicts.extend(conflicts_here);
    }
    index
}

/// Reads and parses one file, bounded in size; symlinks are followed (the
/// directories are root's, as CDI expects).
fn read(file: &Path) -> Result<Parsed, String> {
    let f = std::fs::File::open(file).map_err(|e| format!("open: {e}"))?;
    let meta = f.metadata().map_err(|e| format!("stat: {e}"))?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    let mut bytes = Vec::new();
    f.take(MAX_SPEC_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("read: {e}"))?;
    if bytes.len() as u64 > MAX_SPEC_BYTES {
        return Err(format!("larger than {MAX_SPEC_BYTES} bytes"));
    }
    spec::parse(file, &bytes)
}

/// The error for a broken file, for resolution.
pub fn broken_error(file: &Path, reason: &str) -> CdiError {
    CdiError::BadSpec {
        file: file.to_path_buf(),
        reason: reason.to_string(),
    }
}
