//! Sandbox ids that Berth can recognise as its own later.
//!
//! A host-local IP lease names its pod only by the CNI container id (and the
//! interface), exactly like containerd's and CRI-O's leases on a shared
//! network. To collect a lease that no record or intent names (a berthd
//! killed on a path the intents do not cover) without ever touching another
//! runtime's pod, Berth must tell its ids from theirs. So a sandbox id is 24
//! random bytes followed by an 8-byte tag, the first 8 bytes of
//! SHA-256(node key || random part), all in lowercase hex: still 64 hex
//! digits like every CRI id, random where the shim socket and pod slice
//! take their 16-digit prefix, and another runtime's random id passes the
//! check with probability 2^-64.
//!
//! The key is 32 random bytes in `<root>/sandbox-id.key` (0600), made once
//! and published with link(2), so two first RunPodSandbox calls racing to
//! make it agree on one key, and a crash never leaves a half-written key.

use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// Length of the random part, in bytes.
const RANDOM: usize = 24;
/// Length of the tag, in bytes.
const TAG: usize = 8;
/// Length of the key, in bytes.
const KEY: usize = 32;

/// The node key's file under berthd's root.
pub(crate) fn key_path(root: &Path) -> PathBuf {
    root.join("sandbox-id.key")
}

/// The node key, or None when it was never made (no sandbox id was ever
/// handed out under this root, so none can be recognised).
pub(crate) fn read_key(root: &Path) -> Result<Option<[u8; KEY]>> {
    let mut buf = Vec::new();
    match std::fs::File::open(key_path(root)) {
        Ok(f) => {
            f.take(KEY as u64 + 1)
                .read_to_end(&mut buf)
                .map_err(|e| Error::Internal(format!("read {}: {e}", key_path(root).display())))?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::Internal(format!("open {}: {e}", key_path(root).display()))),
    }
    let key: [u8; KEY] = buf.try_into().map_err(|b: Vec<u8>| {
        Error::Internal(format!(
            "{} holds {} bytes, not {KEY}: move it away to make a new key (leases of existing pods are then no longer recognised)",
            key_path(root).display(),
            b.len()
        ))
    })?;
    Ok(Some(key))
}

/// The node key, made first if there is none.
pub(crate) fn key(root: &Path) -> Result<[u8; KEY]> {
    if let Some(k) = read_key(root)? {
        return Ok(k);
    }
    let io = |what: &str, e: std::io::Error| {
        Error::Internal(format!("{what} sandbox id key under {}: {e}", root.display()))
    };
    std::fs::create_dir_all(root).map_err(|e| io("create the directory of the", e))?;
    let mut k = [0u8; KEY];
    random(&mut k).map_err(|e| io("random bytes for the", e))?;
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = root.join(format!("sandbox-id.key.{}-{n}.tmp", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| io("create the", e))?;
    f.write_all(&k)
        .and_then(|_| f.sync_all())
        .map_err(|e| io("write the", e))?;
    drop(f);
    // link(2) fails if another caller published first; theirs wins.
    let linked = std::fs::hard_link(&tmp, key_path(root));
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            if let Ok(d) = std::fs::File::open(root) {
                let _ = d.sync_all();
            }
            Ok(k)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            read_key(root)?.ok_or_else(|| Error::Internal(format!("{} vanished", key_path(root).display())))
        }
        Err(e) => Err(io("publish the", e)),
    }
}

impl super::SandboxManager {
    /// The node key, read from disk (or made) by the first RunPodSandbox
    /// only: it never changes while berthd runs.
    pub(crate) fn id_key(&self) -> Result<[u8; KEY]> {
        if let Some(k) = self.id_key.get() {
            return Ok(*k);
        }
        let k = key(&self.cfg.root)?;
        Ok(*self.id_key.get_or_init(|| k))
    }
}

fn random(buf: &mut [u8]) -> std::io::Result<()> {
    std::fs::File::open("/dev/urandom")?.read_exact(buf)
}

fn tag(key: &[u8; KEY], random_part: &[u8]) -> [u8; TAG] {
    let mut h = Sha256::new();
    h.update(key);
    h.update(random_part);
    let d = h.finalize();
    let mut t = [0u8; TAG];
    t.copy_from_slice(&d[..TAG]);
    t
}

/// A new sandbox id tagged with `key`.
pub(crate) fn new_id(key: &[u8; KEY]) -> Result<String> {
    let mut r = [0u8; RANDOM];
    random(&mut r).map_err(|e| Error::Internal(format!("random bytes for a sandbox id: {e}")))?;
    Ok(format!("{}{}", hex::encode(r), hex::encode(tag(key, &r))))
}

/// Whether `id` is a sandbox id made with `key`. Only the exact form
/// [`new_id`] writes passes: 64 lowercase hex digits with a matching tag.
pub(crate) fn is_ours(key: &[u8; KEY], id: &str) -> bool {
    if id.len() != 2 * (RANDOM + TAG) || !id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return false;
    }
    let Ok(bytes) = hex::decode(id) else {
        return false;
    };
    tag(key, &bytes[..RANDOM])[..] == bytes[RANDOM..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_made_with_the_key_are_recognised_and_others_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let k = key(dir.path()).unwrap();
        let id = new_id(&k).unwrap();
        assert_eq!(id.len(), 64);
        assert!(crate::cgroup::driver::is_id(&id), "{id} is not a CRI-shaped id");
        assert!(is_ours(&k, &id));
        // Another runtime's random id, the same id under another node's
        // key, a one-digit change, and non-canonical spellings all fail.
        assert!(!is_ours(&k, &crate::store::new_id()));
        let other = key(tempfile::tempdir().unwrap().path()).unwrap();
        assert!(!is_ours(&other, &id));
        let mut flipped = id.clone().into_bytes();
        flipped[63] = if flipped[63] == b'0' { b'1' } else { b'0' };
        assert!(!is_ours(&k, &String::from_utf8(flipped).unwrap()));
        assert!(!is_ours(&k, &id.to_uppercase()));
        assert!(!is_ours(&k, &id[..62]));
        assert!(!is_ours(&k, ""));
    }

    #[test]
    fn the_key_is_made_once_private_and_kept() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_key(dir.path()).unwrap(), None);
        let a = key(dir.path()).unwrap();
        let b = key(dir.path()).unwrap();
        assert_eq!(a, b);
        let mode = std::fs::metadata(key_path(dir.path()))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        // No temp file is left beside it.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("sandbox-id.key")]);
    }

    #[test]
    fn racing_first_calls_agree_on_one_key() {
        let dir = tempfile::tempdir().unwrap();
        let keys: Vec<[u8; KEY]> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..8)
                .map(|_| {
                    berth_sys::thread::builder()
                        .spawn_scoped(s, || key(dir.path()).unwrap())
                        .unwrap()
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(keys.windows(2).all(|w| w[0] == w[1]));
    }

    #[test]
    fn a_damaged_key_is_an_error_not_a_new_key() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(key_path(dir.path()), b"short").unwrap();
        let e = key(dir.path()).unwrap_err().to_string();
        assert!(e.contains("holds 5 bytes"), "{e}");
    }
}
