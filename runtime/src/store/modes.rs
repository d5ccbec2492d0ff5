//! Files and directories with explicit modes, whatever berthd's umask.
//!
//! Specs carry the pod's Secrets (`process.env`) and state dirs hold them,
//! so both are root's alone; a permissive umask inherited from whatever
//! started berthd must not open them up (nor make a container's `/`
//! world-writable through its upper dir).

use std::fs::{DirBuilder, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Only root may enter: state and per-container dirs.
pub const PRIVATE_DIR: u32 = 0o700;
/// Only root may read or write: specs and records.
pub const PRIVATE_FILE: u32 = 0o600;

/// Creates `dir` (and missing parents, with the same mode) and sets its
/// mode to `mode` even when it existed or the umask cut bits off.
pub fn create_dir(dir: &Path, mode: u32) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(mode).create(dir)?;
    std::fs::set_permissions(dir, Permissions::from_mode(mode))
}

/// Creates or truncates `path` with `mode` (set again, past the umask)
/// and writes `data`.
pub fn write_file(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)?;
    f.set_permissions(Permissions::from_mode(mode))?;
    f.write_all(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_hold_under_any_umask() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("a/b");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        create_dir(&dir, 0o700).unwrap();
        std::fs::set_permissions(&dir, Permissions::from_mode(0o777)).unwrap();
        create_dir(&dir, 0o700).unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&d.path().join("a")), 0o700 & !0o022 & 0o700);
        let f = dir.join("f");
        std::fs::write(&f, "old").unwrap();
        std::fs::set_permissions(&f, Permissions::from_mode(0o666)).unwrap();
        write_file(&f, b"new", 0o600).unwrap();
        assert_eq!(mode(&f), 0o600);
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "new");
    }
}
