//! Crash-safe state files.
//!
//! Every record is JSON with a `"version"` field, written to a temp file in
//! the same directory, fsynced, renamed over the old one, and the directory is
//! fsynced: after a crash a record is either the old one or the new one.

pub mod names;

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, IoContext, Result};

pub mod modes;

/// Format version of every record berthd writes.
pub const RECORD_VERSION: u32 = 1;

/// A versioned envelope around a record.
#[derive(Debug, Serialize, serde::Deserialize)]
struct Envelope<T> {
    version: u32,
    #[serde(flatten)]
    record: T,
}

/// Atomically replaces `path` with `record`.
pub fn write_record<T: Serialize>(path: &Path, record: &T) -> Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| Error::Internal(format!("record path {} has no parent", path.display())))?;
    modes::create_dir(dir, modes::PRIVATE_DIR).ctx(|| format!("create {}", dir.display()))?;
    let data = serde_json::to_vec_pretty(&Envelope {
        version: RECORD_VERSION,
        record,
    })
    .map_err(|e| Error::Internal(format!("encode {}: {e}", path.display())))?;
    let tmp = tmp_path(path);
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(modes::PRIVATE_FILE)
            .open(&tmp)
            .ctx(|| format!("create {}", tmp.display()))?;
        f.write_all(&data).ctx(|| format!("write {}", tmp.display()))?;
        f.sync_all().ctx(|| format!("fsync {}", tmp.display()))?;
    }
    std::fs::rename(&tmp, path).ctx(|| format!("rename to {}", path.display()))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .ctx(|| format!("fsync {}", dir.display()))
}

/// One object's record file: writes are serialised (each writes the state
/// current when it takes the lock, so the last write holds the latest), and
/// none happens after [`RecordLock::remove`]: a late writer (an exit watcher
/// after RemoveContainer) cannot bring a removed object's record back.
#[derive(Debug, Default)]
pub struct RecordLock {
    /// True once the record was removed.
    removed: parking_lot::Mutex<bool>,
}

impl RecordLock {
    /// Writes `snapshot()` to `path`, unless the record was removed.
    pub fn write<T: Serialize>(&self, path: &Path, snapshot: impl FnOnce() -> T) -> Result<()> {
        let removed = self.removed.lock();
        if *removed {
            return Ok(());
        }
        write_record(path, &snapshot())
    }

    /// Removes the record at `path` for good.
    pub fn remove(&self, path: &Path) -> Result<()> {
        let mut removed = self.removed.lock();
        remove_record(path)?;
        *removed = true;
        Ok(())
    }
}

/// Reads a record written by [`write_record`]; refuses unknown versions.
pub fn read_record<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let data = std::fs::read(path).ctx(|| format!("read {}", path.display()))?;
    let env: Envelope<T> = serde_json::from_slice(&data)
        .map_err(|e| Error::Internal(format!("decode {}: {e}", path.display())))?;
    if env.version != RECORD_VERSION {
        return Err(Error::Internal(format!(
            "{} has record version {}, this berthd reads {RECORD_VERSION}",
            path.display(),
            env.version
        )));
    }
    Ok(env.record)
}

/// Removes a record (missing is fine) and fsyncs its directory.
pub fn remove_record(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(format!("remove {}", path.display()), e)),
    }
    if let Some(dir) = path.parent() {
        let _ = File::open(dir).and_then(|d| d.sync_all());
    }
    Ok(())
}

/// Finds `id` in `map` by full id or, like crictl, by a unique prefix.
/// `kind` names the object in errors ("container", "pod sandbox").
pub fn lookup<T: Clone>(map: &std::collections::HashMap<String, T>, id: &str, kind: &str) -> Result<T> {
    if let Some(v) = map.get(id) {
        return Ok(v.clone());
    }
    let mut matches = map.iter().filter(|(k, _)| !id.is_empty() && k.starts_with(id));
    match (matches.next(), matches.next()) {
        (Some((_, v)), None) => Ok(v.clone()),
        (None, _) => Err(Error::NotFound(format!("{kind} {id:?}"))),
        (Some(_), Some(_)) => Err(Error::InvalidArgument(format!(
            "{kind} id prefix {id:?} is ambiguous"
        ))),
    }
}

/// The record files (`*.json`) in `dir`, sorted; a missing dir has none.
/// Leftover `*.json.*.tmp` files are writes a crash interrupted before their
/// rename: the record they would have replaced is still whole, so they go.
pub fn list_records(dir: &Path) -> Result<Vec<PathBuf>> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(Error::io(format!("read {}", dir.display()), e)),
    };
    let mut out = Vec::new();
    for e in rd.flatten() {
        let p = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if is_tmp_name(&name) {
            let _ = std::fs::remove_file(&p);
        } else if name.ends_with(".json") {
            out.push(p);
        }
    }
    out.sort();
    Ok(out)
}

/// A temp name of its own for each write (`<name>.<pid>-<n>.tmp`): two
/// concurrent writers of one record never write into the same file, so
/// neither can rename the other's half-written one into place.
fn tmp_path(path: &Path) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{}-{n}.tmp", std::process::id()));
    path.with_file_name(name)
}

/// Whether `name` is a temp file [`write_record`] left (a crash between
/// its create and its rename).
fn is_tmp_name(name: &str) -> bool {
    name.ends_with(".tmp") && name.contains(".json.")
}

/// A random 64-hex-digit id, like the ids containerd and CRI-O hand out.
pub fn new_id() -> String {
    let mut buf = [0u8; 32];
    if let Ok(mut f) = File::open("/dev/urandom") {
        use std::io::Read;
        if f.read_exact(&mut buf).is_ok() {
            return hex::encode(buf);
        }
    }
    // /dev/urandom is always there on Linux; this is only a last resort.
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!("{:064x}", t ^ (std::process::id() as u128) << 64)
}

/// Current unix time in nanoseconds.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod list_tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn lookup_by_id_or_unique_prefix() {
        let m: std::collections::HashMap<String, u32> =
            [("abc1".to_string(), 1), ("abd2".to_string(), 2)].into();
        assert_eq!(lookup(&m, "abd2", "x").unwrap(), 2);
        assert_eq!(lookup(&m, "abc", "x").unwrap(), 1);
        assert!(matches!(lookup(&m, "ab", "x"), Err(Error::InvalidArgument(_))));
        assert!(matches!(lookup(&m, "zz", "x"), Err(Error::NotFound(_))));
        assert!(matches!(lookup(&m, "", "x"), Err(Error::NotFound(_))));
    }

    #[test]
    fn list_records_skips_and_cleans_interrupted_writes() {
        let d = tempfile::tempdir().unwrap();
        assert!(list_records(&d.path().join("none")).unwrap().is_empty());
        write_record(&d.path().join("b.json"), &serde_json::json!({"x": 1})).unwrap();
        write_record(&d.path().join("a.json"), &serde_json::json!({"x": 2})).unwrap();
        std::fs::write(d.path().join("c.json.tmp"), "{\"vers").unwrap();
        std::fs::write(d.path().join("d.json.77-3.tmp"), "{\"vers").unwrap();
        let l = list_records(d.path()).unwrap();
        assert_eq!(l, vec![d.path().join("a.json"), d.path().join("b.json")]);
        assert!(!d.path().join("c.json.tmp").exists());
        assert!(!d.path().join("d.json.77-3.tmp").exists());
    }

    #[test]
    fn concurrent_writers_of_one_record_never_tear_it() {
        let d = tempfile::tempdir().unwrap();
        let p = Arc::new(d.path().join("c.json"));
        // Large enough that a write takes several syscalls.
        let big = |t: usize| serde_json::json!({"writer": t, "pad": "x".repeat(256 * 1024)});
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let p = p.clone();
                berth_sys::thread::spawn(move || {
                    for _ in 0..20 {
                        write_record(&p, &big(t))?;
                        let v: serde_json::Value = read_record(&p)?;
                        assert_eq!(v["pad"].as_str().map(str::len), Some(256 * 1024));
                    }
                    Ok::<_, Error>(())
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap().expect("every write and read succeeds");
        }
        let left: Vec<_> = std::fs::read_dir(d.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(
            left,
            vec![std::ffi::OsString::from("c.json")],
            "no temp file left"
        );
    }

    #[test]
    fn a_removed_record_is_never_written_again() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("c.json");
        let lock = RecordLock::default();
        lock.write(&p, || serde_json::json!({"state": "Running"}))
            .unwrap();
        assert!(p.exists());
        lock.remove(&p).unwrap();
        // The exit watcher, late.
        lock.write(&p, || serde_json::json!({"state": "Exited"})).unwrap();
        assert!(!p.exists(), "a removed record came back");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, serde::Deserialize)]
    struct Rec {
        name: String,
        n: u32,
    }

    #[test]
    fn round_trip_and_replace() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/rec.json");
        write_record(
            &p,
            &Rec {
                name: "a".into(),
                n: 1,
            },
        )
        .unwrap();
        write_record(
            &p,
            &Rec {
                name: "b".into(),
                n: 2,
            },
        )
        .unwrap();
        let r: Rec = read_record(&p).unwrap();
        assert_eq!(
            r,
            Rec {
                name: "b".into(),
                n: 2
            }
        );
        let raw: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
        assert_eq!(raw["version"], 1);
        let names: Vec<_> = std::fs::read_dir(p.parent().unwrap())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(
            names,
            vec![std::ffi::OsString::from("rec.json")],
            "temp files are renamed away"
        );
        remove_record(&p).unwrap();
        remove_record(&p).unwrap();
        assert!(read_record::<Rec>(&p).is_err());
    }

    #[test]
    fn refuses_unknown_versions() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("rec.json");
        std::fs::write(&p, r#"{"version": 9, "name": "x", "n": 1}"#).unwrap();
        let err = read_record::<Rec>(&p).unwrap_err().to_string();
        assert!(err.contains("version 9"), "{err}");
    }

    #[test]
    fn ids_are_unique_hex() {
        let a = new_id();
        let b = new_id();
        assert_eq!(a.len(), 64);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
